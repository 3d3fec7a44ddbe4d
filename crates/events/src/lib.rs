//! agora-events: how Agora services announce and react to state changes.
//!
//! - [`Envelope`](agora_proto::events::v1::Envelope) wraps every event; topics are
//!   `agora.<domain>.v1`, keyed by aggregate id.
//! - [`EventBus`] has two adapters: Kafka ([`kafka::KafkaBus`]) and the embedded durable log
//!   ([`local::LocalBus`], a SQLite file or an in-memory database).
//! - [`outbox`]: the state change and its event commit in one transaction; [`outbox::OutboxRelay`]
//!   publishes pending rows with retry and backoff.
//! - [`consumer`]: runs handlers at-least-once; [`dedupe`] makes them effectively exactly-once.
//!
//! This crate must never know a service's domain: it moves opaque payloads.

pub mod bus;
pub mod consumer;
pub mod dedupe;
pub mod kafka;
pub mod local;
pub mod outbox;

pub use agora_proto::events::v1::Envelope;
pub use bus::{BusError, Delivery, EventBus, Subscription, connect};

use agora_kit::IdGenerator;

/// The topic of an event type: `user.created` → `agora.user.v1`.
pub fn topic_for(event_type: &str) -> String {
    let domain = event_type.split('.').next().unwrap_or(event_type);
    format!("agora.{domain}.v1")
}

/// Builds an envelope for `payload`, stamped with a fresh id, the time and the current trace.
pub fn envelope<M: prost::Message>(
    ids: &IdGenerator,
    producer: &str,
    event_type: &str,
    aggregate_id: impl ToString,
    payload: &M,
) -> Envelope {
    let trace = agora_kit::telemetry::current_trace_context();
    Envelope {
        id: ids.next_id(),
        r#type: event_type.to_owned(),
        occurred_at_ms: agora_kit::time::now_ms(),
        producer: producer.to_owned(),
        aggregate_id: aggregate_id.to_string(),
        payload: payload.encode_to_vec(),
        traceparent: trace.get("traceparent").cloned().unwrap_or_default(),
        tracestate: trace.get("tracestate").cloned().unwrap_or_default(),
    }
}

/// The bus every service of a process uses (`AGORA_BUS_URL`): by default the embedded durable
/// log in `$AGORA_DATA_DIR/bus.db`.
pub fn bus_url(env: &dyn agora_kit::config::Env) -> Result<String, agora_kit::config::ConfigError> {
    let data_dir = agora_kit::config::string(env, "AGORA_DATA_DIR", ".agora");
    agora_kit::config::url(env, "AGORA_BUS_URL", &format!("sqlite://{data_dir}/bus.db"), &["sqlite", "memory", "kafka"])
}

/// Adds a `bus` check to `health`: ready only while the bus answers.
pub fn add_health_check(health: &agora_kit::health::Health, bus: &std::sync::Arc<dyn EventBus>) {
    let bus = std::sync::Arc::clone(bus);
    health.add_check("bus", move || {
        let bus = std::sync::Arc::clone(&bus);
        async move { bus.ping().await.map_err(|e| e.to_string()) }
    });
}
