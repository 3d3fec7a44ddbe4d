//! Bus conformance: every adapter delivers in per-key order, to every group, once per group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_events::{Envelope, EventBus, Subscription};

fn topic() -> String {
    format!("agora.test{:08x}.v1", rand::random::<u32>())
}

fn event(id: i64, key: &str) -> Envelope {
    Envelope {
        id,
        r#type: "test.happened".into(),
        aggregate_id: key.into(),
        payload: id.to_le_bytes().to_vec(),
        ..Default::default()
    }
}

async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Envelope> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", out.len()))
            .unwrap();
        sub.ack(&d).await.unwrap();
        out.push(d.envelope);
    }
    out
}

async fn late_groups_see_history_in_key_order(bus: Arc<dyn EventBus>) {
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    for i in 0..20 {
        bus.publish(&t, &event(i, if i % 2 == 0 { "even" } else { "odd" })).await.unwrap();
    }
    let mut sub = bus.subscribe(std::slice::from_ref(&t), "late").await.unwrap();
    let got = take(&mut sub, 20).await;
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &got {
        per_key.entry(e.aggregate_id.clone()).or_default().push(e.id);
    }
    for ids in per_key.values() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-key order kept: {ids:?}");
    }
    assert_eq!(got.iter().map(|e| e.id).collect::<HashSet<_>>().len(), 20);
    assert_eq!(got[0].payload.len(), 8, "payload intact");
}

async fn every_group_gets_every_event(bus: Arc<dyn EventBus>) {
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    let mut a = bus.subscribe(std::slice::from_ref(&t), "group-a").await.unwrap();
    let mut b = bus.subscribe(std::slice::from_ref(&t), "group-b").await.unwrap();
    for i in 0..10 {
        bus.publish(&t, &event(100 + i, "k")).await.unwrap();
    }
    let ga: Vec<i64> = take(&mut a, 10).await.iter().map(|e| e.id).collect();
    let gb: Vec<i64> = take(&mut b, 10).await.iter().map(|e| e.id).collect();
    assert_eq!(ga, (100..110).collect::<Vec<_>>());
    assert_eq!(gb, ga);
}

async fn acked_events_are_not_redelivered_to_the_group(bus: Arc<dyn EventBus>) {
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    for i in 0..5 {
        bus.publish(&t, &event(200 + i, "k")).await.unwrap();
    }
    {
        let mut first = bus.subscribe(std::slice::from_ref(&t), "resume").await.unwrap();
        assert_eq!(take(&mut first, 5).await.len(), 5);
        // Give an asynchronous offset commit time to land before the member leaves.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 5..8 {
        bus.publish(&t, &event(200 + i, "k")).await.unwrap();
    }
    let mut again = bus.subscribe(std::slice::from_ref(&t), "resume").await.unwrap();
    let ids: Vec<i64> = take(&mut again, 3).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![205, 206, 207]);
}

/// A consumer that stops between delivery and ack (a crash) gets the event again: at-least-once.
async fn unacked_events_are_redelivered_after_a_restart(bus: Arc<dyn EventBus>) {
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    for i in 0..4 {
        bus.publish(&t, &event(400 + i, "k")).await.unwrap();
    }
    {
        let mut first = bus.subscribe(std::slice::from_ref(&t), "crashy").await.unwrap();
        assert_eq!(take(&mut first, 2).await.len(), 2);
        let unacked = tokio::time::timeout(Duration::from_secs(30), first.next()).await.unwrap().unwrap();
        assert_eq!(unacked.envelope.id, 402);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut again = bus.subscribe(std::slice::from_ref(&t), "crashy").await.unwrap();
    let ids: Vec<i64> = take(&mut again, 2).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![402, 403]);
}

/// A batch goes out whole and in order, interleaved topics included.
async fn batches_keep_their_order(bus: Arc<dyn EventBus>) {
    let (t1, t2) = (topic(), topic());
    bus.ensure_topics(&[t1.clone(), t2.clone()]).await.unwrap();
    let batch: Vec<(String, Envelope)> =
        (0..12).map(|i| (if i % 3 == 0 { t2.clone() } else { t1.clone() }, event(700 + i, "k"))).collect();
    assert_eq!(bus.publish_all(&batch).await.unwrap(), 12);
    // One group per topic, as services consume (members of one group on different topics
    // rebalance against each other).
    let mut s1 = bus.subscribe(std::slice::from_ref(&t1), "batch-1").await.unwrap();
    let mut s2 = bus.subscribe(std::slice::from_ref(&t2), "batch-2").await.unwrap();
    let got1: Vec<i64> = take(&mut s1, 8).await.iter().map(|e| e.id).collect();
    let got2: Vec<i64> = take(&mut s2, 4).await.iter().map(|e| e.id).collect();
    assert_eq!(got1, vec![701, 702, 704, 705, 707, 708, 710, 711]);
    assert_eq!(got2, vec![700, 703, 706, 709]);
}

/// The consumer drops `next` whenever a handler finishes first, so a dropped `next` must lose,
/// repeat and reorder nothing, wherever it was dropped: here two calls in three are dropped at
/// their first wait, and every event still arrives once, in order.
async fn a_dropped_next_loses_and_repeats_nothing(bus: Arc<dyn EventBus>) {
    use futures::FutureExt as _;
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    let batch: Vec<(String, Envelope)> = (0..300).map(|i| (t.clone(), event(900 + i, "k"))).collect();
    assert_eq!(bus.publish_all(&batch).await.unwrap(), 300);
    let mut sub = bus.subscribe(std::slice::from_ref(&t), "dropper").await.unwrap();
    let mut got = Vec::new();
    let mut calls = 0u64;
    while got.len() < 300 {
        calls += 1;
        assert!(calls < 100_000, "only {} of 300 events arrived", got.len());
        let d = if calls.is_multiple_of(3) {
            tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of 300 events arrived", got.len()))
                .unwrap()
        } else {
            match sub.next().now_or_never() {
                Some(d) => d.unwrap(),
                None => {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
        };
        sub.ack(&d).await.unwrap();
        got.push(d.envelope.id);
    }
    assert_eq!(got, (900..1200).collect::<Vec<i64>>());
    drop(sub);
    // Everything was acked: the group's next member starts after it.
    bus.publish(&t, &event(1200, "k")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = bus.subscribe(std::slice::from_ref(&t), "dropper").await.unwrap();
    let ids: Vec<i64> = take(&mut again, 1).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![1200]);
}

async fn memory() -> Option<Arc<dyn EventBus>> {
    Some(agora_events::connect("memory://").await.unwrap())
}

/// The embedded default: a log file in a scratch directory (see `agora_testkit::scratch_dir`).
async fn sqlite() -> Option<Arc<dyn EventBus>> {
    let dir = agora_testkit::scratch_dir().unwrap();
    let url = format!("sqlite://{}/bus.db", dir.display());
    Some(agora_events::connect(&url).await.unwrap())
}

async fn kafka() -> Option<Arc<dyn EventBus>> {
    let url = agora_testkit::test_server("AGORA_TEST_KAFKA_URL")?;
    let url = format!("{url}?session_timeout_ms=2000&partitions=3");
    Some(agora_events::connect(&url).await.unwrap())
}

agora_testkit::conformance!(
    backends: [memory, sqlite, kafka],
    cases: [
        a_dropped_next_loses_and_repeats_nothing,
        batches_keep_their_order,
        late_groups_see_history_in_key_order,
        every_group_gets_every_event,
        acked_events_are_not_redelivered_to_the_group,
        unacked_events_are_redelivered_after_a_restart,
    ]
);

/// Consumer lag reaches /metrics from librdkafka's statistics (Kafka only: the in-process bus
/// has no lag to speak of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_lag_is_exported() {
    let Some(bus) = kafka().await else { return };
    agora_kit::metrics::install();
    let t = topic();
    bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    for i in 0..5 {
        bus.publish(&t, &event(300 + i, "k")).await.unwrap();
    }
    let mut sub = bus.subscribe(std::slice::from_ref(&t), "lag-check").await.unwrap();
    take(&mut sub, 1).await;
    let wanted = format!("agora_consumer_lag{{group=\"lag-check\",topic=\"{t}\"");
    for _ in 0..40 {
        if agora_kit::metrics::render().lines().any(|l| l.starts_with(&wanted)) {
            return;
        }
        // Keep the consumer polling so librdkafka can emit statistics.
        let _ = tokio::time::timeout(Duration::from_millis(250), sub.next()).await;
    }
    panic!("no {wanted} in /metrics after 10 s");
}

/// Two platforms on one broker, in different namespaces, never see each other's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_namespaces_are_isolated() {
    let Some(url) = agora_testkit::test_server("AGORA_TEST_KAFKA_URL") else { return };
    let a = agora_events::connect(&format!(
        "{url}?session_timeout_ms=2000&partitions=1&namespace=nsa{:06x}",
        rand::random::<u32>() >> 8
    ))
    .await
    .unwrap();
    let b = agora_events::connect(&format!(
        "{url}?session_timeout_ms=2000&partitions=1&namespace=nsb{:06x}",
        rand::random::<u32>() >> 8
    ))
    .await
    .unwrap();
    let t = topic();
    for bus in [&a, &b] {
        bus.ensure_topics(std::slice::from_ref(&t)).await.unwrap();
    }
    a.publish(&t, &event(500, "k")).await.unwrap();
    b.publish(&t, &event(600, "k")).await.unwrap();
    let mut sa = a.subscribe(std::slice::from_ref(&t), "g").await.unwrap();
    let mut sb = b.subscribe(std::slice::from_ref(&t), "g").await.unwrap();
    let got_a = take(&mut sa, 1).await;
    let got_b = take(&mut sb, 1).await;
    assert_eq!(got_a[0].id, 500);
    assert_eq!(got_b[0].id, 600);
    let d = tokio::time::timeout(Duration::from_secs(5), sa.next()).await;
    assert!(d.is_err(), "namespace a saw a second event");
}

/// The embedded log keeps events and each group's position across a restart of the process
/// (here: the bus closed and opened again on the same file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_survives_a_restart() {
    let dir = agora_testkit::tempdir().unwrap();
    let url = format!("sqlite://{}/bus.db", dir.0.display());
    let t = topic();
    {
        let bus = agora_events::connect(&url).await.unwrap();
        for i in 0..10 {
            bus.publish(&t, &event(800 + i, "k")).await.unwrap();
        }
        let mut sub = bus.subscribe(std::slice::from_ref(&t), "g").await.unwrap();
        assert_eq!(take(&mut sub, 4).await.len(), 4);
        let unacked = sub.next().await.unwrap();
        assert_eq!(unacked.envelope.id, 804);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bus = agora_events::connect(&url).await.unwrap();
    let mut again = bus.subscribe(std::slice::from_ref(&t), "g").await.unwrap();
    let ids: Vec<i64> = take(&mut again, 6).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, (804..810).collect::<Vec<_>>(), "resumes after the last ack, the unacked one first");
    let mut other = bus.subscribe(std::slice::from_ref(&t), "h").await.unwrap();
    assert_eq!(take(&mut other, 10).await.len(), 10, "a new group reads the whole retained log");
}

/// Two members of one group on the embedded bus never both get an event: one consumes, the
/// other takes over where it left off when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_members_take_turns() {
    let bus = sqlite().await.unwrap();
    let t = topic();
    for i in 0..6 {
        bus.publish(&t, &event(900 + i, "k")).await.unwrap();
    }
    let mut first = bus.subscribe(std::slice::from_ref(&t), "pair").await.unwrap();
    let mut second = bus.subscribe(std::slice::from_ref(&t), "pair").await.unwrap();
    let a: Vec<i64> = take(&mut first, 3).await.iter().map(|e| e.id).collect();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.next()).await.is_err(),
        "the second member must wait while the first holds the topic"
    );
    drop(first);
    let b: Vec<i64> = take(&mut second, 3).await.iter().map(|e| e.id).collect();
    assert_eq!(a, vec![900, 901, 902]);
    assert_eq!(b, vec![903, 904, 905]);
}
