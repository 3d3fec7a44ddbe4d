//! agora-feed: timelines. Home timelines are built by fan-out on write (merged at read time for
//! very large accounts), public, hashtag and account timelines from post events, plus trends and
//! read markers. Everything it stores is a derived view of post and graph events and can be
//! rebuilt from those services (`rebuild`).
//!
//! It must never be the source of truth for a status or a relationship, never read another
//! service's tables, and never show a viewer a status from an account their filter set hides:
//! every read re-checks blocks and mutes even when fan-out already removed them.

pub mod consumer;
pub mod deps;
pub mod domain;
pub mod feed;
pub mod grpc;
pub mod hotset;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_events::EventBus;
use agora_kit::Shutdown;
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::jwt::Verifier;
use agora_proto::feed::v1::feed_service_server::FeedServiceServer;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use tokio::net::TcpListener;

pub use deps::{GraphView, PostSource};
pub use feed::{Feed, FeedSettings, RebuildReport, Viewer};

/// Settings of the feed service (`AGORA_FEED_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC address (`AGORA_FEED_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` (`AGORA_FEED_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// `postgres://…` or `sqlite://…` (`AGORA_FEED_DATABASE_URL`).
    pub database_url: String,
    /// The hot set: `memory://` or `redis://…` (`AGORA_FEED_CACHE_URL`).
    pub cache_url: String,
    /// Epochs guarding the cache of viewers' filter sets and follows (`AGORA_EPOCHS_URL`; none:
    /// no cache).
    pub epochs_url: String,
    /// The live backplane that statuses entering and leaving homes are announced on
    /// (`AGORA_LIVE_URL`: none, `memory://NAME`, `redis://…`).
    pub live_url: String,
    /// `memory://` or `kafka://…` (`AGORA_BUS_URL`).
    pub bus_url: String,
    /// The public base URL; the token issuer (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    /// `AGORA_FEED_USER_URL`, `AGORA_FEED_GRAPH_URL`, `AGORA_FEED_POST_URL`.
    pub user_url: String,
    pub graph_url: String,
    pub post_url: String,
    /// Entries per home kept in the hot set (`AGORA_FEED_HOT_SET_SIZE`).
    pub hot_set_size: usize,
    /// Above this many followers an author is merged at read time (`AGORA_FEED_LARGE_ACCOUNT_FOLLOWERS`).
    pub large_account_followers: i64,
    /// Followers idle this long are skipped by fan-out (`AGORA_FEED_INACTIVE_AFTER`, seconds).
    pub inactive_after: Duration,
    /// Statuses copied into a home on a new follow (`AGORA_FEED_BACKFILL`).
    pub backfill: usize,
    /// Apply migrations at start (`AGORA_MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    pub worker_id: u16,
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let data_dir = config::string(env, "AGORA_DATA_DIR", ".agora");
        let cache_url = config::url(env, "AGORA_FEED_CACHE_URL", "memory://", &["memory", "redis", "rediss"])?;
        let hot_set_size: usize = config::parse(env, "AGORA_FEED_HOT_SET_SIZE", hotset::default_capacity(&cache_url))?;
        if hot_set_size == 0 {
            return Err(ConfigError::new("AGORA_FEED_HOT_SET_SIZE", "0", "must be at least 1"));
        }
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_FEED_LISTEN", "127.0.0.1:50054")?,
            admin_listen: config::socket_addr(env, "AGORA_FEED_ADMIN_LISTEN", "127.0.0.1:9104")?,
            database_url: agora_store::database_url(
                env,
                "AGORA_FEED_DATABASE_URL",
                &format!("sqlite://{data_dir}/feed.db"),
                true,
            )?,
            cache_url,
            epochs_url: agora_client::epoch::url_from_env(env),
            live_url: agora_client::live::url_from_env(env),
            bus_url: agora_events::bus_url(env)?,
            public_url: config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            user_url: config::service_url(env, "AGORA_FEED_USER_URL", "http://127.0.0.1:50051")?,
            graph_url: config::service_url(env, "AGORA_FEED_GRAPH_URL", "http://127.0.0.1:50053")?,
            post_url: config::service_url(env, "AGORA_FEED_POST_URL", "http://127.0.0.1:50052")?,
            hot_set_size,
            large_account_followers: config::parse(env, "AGORA_FEED_LARGE_ACCOUNT_FOLLOWERS", 10_000)?,
            inactive_after: config::seconds(env, "AGORA_FEED_INACTIVE_AFTER", 14 * 24 * 3600)?,
            backfill: config::parse(env, "AGORA_FEED_BACKFILL", 40)?,
            migrate_on_start: config::boolean(env, "AGORA_MIGRATE_ON_START", true)?,
            worker_id: config::parse(env, "AGORA_WORKER_ID", rand::random::<u16>() % 1024)?,
        })
    }

    pub fn settings(&self) -> FeedSettings {
        FeedSettings {
            hot_set_size: self.hot_set_size,
            large_account_followers: self.large_account_followers,
            inactive_after: self.inactive_after,
            backfill: self.backfill,
        }
    }
}

/// gRPC adapters for the services the feed asks: graph (`AGORA_FEED_GRAPH_URL`) and post
/// (`AGORA_FEED_POST_URL`). Channels connect lazily, so the peers need not be up yet.
pub async fn grpc_dependencies(config: &Config) -> anyhow::Result<(Arc<dyn GraphView>, Arc<dyn PostSource>)> {
    let facts = agora_client::graph_facts::GraphFacts::connect(&config.graph_url, &config.epochs_url)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    grpc_dependencies_with(config, facts)
}

/// [`grpc_dependencies`] reading viewers' graph facts through `facts` (in one process, the post
/// service can share it: both ask about the same viewers).
pub fn grpc_dependencies_with(
    config: &Config,
    facts: Arc<agora_client::graph_facts::GraphFacts>,
) -> anyhow::Result<(Arc<dyn GraphView>, Arc<dyn PostSource>)> {
    let graph = deps::GrpcGraph { client: facts.client().clone(), facts };
    let posts = deps::GrpcPosts { client: PostServiceClient::new(agora_kit::grpc::channel(&config.post_url)?) };
    Ok((Arc::new(graph), Arc::new(posts)))
}

async fn open_feed(
    config: &Config,
    graph: Arc<dyn GraphView>,
    posts: Arc<dyn PostSource>,
) -> anyhow::Result<(Arc<dyn store::TimelineStore>, Arc<dyn hotset::HotSet>, Arc<Feed>)> {
    let store = store::connect(&config.database_url, config.migrate_on_start).await?;
    let hot = hotset::connect(&config.cache_url, config.hot_set_size).await?;
    let live = agora_client::live::connect(&config.live_url).await?;
    let feed =
        Arc::new(Feed::new(Arc::clone(&store), Arc::clone(&hot), graph, posts, config.settings()).with_live(live));
    Ok((store, hot, feed))
}

/// A feed service ready to serve: store and hot set open, consumers running.
pub struct FeedService {
    pub feed: Arc<Feed>,
    pub health: Health,
    verifier: Arc<Verifier>,
}

impl FeedService {
    /// Opens the store (migrating if configured) and the hot set, and starts the consumers of
    /// `agora.post.v1` and `agora.graph.v1` (group `feed`), both stopping on `shutdown`.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn EventBus>,
        verifier: Arc<Verifier>,
        graph: Arc<dyn GraphView>,
        posts: Arc<dyn PostSource>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let (store, hot, feed) = open_feed(config, graph, posts).await?;
        // One consumer and group per topic (`feed.post`, `feed.graph`), so a long fan-out never
        // holds back an unfollow or a block.
        let handler = Arc::new(consumer::TimelineHandler { feed: Arc::clone(&feed) });
        let topics = [consumer::POST_TOPIC, consumer::GRAPH_TOPIC];
        agora_events::consumer::spawn_per_topic(&bus, &topics, consumer::GROUP, handler, &shutdown).await;
        // Handled-event records and trend inputs (which only matter within the trend window).
        let s = Arc::clone(&store);
        tokio::spawn(agora_events::dedupe::prune_periodically("feed", shutdown.clone(), move |before| {
            let s = Arc::clone(&s);
            async move { s.prune(before).await }
        }));

        let health = Health::new();
        let s = Arc::clone(&store);
        health.add_check("feed-store", move || {
            let s = Arc::clone(&s);
            async move { s.ping().await.map_err(|e| e.to_string()) }
        });
        let h = Arc::clone(&hot);
        health.add_check("feed-cache", move || {
            let h = Arc::clone(&h);
            async move { h.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(Self { feed, health, verifier })
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
            FeedServiceServer::new(grpc::FeedGrpc { feed: self.feed, verifier: self.verifier }),
        )
        .await?;
        Ok(())
    }
}

/// Runs the feed service alone: its own bus connection, token verifier and admin endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let bus = agora_events::connect(&config.bus_url).await?;
    let verifier = agora_client::user_service_verifier_at(&config.user_url, &config.public_url, shutdown.clone())?;
    let (graph, posts) = grpc_dependencies(&config).await?;
    let service = FeedService::build(&config, Arc::clone(&bus), verifier, graph, posts, shutdown.clone()).await?;
    let health = service.health.clone();
    agora_events::add_health_check(&health, &bus);
    let admin_task = agora_kit::health::spawn_admin(config.admin_listen, health.clone(), shutdown.clone()).await?;
    service.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// Applies the feed store's migrations (`agora migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url, false).await?;
    store.migrate().await?;
    Ok(())
}

/// Recomputes derived timelines from the post and graph services (`agora rebuild-timelines`):
/// the given accounts, or every account the store knows.
pub async fn rebuild(config: &Config, account_ids: Option<Vec<i64>>) -> anyhow::Result<RebuildReport> {
    let (graph, posts) = grpc_dependencies(config).await?;
    let (_, _, feed) = open_feed(config, graph, posts).await?;
    Ok(feed.rebuild(account_ids).await?)
}

/// The process entry point shared by the `agora-feed` binary and `agora serve --target feed`:
/// telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("feed", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}
