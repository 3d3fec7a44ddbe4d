//! gRPC plumbing shared by servers and clients: the caller's bearer token in metadata, channels
//! with timeouts, trace context propagation.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client reaches a gRPC server: over a socket (`http://host:port`), or — when the server
/// runs in this process and registered itself under `inproc://NAME` — by calling its tower
/// service directly, with no socket and no HTTP/2 framing. The same generated client and the
/// same server code run either way; only the protobuf encoding remains.
#[derive(Clone)]
pub struct Channel(BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>);

impl tower::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.0.call(req)
    }
}

/// The URL scheme of servers in this process.
pub const IN_PROCESS_SCHEME: &str = "inproc://";

type ServerService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, std::convert::Infallible>;

/// Where an in-process server is found by name. A client may be made before its server
/// registers (services start in any order); until then its calls answer UNAVAILABLE, as a
/// lazily-connecting socket channel would.
#[derive(Default)]
struct Slot {
    server: RwLock<Option<ServerService>>,
}

static IN_PROCESS: LazyLock<Mutex<HashMap<String, Arc<Slot>>>> = LazyLock::new(Default::default);

fn slot(name: &str) -> Arc<Slot> {
    Arc::clone(IN_PROCESS.lock().entry(name.to_owned()).or_default())
}

#[derive(Clone)]
struct InProcess {
    name: Arc<str>,
    slot: Arc<Slot>,
}

impl tower::Service<http::Request<Body>> for InProcess {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let Some(server) = self.slot.server.read().clone() else {
            let down = tonic::Status::unavailable(format!("in-process service {} is not running", self.name));
            return Box::pin(std::future::ready(Ok(down.into_http())));
        };
        Box::pin(async move {
            match tokio::time::timeout(CALL_TIMEOUT, server.oneshot(req)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(tonic::Status::deadline_exceeded("Timeout expired").into_http()),
            }
        })
    }
}

/// Serves `svc` to this process's clients of `inproc://NAME` until the returned guard drops.
/// Calls run like socket calls: RED metrics (labelled `server=NAME`) and a span per RPC, each on
/// a task of its own.
fn register_in_process<S>(name: &str, svc: S) -> InProcessRegistration
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let svc = tower::Layer::layer(&crate::metrics::GrpcMetricsLayer::in_process(name), Detached(svc));
    let slot = slot(name);
    *slot.server.write() = Some(BoxCloneSyncService::new(svc));
    InProcessRegistration { slot }
}

struct InProcessRegistration {
    slot: Arc<Slot>,
}

impl Drop for InProcessRegistration {
    fn drop(&mut self) {
        *self.slot.server.write() = None;
    }
}

/// Where a gRPC server listens: a socket, or a name in this process (`inproc://NAME`).
pub enum GrpcListener {
    Tcp(tokio::net::TcpListener),
    InProcess(String),
}

impl GrpcListener {
    pub fn in_process(name: &str) -> Self {
        Self::InProcess(name.to_owned())
    }
}

impl From<tokio::net::TcpListener> for GrpcListener {
    fn from(l: tokio::net::TcpListener) -> Self {
        Self::Tcp(l)
    }
}

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

/// Per-call deadline of every client channel.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client channel for `url`: `inproc://NAME` for a server in this process, otherwise a
/// lazily-connecting socket channel. Both have a per-call timeout (and the socket a connect
/// timeout), so a dead peer never hangs a caller.
pub fn channel(url: &str) -> Result<Channel, Error> {
    if let Some(name) = url.strip_prefix(IN_PROCESS_SCHEME) {
        return Ok(Channel(BoxCloneSyncService::new(InProcess { name: name.into(), slot: slot(name) })));
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::internal(format!("bad gRPC url {url}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_lazy().map_err(|e| -> BoxError { Box::new(e) });
    Ok(Channel(BoxCloneSyncService::new(channel)))
}

/// Serves one gRPC service on `listener` until `shutdown`, then drains in-flight calls. Every
/// service gets the same server: RED metrics per RPC, and the standard gRPC health service
/// reporting it as serving.
pub async fn serve<S>(listener: impl Into<GrpcListener>, shutdown: crate::Shutdown, svc: S) -> Result<(), Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = match listener.into() {
        GrpcListener::Tcp(l) => l,
        GrpcListener::InProcess(name) => {
            tracing::info!(name = %name, service = S::NAME, "gRPC serving in-process");
            let _registration = register_in_process(&name, svc);
            // In-process calls run on tasks of their own, which finish after shutdown as they
            // would on a draining socket server.
            shutdown.cancelled().await;
            return Ok(());
        }
    };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let addr = listener.local_addr().map_err(|e| Error::internal(e.to_string()))?;
    tracing::info!(%addr, service = S::NAME, "gRPC listening");
    let server = tonic::transport::Server::builder()
        .layer(crate::metrics::GrpcMetricsLayer::default())
        .add_service(health_service)
        .add_service(Detached(svc))
        .serve_with_incoming_shutdown(nodelay(listener), shutdown.clone().cancelled_owned());
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

/// The listener's connections with Nagle's algorithm off. tonic sets TCP_NODELAY only on
/// listeners it binds itself; on these, a response's frames (headers, data, trailers) are
/// separate small writes, and Nagle held each one back until the caller acknowledged the one
/// before, which the caller's delayed ACK put off for up to 40 ms: every call between service
/// processes took 40 ms or more.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY on a gRPC connection");
            }
        })
    })
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

impl<S> tower::Service<http::Request<Body>> for Detached<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = std::convert::Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let call = tokio::spawn(self.0.call(req));
        Box::pin(async move {
            Ok(match call.await {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(e) => {
                    tracing::error!(error = %e, "gRPC handler task failed");
                    tonic::Status::internal("Internal server error").into_http()
                }
            })
        })
    }
}

/// How long a gRPC server lets calls finish once shutdown started.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every connection the gRPC server accepts has Nagle's algorithm off.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(super::nodelay(listener));
        for _ in 0..3 {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let accepted = incoming.next().await.unwrap().unwrap();
            assert!(accepted.nodelay().unwrap(), "an accepted connection kept Nagle on");
        }
    }
}
