//! Runs an event handler over a subscription: at-least-once, acking only after the handler
//! succeeded, retrying transient failures with backoff, and skipping poison events loudly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Envelope, EventBus};
use agora_kit::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a store or peer is down).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (the event is malformed for this handler); it is skipped.
    #[error("permanent: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Must be idempotent: the same envelope may arrive more than once.
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError>;
}

/// Consumes `topics` as `group` until shutdown.
pub async fn run(
    bus: Arc<dyn EventBus>,
    topics: Vec<String>,
    group: String,
    handler: Arc<dyn Handler>,
    shutdown: Shutdown,
) {
    let mut sub = loop {
        match bus.subscribe(&topics, &group).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, group, "subscribe failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = sub.next() => d,
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, group, "consume failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        let span = tracing::info_span!("consume", event.r#type = %delivery.envelope.r#type, event.id = delivery.envelope.id, group = %group);
        let mut parent = std::collections::HashMap::new();
        parent.insert("traceparent".to_owned(), delivery.envelope.traceparent.clone());
        agora_kit::telemetry::set_parent(&span, &parent);
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tracing::Instrument::instrument(handler.handle(&delivery.envelope), span.clone()).await;
            match result {
                Ok(()) => {
                    metrics::counter!("agora_consumer_handled_total", "group" => group.clone()).increment(1);
                    break;
                }
                Err(HandlerError::Permanent(e)) => {
                    metrics::counter!("agora_consumer_skipped_total", "group" => group.clone()).increment(1);
                    tracing::error!(error = %e, id = delivery.envelope.id, "event skipped");
                    break;
                }
                Err(HandlerError::Transient(e)) => {
                    metrics::counter!("agora_consumer_retries_total", "group" => group.clone()).increment(1);
                    tracing::warn!(error = %e, id = delivery.envelope.id, "handler failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if let Err(e) = sub.ack(&delivery).await {
            tracing::warn!(error = %e, "ack failed; the event may be redelivered");
        }
    }
}
