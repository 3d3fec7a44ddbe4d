//! agora-notification: what happened to an account. Mentions, reblogs, favourites, follows and
//! follow requests are written from post and graph events, exactly once per event, and read,
//! dismissed and counted by their recipient.
//!
//! It must never notify an account of its own actions or of the actions of an account it does
//! not hear from (a block either way, a mute that covers notifications), never show one account
//! another's notification (not even that it exists), and never read another service's tables:
//! what it knows of blocks and mutes it keeps from graph events.

pub mod domain;
pub mod grpc;
pub mod notifications;
pub mod push;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use agora_events::consumer::{Handler, HandlerError};
use agora_events::{Envelope, EventBus};
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::jwt::Verifier;
use agora_kit::{IdGenerator, Shutdown};
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use agora_proto::notification::v1::notification_service_server::NotificationServiceServer;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use async_trait::async_trait;
use tokio::net::TcpListener;

use crate::push::deliver::{PushConfig, Pusher};

pub use notifications::{NotificationError, Notifications};

pub const POST_TOPIC: &str = "agora.post.v1";
pub const GRAPH_TOPIC: &str = "agora.graph.v1";
pub const GROUP: &str = "notification";

/// Settings of the notification service (`AGORA_NOTIFICATION_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address (`AGORA_NOTIFICATION_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` (`AGORA_NOTIFICATION_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// `postgres://…`, `sqlite://…` or `scylla://…` (`AGORA_NOTIFICATION_DATABASE_URL`).
    pub database_url: String,
    /// `memory://` or `kafka://…` (`AGORA_BUS_URL`).
    pub bus_url: String,
    /// The public base URL; the token issuer (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    /// The user service, for token keys and revocations and push titles
    /// (`AGORA_NOTIFICATION_USER_URL`).
    pub user_url: String,
    /// The post service, for push bodies (`AGORA_NOTIFICATION_POST_URL`).
    pub post_url: String,
    /// The graph service, for push policies (`AGORA_NOTIFICATION_GRAPH_URL`).
    pub graph_url: String,
    /// Admit push endpoints over http and on private addresses
    /// (`AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS`, default false; tests set it).
    pub push_allow_private: bool,
    /// The VAPID contact push services may write to (`AGORA_PUSH_CONTACT`: a `mailto:` or
    /// https URL; default the public URL).
    pub push_contact: String,
    /// The live backplane new notifications are announced on (`AGORA_LIVE_URL`: none,
    /// `memory://NAME`, `redis://…`).
    pub live_url: String,
    /// Apply migrations at start (`AGORA_MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    pub worker_id: u16,
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let data_dir = config::string(env, "AGORA_DATA_DIR", ".agora");
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_NOTIFICATION_LISTEN", "127.0.0.1:50055")?,
            admin_listen: config::socket_addr(env, "AGORA_NOTIFICATION_ADMIN_LISTEN", "127.0.0.1:9105")?,
            database_url: agora_store::database_url(
                env,
                "AGORA_NOTIFICATION_DATABASE_URL",
                &format!("sqlite://{data_dir}/notification.db"),
                true,
            )?,
            bus_url: agora_events::bus_url(env)?,
            public_url: config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            user_url: config::service_url(env, "AGORA_NOTIFICATION_USER_URL", "http://127.0.0.1:50051")?,
            post_url: config::service_url(env, "AGORA_NOTIFICATION_POST_URL", "http://127.0.0.1:50052")?,
            graph_url: config::service_url(env, "AGORA_NOTIFICATION_GRAPH_URL", "http://127.0.0.1:50053")?,
            push_allow_private: config::boolean(env, "AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS", false)?,
            push_contact: config::string(env, "AGORA_PUSH_CONTACT", ""),
            live_url: agora_client::live::url_from_env(env),
            migrate_on_start: config::boolean(env, "AGORA_MIGRATE_ON_START", true)?,
            worker_id: config::parse(env, "AGORA_WORKER_ID", rand::random::<u16>() % 1024)?,
        })
    }
}

/// Applies events from one topic through [`Notifications::handle`].
struct EventHandler {
    notifications: Arc<Notifications>,
}

#[async_trait]
impl Handler for EventHandler {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        self.notifications.handle(envelope).await
    }
}

/// A notification service ready to serve: store open, consumers running.
pub struct NotificationService {
    pub notifications: Arc<Notifications>,
    pub pusher: Arc<Pusher>,
    pub health: Health,
    verifier: Arc<Verifier>,
}

impl NotificationService {
    /// Opens the store (migrating if configured) and starts the consumers of `agora.post.v1` and
    /// `agora.graph.v1` (groups `notification.post` and `notification.graph`), both stopping on
    /// `shutdown`.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn EventBus>,
        verifier: Arc<Verifier>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let store = store::connect(&config.database_url, config.migrate_on_start).await?;
        let ids = Arc::new(IdGenerator::new(config.worker_id));
        let live = agora_client::live::connect(&config.live_url).await?;
        let channel = |url: &str| agora_kit::grpc::channel(url);
        let push = PushConfig {
            allow_private: config.push_allow_private,
            contact: if config.push_contact.is_empty() {
                config.public_url.clone()
            } else {
                config.push_contact.clone()
            },
            public_url: config.public_url.clone(),
        };
        let pusher = Pusher::start(
            Arc::clone(&store),
            Arc::clone(&verifier),
            UserServiceClient::new(channel(&config.user_url)?),
            PostServiceClient::new(channel(&config.post_url)?),
            GraphServiceClient::new(channel(&config.graph_url)?),
            push,
            shutdown.clone(),
        )?;
        let notifications =
            Arc::new(Notifications::new(Arc::clone(&store), ids, live).with_pusher(Arc::clone(&pusher)));
        let handler = Arc::new(EventHandler { notifications: Arc::clone(&notifications) });
        agora_events::consumer::spawn_per_topic(&bus, &[POST_TOPIC, GRAPH_TOPIC], GROUP, handler, &shutdown).await;
        // Handled-event records and expired mutes.
        let s = Arc::clone(&store);
        tokio::spawn(agora_events::dedupe::prune_periodically("notification", shutdown.clone(), move |before| {
            let s = Arc::clone(&s);
            async move { s.prune(before).await }
        }));

        let health = Health::new();
        let s = Arc::clone(&store);
        health.add_check("notification-store", move || {
            let s = Arc::clone(&s);
            async move { s.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self { notifications, pusher, health, verifier })
    }

    /// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: impl Into<agora_kit::grpc::GrpcListener>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        agora_kit::grpc::serve(
            listener,
            shutdown,
            NotificationServiceServer::new(grpc::NotificationGrpc {
                notifications: self.notifications,
                verifier: self.verifier,
                pusher: self.pusher,
            }),
        )
        .await?;
        Ok(())
    }
}

/// Runs the notification service alone: its own bus connection, token verifier and admin
/// endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bus = agora_events::connect(&config.bus_url).await?;
    let verifier = agora_client::user_service_verifier_at(&config.user_url, &config.public_url, shutdown.clone())?;
    let service = NotificationService::build(&config, Arc::clone(&bus), verifier, shutdown.clone()).await?;
    let health = service.health.clone();
    agora_events::add_health_check(&health, &bus);
    let admin_task = agora_kit::health::spawn_admin(config.admin_listen, health.clone(), shutdown.clone()).await?;
    service.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// Makes a new VAPID key the one in force (`agora push rotate-vapid-key`); returns its public
/// half. Subscriptions made with the old key are ended at their next push (clients subscribe
/// again with the new `server_key`); running services pick the key up within 30 s.
pub async fn rotate_vapid_key(config: &Config) -> anyhow::Result<String> {
    let store = store::connect(&config.database_url, config.migrate_on_start).await?;
    let key = push::VapidKey::generate(agora_kit::time::now_ms()).map_err(|e| anyhow::anyhow!(e))?;
    // A ScyllaDB store comes up in the background: wait for it, briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match store.put_vapid_key(&key, true).await {
            Ok(kept) => return Ok(kept.public_key),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// Applies the notification store's migrations (`agora migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url, false).await?;
    store.migrate().await?;
    Ok(())
}

/// The process entry point shared by the `agora-notification` binary and `agora serve --target
/// notification`: telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("notification", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}
