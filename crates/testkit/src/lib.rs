//! agora-testkit: one builder that starts any set of Agora services and the gateway in this
//! process on ephemeral ports — on the embedded stores (SQLite, in-process bus, in-memory
//! limiter) or on the real servers named by `AGORA_TEST_*` variables — and hands back their
//! addresses and clients. `agora dev` is the same composition with a data directory.
//!
//! It must never hold a fixed port or sleep waiting for one: it binds listeners itself.

pub mod api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agora_kit::Shutdown;
use agora_kit::config::{Env, MapEnv};
use agora_kit::grpc::{Channel, GrpcListener};
use agora_proto::user::v1::user_service_client::UserServiceClient;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the stores and the bus live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite files in a data directory, the embedded durable bus (`bus.db`), in-memory rate limits.
    Embedded,
    /// Real servers: a fresh database is created on `postgres_url` for each platform; with
    /// `scylla_url`, the graph, feed and notification stores live in fresh keyspaces there instead.
    Real { postgres_url: String, redis_url: String, kafka_url: String, scylla_url: Option<String> },
}

impl Backend {
    /// The real servers from `AGORA_TEST_POSTGRES_URL`, `AGORA_TEST_REDIS_URL` and
    /// `AGORA_TEST_KAFKA_URL`, or `None` when any is unset.
    pub fn real_from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Backend::Real {
            postgres_url: get("AGORA_TEST_POSTGRES_URL")?,
            redis_url: get("AGORA_TEST_REDIS_URL")?,
            kafka_url: get("AGORA_TEST_KAFKA_URL")?,
            scylla_url: None,
        })
    }

    /// [`Self::real_from_env`] with the graph, feed and notification stores on `AGORA_TEST_SCYLLA_URL`.
    pub fn real_with_scylla_from_env() -> Option<Self> {
        let scylla = std::env::var("AGORA_TEST_SCYLLA_URL").ok().filter(|v| !v.is_empty())?;
        match Self::real_from_env()? {
            Backend::Real { postgres_url, redis_url, kafka_url, .. } => {
                Some(Backend::Real { postgres_url, redis_url, kafka_url, scylla_url: Some(scylla) })
            }
            Backend::Embedded => None,
        }
    }
}

/// Reads a test server URL; when unset, fails in CI and prints a skip line locally.
pub fn test_server(var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
            panic!("{var} is not set: CI must run this test against a real server (scripts/test.sh sets it)")
        }
        None => {
            eprintln!(
                "SKIPPED: {var} is not set; run scripts/test.sh (or `scripts/infra.sh up`) to test against a real server"
            );
            None
        }
    }
}

/// Creates an empty database on the server of `admin_url` and returns its URL.
pub async fn fresh_postgres_database(admin_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let name = format!("agora_t_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.context("connecting to the test postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    conn.close().await?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A store URL for a keyspace of its own on the ScyllaDB (or Cassandra) node of `base`
/// (`scylla://host:port`): every test gets an empty keyspace, created by the store on first use.
pub fn fresh_scylla_keyspace(base: &str) -> String {
    let base = base.trim_end_matches('/');
    format!("{base}/t{:016x}?replication_factor=1", rand::random::<u64>())
}

/// Waits until `ping` succeeds (a store connecting and migrating in the background), at most 60 s.
pub async fn wait_until_ready<F, Fut, E>(mut ping: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match ping().await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => anyhow::bail!("not ready after 60 s: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Builds a platform: which services, on which backend, where.
pub struct PlatformBuilder {
    backend: Backend,
    data_dir: Option<PathBuf>,
    gateway_listener: Option<TcpListener>,
    public_url: Option<String>,
    env: MapEnv,
    with_gateway: bool,
}

impl PlatformBuilder {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            data_dir: None,
            gateway_listener: None,
            public_url: None,
            env: MapEnv::new(),
            with_gateway: true,
        }
    }

    /// Embedded stores in a temporary directory.
    pub fn embedded() -> Self {
        Self::new(Backend::Embedded)
    }

    /// Keeps embedded data in `dir` (created if missing) instead of a temporary directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Serves the gateway on this listener instead of an ephemeral one.
    pub fn gateway_listener(mut self, listener: TcpListener) -> Self {
        self.gateway_listener = Some(listener);
        self
    }

    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// Sets any `AGORA_*` variable for the services started (e.g. rate limits).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.env = self.env.with(key, value);
        self
    }

    /// Starts only the services, not the gateway.
    pub fn without_gateway(mut self) -> Self {
        self.with_gateway = false;
        self
    }

    pub async fn start(self) -> anyhow::Result<Platform> {
        let shutdown = Shutdown::new();
        let mut env = self.env.clone();
        let mut temp = None;
        // One database per service: a service owns its data.
        let (databases, bus_url, cache_url) = match &self.backend {
            Backend::Embedded => {
                let dir = match &self.data_dir {
                    Some(d) => d.clone(),
                    None => {
                        let t = tempdir()?;
                        let p = t.0.clone();
                        temp = Some(t);
                        p
                    }
                };
                std::fs::create_dir_all(&dir).with_context(|| format!("creating data directory {}", dir.display()))?;
                let db = |name: &str| format!("sqlite://{}/{name}.db", dir.display());
                // The bus is a durable log beside the stores, so a crash loses no committed event.
                let bus = format!("sqlite://{}/bus.db", dir.display());
                ([db("user"), db("post"), db("graph"), db("feed"), db("notification")], bus, "memory://".to_owned())
            }
            Backend::Real { postgres_url, redis_url, kafka_url, scylla_url } => {
                let mut dbs = Vec::new();
                for service in ["user", "post", "graph", "feed", "notification"] {
                    dbs.push(match scylla_url {
                        Some(base) if matches!(service, "graph" | "feed" | "notification") => {
                            fresh_scylla_keyspace(base)
                        }
                        _ => fresh_postgres_database(postgres_url).await?,
                    });
                }
                // Platforms sharing one broker must not consume each other's events.
                let sep = if kafka_url.contains('?') { '&' } else { '?' };
                let bus =
                    format!("{kafka_url}{sep}namespace=t{:012x}&session_timeout_ms=2000", rand::random::<u64>() >> 16);
                let dbs: [String; 5] = dbs.try_into().map_err(|_| anyhow::anyhow!("five databases"))?;
                (dbs, bus, redis_url.clone())
            }
        };
        let gateway_listener = match self.gateway_listener {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await?,
        };
        let gateway_addr = gateway_listener.local_addr()?;
        let public_url = self.public_url.clone().unwrap_or_else(|| format!("http://{gateway_addr}"));
        let [user_db, post_db, graph_db, feed_db, notification_db] = databases;
        for (k, v) in [
            ("AGORA_USER_DATABASE_URL", user_db.as_str()),
            ("AGORA_POST_DATABASE_URL", post_db.as_str()),
            ("AGORA_GRAPH_DATABASE_URL", graph_db.as_str()),
            ("AGORA_FEED_DATABASE_URL", feed_db.as_str()),
            ("AGORA_NOTIFICATION_DATABASE_URL", notification_db.as_str()),
            ("AGORA_FEED_CACHE_URL", cache_url.as_str()),
            ("AGORA_BUS_URL", bus_url.as_str()),
            ("AGORA_PUBLIC_URL", public_url.as_str()),
            ("AGORA_GATEWAY_RATE_LIMIT_URL", cache_url.as_str()),
        ] {
            if env.get(k).is_none() {
                env = env.with(k, v);
            }
        }
        // The services call each other in-process, with no socket and no port. Names are unique
        // per platform, so platforms in one test binary never reach each other's services.
        let tag = format!("{:012x}", rand::random::<u64>() >> 16);
        let names = ["user", "post", "graph", "feed", "notification"].map(|s| format!("{s}-{tag}"));
        let [user_url, post_url, graph_url, feed_url, notification_url] =
            names.clone().map(|n| format!("{}{n}", agora_kit::grpc::IN_PROCESS_SCHEME));
        let service_names = names.clone();
        // The epochs the services' caches are guarded by: in-process (one map per platform) for
        // embedded stores, Redis beside the real engines.
        let epochs_url = match &self.backend {
            Backend::Embedded => format!("memory://epochs-{tag}"),
            Backend::Real { redis_url, .. } => redis_url.clone(),
        };
        if env.get("AGORA_EPOCHS_URL").is_none() {
            env = env.with("AGORA_EPOCHS_URL", &epochs_url);
        }
        // The live backplane from the notification service to the gateway's streams: in-process
        // for embedded stores, Redis pub/sub beside the real engines, in a namespace of this
        // platform's (the public topics are the same name on every platform sharing the server).
        let live_url = match &self.backend {
            Backend::Embedded => format!("memory://live-{tag}"),
            Backend::Real { redis_url, .. } => {
                let sep = if redis_url.contains('?') { '&' } else { '?' };
                format!("{redis_url}{sep}namespace={tag}")
            }
        };
        if env.get("AGORA_LIVE_URL").is_none() {
            env = env.with("AGORA_LIVE_URL", &live_url);
        }
        let [user_name, post_name, graph_name, feed_name, notification_name] = names;
        for (k, v) in [
            ("AGORA_GATEWAY_USER_URL", &user_url),
            ("AGORA_GATEWAY_POST_URL", &post_url),
            ("AGORA_GATEWAY_GRAPH_URL", &graph_url),
            ("AGORA_GATEWAY_FEED_URL", &feed_url),
            ("AGORA_GATEWAY_NOTIFICATION_URL", &notification_url),
            ("AGORA_NOTIFICATION_USER_URL", &user_url),
            ("AGORA_NOTIFICATION_POST_URL", &post_url),
            ("AGORA_NOTIFICATION_GRAPH_URL", &graph_url),
            ("AGORA_POST_USER_URL", &user_url),
            ("AGORA_POST_GRAPH_URL", &graph_url),
            ("AGORA_GRAPH_USER_URL", &user_url),
            ("AGORA_FEED_USER_URL", &user_url),
            ("AGORA_FEED_GRAPH_URL", &graph_url),
            ("AGORA_FEED_POST_URL", &post_url),
        ] {
            env = env.with(k, v.as_str());
        }

        // An explicit setting wins over the backend's default (e.g. embedded stores on Kafka).
        let bus_url = env.get("AGORA_BUS_URL").unwrap_or(bus_url);
        let bus = agora_events::connect(&bus_url).await?;
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();

        let user_config = agora_user::Config::from_env(&env)?;
        let user = agora_user::UserService::build(&user_config, Arc::clone(&bus), shutdown.clone()).await?;
        let mut health = vec![user.health.clone()];
        let accounts = Arc::clone(&user.accounts);
        tasks.push(tokio::spawn(user.serve(GrpcListener::in_process(&user_name), shutdown.clone())));
        let user_client = UserServiceClient::new(agora_kit::grpc::channel(&user_url)?);
        let verifier = agora_client::user_service_verifier(user_client.clone(), &public_url, shutdown.clone());

        let graph_config = agora_graph::Config::from_env(&env)?;
        let graph =
            agora_graph::GraphService::build(&graph_config, Arc::clone(&bus), Arc::clone(&verifier), shutdown.clone())
                .await?;
        health.push(graph.health.clone());
        let graph_domain = Arc::clone(&graph.graph);
        tasks.push(tokio::spawn(graph.serve(GrpcListener::in_process(&graph_name), shutdown.clone())));

        let post_config = agora_post::Config::from_env(&env)?;
        // The post and feed services ask about the same viewers: in one process they share one
        // cache of viewers' graph facts.
        let graph_facts = agora_client::graph_facts::GraphFacts::connect(&graph_url, &post_config.epochs_url)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let (directory, relations) = agora_post::grpc_dependencies_with(&post_config, Arc::clone(&graph_facts))?;
        let post = agora_post::PostService::build(
            &post_config,
            Arc::clone(&bus),
            Arc::clone(&verifier),
            directory,
            relations,
            shutdown.clone(),
        )
        .await?;
        health.push(post.health.clone());
        let posts = Arc::clone(&post.posts);
        tasks.push(tokio::spawn(post.serve(GrpcListener::in_process(&post_name), shutdown.clone())));

        let feed_config = agora_feed::Config::from_env(&env)?;
        let feed_shutdown = shutdown.child_token();
        let feed = FeedHandle::start(
            &feed_config,
            &bus,
            &verifier,
            &graph_facts,
            GrpcListener::in_process(&feed_name),
            feed_shutdown,
        )
        .await?;
        health.push(feed.health.clone());

        let notification_config = agora_notification::Config::from_env(&env)?;
        let notification = NotificationHandle::start(
            &notification_config,
            &bus,
            &verifier,
            GrpcListener::in_process(&notification_name),
            shutdown.child_token(),
        )
        .await?;
        health.push(notification.health.clone());

        let mut gateway_url = None;
        if self.with_gateway {
            let gw_config = agora_gateway::Config::from_env(&env)?;
            let gateway = agora_gateway::Gateway::build(gw_config, shutdown.clone()).await?;
            health.push(gateway.health.clone());
            tasks.push(tokio::spawn(gateway.serve(gateway_listener, shutdown.clone())));
            gateway_url = Some(format!("http://{gateway_addr}"));
        }
        Ok(Platform {
            service_names,
            gateway_url,
            gateway_addr,
            public_url,
            user_url,
            user: user_client,
            accounts,
            posts,
            graph: graph_domain,
            feed: Some(feed),
            feed_config,
            notification: Some(notification),
            notification_config,
            graph_facts,
            verifier,
            bus,
            backend: self.backend.clone(),
            databases: [
                ("user", user_db),
                ("post", post_db),
                ("graph", graph_db),
                ("feed", feed_db),
                ("notification", notification_db),
            ]
            .into_iter()
            .collect(),
            health,
            shutdown,
            tasks,
            _temp: temp,
        })
    }
}

/// The feed service of a platform, which tests stop and start on its own (to show that a
/// consumer outage loses nothing).
pub struct FeedHandle {
    pub feed: Arc<agora_feed::Feed>,
    pub health: agora_kit::health::Health,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl FeedHandle {
    async fn start(
        config: &agora_feed::Config,
        bus: &Arc<dyn agora_events::EventBus>,
        verifier: &Arc<agora_kit::jwt::Verifier>,
        graph_facts: &Arc<agora_client::graph_facts::GraphFacts>,
        listener: GrpcListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let (graph, posts) = agora_feed::grpc_dependencies_with(config, Arc::clone(graph_facts))?;
        let svc = agora_feed::FeedService::build(
            config,
            Arc::clone(bus),
            Arc::clone(verifier),
            graph,
            posts,
            shutdown.clone(),
        )
        .await?;
        let feed = Arc::clone(&svc.feed);
        let health = svc.health.clone();
        let task = tokio::spawn(svc.serve(listener, shutdown.clone()));
        Ok(Self { feed, health, shutdown, task })
    }
}

/// The notification service of a platform, which tests stop and start on its own (to show that
/// an outage loses and duplicates no notification).
pub struct NotificationHandle {
    pub notifications: Arc<agora_notification::Notifications>,
    pub health: agora_kit::health::Health,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl NotificationHandle {
    async fn start(
        config: &agora_notification::Config,
        bus: &Arc<dyn agora_events::EventBus>,
        verifier: &Arc<agora_kit::jwt::Verifier>,
        listener: GrpcListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let svc = agora_notification::NotificationService::build(
            config,
            Arc::clone(bus),
            Arc::clone(verifier),
            shutdown.clone(),
        )
        .await?;
        let notifications = Arc::clone(&svc.notifications);
        let health = svc.health.clone();
        let task = tokio::spawn(svc.serve(listener, shutdown.clone()));
        Ok(Self { notifications, health, shutdown, task })
    }
}

/// A running platform. Dropping it stops everything; [`Platform::stop`] waits for the drain.
pub struct Platform {
    /// The in-process names of the user, post, graph, feed and notification services.
    service_names: [String; 5],
    pub gateway_url: Option<String>,
    pub gateway_addr: SocketAddr,
    pub public_url: String,
    /// The user service's in-process URL (`inproc://…`), for more clients in this process.
    pub user_url: String,
    pub user: UserServiceClient<Channel>,
    /// The services' domain objects, for tests that reach past gRPC.
    pub accounts: Arc<agora_user::Accounts>,
    pub posts: Arc<agora_post::Posts>,
    pub graph: Arc<agora_graph::Graph>,
    /// `None` while stopped by [`Platform::stop_feed`].
    pub feed: Option<FeedHandle>,
    feed_config: agora_feed::Config,
    /// `None` while stopped by [`Platform::stop_notification`].
    pub notification: Option<NotificationHandle>,
    notification_config: agora_notification::Config,
    graph_facts: Arc<agora_client::graph_facts::GraphFacts>,
    pub verifier: Arc<agora_kit::jwt::Verifier>,
    pub bus: Arc<dyn agora_events::EventBus>,
    /// Where the stores and the bus live.
    pub backend: Backend,
    /// Each service's database URL, by service name.
    pub databases: std::collections::HashMap<&'static str, String>,
    pub health: Vec<agora_kit::health::Health>,
    pub shutdown: Shutdown,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _temp: Option<TempDir>,
}

impl Platform {
    /// Internal calls this platform's services have served (gateway to service and service to
    /// service), leaving out the methods named in `except` (e.g. background polls). Read from the
    /// gRPC metrics, whose `server` label tells this platform's services from those of other
    /// platforms in the same test binary.
    pub fn internal_calls(&self, except: &[&str]) -> u64 {
        let servers: Vec<String> = self.service_names.iter().map(|n| format!("server=\"{n}\"")).collect();
        let except: Vec<String> = except.iter().map(|m| format!("method=\"{m}\"")).collect();
        agora_kit::metrics::render()
            .lines()
            .filter(|l| l.starts_with("agora_grpc_requests_total{") && l.contains("side=\"server\""))
            .filter(|l| {
                servers.iter().any(|s| l.contains(s.as_str())) && !except.iter().any(|m| l.contains(m.as_str()))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The gateway's base URL (panics if started without one).
    pub fn url(&self) -> &str {
        self.gateway_url.as_deref().unwrap_or_default()
    }

    /// Stops the feed service (its gRPC server and event consumers) as a crash would leave it:
    /// events published meanwhile wait on the bus.
    pub async fn stop_feed(&mut self) -> anyhow::Result<()> {
        if let Some(f) = self.feed.take() {
            f.shutdown.cancel();
            f.task.await??;
        }
        Ok(())
    }

    /// Starts the feed service again on the same stores.
    pub async fn start_feed(&mut self) -> anyhow::Result<()> {
        if self.feed.is_some() {
            return Ok(());
        }
        let listener = GrpcListener::in_process(&self.service_names[3]);
        let f = FeedHandle::start(
            &self.feed_config,
            &self.bus,
            &self.verifier,
            &self.graph_facts,
            listener,
            self.shutdown.child_token(),
        )
        .await?;
        // Like a readiness probe in front of a restarted replica: no request reaches the feed
        // before its store answers (a ScyllaDB store connects in the background).
        let health = f.health.clone();
        self.feed = Some(f);
        wait_until_ready(|| health.ready()).await
    }

    /// Stops the notification service (its gRPC server and event consumers) as a crash would
    /// leave it: events published meanwhile wait on the bus.
    pub async fn stop_notification(&mut self) -> anyhow::Result<()> {
        if let Some(n) = self.notification.take() {
            n.shutdown.cancel();
            n.task.await??;
        }
        Ok(())
    }

    /// Starts the notification service again on the same store.
    pub async fn start_notification(&mut self) -> anyhow::Result<()> {
        if self.notification.is_some() {
            return Ok(());
        }
        let listener = GrpcListener::in_process(&self.service_names[4]);
        let n = NotificationHandle::start(
            &self.notification_config,
            &self.bus,
            &self.verifier,
            listener,
            self.shutdown.child_token(),
        )
        .await?;
        let health = n.health.clone();
        self.notification = Some(n);
        wait_until_ready(|| health.ready()).await
    }

    /// Signals shutdown and waits for every server to drain.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(f) = self.feed.take() {
            f.task.await??;
        }
        if let Some(n) = self.notification.take() {
            n.task.await??;
        }
        for t in self.tasks.drain(..) {
            t.await??;
        }
        Ok(())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port for a server that a test stops and starts again on the same port (a killed
/// broker or service). It lies below Linux's ephemeral range (32768 and up), so no other test's
/// `bind(127.0.0.1:0)` can take it while the server is down, and it is reserved across test
/// processes by a marker file (reservations older than an hour are reused).
pub fn stable_port() -> u16 {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    let dir = std::env::temp_dir().join("agora-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    for _ in 0..10_000 {
        let port = LOW + (rand::random::<u16>() % (HIGH - LOW));
        let marker = dir.join(port.to_string());
        let stale = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > std::time::Duration::from_secs(3600)));
        if stale {
            let _ = std::fs::remove_file(&marker);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{HIGH} could be reserved under {}", dir.display());
}

/// A directory for a store that must outlive the function that opened it (a conformance
/// backend hands out the store, not the directory). It is named after this process, and the
/// first call in a process removes the directories of test processes that have exited, so they
/// do not pile up in the temp directory.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let base = std::env::temp_dir().join("agora-test-scratch");
    std::fs::create_dir_all(&base)?;
    SWEPT.call_once(|| sweep_exited(&base));
    let p = base.join(format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// Removes the scratch directories under `base` whose process has exited.
fn sweep_exited(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|pid| {
            pid != std::process::id()
                && cfg!(target_os = "linux")
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub fn tempdir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("agora-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

/// Declares a conformance suite: every case runs once per backend, as its own test.
///
/// Each backend is an `async fn name() -> Option<Adapter>` (`None` when its server is not
/// available here; see [`test_server`]); each case is an `async fn case(adapter)`.
///
/// ```text
/// agora_testkit::conformance!(backends: [sqlite, postgres], cases: [creates, reads_back]);
/// ```
#[macro_export]
macro_rules! conformance {
    (backends: [$($backend:ident),* $(,)?], cases: $cases:tt) => {
        $( $crate::conformance!(@backend $backend $cases); )*
    };
    (@backend $backend:ident [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(adapter) = super::$backend().await {
                        super::$case(adapter).await;
                    }
                }
            )*
        }
    };
}
