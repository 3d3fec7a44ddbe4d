//! agora-gateway: the public edge. It speaks the Mastodon client API over HTTP, validates
//! access tokens locally (keys and revocations cached from the user service), enforces scopes
//! and rate limits, and maps REST to gRPC calls on the services.
//!
//! It owns no data and must never decide who a caller is from anything but a verified token;
//! services receive the token itself. It never logs tokens, passwords or secrets.

pub mod auth;
pub mod cache;
pub mod conn;
pub mod edge;
pub mod entities;
pub mod error;
pub mod paging;
pub mod params;
pub mod ratelimit;
pub mod render;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_kit::Shutdown;
use agora_kit::config::{self, ConfigError, Env};
use agora_kit::health::Health;
use agora_kit::jwt::Verifier;
use agora_proto::feed::v1::feed_service_client::FeedServiceClient;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use agora_proto::user::v1::user_service_client::UserServiceClient;
use axum::Router;
use axum::routing::{get, post};
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tower::{Layer as _, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::ApiError;
use crate::ratelimit::Limit;
use crate::state::AppState;

pub const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Gateway settings (`AGORA_GATEWAY_*`, plus shared `AGORA_*`).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The user service's gRPC URL (`AGORA_GATEWAY_USER_URL`).
    pub user_url: String,
    /// `AGORA_GATEWAY_POST_URL`, `AGORA_GATEWAY_GRAPH_URL`, `AGORA_GATEWAY_FEED_URL`,
    /// `AGORA_GATEWAY_NOTIFICATION_URL`.
    pub post_url: String,
    pub graph_url: String,
    pub feed_url: String,
    pub notification_url: String,
    /// `memory://` or `redis://…` (`AGORA_GATEWAY_RATE_LIMIT_URL`).
    pub rate_limit_url: String,
    /// Public base URL, e.g. `https://social.example` (`AGORA_PUBLIC_URL`).
    pub public_url: String,
    /// Host part of `public_url`.
    pub domain: String,
    pub title: String,
    pub contact_email: String,
    pub registrations_open: bool,
    /// Peers whose `X-Forwarded-For` is believed (`AGORA_GATEWAY_TRUSTED_PROXIES`, CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limit_ip: Option<Limit>,
    pub limit_account: Option<Limit>,
    pub limit_registration: Option<Limit>,
    /// Sign-in attempts (`POST /oauth/token`, `POST /oauth/authorize`) per address.
    pub limit_sign_in: Option<Limit>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `*` or a comma-separated list of origins.
    pub cors_origins: String,
    /// Header, idle, per-address and shutdown limits of client connections.
    pub connections: conn::Limits,
    /// Epochs guarding the account cache (`AGORA_EPOCHS_URL`; none: nothing cached).
    pub epochs_url: String,
    /// The live backplane the streaming API hears on (`AGORA_LIVE_URL`: none, `memory://NAME`,
    /// `redis://…`).
    pub live_url: String,
    /// Open streams per account (`AGORA_GATEWAY_STREAMS_PER_ACCOUNT`, default 16).
    pub streams_per_account: usize,
}

fn millis(env: &dyn Env, key: &str, default: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(positive(env, key, default as usize)? as u64))
}

fn positive(env: &dyn Env, key: &str, default: usize) -> Result<usize, ConfigError> {
    let n: usize = config::parse(env, key, default)?;
    if n == 0 {
        return Err(ConfigError::new(key, "0", "must be positive"));
    }
    Ok(n)
}

fn limit(env: &dyn Env, key: &str, default: &str) -> Result<Option<Limit>, ConfigError> {
    let raw = config::string(env, key, default);
    Limit::parse(&raw).map_err(|e| ConfigError::new(key, &raw, e))
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let public_url =
            config::string(env, "AGORA_PUBLIC_URL", "http://127.0.0.1:8080").trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&public_url).map_err(|e| ConfigError::new("AGORA_PUBLIC_URL", &public_url, e))?;
        let domain = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(ConfigError::new("AGORA_PUBLIC_URL", &public_url, "needs a host")),
        };
        let raw_proxies = config::string(env, "AGORA_GATEWAY_TRUSTED_PROXIES", "");
        let trusted_proxies = raw_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new("AGORA_GATEWAY_TRUSTED_PROXIES", &raw_proxies, e))?;
        Ok(Self {
            listen: config::socket_addr(env, "AGORA_GATEWAY_LISTEN", "127.0.0.1:8080")?,
            admin_listen: config::socket_addr(env, "AGORA_GATEWAY_ADMIN_LISTEN", "127.0.0.1:9100")?,
            user_url: config::service_url(env, "AGORA_GATEWAY_USER_URL", "http://127.0.0.1:50051")?,
            post_url: config::service_url(env, "AGORA_GATEWAY_POST_URL", "http://127.0.0.1:50052")?,
            graph_url: config::service_url(env, "AGORA_GATEWAY_GRAPH_URL", "http://127.0.0.1:50053")?,
            feed_url: config::service_url(env, "AGORA_GATEWAY_FEED_URL", "http://127.0.0.1:50054")?,
            notification_url: config::service_url(env, "AGORA_GATEWAY_NOTIFICATION_URL", "http://127.0.0.1:50055")?,
            rate_limit_url: config::url(
                env,
                "AGORA_GATEWAY_RATE_LIMIT_URL",
                "memory://",
                &["memory", "redis", "rediss"],
            )?,
            public_url,
            domain,
            title: config::string(env, "AGORA_INSTANCE_TITLE", "Agora"),
            contact_email: config::string(env, "AGORA_INSTANCE_EMAIL", ""),
            registrations_open: config::boolean(env, "AGORA_REGISTRATIONS_OPEN", true)?,
            trusted_proxies: trusted_proxies.clone(),
            limit_ip: limit(env, "AGORA_GATEWAY_RATE_LIMIT_IP", "300/300")?,
            limit_account: limit(env, "AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "300/300")?,
            limit_registration: limit(env, "AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "5/1800")?,
            limit_sign_in: limit(env, "AGORA_GATEWAY_RATE_LIMIT_SIGN_IN", "25/300")?,
            max_body_bytes: config::parse(env, "AGORA_GATEWAY_MAX_BODY_BYTES", 1024 * 1024)?,
            request_timeout: Duration::from_millis(config::parse(env, "AGORA_GATEWAY_REQUEST_TIMEOUT_MS", 15_000)?),
            cors_origins: config::string(env, "AGORA_GATEWAY_CORS_ORIGINS", "*"),
            connections: conn::Limits {
                header_timeout: millis(env, "AGORA_GATEWAY_HEADER_TIMEOUT_MS", 10_000)?,
                idle_timeout: millis(env, "AGORA_GATEWAY_IDLE_TIMEOUT_MS", 60_000)?,
                per_address: positive(env, "AGORA_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", 256)?,
                shutdown_grace: millis(env, "AGORA_GATEWAY_SHUTDOWN_GRACE_MS", 10_000)?,
                trusted: trusted_proxies,
            },
            epochs_url: agora_client::epoch::url_from_env(env),
            live_url: agora_client::live::url_from_env(env),
            streams_per_account: positive(env, "AGORA_GATEWAY_STREAMS_PER_ACCOUNT", 16)?,
        })
    }

    pub fn streaming_url(&self) -> String {
        self.public_url.replacen("http", "ws", 1)
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

fn cors(config: &Config) -> CorsLayer {
    let origins = if config.cors_origins.trim() == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.cors_origins.split(',').filter_map(|o| o.trim().parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            http::header::LINK,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> http::Response<axum::body::Body> {
    metrics::counter!("agora_gateway_panics_total").increment(1);
    tracing::error!("handler panicked");
    axum::response::IntoResponse::into_response(ApiError::internal())
}

/// The public API router (without trailing-slash normalisation, which wraps it in [`serve`]).
pub fn router(state: AppState, health: Health) -> Router {
    use axum::routing::{delete, put};
    use routes::{
        accounts, conversations, graph, instance, notifications, oauth, push, statuses, streaming, timelines,
    };
    let api = Router::new()
        .route("/api/v1/apps", post(oauth::create_app))
        .route("/api/v1/apps/verify_credentials", get(oauth::verify_app))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/authorize", get(oauth::authorize_page).post(oauth::authorize_submit))
        .route("/api/v1/accounts", post(accounts::register).get(accounts::batch))
        .route("/api/v1/accounts/verify_credentials", get(accounts::verify_credentials))
        .route("/api/v1/accounts/update_credentials", axum::routing::patch(accounts::update_credentials))
        .route("/api/v1/accounts/lookup", get(accounts::lookup))
        .route("/api/v1/accounts/relationships", get(graph::relationships))
        .route("/api/v1/accounts/familiar_followers", get(graph::familiar_followers))
        .route("/api/v1/accounts/{id}", get(accounts::get))
        .route("/api/v1/accounts/{id}/statuses", get(timelines::account))
        .route("/api/v1/accounts/{id}/followers", get(graph::followers))
        .route("/api/v1/accounts/{id}/following", get(graph::following))
        .route("/api/v1/accounts/{id}/follow", post(graph::follow))
        .route("/api/v1/accounts/{id}/unfollow", post(graph::unfollow))
        .route("/api/v1/accounts/{id}/remove_from_followers", post(graph::remove_from_followers))
        .route("/api/v1/accounts/{id}/block", post(graph::block))
        .route("/api/v1/accounts/{id}/unblock", post(graph::unblock))
        .route("/api/v1/accounts/{id}/mute", post(graph::mute))
        .route("/api/v1/accounts/{id}/unmute", post(graph::unmute))
        .route("/api/v1/follow_requests", get(graph::follow_requests))
        .route("/api/v1/follow_requests/{id}/authorize", post(graph::authorize))
        .route("/api/v1/follow_requests/{id}/reject", post(graph::reject))
        .route("/api/v1/blocks", get(graph::blocks))
        .route("/api/v1/mutes", get(graph::mutes))
        .route("/api/v2/suggestions", get(graph::suggestions))
        .route("/api/v1/suggestions", get(graph::suggestions_v1))
        .route("/api/v1/suggestions/{id}", delete(graph::dismiss_suggestion))
        .route("/api/v1/statuses", post(statuses::create).get(statuses::batch))
        .route("/api/v1/statuses/{id}", get(statuses::get).delete(statuses::delete).put(statuses::edit))
        .route("/api/v1/statuses/{id}/context", get(statuses::context))
        .route("/api/v1/statuses/{id}/history", get(statuses::history))
        .route("/api/v1/statuses/{id}/source", get(statuses::source))
        .route("/api/v1/statuses/{id}/favourite", post(statuses::favourite))
        .route("/api/v1/statuses/{id}/unfavourite", post(statuses::unfavourite))
        .route("/api/v1/statuses/{id}/reblog", post(statuses::reblog))
        .route("/api/v1/statuses/{id}/unreblog", post(statuses::unreblog))
        .route("/api/v1/statuses/{id}/bookmark", post(statuses::bookmark))
        .route("/api/v1/statuses/{id}/unbookmark", post(statuses::unbookmark))
        .route("/api/v1/statuses/{id}/pin", post(statuses::pin))
        .route("/api/v1/statuses/{id}/unpin", post(statuses::unpin))
        .route("/api/v1/statuses/{id}/favourited_by", get(statuses::favourited_by))
        .route("/api/v1/statuses/{id}/reblogged_by", get(statuses::reblogged_by))
        .route("/api/v1/agora/statuses/{id}/reactions", get(statuses::reactions))
        .route("/api/v1/agora/statuses/{id}/reactions/{emoji}", put(statuses::react).delete(statuses::unreact))
        .route("/api/v1/favourites", get(statuses::favourites))
        .route("/api/v1/bookmarks", get(statuses::bookmarks))
        .route("/api/v1/timelines/home", get(timelines::home))
        .route("/api/v1/timelines/public", get(timelines::public))
        .route("/api/v1/timelines/tag/{tag}", get(timelines::tag))
        .route("/api/v1/trends", get(timelines::trending_tags))
        .route("/api/v1/trends/tags", get(timelines::trending_tags))
        .route("/api/v1/trends/statuses", get(timelines::trending_statuses))
        .route("/api/v1/markers", get(timelines::get_markers).post(timelines::save_markers))
        .route("/api/v1/conversations", get(conversations::list))
        .route("/api/v1/conversations/{id}", delete(conversations::remove))
        .route("/api/v1/conversations/{id}/read", post(conversations::read))
        .route("/api/v1/notifications", get(notifications::list))
        .route("/api/v1/notifications/clear", post(notifications::clear))
        .route("/api/v1/notifications/unread_count", get(notifications::unread_count))
        .route("/api/v1/notifications/{id}", get(notifications::get))
        .route("/api/v1/notifications/{id}/dismiss", post(notifications::dismiss))
        .route("/api/v2/notifications", get(notifications::grouped))
        .route("/api/v1/push/subscription", post(push::create).get(push::get).put(push::update).delete(push::delete))
        .route("/api/v1/streaming/health", get(streaming::health))
        .route("/api/v1/streaming/user", get(streaming::user))
        .route("/api/v1/streaming/user/notification", get(streaming::user_notification))
        .route("/api/v1/streaming/direct", get(streaming::direct))
        .route("/api/v1/streaming/public", get(streaming::public))
        .route("/api/v1/streaming/public/local", get(streaming::public_local))
        .route("/api/v1/streaming/public/media", get(streaming::public_media))
        .route("/api/v1/streaming/hashtag", get(streaming::hashtag))
        .route("/api/v1/streaming/hashtag/local", get(streaming::hashtag_local))
        .route("/api/v1/streaming", get(streaming::websocket))
        .route("/api/v1/agora/accounts/password", post(accounts::change_password))
        .route("/api/v1/instance", get(instance::v1))
        .route("/api/v2/instance", get(instance::v2))
        .route("/.well-known/nodeinfo", get(instance::nodeinfo_links))
        .route("/nodeinfo/2.0", get(instance::nodeinfo))
        .route("/.well-known/oauth-authorization-server", get(instance::oauth_metadata))
        .route("/api/openapi.json", get(instance::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(http::StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::rate_limit))
        .layer(axum::middleware::from_fn(edge::observe))
        .with_state(state.clone());
    let probes = Router::new()
        .route("/healthz", get(agora_kit::health::healthz))
        .route("/readyz", get(agora_kit::health::readyz))
        .with_state(health);
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    api.merge(probes).layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(SetRequestIdLayer::x_request_id(edge::RandomRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(cors(&state.config))
            .layer(axum::extract::DefaultBodyLimit::max(max_body))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(http::StatusCode::SERVICE_UNAVAILABLE, timeout)),
    )
}

/// A gateway ready to serve.
pub struct Gateway {
    pub state: AppState,
    pub health: Health,
}

impl Gateway {
    /// Connects to the user service (lazily) and the rate limiter, and starts keeping the token
    /// keys and revocations fresh until `shutdown`.
    pub async fn build(config: Config, shutdown: Shutdown) -> anyhow::Result<Self> {
        agora_kit::metrics::install();
        let channel = agora_kit::grpc::channel(&config.user_url)?;
        let user = UserServiceClient::new(channel);
        let limiter = ratelimit::connect(&config.rate_limit_url).await?;
        let verifier = Verifier::new(&config.public_url, "agora", auth::shared(user.clone()));
        if let Err(e) = verifier.prime().await {
            tracing::warn!(error = %e, "token keys not loaded yet; retrying in the background");
        }
        verifier.spawn_refresh(Duration::from_secs(1), shutdown.clone());

        let health = Health::new();
        let v = Arc::clone(&verifier);
        health.add_check("user-service", move || {
            let v = Arc::clone(&v);
            async move { v.refresh_keys().await.map_err(|e| e.to_string()) }
        });
        let l = Arc::clone(&limiter);
        health.add_check("rate-limiter", move || {
            let l = Arc::clone(&l);
            async move { l.ping().await.map_err(|e| e.to_string()) }
        });
        let post = PostServiceClient::new(agora_kit::grpc::channel(&config.post_url)?);
        let graph = GraphServiceClient::new(agora_kit::grpc::channel(&config.graph_url)?);
        let feed = FeedServiceClient::new(agora_kit::grpc::channel(&config.feed_url)?);
        let notification = NotificationServiceClient::new(agora_kit::grpc::channel(&config.notification_url)?);
        let epochs = agora_client::epoch::connect(&config.epochs_url).await?;
        let facts = Arc::new(agora_client::graph_facts::GraphFacts::new(graph.clone(), epochs.clone()));
        let accounts = Arc::new(cache::AccountCache::new(epochs));
        let live = agora_client::live::connect(&config.live_url).await?;
        let streams = routes::streaming::Streams::new(config.streams_per_account);
        let state = AppState {
            config: Arc::new(config),
            user,
            post,
            graph,
            feed,
            notification,
            verifier,
            limiter,
            accounts,
            facts,
            live,
            streams,
            shutdown,
            vapid: Arc::default(),
        };
        Ok(Self { state, health })
    }

    /// Serves HTTP until `shutdown`, then stops accepting and drains in-flight requests for
    /// the configured grace period, after which what is left is closed.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let limits = self.state.config.connections.clone();
        let app = Router::new()
            .fallback_service(NormalizePathLayer::trim_trailing_slash().layer(router(self.state, self.health.clone())));
        let drain = self.health.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            drain.set_draining();
        });
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        conn::serve(listener, app, limits, shutdown).await;
        Ok(())
    }
}

/// Runs the gateway alone, with its admin endpoint.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let admin = TcpListener::bind(config.admin_listen).await?;
    let gateway = Gateway::build(config, shutdown.clone()).await?;
    let admin_task = tokio::spawn(agora_kit::health::serve_admin(admin, gateway.health.clone(), shutdown.clone()));
    gateway.serve(listener, shutdown).await?;
    let _ = admin_task.await;
    Ok(())
}

/// The process entry point shared by the `agora-gateway` binary and `agora serve --target gateway`:
/// telemetry, settings from `env`, bind, run until SIGTERM/SIGINT, drain.
pub async fn serve_from_env(env: &dyn Env) -> anyhow::Result<()> {
    let _telemetry = agora_kit::telemetry::init("gateway", env);
    let config = Config::from_env(env)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = Shutdown::new();
    tokio::spawn(agora_kit::shutdown::on_signal(shutdown.clone()));
    run(config, listener, shutdown).await
}
