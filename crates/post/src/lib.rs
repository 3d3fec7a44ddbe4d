//! agora-post: statuses (posts, replies, reblogs), their edit history, favourites, bookmarks,
//! pins and emoji reactions, and the `agora.post.v1` events that announce them. It is the only
//! owner of the post tables.
//!
//! It must never show a status to someone the visibility rules hide it from, nor reveal that a
//! hidden status exists (hidden and missing answer alike); never emit HTML the author wrote
//! (everything typed is escaped); and never change state without its event in the same
//! transaction. It asks the user service who `@name` is and the graph service who follows or
//! blocks whom; it never reads their tables.

pub mod domain;
pub mod grpc;
pub mod peers;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use agora_events::EventBus;
use agora_events::outbox::OutboxRelay;
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::jwt::Verifier;
use agora_kit::{IdGenerator, Shutdown};
use agora_proto::post::v1::post_service_server::PostServiceServer;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use tokio::net::TcpListener;

pub use peers::{Directory, DirectoryEntry, GraphRelations, Relations, UserDirectory};
pub use service::{PostRules, Posts};

/// Settings of the post service (`AGORA_POST_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address (`AGORA_POST_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` (`AGORA_POST_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// `postgres://…` or `sqlite://…` (`AGORA_POST_DATABASE_URL`).
    pub database_url: String,
    /// `memory://` or `kafka://…` (`AGORA_BUS_URL`).
    pub bus_url: String,
    /// The public base URL: token issuer, and base of mention and hashtag links (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    /// The user service, for usernames and token keys (`AGORA_POST_USER_URL`).
    pub user_url: String,
    /// The graph service, for follows and blocks (`AGORA_POST_GRAPH_URL`).
    pub graph_url: String,
    /// Longest status, in characters (`AGORA_POST_MAX_CHARS`).
    pub max_chars: usize,
    /// Apply migrations at start (`AGORA_MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    pub worker_id: u16,
    /// Epochs guarding the cache of viewers' relationships (`AGORA_EPOCHS_URL`; none: no cache).
    pub epochs_url: String,
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let data_dir = config::string(env, "AGORA_DATA_DIR", ".agora");
        let max_chars: usize = config::parse(env, "AGORA_POST_MAX_CHARS", 500)?;
        if max_chars == 0 {
            return Err(ConfigError::new("AGORA_POST_MAX_CHARS", "0", "must be at least 1"));
        }
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_POST_LISTEN", "127.0.0.1:50052")?,
            admin_listen: config::socket_addr(env, "AGORA_POST_ADMIN_LISTEN", "127.0.0.1:9102")?,
            database_url: agora_store::database_url(
                env,
                "AGORA_POST_DATABASE_URL",
                &format!("sqlite://{data_dir}/post.db"),
                false,
            )?,
            bus_url: agora_events::bus_url(env)?,
            public_url: config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            user_url: config::service_url(env, "AGORA_POST_USER_URL", "http://127.0.0.1:50051")?,
            graph_url: config::service_url(env, "AGORA_POST_GRAPH_URL", "http://127.0.0.1:50053")?,
            max_chars,
            migrate_on_start: config::boolean(env, "AGORA_MIGRATE_ON_START", true)?,
            worker_id: config::parse(env, "AGORA_WORKER_ID", rand::random::<u16>() % 1024)?,
            epochs_url: agora_client::epoch::url_from_env(env),
        })
    }
}

/// The gRPC-backed directory (user service) and relations (graph service, cached under the
/// epochs of `config`) named by `config`. Channels connect lazily, so this succeeds before those
/// services are up.
pub async fn grpc_dependencies(config: &Config) -> anyhow::Result<(Arc<dyn Directory>, Arc<dyn Relations>)> {
    let facts = agora_client::graph_facts::GraphFacts::connect(&config.graph_url, &config.epochs_url)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    grpc_dependencies_with(config, facts)
}

/// [`grpc_dependencies`] reading viewers' relationships through `facts` (in one process, the feed
/// service can share it: both ask about the same viewers).
pub fn grpc_dependencies_with(
    config: &Config,
    facts: Arc<agora_client::graph_facts::GraphFacts>,
) -> anyhow::Result<(Arc<dyn Directory>, Arc<dyn Relations>)> {
    let user = UserServiceClient::new(agora_kit::grpc::channel(&config.user_url)?);
    Ok((Arc::new(UserDirectory { client: user }), Arc::new(GraphRelations { facts })))
}

/// A post service ready to serve: store open, outbox relay running.
pub struct PostService {
    pub posts: Arc<Posts>,
    pub health: Health,
}

impl PostService {
    /// Opens the store (migrating if configured) and starts the outbox relay, which stops on
    /// `shutdown`.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn EventBus>,
        verifier: Arc<Verifier>,
        directory: Arc<dyn Directory>,
        relations: Arc<dyn Relations>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let store = store::connect(&config.database_url).await?;
        if config.migrate_on_start {
            store.migrate().await?;
        }
        bus.ensure_topics(&["agora.post.v1".to_owned()]).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not ensure topic agora.post.v1; the relay will retry publishing");
        });
        let relay = OutboxRelay::new("post", store.outbox(), Arc::clone(&bus));
        let wake = relay.waker();
        tokio::spawn(relay.run(shutdown));
        let ids = Arc::new(IdGenerator::new(config.worker_id));
        let rules = PostRules { public_url: config.public_url.clone(), max_chars: config.max_chars };
        let posts = Arc::new(Posts::new(Arc::clone(&store), ids, verifier, directory, relations, rules, wake));

        let health = Health::new();
        let s = Arc::clone(&store);
        health.add_check("post-store", move || {
            let s = Arc::clone(&s);
            async move { s.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self { posts, health })
    }

    /// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: impl Into<agora_kit::grpc::GrpcListener>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        agora_kit::grpc::serve(listener, shutdown, PostServiceServer::new(grpc::PostGrpc { posts: self.posts }))
            .await?;
        Ok(())
    }
}

/// Runs the post service alone: its own bus connection, token verifier and admin endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bus = agora_events::connect(&config.bus_url).await?;
    let verifier = agora_client::user_service_verifier_at(&config.user_url, &config.public_url, shutdown.clone())?;
    let (directory, relations) = grpc_dependencies(&config).await?;
    let service =
        PostService::build(&config, Arc::clone(&bus), verifier, directory, relations, shutdown.clone()).await?;
    let health = service.health.clone();
    agora_events::add_health_check(&health, &bus);
    let admin_task = agora_kit::health::spawn_admin(config.admin_listen, health.clone(), shutdown.clone()).await?;
    service.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// Applies the post store's migrations (`agora migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(())
}

/// The process entry point shared by the `agora-post` binary and `agora serve --target post`:
/// telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("post", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use agora_kit::config::MapEnv;

    #[test]
    fn defaults_run_with_nothing_set() {
        let c = Config::from_env(&MapEnv::new().with("AGORA_DATA_DIR", "/tmp/agora")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50052");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9102");
        assert_eq!(c.database_url, "sqlite:///tmp/agora/post.db");
        assert_eq!(c.user_url, "http://127.0.0.1:50051");
        assert_eq!(c.graph_url, "http://127.0.0.1:50053");
        assert_eq!(c.max_chars, 500);
        assert!(c.migrate_on_start);
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let env = MapEnv::new().with("AGORA_POST_MAX_CHARS", "lots");
        assert!(Config::from_env(&env).unwrap_err().to_string().contains("AGORA_POST_MAX_CHARS"));
        let env = MapEnv::new().with("AGORA_POST_DATABASE_URL", "mysql://db");
        assert!(Config::from_env(&env).unwrap_err().to_string().contains("AGORA_POST_DATABASE_URL"));
        let env =
            MapEnv::new().with("AGORA_PUBLIC_URL", "https://social.example/").with("AGORA_POST_MAX_CHARS", "1000");
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.public_url, "https://social.example");
        assert_eq!(c.max_chars, 1000);
    }
}
