//! The relay publishes what a transaction wrote, in order, retries while the bus fails, and
//! leaves nothing behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_events::bus::{BusError, Subscription};
use agora_events::outbox::{OutboxRelay, OutboxStore, sqlite::SqliteOutbox};
use agora_events::{Envelope, EventBus};
use async_trait::async_trait;

/// A bus that refuses to publish while `down` is set, then passes through.
struct Flaky {
    inner: Arc<dyn EventBus>,
    down: AtomicBool,
}

#[async_trait]
impl EventBus for Flaky {
    async fn publish(&self, topic: &str, e: &Envelope) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("broker down".into()));
        }
        self.inner.publish(topic, e).await
    }
    async fn subscribe(&self, t: &[String], g: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(t, g).await
    }
    async fn ensure_topics(&self, t: &[String]) -> Result<(), BusError> {
        self.inner.ensure_topics(t).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_in_order_and_survives_bus_failures() {
    let dir = agora_testkit::tempdir().unwrap();
    let url = format!("sqlite://{}/o.db", dir.0.display());
    let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true)).await.unwrap();
    sqlx::query("CREATE TABLE outbox (id BIGINT PRIMARY KEY, topic TEXT NOT NULL, envelope BLOB NOT NULL, created_at_ms BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let store = Arc::new(SqliteOutbox::new(pool.clone()));
    let inner = agora_events::connect("memory://").await.unwrap();
    let bus = Arc::new(Flaky { inner: Arc::clone(&inner), down: AtomicBool::new(true) });
    let relay = OutboxRelay::new("test", store.clone(), bus.clone());
    let wake = relay.waker();
    let stop = agora_kit::Shutdown::new();
    let task = tokio::spawn(relay.run(stop.clone()));

    for i in 1..=5 {
        let mut tx = pool.begin().await.unwrap();
        let env = Envelope { id: i, r#type: "user.created".into(), aggregate_id: "1".into(), ..Default::default() };
        agora_events::outbox::sqlite::insert(&mut tx, "agora.user.v1", &env).await.unwrap();
        tx.commit().await.unwrap();
        wake.notify_one();
    }
    // A rolled-back transaction leaves no event.
    let mut tx = pool.begin().await.unwrap();
    let ghost = Envelope { id: 99, r#type: "user.created".into(), ..Default::default() };
    agora_events::outbox::sqlite::insert(&mut tx, "agora.user.v1", &ghost).await.unwrap();
    tx.rollback().await.unwrap();

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.backlog().await.unwrap(), 5, "nothing is lost while the bus is down");
    bus.down.store(false, Ordering::SeqCst);

    let mut sub = inner.subscribe(&["agora.user.v1".to_owned()], "check").await.unwrap();
    let mut ids = Vec::new();
    while ids.len() < 5 {
        let d = tokio::time::timeout(Duration::from_secs(15), sub.next()).await.unwrap().unwrap();
        ids.push(d.envelope.id);
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    for _ in 0..50 {
        if store.backlog().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.backlog().await.unwrap(), 0);
    stop.cancel();
    task.await.unwrap();
}
