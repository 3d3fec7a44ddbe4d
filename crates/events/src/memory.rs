//! The in-process bus for `agora dev` and tests: an append-only log per topic with one cursor
//! per consumer group, so groups see every event once and late subscribers still get history.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::Envelope;
use crate::bus::{BusError, Delivery, EventBus, Subscription};

/// Events older than every group's cursor are dropped once a topic holds more than this.
const MAX_RETAINED: usize = 100_000;

#[derive(Default)]
struct TopicLog {
    /// Offset of `entries[0]`.
    base: i64,
    entries: std::collections::VecDeque<Envelope>,
    /// Next offset to hand out, per group.
    cursors: HashMap<String, i64>,
}

impl TopicLog {
    fn end(&self) -> i64 {
        self.base + self.entries.len() as i64
    }

    fn trim(&mut self) {
        while self.entries.len() > MAX_RETAINED {
            let min_cursor = self.cursors.values().copied().min().unwrap_or(i64::MAX);
            if min_cursor <= self.base && !self.cursors.is_empty() {
                // A slow group still needs the oldest entry: drop it anyway to bound memory,
                // as a broker's retention would, and move that group's cursor on.
                for c in self.cursors.values_mut() {
                    *c = (*c).max(self.base + 1);
                }
            }
            self.entries.pop_front();
            self.base += 1;
        }
    }
}

#[derive(Default)]
struct Shared {
    topics: Mutex<HashMap<String, TopicLog>>,
    notify: Notify,
}

/// In-process [`EventBus`].
#[derive(Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, topic: &str, envelope: &Envelope) -> Result<(), BusError> {
        {
            let mut topics = self.shared.topics.lock();
            let log = topics.entry(topic.to_owned()).or_default();
            log.entries.push_back(envelope.clone());
            log.trim();
        }
        self.shared.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Box<dyn Subscription>, BusError> {
        {
            let mut all = self.shared.topics.lock();
            for t in topics {
                let log = all.entry(t.clone()).or_default();
                let base = log.base;
                log.cursors.entry(group.to_owned()).or_insert(base);
            }
        }
        Ok(Box::new(MemorySubscription {
            shared: Arc::clone(&self.shared),
            topics: topics.to_vec(),
            group: group.to_owned(),
            next_topic: 0,
            read: HashMap::new(),
        }))
    }

    async fn ensure_topics(&self, _topics: &[String]) -> Result<(), BusError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

struct MemorySubscription {
    shared: Arc<Shared>,
    topics: Vec<String>,
    group: String,
    next_topic: usize,
    /// This subscription's read position per topic. The group's cursor moves only on ack, so
    /// a consumer stopped between delivery and ack gets the event again when it resubscribes
    /// (at-least-once, as with Kafka).
    read: HashMap<String, i64>,
}

impl MemorySubscription {
    fn try_take(&mut self) -> Option<Delivery> {
        let mut all = self.shared.topics.lock();
        // Round-robin over topics so one busy topic cannot starve another.
        for i in 0..self.topics.len() {
            let idx = (self.next_topic + i) % self.topics.len();
            let topic = &self.topics[idx];
            let Some(log) = all.get_mut(topic) else { continue };
            let end = log.end();
            let base = log.base;
            let committed = *log.cursors.entry(self.group.clone()).or_insert(base);
            let position = self.read.entry(topic.clone()).or_insert(committed);
            if *position < base {
                *position = base;
            }
            if *position < end {
                let offset = *position;
                *position += 1;
                let envelope = log.entries[(offset - base) as usize].clone();
                self.next_topic = idx + 1;
                return Some(Delivery { topic: topic.clone(), partition: 0, offset, envelope });
            }
        }
        None
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        let shared = Arc::clone(&self.shared);
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.try_take() {
                return Ok(d);
            }
            notified.await;
        }
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let mut all = self.shared.topics.lock();
        if let Some(log) = all.get_mut(&delivery.topic) {
            let cursor = log.cursors.entry(self.group.clone()).or_insert(0);
            *cursor = (*cursor).max(delivery.offset + 1);
        }
        Ok(())
    }
}
