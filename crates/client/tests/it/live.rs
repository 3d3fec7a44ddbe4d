//! One conformance suite for the `Live` backplane port, run on the in-process adapter and on
//! Redis pub/sub: a stream hears what is published to its account from the moment it subscribed,
//! and only that; every stream of an account hears it; the public, media and hashtag topics are
//! apart from accounts and from each other; an account whose streams all closed can
//! be subscribed to again; a stream that falls behind loses the oldest events, not the newest.

use std::sync::Arc;
use std::time::Duration;

use agora_client::live::{self, BUFFER, Live, LiveEvent, Topic};

fn accounts() -> [i64; 2] {
    // Fresh ids per run, so runs sharing one Redis never hear each other.
    let base = (rand::random::<u32>() as i64) << 20;
    [base + 1, base + 2]
}

async fn next(s: &mut live::Subscription) -> LiveEvent {
    tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("an event within 5 s").expect("open")
}

/// Nothing more arrives for this stream (checked after a marker event that must come first).
async fn nothing_before(s: &mut live::Subscription, marker: LiveEvent) {
    assert_eq!(next(s).await, marker, "an event meant for someone else arrived first");
}

async fn conformance(l: Arc<dyn Live>) {
    let [a, b] = accounts();
    l.publish(&Topic::Account(a), LiveEvent::Notification(1)).await.unwrap(); // before anyone listens: lost
    let mut first = l.subscribe(&Topic::Account(a)).await.unwrap();
    let mut second = l.subscribe(&Topic::Account(a)).await.unwrap();
    let mut other = l.subscribe(&Topic::Account(b)).await.unwrap();
    l.publish(&Topic::Account(a), LiveEvent::Notification(2)).await.unwrap();
    l.publish(&Topic::Account(b), LiveEvent::Notification(3)).await.unwrap();
    assert_eq!(next(&mut first).await, LiveEvent::Notification(2), "only what came after subscribing");
    assert_eq!(next(&mut second).await, LiveEvent::Notification(2), "every stream of the account");
    nothing_before(&mut other, LiveEvent::Notification(3)).await;

    drop(first);
    l.publish(&Topic::Account(a), LiveEvent::Notification(4)).await.unwrap();
    assert_eq!(next(&mut second).await, LiveEvent::Notification(4), "one stream closing leaves the other");
    drop(second);
    // Every stream of the account closed (on Redis the channel is unsubscribed); a new one hears.
    let mut again = l.subscribe(&Topic::Account(a)).await.unwrap();
    l.publish(&Topic::Account(a), LiveEvent::Notification(5)).await.unwrap();
    assert_eq!(next(&mut again).await, LiveEvent::Notification(5));

    // Shared topics are apart from accounts and from each other: a public status reaches the
    // public streams, a tagged one the tag's, and an account id that looks like neither is
    // still only an account.
    let tag = Topic::Tag(format!("t{a}"));
    let mut public = l.subscribe(&Topic::Public).await.unwrap();
    let mut media = l.subscribe(&Topic::PublicMedia).await.unwrap();
    let mut tagged = l.subscribe(&tag).await.unwrap();
    let mut other_tag = l.subscribe(&Topic::Tag(format!("u{a}"))).await.unwrap();
    l.publish(&tag, LiveEvent::Update(10)).await.unwrap();
    l.publish(&Topic::PublicMedia, LiveEvent::Update(11)).await.unwrap();
    l.publish(&Topic::Public, LiveEvent::StatusUpdate(12)).await.unwrap();
    l.publish(&Topic::Tag(format!("u{a}")), LiveEvent::Delete(13)).await.unwrap();
    l.publish(&Topic::Account(a), LiveEvent::Update(14)).await.unwrap();
    // Other tests sharing the Redis server may publish public statuses of their own (ids far
    // above these): only this run's events must not cross.
    let ours = [LiveEvent::Update(10), LiveEvent::Update(11), LiveEvent::StatusUpdate(12), LiveEvent::Delete(13)];
    for (s, marker) in
        [(&mut tagged, ours[0]), (&mut media, ours[1]), (&mut public, ours[2]), (&mut other_tag, ours[3])]
    {
        loop {
            let e = next(s).await;
            if e == marker {
                break;
            }
            assert!(!ours.contains(&e), "{e:?} crossed into the stream waiting for {marker:?}");
        }
    }
    nothing_before(&mut again, LiveEvent::Update(14)).await;

    // A stream that does not read falls behind: the oldest go, the newest arrive. Redis delivers
    // asynchronously, so a second stream of the account is read up to the last event first: once
    // it has that event, the hub has handed every event to both streams.
    let mut watcher = l.subscribe(&Topic::Account(b)).await.unwrap();
    let total = BUFFER as i64 + 50;
    for i in 0..total {
        l.publish(&Topic::Account(b), LiveEvent::Notification(1000 + i)).await.unwrap();
    }
    l.publish(&Topic::Account(b), LiveEvent::Notification(9999)).await.unwrap();
    while next(&mut watcher).await != LiveEvent::Notification(9999) {}
    let mut heard = Vec::new();
    loop {
        let LiveEvent::Notification(id) = next(&mut other).await else { panic!("only notifications were sent") };
        heard.push(id);
        if id == 9999 {
            break;
        }
    }
    assert_eq!(heard.len(), BUFFER, "a buffer's worth is kept, the newest");
    assert_eq!(other.lost(), (total + 1) as u64 - BUFFER as u64, "the subscriber is told how many it lost");
    assert!(!heard.contains(&1000), "the oldest were dropped");
    assert!(heard.contains(&(1000 + total - 1)), "the newest arrived");
}

#[tokio::test]
async fn memory_live_conforms() {
    conformance(live::connect("memory://").await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn redis_live_conforms() {
    let Some(url) = agora_testkit::test_server("AGORA_TEST_REDIS_URL") else { return };
    conformance(live::connect(&url).await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn redis_live_reaches_another_process_handle() {
    // Two connections stand for two processes: the notification service and a gateway.
    let Some(url) = agora_testkit::test_server("AGORA_TEST_REDIS_URL") else { return };
    let service = live::connect(&url).await.unwrap().unwrap();
    let gateway = live::connect(&url).await.unwrap().unwrap();
    let [a, _] = accounts();
    let mut s = gateway.subscribe(&Topic::Account(a)).await.unwrap();
    service.publish(&Topic::Account(a), LiveEvent::Notification(7)).await.unwrap();
    assert_eq!(next(&mut s).await, LiveEvent::Notification(7));
}

#[tokio::test]
async fn redis_namespaces_never_hear_each_other() {
    // Two deployments (or two test platforms) on one Redis server: pub/sub ignores databases,
    // so the namespace keeps their public topics apart.
    let Some(url) = agora_testkit::test_server("AGORA_TEST_REDIS_URL") else { return };
    let [a, _] = accounts();
    let sep = if url.contains('?') { '&' } else { '?' };
    let blue = live::connect(&format!("{url}{sep}namespace=blue{a}")).await.unwrap().unwrap();
    let green = live::connect(&format!("{url}{sep}namespace=green{a}")).await.unwrap().unwrap();
    let also_blue = live::connect(&format!("{url}{sep}namespace=blue{a}")).await.unwrap().unwrap();
    let mut green_public = green.subscribe(&Topic::Public).await.unwrap();
    let mut blue_public = also_blue.subscribe(&Topic::Public).await.unwrap();
    blue.publish(&Topic::Public, LiveEvent::Update(1)).await.unwrap();
    green.publish(&Topic::Public, LiveEvent::Update(2)).await.unwrap();
    assert_eq!(next(&mut blue_public).await, LiveEvent::Update(1), "one namespace, two connections");
    nothing_before(&mut green_public, LiveEvent::Update(2)).await;
}

#[tokio::test]
async fn named_memory_live_is_shared_in_the_process_and_a_bad_url_is_refused() {
    let one = live::connect("memory://live-shared-test").await.unwrap().unwrap();
    let two = live::connect("memory://live-shared-test").await.unwrap().unwrap();
    let [a, _] = accounts();
    let mut s = two.subscribe(&Topic::Account(a)).await.unwrap();
    one.publish(&Topic::Account(a), LiveEvent::Notification(8)).await.unwrap();
    assert_eq!(next(&mut s).await, LiveEvent::Notification(8));
    assert!(live::connect("").await.unwrap().is_none());
    assert!(live::connect("none").await.unwrap().is_none());
    let err = live::connect("kafka://x").await.err().expect("refused");
    assert!(err.to_string().contains("unsupported live url"), "{err}");
}
