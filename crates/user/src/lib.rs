//! agora-user: accounts, credentials (argon2id), sessions and tokens, OAuth applications and
//! profiles. It is the only issuer of access tokens and the only owner of the user tables.
//!
//! It must never accept an identity it did not verify itself: callers present the bearer token
//! it issued. It never logs a password, a token or a secret.

pub mod domain;
pub mod grpc;
pub mod service;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_events::EventBus;
use agora_events::outbox::OutboxRelay;
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::{IdGenerator, Shutdown};
use agora_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;

pub use service::Accounts;

/// Settings of the user service (`AGORA_USER_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address (`AGORA_USER_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` (`AGORA_USER_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// `postgres://…` or `sqlite://…` (`AGORA_USER_DATABASE_URL`).
    pub database_url: String,
    /// `memory://` or `kafka://…` (`AGORA_BUS_URL`).
    pub bus_url: String,
    /// The public base URL; the token issuer (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Apply migrations at start (`AGORA_MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    pub worker_id: u16,
    /// Signing keys kept outside the database (`AGORA_USER_SIGNING_KEY`, or a file named by
    /// `AGORA_USER_SIGNING_KEY_FILE`, e.g. a mounted Kubernetes Secret): PEM `PRIVATE KEY`
    /// blocks, the first of which signs; the others, and keys in the store, only verify. `None`:
    /// keys live in the user store (the embedded default).
    pub signing_keys: Option<Vec<agora_kit::jwt::SigningKey>>,
    /// Where a changed profile's account gets a new epoch (`AGORA_EPOCHS_URL`), so the gateway's
    /// cache of account entities drops it.
    pub epochs_url: String,
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let data_dir = config::string(env, "AGORA_DATA_DIR", ".agora");
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_USER_LISTEN", "127.0.0.1:50051")?,
            admin_listen: config::socket_addr(env, "AGORA_USER_ADMIN_LISTEN", "127.0.0.1:9101")?,
            database_url: agora_store::database_url(
                env,
                "AGORA_USER_DATABASE_URL",
                &format!("sqlite://{data_dir}/user.db"),
                false,
            )?,
            bus_url: agora_events::bus_url(env)?,
            public_url: config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            access_token_ttl: config::seconds(env, "AGORA_USER_ACCESS_TOKEN_TTL", 7 * 24 * 3600)?,
            refresh_token_ttl: config::seconds(env, "AGORA_USER_REFRESH_TOKEN_TTL", 90 * 24 * 3600)?,
            migrate_on_start: config::boolean(env, "AGORA_MIGRATE_ON_START", true)?,
            worker_id: config::parse(env, "AGORA_WORKER_ID", rand::random::<u16>() % 1024)?,
            epochs_url: agora_client::epoch::url_from_env(env),
            signing_keys: match config::secret(env, "AGORA_USER_SIGNING_KEY")? {
                None => None,
                Some(pem) => Some(agora_kit::jwt::SigningKey::from_pem(pem.expose()).map_err(|e| {
                    let var = if env.get("AGORA_USER_SIGNING_KEY_FILE").is_some() {
                        "AGORA_USER_SIGNING_KEY_FILE"
                    } else {
                        "AGORA_USER_SIGNING_KEY"
                    };
                    ConfigError::new(var, "[redacted]", e)
                })?),
            },
        })
    }
}

/// A user service ready to serve: store open, keys loaded, outbox relay running.
pub struct UserService {
    pub accounts: Arc<Accounts>,
    pub health: Health,
}

impl UserService {
    /// Opens the store (migrating if configured), loads keys and starts the outbox relay and
    /// the revocation refresher, both stopping on `shutdown`.
    pub async fn build(config: &Config, bus: Arc<dyn EventBus>, shutdown: Shutdown) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let store = store::connect(&config.database_url).await?;
        if config.migrate_on_start {
            store.migrate().await?;
        }
        bus.ensure_topics(&["agora.user.v1".to_owned()]).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not ensure topic agora.user.v1; the relay will retry publishing");
        });
        let relay = OutboxRelay::new("user", store.outbox(), Arc::clone(&bus));
        let wake = relay.waker();
        tokio::spawn(relay.run(shutdown.clone()));
        let policy = service::TokenPolicy {
            issuer: config.public_url.clone(),
            access_ttl: config.access_token_ttl,
            refresh_ttl: config.refresh_token_ttl,
            external_keys: config.signing_keys.clone(),
        };
        let ids = Arc::new(IdGenerator::new(config.worker_id));
        let epochs = agora_client::epoch::connect(&config.epochs_url).await?;
        let accounts = Arc::new(Accounts::new(Arc::clone(&store), policy, ids, wake).await?.with_epochs(epochs));
        accounts.verifier.spawn_refresh(Duration::from_secs(1), shutdown.clone());

        let health = Health::new();
        let s = Arc::clone(&store);
        health.add_check("user-store", move || {
            let s = Arc::clone(&s);
            async move { s.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self { accounts, health })
    }

    /// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: impl Into<agora_kit::grpc::GrpcListener>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        agora_kit::grpc::serve(listener, shutdown, UserServiceServer::new(grpc::UserGrpc { accounts: self.accounts }))
            .await?;
        Ok(())
    }
}

/// Runs the user service alone: its own bus connection and admin endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bus = agora_events::connect(&config.bus_url).await?;
    let service = UserService::build(&config, Arc::clone(&bus), shutdown.clone()).await?;
    let health = service.health.clone();
    agora_events::add_health_check(&health, &bus);
    let admin_task = agora_kit::health::spawn_admin(config.admin_listen, health.clone(), shutdown.clone()).await?;
    service.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// Applies the user store's migrations (`agora migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(())
}

/// Adds a new signing key (`agora rotate-signing-key`). Running replicas keep verifying every key
/// and start signing with the new one when restarted; verifiers fetch it on first sight of its
/// `kid`. Returns the new `kid`.
pub async fn rotate_signing_key(config: &Config) -> anyhow::Result<String> {
    let store = store::connect(&config.database_url).await?;
    if config.signing_keys.is_some() {
        anyhow::bail!(
            "signing keys come from AGORA_USER_SIGNING_KEY(_FILE): rotate by putting a new key first in it \
             (agora generate-signing-key prints one) and keeping the old one after it until its tokens expire"
        );
    }
    let keyring = tokens::Keyring::load(store.as_ref(), None).await?;
    Ok(keyring.rotate(store.as_ref()).await?)
}

/// The process entry point shared by the `agora-user` binary and `agora serve --target user`:
/// telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("user", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}
