//! The Kafka adapter (rdkafka with a bundled librdkafka). Publishing waits for the broker's ack
//! (acks=all, idempotent producer); consuming commits offsets only after the handler acked.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::Envelope;
use crate::bus::{BusError, Delivery, EventBus, Subscription};

/// Settings parsed from
/// `kafka://host:port[,host:port][?session_timeout_ms=N&partitions=N&namespace=NAME]`.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub session_timeout_ms: u32,
    pub partitions: i32,
    /// Prefixed (`NAME.`) to every topic and consumer group, so several platforms (tests, or
    /// staging beside production) can share one cluster without seeing each other's events.
    pub namespace: String,
}

impl KafkaSettings {
    fn name(&self, topic_or_group: &str) -> String {
        if self.namespace.is_empty() {
            topic_or_group.to_owned()
        } else {
            format!("{}.{topic_or_group}", self.namespace)
        }
    }
}

impl KafkaSettings {
    pub fn parse(url: &str) -> Result<Self, BusError> {
        let rest =
            url.strip_prefix("kafka://").ok_or_else(|| BusError::Config(format!("{url:?} is not a kafka:// url")))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() {
            return Err(BusError::Config("kafka:// url names no broker".into()));
        }
        let mut s = KafkaSettings {
            brokers: hosts.to_owned(),
            session_timeout_ms: 10_000,
            partitions: 6,
            namespace: String::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || BusError::Config(format!("bad value for {k} in kafka url"));
            match k {
                "session_timeout_ms" => s.session_timeout_ms = v.parse().map_err(|_| bad())?,
                "partitions" => s.partitions = v.parse().map_err(|_| bad())?,
                "namespace"
                    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
                {
                    s.namespace = v.to_owned()
                }
                "namespace" => return Err(bad()),
                _ => return Err(BusError::Config(format!("unknown kafka url option {k}"))),
            }
        }
        Ok(s)
    }
}

pub struct KafkaBus {
    settings: KafkaSettings,
    producer: FutureProducer,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl KafkaBus {
    pub fn connect(url: &str) -> Result<Self, BusError> {
        let settings = KafkaSettings::parse(url)?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            // At-least-once is the contract (the outbox republishes, consumers dedupe); the
            // idempotent producer adds nothing to that and can wedge after message timeouts
            // during a broker outage. One request in flight keeps per-key order on retries.
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "5000")
            .set("socket.timeout.ms", "5000")
            // Batching is linger.ms's job; Nagle on top of it only delays the last request.
            .set("socket.nagle.disable", "true")
            .set("log_level", "3")
            .create()
            .map_err(unavailable)?;
        Ok(Self { settings, producer })
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, BusError> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .set("log_level", "3")
            .create()
            .map_err(unavailable)
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, topic: &str, envelope: &Envelope) -> Result<(), BusError> {
        let payload = envelope.encode_to_vec();
        let mut headers = OwnedHeaders::new().insert(Header { key: "agora-event-type", value: Some(&envelope.r#type) });
        if !envelope.traceparent.is_empty() {
            headers = headers.insert(Header { key: "traceparent", value: Some(&envelope.traceparent) });
        }
        if !envelope.tracestate.is_empty() {
            headers = headers.insert(Header { key: "tracestate", value: Some(&envelope.tracestate) });
        }
        let topic = self.settings.name(topic);
        let record = FutureRecord::to(&topic).key(&envelope.aggregate_id).payload(&payload).headers(headers);
        self.producer.send(record, Duration::from_secs(5)).await.map(|_| ()).map_err(|(e, _)| unavailable(e))
    }

    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let heartbeat = (self.settings.session_timeout_ms / 4).max(100);
        let consumer: StreamConsumer<LagReporter> = ClientConfig::new()
            .set("bootstrap.servers", &self.settings.brokers)
            .set("group.id", self.settings.name(group))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.settings.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", heartbeat.to_string())
            .set("statistics.interval.ms", "5000")
            .set("socket.nagle.disable", "true")
            .set("log_level", "3")
            .create_with_context(LagReporter { group: group.to_owned() })
            .map_err(unavailable)?;
        let names: Vec<String> = topics.iter().map(|t| self.settings.name(t)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(unavailable)?;
        Ok(Box::new(KafkaSubscription {
            consumer: Some(consumer),
            group: group.to_owned(),
            settings: self.settings.clone(),
        }))
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let admin = self.admin()?;
        let names: Vec<String> = topics.iter().map(|t| self.settings.name(t)).collect();
        let new: Vec<NewTopic> =
            names.iter().map(|t| NewTopic::new(t, self.settings.partitions, TopicReplication::Fixed(1))).collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&new, &opts)).await;
        close_detached(admin);
        let results =
            results.map_err(|_| BusError::Unavailable("creating topics timed out".into()))?.map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(BusError::Unavailable(format!("creating topic {t}: {code}"))),
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Duration::from_secs(2)).map(|_| ()).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

/// Publishes `agora_consumer_lag{group,topic,partition}` from librdkafka's own statistics
/// (every 5 s, off the async runtime), instead of querying the broker per message.
struct LagReporter {
    group: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        "agora_consumer_lag",
                        "group" => self.group.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

struct KafkaSubscription {
    /// Always `Some` until drop, which hands the consumer to [`close_detached`].
    consumer: Option<StreamConsumer<LagReporter>>,
    group: String,
    settings: KafkaSettings,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            close_detached(consumer);
        }
    }
}

/// Destroys a librdkafka client on a thread of its own. Destroying joins the client's threads and,
/// for a consumer, leaves its group, which can wait without end on a broker that went away
/// (fede1024/rust-rdkafka#509). Never on an async worker, and not on tokio's blocking pool either:
/// a runtime shutting down waits for that pool, so one stuck close would stall the process's exit.
fn close_detached<T: Send + 'static>(client: T) {
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        let started = std::time::Instant::now();
        drop(client);
        metrics::histogram!("agora_bus_client_close_seconds").record(started.elapsed().as_secs_f64());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a thread to close a kafka client; closing it here");
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            let consumer = self.consumer.as_ref().ok_or_else(|| unavailable("subscription closed"))?;
            let msg = consumer.recv().await.map_err(unavailable)?;
            let Some(payload) = msg.payload() else {
                tracing::warn!(topic = msg.topic(), offset = msg.offset(), "skipping event with no payload");
                self.commit(msg.topic(), msg.partition(), msg.offset())?;
                continue;
            };
            let mut envelope = match Envelope::decode(payload) {
                Ok(e) => e,
                Err(e) => {
                    // A poison message must not wedge the partition: log, count, skip.
                    metrics::counter!("agora_consumer_malformed_total", "group" => self.group.clone()).increment(1);
                    tracing::error!(topic = msg.topic(), offset = msg.offset(), error = %e, "undecodable event skipped");
                    self.commit(msg.topic(), msg.partition(), msg.offset())?;
                    continue;
                }
            };
            if let Some(headers) = msg.headers() {
                let map: HashMap<&str, &[u8]> = headers.iter().filter_map(|h| h.value.map(|v| (h.key, v))).collect();
                if envelope.traceparent.is_empty()
                    && let Some(tp) = map.get("traceparent")
                {
                    envelope.traceparent = String::from_utf8_lossy(tp).into_owned();
                }
            }
            return Ok(Delivery {
                // Handlers see the logical topic name, whatever the namespace.
                topic: self.logical(msg.topic()).to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                envelope,
            });
        }
    }

    async fn ack(&mut self, d: &Delivery) -> Result<(), BusError> {
        let topic = self.settings.name(&d.topic);
        self.commit(&topic, d.partition, d.offset)
    }
}

impl KafkaSubscription {
    fn logical<'t>(&self, topic: &'t str) -> &'t str {
        if self.settings.namespace.is_empty() {
            return topic;
        }
        topic.strip_prefix(self.settings.namespace.as_str()).and_then(|t| t.strip_prefix('.')).unwrap_or(topic)
    }

    fn commit(&self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1)).map_err(unavailable)?;
        let consumer = self.consumer.as_ref().ok_or_else(|| unavailable("subscription closed"))?;
        consumer.commit(&tpl, CommitMode::Async).map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let s = KafkaSettings::parse("kafka://a:9092,b:9092?session_timeout_ms=2000&partitions=3").unwrap();
        assert_eq!(s.brokers, "a:9092,b:9092");
        assert_eq!(s.session_timeout_ms, 2000);
        assert_eq!(s.partitions, 3);
        assert!(KafkaSettings::parse("kafka://").is_err());
        assert!(KafkaSettings::parse("kafka://a:1?bogus=1").is_err());
        let s = KafkaSettings::parse("kafka://a:1?namespace=t42").unwrap();
        assert_eq!(s.name("agora.post.v1"), "t42.agora.post.v1");
        assert!(KafkaSettings::parse("kafka://a:1?namespace=a.b").is_err());
    }
}
