//! `/healthz` (the process is alive), `/readyz` (its dependencies answer and it is not draining)
//! and `/metrics`, served on each process's admin listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::net::TcpListener;

use crate::Shutdown;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Readiness state of one process: named dependency checks plus a draining flag.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
    draining: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a readiness check; it must answer within two seconds to count as ready.
    pub fn add_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        self.checks.write().push((name.to_owned(), check));
    }

    /// Marks the process as draining: `/readyz` answers 503 so load balancers stop sending work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Runs every check; returns the failures as `name: reason`.
    pub async fn failures(&self) -> Vec<String> {
        if self.draining.load(Ordering::SeqCst) {
            return vec!["draining".to_owned()];
        }
        let checks: Vec<(String, Check)> = self.checks.read().clone();
        let runs = checks.into_iter().map(|(name, check)| async move {
            match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{name}: {e}")),
                Err(_) => Some(format!("{name}: timed out")),
            }
        });
        futures::future::join_all(runs).await.into_iter().flatten().collect()
    }

    /// `Ok` when every check passes, else the failures joined: a readiness check of its own, for
    /// a component whose health is one check of another (or for a test waiting on it).
    pub async fn ready(&self) -> Result<(), String> {
        let failures = self.failures().await;
        if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
    }
}

pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})))
}

pub async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let failures = health.failures().await;
    if failures.is_empty() {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable", "failing": failures})))
    }
}

pub async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn admin_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// Serves the admin router until `shutdown` fires.
pub async fn serve_admin(listener: TcpListener, health: Health, shutdown: Shutdown) -> std::io::Result<()> {
    crate::metrics::install();
    axum::serve(listener, admin_router(health)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// A service process's admin side: binds `addr`, serves `/metrics`, `/healthz` and `/readyz`
/// until `shutdown`, and reports draining from the moment shutdown begins.
pub async fn spawn_admin(
    addr: std::net::SocketAddr,
    health: Health,
    shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = TcpListener::bind(addr).await?;
    let drain = health.clone();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        sd.cancelled().await;
        drain.set_draining();
    });
    Ok(tokio::spawn(serve_admin(listener, health, shutdown)))
}
