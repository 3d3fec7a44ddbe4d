//! Graceful shutdown: one cancellation token per process, cancelled by SIGTERM or SIGINT.
//! Every long-lived task takes a clone and stops when it fires; servers drain in-flight requests.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Waits for SIGTERM or SIGINT (Ctrl-C), then cancels `shutdown`. Also returns if `shutdown`
/// is cancelled by someone else.
pub async fn on_signal(shutdown: Shutdown) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
