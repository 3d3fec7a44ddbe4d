//! agora-graph: who follows, has asked to follow, blocks and mutes whom, and whom to suggest.
//! It owns those tables and announces every change on `agora.graph.v1` through its outbox, in
//! the same transaction as the change.
//!
//! It must never act for a caller it did not verify (only a token it checked names the actor),
//! never hold account data beyond ids (profiles and lock state come from the user service), and
//! never let a follow exist alongside a block between the same two accounts.

pub mod accounts;
pub mod domain;
pub mod graph;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use agora_events::EventBus;
use agora_events::outbox::OutboxRelay;
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::jwt::Verifier;
use agora_kit::{IdGenerator, Shutdown};
use agora_proto::graph::v1::graph_service_server::GraphServiceServer;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use tokio::net::TcpListener;

pub use accounts::{AccountDirectory, AccountFacts, KnownAccounts, UserServiceAccounts};
pub use graph::Graph;

/// The topic every graph event goes to.
pub const TOPIC: &str = "agora.graph.v1";

/// Settings of the graph service (`AGORA_GRAPH_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address (`AGORA_GRAPH_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` (`AGORA_GRAPH_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// `postgres://…` or `sqlite://…` (`AGORA_GRAPH_DATABASE_URL`).
    pub database_url: String,
    /// `memory://` or `kafka://…` (`AGORA_BUS_URL`).
    pub bus_url: String,
    /// The public base URL: the tokens' issuer and audience (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    /// The user service, for token keys and account lookups (`AGORA_GRAPH_USER_URL`).
    pub user_url: String,
    /// Apply migrations at start (`AGORA_MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    pub worker_id: u16,
    /// Where the epochs of changed accounts go (`AGORA_EPOCHS_URL`: none, `memory://NAME`,
    /// `redis://…`); the caches of the post and feed services read them.
    pub epochs_url: String,
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let data_dir = config::string(env, "AGORA_DATA_DIR", ".agora");
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_GRAPH_LISTEN", "127.0.0.1:50053")?,
            admin_listen: config::socket_addr(env, "AGORA_GRAPH_ADMIN_LISTEN", "127.0.0.1:9103")?,
            database_url: agora_store::database_url(
                env,
                "AGORA_GRAPH_DATABASE_URL",
                &format!("sqlite://{data_dir}/graph.db"),
                true,
            )?,
            bus_url: agora_events::bus_url(env)?,
            public_url: config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            user_url: config::service_url(env, "AGORA_GRAPH_USER_URL", "http://127.0.0.1:50051")?,
            migrate_on_start: config::boolean(env, "AGORA_MIGRATE_ON_START", true)?,
            epochs_url: agora_client::epoch::url_from_env(env),
            worker_id: config::parse(env, "AGORA_WORKER_ID", rand::random::<u16>() % 1024)?,
        })
    }
}

/// A graph service ready to serve: store open, outbox relay running.
pub struct GraphService {
    pub graph: Arc<Graph>,
    pub health: Health,
}

impl GraphService {
    /// Opens the store (migrating if configured) and starts the outbox relay, which stops on
    /// `shutdown`. Accounts are looked up at `config.user_url`.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn EventBus>,
        verifier: Arc<Verifier>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let user = UserServiceClient::new(agora_kit::grpc::channel(&config.user_url)?);
        let accounts: Arc<dyn AccountDirectory> = Arc::new(UserServiceAccounts::new(user));
        Self::build_with_accounts(config, bus, verifier, accounts, shutdown).await
    }

    /// [`GraphService::build`] with another source of account facts (an in-process user
    /// service, or a fixed list in tests).
    pub async fn build_with_accounts(
        config: &Config,
        bus: Arc<dyn EventBus>,
        verifier: Arc<Verifier>,
        accounts: Arc<dyn AccountDirectory>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let store = store::connect(&config.database_url, config.migrate_on_start).await?;
        bus.ensure_topics(&[TOPIC.to_owned()]).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not ensure topic {TOPIC}; the relay will retry publishing");
        });
        let relay = OutboxRelay::new("graph", store.outbox(), Arc::clone(&bus));
        let wake = relay.waker();
        tokio::spawn(relay.run(shutdown.clone()));
        let ids = Arc::new(IdGenerator::new(config.worker_id));
        let epochs = agora_client::epoch::connect(&config.epochs_url).await?;
        let graph = Arc::new(Graph::new(Arc::clone(&store), accounts, verifier, ids, wake, epochs));

        let health = Health::new();
        let s = Arc::clone(&store);
        health.add_check("graph-store", move || {
            let s = Arc::clone(&s);
            async move { s.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self { graph, health })
    }

    /// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: impl Into<agora_kit::grpc::GrpcListener>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        agora_kit::grpc::serve(listener, shutdown, GraphServiceServer::new(grpc::GraphGrpc { graph: self.graph }))
            .await?;
        Ok(())
    }
}

/// Runs the graph service alone: its own bus connection, token verifier and admin endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bus = agora_events::connect(&config.bus_url).await?;
    let verifier = agora_client::user_service_verifier_at(&config.user_url, &config.public_url, shutdown.clone())?;
    let service = GraphService::build(&config, Arc::clone(&bus), verifier, shutdown.clone()).await?;
    let health = service.health.clone();
    agora_events::add_health_check(&health, &bus);
    let admin_task = agora_kit::health::spawn_admin(config.admin_listen, health.clone(), shutdown.clone()).await?;
    service.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// Applies the graph store's migrations (`agora migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url, false).await?;
    store.migrate().await?;
    Ok(())
}

/// The process entry point shared by the `agora-graph` binary and `agora serve --target graph`:
/// telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("graph", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}
