//! Structured logs through `tracing`, with OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, and W3C trace-context helpers for carrying a trace across HTTP, gRPC and Kafka.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Env;

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. `AGORA_LOG` is an env-filter (default `info`),
/// `AGORA_LOG_FORMAT` is `text` (default) or `json`. Safe to call twice: the second call is a no-op.
pub fn init(service: &str, env: &dyn Env) -> TelemetryGuard {
    let filter = EnvFilter::try_new(
        env.get("AGORA_LOG")
            .unwrap_or_else(|| "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,rdkafka=warn,fred=warn".to_owned()),
    )
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = env.get("AGORA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer().json().with_current_span(true).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(true).boxed()
    };

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut provider = None;
    let otel_layer = match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(endpoint) => {
            match opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone()).build() {
                Ok(exporter) => {
                    let resource =
                        opentelemetry_sdk::Resource::builder().with_service_name(format!("agora-{service}")).build();
                    let p = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource)
                        .build();
                    let tracer = p.tracer(format!("agora-{service}"));
                    opentelemetry::global::set_tracer_provider(p.clone());
                    provider = Some(p);
                    Some(tracing_opentelemetry::layer().with_tracer(tracer))
                }
                Err(e) => {
                    eprintln!("OTLP exporter for {endpoint} not started: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let _ = tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init();
    TelemetryGuard { provider }
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct ReadCarrier<'a>(&'a HashMap<String, String>);

impl Extractor for ReadCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's W3C trace context (`traceparent`, `tracestate`), empty when not tracing.
pub fn current_trace_context() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut map));
    map
}

/// Makes `span` a child of the trace context in `headers` (as produced by
/// [`current_trace_context`]).
pub fn set_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&ReadCarrier(headers));
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of the `traceparent`/`tracestate` headers of an incoming HTTP or gRPC
/// request, if it carries them.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent: HashMap<String, String> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| headers.get(*k).and_then(|v| v.to_str().ok()).map(|v| ((*k).to_owned(), v.to_owned())))
        .collect();
    if !parent.is_empty() {
        set_parent(span, &parent);
    }
}
