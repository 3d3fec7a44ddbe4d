//! The consumer loop: events of different keys are handled at once, those of one key in bus
//! order, each once; and a stop in the middle loses nothing: what was not finished is delivered
//! again to the next consumer of the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_events::consumer::{Handler, HandlerError};
use agora_events::{Envelope, EventBus};
use async_trait::async_trait;
use parking_lot::Mutex;

/// Records what it handled per key and how many handlers ran at once; `slow` events take long.
#[derive(Default)]
struct Recorder {
    seen: Mutex<HashMap<String, Vec<i64>>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, e: &Envelope) -> Result<(), HandlerError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        // Later events of a key finish sooner: only ordering per key keeps them in order.
        let pause = 2 + (50 - (e.id % 50)) as u64 / 10;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        self.seen.lock().entry(e.aggregate_id.clone()).or_default().push(e.id);
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

fn event(id: i64, key: &str) -> Envelope {
    Envelope { id, r#type: "test.happened".into(), aggregate_id: key.into(), ..Default::default() }
}

async fn publish_keys(bus: &Arc<dyn EventBus>, topic: &str, n: i64, keys: i64) {
    let events: Vec<(String, Envelope)> =
        (0..n).map(|i| (topic.to_owned(), event(1_000 + i, &format!("k{}", i % keys)))).collect();
    assert_eq!(bus.publish_all(&events).await.unwrap(), events.len());
}

async fn wait_for(recorder: &Recorder, n: usize) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while recorder.seen.lock().values().map(Vec::len).sum::<usize>() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the consumer did not handle every event");
}

/// Runs the consumer loop as group `g` on `topic`, handing events to `recorder`.
fn consume(
    bus: &Arc<dyn EventBus>,
    topic: &str,
    recorder: &Arc<Recorder>,
) -> (agora_kit::Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = agora_kit::Shutdown::new();
    let run = tokio::spawn(agora_events::consumer::run(
        Arc::clone(bus),
        vec![topic.to_owned()],
        "g".into(),
        Arc::clone(recorder) as Arc<dyn Handler>,
        shutdown.clone(),
    ));
    (shutdown, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_run_concurrently_each_key_in_order() {
    let dir = agora_testkit::tempdir().unwrap();
    let bus = agora_events::connect(&format!("sqlite://{}/bus.db", dir.0.display())).await.unwrap();
    let topic = "agora.consumer.v1";
    publish_keys(&bus, topic, 400, 20).await;
    let recorder = Arc::new(Recorder::default());
    let (shutdown, run) = consume(&bus, topic, &recorder);
    wait_for(&recorder, 400).await;
    shutdown.cancel();
    run.await.unwrap();
    let seen = recorder.seen.lock();
    for (key, ids) in seen.iter() {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, &sorted, "key {key} was handled out of order");
        assert_eq!(ids.len(), 20, "key {key}: every event once");
    }
    let most = recorder.most_at_once.load(Ordering::SeqCst);
    assert!(most > 1, "events of different keys never ran at once");
    assert!(most <= agora_events::consumer::IN_FLIGHT, "{most} handlers ran at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_midway_redelivers_what_was_not_finished() {
    let dir = agora_testkit::tempdir().unwrap();
    let url = format!("sqlite://{}/bus.db", dir.0.display());
    let topic = "agora.consumer.v1";
    let bus = agora_events::connect(&url).await.unwrap();
    publish_keys(&bus, topic, 300, 7).await;
    let first = Arc::new(Recorder::default());
    let (shutdown, run) = consume(&bus, topic, &first);
    wait_for(&first, 100).await;
    shutdown.cancel();
    run.await.unwrap();
    drop(bus);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let bus = agora_events::connect(&url).await.unwrap();
    let second = Arc::new(Recorder::default());
    let (shutdown, run) = consume(&bus, topic, &second);
    let handled_first: usize = first.seen.lock().values().map(Vec::len).sum();
    wait_for(&second, 300 - handled_first.min(300)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    run.await.unwrap();
    // At least once, in order per key: every event was handled by one of the two, and the
    // second consumer's share of each key is a suffix of that key's events.
    let (a, b) = (first.seen.lock(), second.seen.lock());
    for k in 0..7 {
        let key = format!("k{k}");
        let all: Vec<i64> = (0..300).filter(|i| i % 7 == k).map(|i| 1_000 + i).collect();
        let mut got: Vec<i64> = a.get(&key).cloned().unwrap_or_default();
        got.extend(b.get(&key).cloned().unwrap_or_default());
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, all, "key {key}: an event was lost across the stop");
        let later = b.get(&key).cloned().unwrap_or_default();
        assert!(later.windows(2).all(|w| w[0] < w[1]), "key {key} out of order after the restart");
    }
}
