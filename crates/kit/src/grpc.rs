//! gRPC plumbing shared by servers and clients: the caller's bearer token in metadata, channels
//! with timeouts, trace context propagation.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

pub const AUTHORIZATION: &str = "authorization";

/// The bearer token in a request's metadata, if any.
pub fn bearer_token<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.metadata().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::jwt::bearer)
}

/// Wraps `msg` in a request carrying the caller's token and the current trace context.
pub fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
    {
        req.metadata_mut().insert(AUTHORIZATION, v);
    }
    for (k, v) in crate::telemetry::current_trace_context() {
        if let (Ok(key), Ok(val)) =
            (tonic::metadata::MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v.as_str()))
        {
            req.metadata_mut().insert(key, val);
        }
    }
    req
}

/// A lazily-connecting channel with connect and per-call timeouts, so a dead peer never hangs a
/// caller.
pub fn channel(url: &str) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::internal(format!("bad gRPC url {url}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Serves one gRPC service on `listener` until `shutdown`, then drains in-flight calls. Every
/// service gets the same server: RED metrics per RPC, and the standard gRPC health service
/// reporting it as serving.
pub async fn serve<S>(listener: tokio::net::TcpListener, shutdown: crate::Shutdown, svc: S) -> Result<(), Error>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse + Send + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let addr = listener.local_addr().map_err(|e| Error::internal(e.to_string()))?;
    tracing::info!(%addr, service = S::NAME, "gRPC listening");
    let server = tonic::transport::Server::builder()
        .layer(crate::metrics::GrpcMetricsLayer)
        .add_service(health_service)
        .add_service(Detached(svc))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );
    tokio::pin!(server);
    // Calls in flight get DRAIN_LIMIT to finish after shutdown starts; then the server stops
    // anyway (callers have their own deadlines and retry elsewhere).
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        r = &mut server => r.map_err(|e| Error::internal(e.to_string())),
        _ = deadline => {
            tracing::warn!(service = S::NAME, "gRPC calls still open after the drain limit; stopping anyway");
            Ok(())
        }
    }
}

/// Runs every call on a task of its own, so that a caller who goes away (a client that hung up,
/// a deadline that passed) does not stop the handler between two steps of its work: it finishes,
/// and only its answer is dropped. Without this, a call abandoned between two writes left the
/// first one done and the second one never started.
#[derive(Clone)]
struct Detached<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for Detached<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Detached<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible> + Send + 'static,
    S::Response: axum::response::IntoResponse + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use axum::response::IntoResponse as _;
        let call = tokio::spawn(self.0.call(req));
        Box::pin(async move {
            Ok(match call.await {
                Ok(Ok(resp)) => resp.into_response(),
                Ok(Err(never)) => match never {},
                Err(e) => {
                    tracing::error!(error = %e, "gRPC handler task failed");
                    tonic::Status::internal("Internal server error").into_http::<axum::body::Body>().into_response()
                }
            })
        })
    }
}

/// How long a gRPC server lets calls finish once shutdown started.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
