//! One conformance suite for the `Epochs` port, run on the in-process adapter and on Redis: an
//! account's epoch stays put until it is bumped, a bump gives a value never seen before for it,
//! and an epoch Redis has lost comes back as a new value, never an old one.

use std::collections::HashSet;
use std::sync::Arc;

use agora_client::epoch::{self, Epochs};

fn ids() -> [i64; 3] {
    // Fresh ids per run, so runs sharing one Redis never see each other's keys.
    let base = (rand::random::<u32>() as i64) << 20;
    [base + 1, base + 2, base + 3]
}

async fn conformance(e: Arc<dyn Epochs>) {
    let [a, b, c] = ids();
    let first = e.current(&[a, b, c]).await.unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(e.current(&[a, b, c]).await.unwrap(), first, "epochs stay put until bumped");
    assert_eq!(e.current(&[c, a]).await.unwrap(), vec![first[2], first[0]], "answered in the order asked");
    assert!(e.current(&[]).await.unwrap().is_empty());

    e.bump(&[a]).await.unwrap();
    let after = e.current(&[a, b, c]).await.unwrap();
    assert_ne!(after[0], first[0], "a bump changes the epoch");
    assert_eq!(&after[1..], &first[1..], "and only the bumped account's");

    let mut seen: HashSet<u64> = [first[0], after[0]].into();
    for _ in 0..20 {
        e.bump(&[a, b]).await.unwrap();
        let now = e.current(&[a]).await.unwrap()[0];
        assert!(seen.insert(now), "a bump never brings back an earlier epoch");
    }
    e.bump(&[]).await.unwrap();
}

#[tokio::test]
async fn memory_epochs_conform() {
    conformance(epoch::connect("memory://").await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn named_memory_epochs_are_shared_in_the_process() {
    let one = epoch::connect("memory://shared-test").await.unwrap().unwrap();
    let two = epoch::connect("memory://shared-test").await.unwrap().unwrap();
    let other = epoch::connect("memory://another-test").await.unwrap().unwrap();
    let [a, ..] = ids();
    let before = two.current(&[a]).await.unwrap();
    one.bump(&[a]).await.unwrap();
    assert_ne!(two.current(&[a]).await.unwrap(), before, "a bump through one handle shows through the other");
    let elsewhere = other.current(&[a]).await.unwrap();
    one.bump(&[a]).await.unwrap();
    assert_eq!(other.current(&[a]).await.unwrap(), elsewhere, "another name is another map");
}

#[tokio::test]
async fn none_means_no_epochs_and_a_bad_url_is_refused() {
    assert!(epoch::connect("").await.unwrap().is_none());
    assert!(epoch::connect("none").await.unwrap().is_none());
    let err = epoch::connect("kafka://x").await.err().expect("refused");
    assert!(err.to_string().contains("unsupported epochs url"), "{err}");
}

#[tokio::test]
async fn redis_epochs_conform() {
    let Some(url) = agora_testkit::test_server("AGORA_TEST_REDIS_URL") else { return };
    conformance(epoch::connect(&url).await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn an_epoch_redis_lost_comes_back_new() {
    let Some(url) = agora_testkit::test_server("AGORA_TEST_REDIS_URL") else { return };
    let e = epoch::connect(&url).await.unwrap().unwrap();
    let [a, b, _] = ids();
    let before = e.current(&[a, b]).await.unwrap();
    // What a Redis restart without persistence, or an expiry, leaves behind.
    let client = agora_client::redis::connect(&url, std::time::Duration::from_secs(2)).await.unwrap();
    use fred::interfaces::KeysInterface as _;
    let _: i64 = client.del(format!("agora:epoch:{a}")).await.unwrap();
    let after = e.current(&[a, b]).await.unwrap();
    assert_ne!(after[0], before[0], "a lost epoch is a new one, so nothing cached under the old one is used");
    assert_eq!(after[1], before[1]);
    assert_eq!(e.current(&[a]).await.unwrap()[0], after[0], "and it stays put from then on");
}
