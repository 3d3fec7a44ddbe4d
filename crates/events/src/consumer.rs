//! Runs an event handler over a subscription: at-least-once, acking only after the handler
//! succeeded, retrying transient failures with backoff, and skipping poison events loudly.
//! Events of different keys are handled concurrently, those of one key in order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use crate::{Delivery, Envelope, EventBus, Subscription};
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

/// Decodes an envelope's payload as `M`. A payload that does not decode never will: the error
/// is permanent, so the event is skipped rather than retried.
pub fn decode<M: prost::Message + Default>(env: &Envelope) -> Result<M, HandlerError> {
    M::decode(env.payload.as_slice()).map_err(|e| HandlerError::Permanent(format!("{}: {e}", env.r#type)))
}

/// Ensures `topics` and starts one consumer per topic, each in a group of its own
/// (`{group}.{domain}`, e.g. `feed.post` for `agora.post.v1`), all sharing `handler`: a long
/// handler on one topic never holds back another, and each topic rebalances on its own.
pub async fn spawn_per_topic(
    bus: &Arc<dyn EventBus>,
    topics: &[&str],
    group: &str,
    handler: Arc<dyn Handler>,
    shutdown: &Shutdown,
) {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    bus.ensure_topics(&topics).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, group, "could not ensure topics; consumers will retry");
    });
    for topic in topics {
        let domain = topic.split('.').nth(1).unwrap_or("events").to_owned();
        tokio::spawn(run(
            Arc::clone(bus),
            vec![topic],
            format!("{group}.{domain}"),
            Arc::clone(&handler),
            shutdown.clone(),
        ));
    }
}

/// Events handled at once by one consumer. Events with the same key (topic and aggregate id: one
/// status, one account's graph changes) are still handled one after another, in bus order.
pub const IN_FLIGHT: usize = 32;

/// How long a stopping consumer waits for the events it is handling.
const DRAIN: Duration = Duration::from_secs(5);

/// One event being handled, in arrival order; acked once it and everything before it is done.
/// The delivery is shared with its handler, not copied.
struct Slot {
    delivery: Arc<Delivery>,
    key: Key,
    done: bool,
}

/// Events with equal keys run one after another: (topic, aggregate id).
type Key = (String, String);

fn key_of(d: &Delivery) -> Key {
    (d.topic.clone(), d.envelope.aggregate_id.clone())
}

/// Consumes `topics` as `group` until shutdown, handling up to [`IN_FLIGHT`] events at once
/// (one at a time per key). An event is acked only when it and every event delivered before it
/// have been handled, so a restart redelivers whatever was not finished, never skips it.
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
    let mut order: VecDeque<Slot> = VecDeque::new();
    let mut first_seq: u64 = 0; // the arrival number of order[0]
    let mut busy: HashSet<Key> = HashSet::new();
    let mut blocked: Option<(Delivery, Key)> = None; // waits for its key to be free
    let mut inflight = FuturesUnordered::new();
    // Starts handling `d`, whose key is free: marks the key busy and queues the slot to ack.
    let admit = |d: Delivery, key: Key, busy: &mut HashSet<Key>, order: &mut VecDeque<Slot>, first_seq: u64| {
        busy.insert(key.clone());
        let seq = first_seq + order.len() as u64;
        let delivery = Arc::new(d);
        order.push_back(Slot { delivery: Arc::clone(&delivery), key, done: false });
        let (handler, group, shutdown) = (Arc::clone(&handler), group.clone(), shutdown.clone());
        async move { (seq, handle_one(&*handler, &delivery.envelope, &group, &shutdown).await) }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            d = sub.next(), if blocked.is_none() && inflight.len() < IN_FLIGHT => {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, group, "consume failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                        continue;
                    }
                };
                let key = key_of(&d);
                if busy.contains(&key) {
                    blocked = Some((d, key));
                } else {
                    inflight.push(admit(d, key, &mut busy, &mut order, first_seq));
                }
            }
            Some((seq, handled)) = inflight.next(), if !inflight.is_empty() => {
                if !handled {
                    break; // stopping while retrying: not acked, redelivered on the next start
                }
                let slot = &mut order[(seq - first_seq) as usize];
                slot.done = true;
                busy.remove(&slot.key);
                if let Some((d, key)) = blocked.take_if(|(_, key)| !busy.contains(key)) {
                    inflight.push(admit(d, key, &mut busy, &mut order, first_seq));
                }
                ack_done(&mut *sub, &mut order, &mut first_seq).await;
            }
        }
    }
    // Stopping: let what is being handled finish (briefly), and ack what is done in order.
    let _ = tokio::time::timeout(DRAIN, async {
        while let Some((seq, handled)) = inflight.next().await {
            if handled {
                order[(seq - first_seq) as usize].done = true;
            }
        }
    })
    .await;
    ack_done(&mut *sub, &mut order, &mut first_seq).await;
}

/// Acks the finished events at the front of `order`.
async fn ack_done(sub: &mut dyn Subscription, order: &mut VecDeque<Slot>, first_seq: &mut u64) {
    while order.front().is_some_and(|s| s.done) {
        let Some(slot) = order.pop_front() else { break };
        *first_seq += 1;
        if let Err(e) = sub.ack(&slot.delivery).await {
            tracing::warn!(error = %e, "ack failed; the event may be redelivered");
        }
    }
}

/// Handles one event: retries transient failures with backoff, skips permanent ones. False only
/// when the consumer stops while it is still failing (the event must not be acked).
async fn handle_one(handler: &dyn Handler, envelope: &Envelope, group: &str, shutdown: &Shutdown) -> bool {
    let span = tracing::info_span!("consume", event.r#type = %envelope.r#type, event.id = envelope.id, group = %group);
    let mut parent = std::collections::HashMap::new();
    parent.insert("traceparent".to_owned(), envelope.traceparent.clone());
    agora_kit::telemetry::set_parent(&span, &parent);
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = tracing::Instrument::instrument(handler.handle(envelope), span.clone()).await;
        match result {
            Ok(()) => {
                metrics::counter!("agora_consumer_handled_total", "group" => group.to_owned()).increment(1);
                return true;
            }
            Err(HandlerError::Permanent(e)) => {
                metrics::counter!("agora_consumer_skipped_total", "group" => group.to_owned()).increment(1);
                tracing::error!(error = %e, id = envelope.id, "event skipped");
                return true;
            }
            Err(HandlerError::Transient(e)) => {
                metrics::counter!("agora_consumer_retries_total", "group" => group.to_owned()).increment(1);
                tracing::warn!(error = %e, id = envelope.id, "handler failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
