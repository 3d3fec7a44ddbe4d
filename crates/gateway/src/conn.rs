//! The gateway's HTTP/1.1 connections, held to limits a public edge needs: a deadline for the
//! request head (from the connection's start, or from the first byte of the next request), an
//! idle keep-alive timeout, a cap on open connections per client address, a kept-alive
//! connection that survives a response sent before the body was read, and a shutdown that
//! drains for a grace period and then closes what is left.
//!
//! A connection with a response in flight (a long download, a streaming response) is never
//! idle. Every forced close is counted in `agora_gateway_connections_closed_total{reason}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::ServiceExt as _;

use agora_kit::Shutdown;

/// Connection limits (`AGORA_GATEWAY_*`; see [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must arrive whole within this, counted from the connection's start or
    /// from the first byte of a kept-alive connection's next request.
    pub header_timeout: Duration,
    /// A kept-alive connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
    /// Open connections per client address (peers in `trusted` are not capped: they are the
    /// proxies in front of the gateway, carrying many clients).
    pub per_address: usize,
    /// After shutdown starts, connections get this long to finish; then they are closed.
    pub shutdown_grace: Duration,
    pub trusted: Vec<ipnet::IpNet>,
}

/// A body the handler did not read is drained up to this many bytes so that the connection can
/// be kept; beyond it, or when it does not arrive within [`DRAIN_WAIT`], the response says
/// `Connection: close` and the connection ends after it.
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_WAIT: Duration = Duration::from_millis(500);

fn closed(reason: &'static str) {
    metrics::counter!("agora_gateway_connections_closed_total", "reason" => reason).increment(1);
}

/// What a connection is doing, as its watchdog sees it.
#[derive(Debug)]
struct Activity {
    /// Requests whose response has not been written out.
    in_flight: usize,
    /// When the head now awaited started (connection start, or the next request's first byte).
    head_started: Option<Instant>,
    /// Since when nothing has been in flight (a kept-alive connection between requests).
    idle_since: Option<Instant>,
}

impl Activity {
    /// When the connection must close, and why; `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        if self.in_flight > 0 {
            return None;
        }
        match (self.head_started, self.idle_since) {
            (Some(t), _) => Some((t + limits.header_timeout, "header_timeout")),
            (None, Some(t)) => Some((t + limits.idle_timeout, "idle_timeout")),
            (None, None) => None,
        }
    }
}

type Shared = Arc<Mutex<Activity>>;

/// The socket, noting when bytes of a new request head arrive.
struct Watched {
    io: TcpStream,
    activity: Shared,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut a = this.activity.lock();
            if a.in_flight == 0 && a.head_started.is_none() {
                a.head_started = Some(Instant::now());
                a.idle_since = None;
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Marks one request as in flight until its response body is done (or dropped).
struct InFlight(Shared);

impl InFlight {
    fn begin(activity: &Shared) -> Self {
        let mut a = activity.lock();
        a.in_flight += 1;
        a.head_started = None;
        a.idle_since = None;
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.lock();
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Some(Instant::now());
        }
    }
}

/// A response body that keeps its request counted as in flight until it is written out.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body, shared between the handler and this module, so that what the handler left
/// unread can be drained (or the connection closed) after it answered.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Incoming>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut body = self.0.lock();
        Pin::new(&mut *body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.0.lock().is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.0.lock().size_hint()
    }
}

/// Reads and discards what is left of `body`, up to [`DRAIN_LIMIT`] bytes within [`DRAIN_WAIT`].
/// True if the body ended, so the connection can carry the next request.
async fn drain(body: &SharedBody) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if body.size_hint().lower() > DRAIN_LIMIT {
        return false;
    }
    let mut body = body.clone();
    let read = async {
        let mut seen: u64 = 0;
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        seen += data.len() as u64;
                        if seen > DRAIN_LIMIT {
                            return false;
                        }
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_WAIT, read).await.unwrap_or(false)
}

/// Answers one request with `app`; afterwards makes sure the connection is either fit for the
/// next request or closed after this response.
async fn answer(
    app: axum::Router,
    peer: SocketAddr,
    activity: Shared,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, std::convert::Infallible> {
    let in_flight = InFlight::begin(&activity);
    // Draining would first invite the client to send a body nobody wants.
    let expects_continue =
        req.headers().get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let body = SharedBody(Arc::new(Mutex::new(body)));
    let mut resp = match app.oneshot(Request::from_parts(parts, Body::new(body.clone()))).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let kept = if expects_continue { body.is_end_stream() } else { drain(&body).await };
    if !kept {
        metrics::counter!("agora_gateway_unread_bodies_total", "outcome" => "closed").increment(1);
        resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp.map(|inner| Tracked { inner, _in_flight: in_flight }))
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

struct Slot<'a>(&'a PerAddress, IpAddr);

impl PerAddress {
    fn take(&self, ip: IpAddr, cap: usize) -> Option<Slot<'_>> {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot(self, ip))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.0.0.lock();
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets open connections
/// finish for `limits.shutdown_grace`, and closes the rest.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, shutdown: Shutdown) {
    let limits = Arc::new(limits);
    let per_address = Arc::new(PerAddress::default());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections as we go, so the set stays the size of what is open.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, per_address, shutdown) =
            (app.clone(), Arc::clone(&limits), Arc::clone(&per_address), shutdown.clone());
        tasks.spawn(async move {
            let capped = !limits.trusted.iter().any(|n| n.contains(&peer.ip()));
            let _slot = if capped {
                match per_address.take(peer.ip(), limits.per_address) {
                    Some(s) => Some(s),
                    None => {
                        closed("per_address_limit");
                        return; // dropping the stream closes it
                    }
                }
            } else {
                None
            };
            connection(stream, peer, app, &limits, shutdown).await;
        });
        metrics::gauge!("agora_gateway_connections_open").set(tasks.len() as f64);
    }
    drop(listener);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(open, grace_ms = limits.shutdown_grace.as_millis() as u64, "draining connections");
    }
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let left = tasks.len();
        tracing::warn!(left, "shutdown grace period over; closing the remaining connections");
        for _ in 0..left {
            closed("shutdown_deadline");
        }
        tasks.shutdown().await;
    }
    metrics::gauge!("agora_gateway_connections_open").set(0.0);
}

async fn connection(stream: TcpStream, peer: SocketAddr, app: axum::Router, limits: &Limits, shutdown: Shutdown) {
    let activity: Shared =
        Arc::new(Mutex::new(Activity { in_flight: 0, head_started: Some(Instant::now()), idle_since: None }));
    let io = hyper_util::rt::TokioIo::new(Watched { io: stream, activity: Arc::clone(&activity) });
    let svc = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req| answer(app.clone(), peer, Arc::clone(&activity), req))
    };
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.lock().deadline(limits);
        let wake = deadline.map(|(t, _)| t).unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                // Activity may have moved the deadline while we slept: look again.
                let Some((at, reason)) = activity.lock().deadline(limits) else { continue };
                if Instant::now() < at {
                    continue;
                }
                closed(reason);
                if reason == "idle_timeout" {
                    // Nothing in flight: hyper closes at once and cleanly.
                    conn.as_mut().graceful_shutdown();
                    // If it does not (it is in the middle of something after all), drop it.
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                }
                // A head that does not arrive in time gets no answer: the socket is dropped.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            per_address: 2,
            shutdown_grace: Duration::from_secs(10),
            trusted: vec![],
        }
    }

    #[tokio::test]
    async fn deadlines_follow_the_connection_phase() {
        let l = limits();
        let t = Instant::now();
        let mut a = Activity { in_flight: 0, head_started: Some(t), idle_since: None };
        assert_eq!(a.deadline(&l), Some((t + l.header_timeout, "header_timeout")));
        a.in_flight = 1;
        a.head_started = None;
        assert_eq!(a.deadline(&l), None, "a request in flight is never timed out here");
        a.in_flight = 0;
        a.idle_since = Some(t);
        assert_eq!(a.deadline(&l), Some((t + l.idle_timeout, "idle_timeout")));
    }

    #[test]
    fn per_address_slots_are_capped_and_given_back() {
        let p = PerAddress::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = p.take(ip, 2).unwrap();
        let _b = p.take(ip, 2).unwrap();
        assert!(p.take(ip, 2).is_none());
        assert!(p.take("192.0.2.2".parse().unwrap(), 2).is_some(), "other addresses are not affected");
        drop(a);
        assert!(p.take(ip, 2).is_some());
    }
}
