//! Prometheus metrics: one global recorder per process, RED helpers for HTTP routes and RPCs,
//! and a tower layer that measures every gRPC call a server handles.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the recorder once; later calls return the same handle. `None` if another recorder
/// was installed first (metrics then go there).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                // Every `*_seconds` timing is a histogram with buckets (not a summary), so
                // dashboards can aggregate percentiles across replicas.
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until it is folded into the buckets, which only a
/// scrape or an upkeep does: a process nobody scrapes (`agora dev`, a replica whose Prometheus is
/// down) grew by ~20 samples a request, ~50 MiB in a 40-second benchmark. A thread of its own folds
/// them every few seconds, with or without an async runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histograms grow until scraped");
    }
}

/// The text exposition of every metric recorded so far.
pub fn render() -> String {
    install().map(|h| h.render()).unwrap_or_default()
}

pub fn record_http(route: &str, method: &str, status: u16, started: Instant) {
    let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
    metrics::counter!("agora_http_requests_total", &labels).increment(1);
    metrics::histogram!(
        "agora_http_request_duration_seconds",
        "route" => route.to_owned(),
        "method" => method.to_owned()
    )
    .record(started.elapsed().as_secs_f64());
}

/// Counts and times one RPC. `server` names an in-process server (`inproc://NAME`), so that the
/// services sharing a process are told apart; socket servers leave it out.
pub fn record_grpc(side: &'static str, server: Option<&str>, path: &str, code: &str, started: Instant) {
    let (service, method) = split_grpc_path(path);
    let mut labels = vec![("side", side.to_owned()), ("service", service.to_owned()), ("method", method.to_owned())];
    if let Some(name) = server {
        labels.push(("server", name.to_owned()));
    }
    metrics::histogram!("agora_grpc_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    labels.push(("code", code.to_owned()));
    metrics::counter!("agora_grpc_requests_total", &labels).increment(1);
}

fn split_grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// Tower layer for tonic servers: counts and times every RPC by method and status code (and, for
/// an in-process server, by its name).
#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer {
    server: Option<Arc<str>>,
}

impl GrpcMetricsLayer {
    /// For the in-process server `inproc://NAME`.
    pub fn in_process(name: &str) -> Self {
        Self { server: Some(name.into()) }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner, server: self.server.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    server: Option<Arc<str>>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let span = tracing::info_span!("rpc", rpc.path = %path, otel.kind = "server");
        crate::telemetry::set_parent_from_headers(&span, req.headers());
        let fut = self.inner.call(req);
        let server = self.server.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let res = fut.await;
                let code = match &res {
                    Ok(resp) => {
                        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned()
                    }
                    Err(_) => "transport".to_owned(),
                };
                record_grpc("server", server.as_deref(), &path, &code, started);
                res
            },
            span,
        ))
    }
}
