//! The bus port: publish envelopes to topics, subscribe as a consumer group.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("bad bus url: {0}")]
    Config(String),
}

/// One event handed to a subscriber; ack it once handled.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub envelope: Envelope,
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes one event; returns once the bus has accepted it durably.
    async fn publish(&self, topic: &str, envelope: &Envelope) -> Result<(), BusError>;
    /// Publishes events in order; returns how many were accepted before the first failure (an
    /// error only when none was). Adapters that can accept a batch at once override this.
    async fn publish_all(&self, events: &[(String, Envelope)]) -> Result<usize, BusError> {
        for (i, (topic, envelope)) in events.iter().enumerate() {
            if let Err(e) = self.publish(topic, envelope).await {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(events.len())
    }
    /// Joins consumer group `group` on `topics`. Each event reaches one member of each group.
    /// A new group starts from the oldest retained event.
    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Box<dyn Subscription>, BusError>;
    /// Creates topics that do not exist yet (no-op where topics need no creation).
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError>;
    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), BusError>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next event; waits until one arrives. Must be safe to drop at any await: the consumer
    /// selects on it and drops it whenever a handler finishes first, so a dropped call may not
    /// lose, repeat or reorder an event, nor leave a statement cut in half (I/O it starts runs to
    /// its end, and the next call picks up its result).
    async fn next(&mut self) -> Result<Delivery, BusError>;
    /// Marks `delivery` (and everything before it on its partition) handled for this group.
    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError>;
}

/// Picks the adapter by URL scheme: `sqlite://PATH` (the embedded, durable log), `memory://`
/// (the same log in memory, gone with the process) or `kafka://host:port[,host:port]` with
/// optional `?session_timeout_ms=N&partitions=N&namespace=NAME`.
pub async fn connect(url: &str) -> Result<Arc<dyn EventBus>, BusError> {
    match url.split_once("://").map(|(s, _)| s) {
        Some("memory") | Some("sqlite") => Ok(Arc::new(crate::local::LocalBus::connect(url).await?)),
        Some("kafka") => Ok(Arc::new(crate::kafka::KafkaBus::connect(url)?)),
        _ => Err(BusError::Config(format!("unsupported bus url scheme in {url:?} (sqlite://, memory://, kafka://)"))),
    }
}
