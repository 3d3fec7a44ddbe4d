//! The live backplane: how an event reaches whichever gateway holds an account's streaming
//! connections. A service publishes to an account ("notification 42 is new", "status 7 entered
//! your home"); every gateway
//! process with a stream of that account open hears it, fetches what it names with that stream's
//! own token (so the owning service applies its visibility rules again) and sends it.
//!
//! Delivery is best-effort by design: what is published is already stored, and a client that
//! missed something (no stream open, a gateway restart, a slow reader) catches up through the
//! REST API. So a publish that fails is counted, never retried, and a subscriber that falls
//! behind loses the oldest events, counted as dropped.
//!
//! Adapters: `memory://NAME` (one hub per name in this process: the services of `agora dev`
//! share it) and `redis://…` (Redis pub/sub, one channel per account, subscribed only while a
//! stream of that account is open in this process). An empty URL or `none` means no live
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
    /// A status left the account's home timeline (deleted).
    Delete(i64),
}

impl LiveEvent {
    pub fn encode(&self) -> String {
        match self {
            LiveEvent::Notification(id) => format!("notification:{id}"),
            LiveEvent::Update(id) => format!("update:{id}"),
            LiveEvent::Delete(id) => format!("delete:{id}"),
        }
    }

    /// None for a payload this build does not know (a newer publisher's).
    pub fn decode(raw: &str) -> Option<Self> {
        let (kind, id) = raw.split_once(':')?;
        match kind {
            "notification" => id.parse().ok().map(LiveEvent::Notification),
            "update" => id.parse().ok().map(LiveEvent::Update),
            "delete" => id.parse().ok().map(LiveEvent::Delete),
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
    /// Tells `account_id`'s open streams, wherever they are, of `event`.
    async fn publish(&self, account_id: i64, event: LiveEvent) -> Result<(), LiveError>;
    /// The events published to `account_id` from now on, until the subscription is dropped.
    async fn subscribe(&self, account_id: i64) -> Result<Subscription, LiveError>;
}

/// Publishes and counts a failure instead of returning it: the event is stored already, and a
/// client catches up through the REST API.
pub async fn publish_best_effort(live: Option<&Arc<dyn Live>>, account_id: i64, event: LiveEvent) {
    let Some(live) = live else { return };
    match live.publish(account_id, event).await {
        Ok(()) => metrics::counter!("agora_live_published_total", "result" => "ok").increment(1),
        Err(e) => {
            metrics::counter!("agora_live_published_total", "result" => "error").increment(1);
            tracing::warn!(error = %e, "could not publish a live event; open streams miss it");
        }
    }
}

/// One stream's view of an account's events.
pub struct Subscription {
    rx: broadcast::Receiver<LiveEvent>,
    _membership: Membership,
}

impl Subscription {
    /// The next event; None once the backplane is gone. Events this subscriber fell behind on
    /// are skipped and counted.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("agora_live_dropped_total").increment(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The accounts with subscribers in this process, each with its local fan-out.
#[derive(Default)]
struct Hub {
    accounts: Mutex<HashMap<i64, (broadcast::Sender<LiveEvent>, usize)>>,
}

/// Leaves the hub when dropped; the last member of an account runs `on_last`.
struct Membership {
    hub: Arc<Hub>,
    account_id: i64,
    on_last: Option<Box<dyn FnOnce(i64) + Send + Sync>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let last = {
            let mut accounts = self.hub.accounts.lock();
            match accounts.get_mut(&self.account_id) {
                Some((_, n)) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    accounts.remove(&self.account_id);
                    true
                }
                None => false,
            }
        };
        if last && let Some(f) = self.on_last.take() {
            f(self.account_id);
        }
    }
}

impl Hub {
    /// Joins `account_id`'s fan-out; true when this is its first member.
    fn join(self: &Arc<Self>, account_id: i64) -> (broadcast::Receiver<LiveEvent>, bool) {
        let mut accounts = self.accounts.lock();
        let entry = accounts.entry(account_id).or_insert_with(|| (broadcast::channel(BUFFER).0, 0));
        entry.1 += 1;
        (entry.0.subscribe(), entry.1 == 1)
    }

    fn deliver(&self, account_id: i64, event: LiveEvent) {
        if let Some((tx, _)) = self.accounts.lock().get(&account_id) {
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
    async fn publish(&self, account_id: i64, event: LiveEvent) -> Result<(), LiveError> {
        self.hub.deliver(account_id, event);
        Ok(())
    }

    async fn subscribe(&self, account_id: i64) -> Result<Subscription, LiveError> {
        let (rx, _) = self.hub.join(account_id);
        Ok(Subscription { rx, _membership: Membership { hub: self.hub.clone(), account_id, on_last: None } })
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

/// The backplane on Redis pub/sub: channel `agora:live:ID` per account.
pub struct RedisLive {
    publisher: crate::redis::Client,
    subscriber: fred::clients::SubscriberClient,
    hub: Arc<Hub>,
    /// Held while a channel is subscribed or unsubscribed, so an account's last stream closing
    /// and a new one opening cannot leave the channel unsubscribed.
    channels: Arc<tokio::sync::Mutex<()>>,
}

fn channel(account_id: i64) -> String {
    format!("agora:live:{account_id}")
}

impl RedisLive {
    pub async fn connect(url: &str) -> Result<Self, LiveError> {
        let err = |e: fred::error::Error| LiveError(e.to_string());
        let publisher = crate::redis::connect(url, std::time::Duration::from_millis(500)).await.map_err(err)?;
        let subscriber = crate::redis::subscriber(url).await.map_err(err)?;
        let hub = Arc::new(Hub::default());
        let mut messages = fred::interfaces::EventInterface::message_rx(&subscriber);
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(m) => {
                        let Some(hub) = weak.upgrade() else { return };
                        let account = m.channel.strip_prefix("agora:live:").and_then(|id| id.parse::<i64>().ok());
                        let event = m.value.as_str().and_then(|raw| LiveEvent::decode(&raw));
                        if let (Some(account), Some(event)) = (account, event) {
                            hub.deliver(account, event);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("agora_live_dropped_total").increment(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Self { publisher, subscriber, hub, channels: Arc::new(tokio::sync::Mutex::new(())) })
    }
}

#[async_trait]
impl Live for RedisLive {
    async fn publish(&self, account_id: i64, event: LiveEvent) -> Result<(), LiveError> {
        use fred::interfaces::PubsubInterface as _;
        let _: i64 =
            self.publisher.publish(channel(account_id), event.encode()).await.map_err(|e| LiveError(e.to_string()))?;
        Ok(())
    }

    async fn subscribe(&self, account_id: i64) -> Result<Subscription, LiveError> {
        use fred::interfaces::PubsubInterface as _;
        let _channels = self.channels.lock().await;
        let (rx, first) = self.hub.join(account_id);
        let (subscriber, hub, channels) = (self.subscriber.clone(), self.hub.clone(), self.channels.clone());
        let on_last: Box<dyn FnOnce(i64) + Send + Sync> = Box::new(move |id| {
            tokio::spawn(async move {
                let _channels = channels.lock().await;
                // A stream of the account may have opened since: then the channel stays.
                if !hub.accounts.lock().contains_key(&id) {
                    let _ = subscriber.unsubscribe(channel(id)).await;
                }
            });
        });
        let membership = Membership { hub: self.hub.clone(), account_id, on_last: Some(on_last) };
        if first {
            // On failure the membership is dropped, which unsubscribes again.
            self.subscriber.subscribe(channel(account_id)).await.map_err(|e| LiveError(e.to_string()))?;
        }
        Ok(Subscription { rx, _membership: membership })
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
    fn events_survive_the_wire_and_unknown_ones_are_skipped() {
        for e in [LiveEvent::Notification(42), LiveEvent::Update(7), LiveEvent::Delete(9)] {
            assert_eq!(LiveEvent::decode(&e.encode()), Some(e));
        }
        assert_eq!(LiveEvent::decode("reaction:1"), None);
        assert_eq!(LiveEvent::decode("notification:x"), None);
    }
}
