//! The live backplane: how an event reaches whichever gateway holds the streaming connections
//! that want it. A service publishes to a [`Topic`]: an account ("notification 42 is new",
//! "status 7 entered your home"), the public timeline or a hashtag ("status 7 is public"); every
//! gateway process with a stream of that topic open hears it, fetches what it names with that
//! stream's own token (so the owning service applies its visibility rules again) and sends it.
//!
//! Delivery is best-effort by design: what is published is already stored, and a client that
//! missed something (no stream open, a gateway restart, a slow reader) catches up through the
//! REST API. So a publish that fails is counted, never retried, and a subscriber that falls
//! behind loses the oldest events, counted as dropped.
//!
//! Adapters: `memory://NAME` (one hub per name in this process: the services of `agora dev`
//! share it) and `redis://…` (Redis pub/sub, one channel per topic, subscribed only while a
//! stream of that topic is open in this process). An empty URL or `none` means no live
//! delivery.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::broadcast;

/// What a service tells an account's open streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEvent {
    /// A new notification (its id); the gateway fetches and renders it.
    Notification(i64),
    /// A status entered the account's home timeline.
    Update(i64),
    /// A status left the account's home timeline (deleted), or a public one was deleted.
    Delete(i64),
    /// A status the topic carried was edited.
    StatusUpdate(i64),
    /// One of the account's conversations (its id) gained a status or changed otherwise.
    Conversation(i64),
}

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One account's streams (notifications, home timeline).
    Account(i64),
    /// Every new public status (no reblogs): the public and local streams.
    Public,
    /// Public statuses with media attached.
    PublicMedia,
    /// Public statuses with this (normalised, lower-case) hashtag.
    Tag(String),
}

impl Topic {
    /// The topic's name on the wire (after the `agora:live:` channel prefix on Redis): the
    /// account id alone, `public`, `public:media`, `tag:NAME`.
    pub fn key(&self) -> String {
        match self {
            Topic::Account(id) => id.to_string(),
            Topic::Public => "public".to_owned(),
            Topic::PublicMedia => "public:media".to_owned(),
            Topic::Tag(name) => format!("tag:{name}"),
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "public" => Some(Topic::Public),
            "public:media" => Some(Topic::PublicMedia),
            _ => match key.strip_prefix("tag:") {
                Some(name) if !name.is_empty() => Some(Topic::Tag(name.to_owned())),
                Some(_) => None,
                None => key.parse().ok().map(Topic::Account),
            },
        }
    }
}

impl LiveEvent {
    pub fn encode(&self) -> String {
        match self {
            LiveEvent::Notification(id) => format!("notification:{id}"),
            LiveEvent::Update(id) => format!("update:{id}"),
            LiveEvent::Delete(id) => format!("delete:{id}"),
            LiveEvent::StatusUpdate(id) => format!("status.update:{id}"),
            LiveEvent::Conversation(id) => format!("conversation:{id}"),
        }
    }

    /// None for a payload this build does not know (a newer publisher's).
    pub fn decode(raw: &str) -> Option<Self> {
        let (kind, id) = raw.split_once(':')?;
        match kind {
            "notification" => id.parse().ok().map(LiveEvent::Notification),
            "update" => id.parse().ok().map(LiveEvent::Update),
            "delete" => id.parse().ok().map(LiveEvent::Delete),
            "status.update" => id.parse().ok().map(LiveEvent::StatusUpdate),
            "conversation" => id.parse().ok().map(LiveEvent::Conversation),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("live backplane unavailable: {0}")]
pub struct LiveError(pub String);

/// Events one stream may fall behind by before the oldest are dropped.
pub const BUFFER: usize = 256;

#[async_trait]
pub trait Live: Send + Sync + 'static {
    /// Tells the open streams of `topic`, wherever they are, of `event`.
    async fn publish(&self, topic: &Topic, event: LiveEvent) -> Result<(), LiveError>;
    /// The events published to `topic` from now on, until the subscription is dropped.
    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, LiveError>;
}

/// Publishes and counts a failure instead of returning it: the event is stored already, and a
/// client catches up through the REST API.
pub async fn publish_best_effort(live: Option<&Arc<dyn Live>>, topic: &Topic, event: LiveEvent) {
    let Some(live) = live else { return };
    match live.publish(topic, event).await {
        Ok(()) => metrics::counter!("agora_live_published_total", "result" => "ok").increment(1),
        Err(e) => {
            metrics::counter!("agora_live_published_total", "result" => "error").increment(1);
            tracing::warn!(error = %e, "could not publish a live event; open streams miss it");
        }
    }
}

/// One stream's view of a topic's events.
pub struct Subscription {
    rx: broadcast::Receiver<LiveEvent>,
    lost: u64,
    _membership: Membership,
}

impl Subscription {
    /// The next event; None once the backplane is gone. Events this subscriber fell behind on
    /// are skipped and counted (see [`Subscription::lost`]).
    pub async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lost += n;
                    metrics::counter!("agora_live_dropped_total").increment(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// How many events this subscriber has lost by falling behind, so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// The topics with subscribers in this process, each with its local fan-out.
#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<Topic, (broadcast::Sender<LiveEvent>, usize)>>,
}

/// Leaves the hub when dropped; the last member of a topic runs `on_last`.
struct Membership {
    hub: Arc<Hub>,
    topic: Topic,
    on_last: Option<Box<dyn FnOnce(Topic) + Send + Sync>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let last = {
            let mut topics = self.hub.topics.lock();
            match topics.get_mut(&self.topic) {
                Some((_, n)) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    topics.remove(&self.topic);
                    true
                }
                None => false,
            }
        };
        if last && let Some(f) = self.on_last.take() {
            f(self.topic.clone());
        }
    }
}

impl Hub {
    /// Joins `topic`'s fan-out; true when this is its first member.
    fn join(self: &Arc<Self>, topic: &Topic) -> (broadcast::Receiver<LiveEvent>, bool) {
        let mut topics = self.topics.lock();
        let entry = topics.entry(topic.clone()).or_insert_with(|| (broadcast::channel(BUFFER).0, 0));
        entry.1 += 1;
        (entry.0.subscribe(), entry.1 == 1)
    }

    fn deliver(&self, topic: &Topic, event: LiveEvent) {
        if let Some((tx, _)) = self.topics.lock().get(topic) {
            let _ = tx.send(event);
        }
    }
}

/// The in-process backplane.
#[derive(Default)]
pub struct MemoryLive {
    hub: Arc<Hub>,
}

#[async_trait]
impl Live for MemoryLive {
    async fn publish(&self, topic: &Topic, event: LiveEvent) -> Result<(), LiveError> {
        self.hub.deliver(topic, event);
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, LiveError> {
        let (rx, _) = self.hub.join(topic);
        let membership = Membership { hub: self.hub.clone(), topic: topic.clone(), on_last: None };
        Ok(Subscription { rx, lost: 0, _membership: membership })
    }
}

static NAMED: LazyLock<Mutex<HashMap<String, Weak<MemoryLive>>>> = LazyLock::new(Default::default);

/// The in-process backplane named `name`, shared by everyone in this process who asks for it.
pub fn named(name: &str) -> Arc<MemoryLive> {
    let mut all = NAMED.lock();
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(l) = all.get(name).and_then(Weak::upgrade) {
        return l;
    }
    let l = Arc::new(MemoryLive::default());
    all.insert(name.to_owned(), Arc::downgrade(&l));
    l
}

/// The backplane on Redis pub/sub: channel `agora:live:[SPACE:]KEY` per topic (see
/// [`Topic::key`] and [`channel_prefix`]).
pub struct RedisLive {
    publisher: crate::redis::Client,
    subscriber: fred::clients::SubscriberClient,
    hub: Arc<Hub>,
    /// Held while a channel is subscribed or unsubscribed, so a topic's last stream closing
    /// and a new one opening cannot leave the channel unsubscribed.
    channels: Arc<tokio::sync::Mutex<()>>,
    prefix: Arc<str>,
}

/// The channel prefix for a backplane URL, and the URL without our `namespace` parameter.
/// Redis pub/sub has no databases (a channel is heard from every database), so a URL's
/// database number, when not 0, and its `namespace=NAME` query parameter go into the channel
/// names: two deployments on one Redis, or two test platforms, never hear each other.
fn channel_prefix(url: &str) -> (String, String) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut namespace = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("namespace=") {
            Some(n) => {
                namespace = Some(n);
                false
            }
            None => !p.is_empty(),
        })
        .collect();
    let after_host = base.split_once("://").map_or("", |(_, rest)| rest);
    let db = after_host.split_once('/').map_or("", |(_, db)| db.trim_matches('/'));
    let mut prefix = String::from("agora:live:");
    for part in [(db != "0").then_some(db), namespace] {
        if let Some(p) = part.filter(|p| !p.is_empty()) {
            prefix.push_str(p);
            prefix.push(':');
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (prefix, url)
}

impl RedisLive {
    fn channel(&self, topic: &Topic) -> String {
        format!("{}{}", self.prefix, topic.key())
    }

    pub async fn connect(url: &str) -> Result<Self, LiveError> {
        let err = |e: fred::error::Error| LiveError(e.to_string());
        let (prefix, url) = channel_prefix(url);
        let prefix: Arc<str> = prefix.into();
        let publisher = crate::redis::connect(&url, std::time::Duration::from_millis(500)).await.map_err(err)?;
        let subscriber = crate::redis::subscriber(&url).await.map_err(err)?;
        let hub = Arc::new(Hub::default());
        let mut messages = fred::interfaces::EventInterface::message_rx(&subscriber);
        let weak = Arc::downgrade(&hub);
        let ours = Arc::clone(&prefix);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(m) => {
                        let Some(hub) = weak.upgrade() else { return };
                        let topic = m.channel.strip_prefix(&*ours).and_then(Topic::from_key);
                        let event = m.value.as_str().and_then(|raw| LiveEvent::decode(&raw));
                        if let (Some(topic), Some(event)) = (topic, event) {
                            hub.deliver(&topic, event);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("agora_live_dropped_total").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Self { publisher, subscriber, hub, channels: Arc::new(tokio::sync::Mutex::new(())), prefix })
    }
}

#[async_trait]
impl Live for RedisLive {
    async fn publish(&self, topic: &Topic, event: LiveEvent) -> Result<(), LiveError> {
        use fred::interfaces::PubsubInterface as _;
        let _: i64 =
            self.publisher.publish(self.channel(topic), event.encode()).await.map_err(|e| LiveError(e.to_string()))?;
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, LiveError> {
        use fred::interfaces::PubsubInterface as _;
        let _channels = self.channels.lock().await;
        let (rx, first) = self.hub.join(topic);
        let (subscriber, hub, channels) = (self.subscriber.clone(), self.hub.clone(), self.channels.clone());
        let name = self.channel(topic);
        let on_last: Box<dyn FnOnce(Topic) + Send + Sync> = Box::new(move |topic| {
            tokio::spawn(async move {
                let _channels = channels.lock().await;
                // A stream of the topic may have opened since: then the channel stays.
                if !hub.topics.lock().contains_key(&topic) {
                    let _ = subscriber.unsubscribe(name).await;
                }
            });
        });
        let membership = Membership { hub: self.hub.clone(), topic: topic.clone(), on_last: Some(on_last) };
        if first {
            // On failure the membership is dropped, which unsubscribes again.
            self.subscriber.subscribe(self.channel(topic)).await.map_err(|e| LiveError(e.to_string()))?;
        }
        Ok(Subscription { rx, lost: 0, _membership: membership })
    }
}

/// Picks the adapter by URL: empty or `none` (no live delivery), `memory://[NAME]`, `redis://…`.
pub async fn connect(url: &str) -> Result<Option<Arc<dyn Live>>, LiveError> {
    let url = url.trim();
    if url.is_empty() || url == "none" {
        return Ok(None);
    }
    match url.split_once("://") {
        Some(("memory", "")) => Ok(Some(Arc::new(MemoryLive::default()))),
        Some(("memory", name)) => Ok(Some(named(name))),
        Some(("redis" | "rediss", _)) => Ok(Some(Arc::new(RedisLive::connect(url).await?))),
        _ => Err(LiveError(format!("unsupported live url {url:?} (none, memory://NAME, redis://…)"))),
    }
}

/// The backplane setting the notification service and the gateway read: `AGORA_LIVE_URL`
/// (default: none).
pub fn url_from_env(env: &dyn agora_kit::config::Env) -> String {
    agora_kit::config::string(env, "AGORA_LIVE_URL", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_number_or_namespace_keeps_deployments_apart_on_one_redis() {
        let p = |url: &str| channel_prefix(url);
        assert_eq!(p("redis://r:6379"), ("agora:live:".into(), "redis://r:6379".into()));
        assert_eq!(p("redis://r:6379/0"), ("agora:live:".into(), "redis://r:6379/0".into()));
        assert_eq!(p("redis://r:6379/3"), ("agora:live:3:".into(), "redis://r:6379/3".into()));
        assert_eq!(
            p("redis://r:6379/3?namespace=blue&timeout=5"),
            ("agora:live:3:blue:".into(), "redis://r:6379/3?timeout=5".into())
        );
        assert_eq!(p("redis://r:6379?namespace=t1"), ("agora:live:t1:".into(), "redis://r:6379".into()));
    }

    #[test]
    fn events_survive_the_wire_and_unknown_ones_are_skipped() {
        for e in [
            LiveEvent::Notification(42),
            LiveEvent::Update(7),
            LiveEvent::Delete(9),
            LiveEvent::StatusUpdate(3),
            LiveEvent::Conversation(5),
        ] {
            assert_eq!(LiveEvent::decode(&e.encode()), Some(e));
        }
        assert_eq!(LiveEvent::decode("reaction:1"), None);
        assert_eq!(LiveEvent::decode("notification:x"), None);
    }

    #[test]
    fn topics_survive_the_wire() {
        for t in [Topic::Account(42), Topic::Public, Topic::PublicMedia, Topic::Tag("rust".into())] {
            assert_eq!(Topic::from_key(&t.key()), Some(t));
        }
        assert_eq!(Topic::from_key("tag:"), None);
        assert_eq!(Topic::from_key("lists"), None);
    }
}
