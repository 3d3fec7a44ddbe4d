//! agora-testkit: one builder that starts any set of Agora services and the gateway in this
//! process on ephemeral ports — on the embedded stores (SQLite, in-process bus, in-memory
//! limiter) or on the real servers named by `AGORA_TEST_*` variables — and hands back their
//! addresses and clients. `agora dev` is the same composition with a data directory.
//!
//! It must never hold a fixed port or sleep waiting for one: it binds listeners itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agora_kit::Shutdown;
use agora_kit::config::{Env, MapEnv};
use agora_proto::user::v1::user_service_client::UserServiceClient;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Where the stores and the bus live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite files in a data directory, the in-process bus, in-memory rate limits.
    Embedded,
    /// Real servers: a fresh database is created on `postgres_url` for each platform.
    Real { postgres_url: String, redis_url: String, kafka_url: String },
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
        })
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
        let (database_url, bus_url, limiter_url) = match &self.backend {
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
                (format!("sqlite://{}/user.db", dir.display()), "memory://".to_owned(), "memory://".to_owned())
            }
            Backend::Real { postgres_url, redis_url, kafka_url } => {
                (fresh_postgres_database(postgres_url).await?, kafka_url.clone(), redis_url.clone())
            }
        };
        let gateway_listener = match self.gateway_listener {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await?,
        };
        let gateway_addr = gateway_listener.local_addr()?;
        let public_url = self.public_url.clone().unwrap_or_else(|| format!("http://{gateway_addr}"));
        let user_listener = TcpListener::bind("127.0.0.1:0").await?;
        let user_addr = user_listener.local_addr()?;
        for (k, v) in [
            ("AGORA_USER_DATABASE_URL", database_url.as_str()),
            ("AGORA_BUS_URL", bus_url.as_str()),
            ("AGORA_PUBLIC_URL", public_url.as_str()),
            ("AGORA_GATEWAY_RATE_LIMIT_URL", limiter_url.as_str()),
        ] {
            if env.get(k).is_none() {
                env = env.with(k, v);
            }
        }
        env = env.with("AGORA_GATEWAY_USER_URL", format!("http://{user_addr}"));

        // An explicit setting wins over the backend's default (e.g. embedded stores on Kafka).
        let bus_url = env.get("AGORA_BUS_URL").unwrap_or(bus_url);
        let bus = agora_events::connect(&bus_url).await?;
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();

        let user_config = agora_user::Config::from_env(&env)?;
        let user = agora_user::UserService::build(&user_config, Arc::clone(&bus), shutdown.clone()).await?;
        let mut health = vec![user.health.clone()];
        let accounts = Arc::clone(&user.accounts);
        tasks.push(tokio::spawn(user.serve(user_listener, shutdown.clone())));

        let mut gateway_url = None;
        if self.with_gateway {
            let gw_config = agora_gateway::Config::from_env(&env)?;
            let gateway = agora_gateway::Gateway::build(gw_config, shutdown.clone()).await?;
            health.push(gateway.health.clone());
            tasks.push(tokio::spawn(gateway.serve(gateway_listener, shutdown.clone())));
            gateway_url = Some(format!("http://{gateway_addr}"));
        }
        let user_client = UserServiceClient::new(agora_kit::grpc::channel(&format!("http://{user_addr}"))?);
        Ok(Platform {
            gateway_url,
            gateway_addr,
            public_url,
            user_addr,
            user: user_client,
            accounts,
            bus,
            database_url,
            health,
            shutdown,
            tasks,
            _temp: temp,
        })
    }
}

/// A running platform. Dropping it stops everything; [`Platform::stop`] waits for the drain.
pub struct Platform {
    pub gateway_url: Option<String>,
    pub gateway_addr: SocketAddr,
    pub public_url: String,
    pub user_addr: SocketAddr,
    pub user: UserServiceClient<Channel>,
    /// The user service's domain object, for tests that reach past gRPC.
    pub accounts: Arc<agora_user::Accounts>,
    pub bus: Arc<dyn agora_events::EventBus>,
    pub database_url: String,
    pub health: Vec<agora_kit::health::Health>,
    pub shutdown: Shutdown,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _temp: Option<TempDir>,
}

impl Platform {
    /// The gateway's base URL (panics if started without one).
    pub fn url(&self) -> &str {
        self.gateway_url.as_deref().unwrap_or_default()
    }

    /// Signals shutdown and waits for every server to drain.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
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
