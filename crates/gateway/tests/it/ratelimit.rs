//! Rate-limiter conformance: the same cases on the in-memory and the Redis adapter.

use std::sync::Arc;
use std::time::Duration;

use agora_gateway::ratelimit::{self, Limit, RateLimiter};

fn key() -> String {
    format!("test:{:016x}", rand::random::<u64>())
}

async fn counts_up_to_the_limit_then_refuses(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 3, window: Duration::from_secs(60) };
    let k = key();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let d = l.hit(&k, limit).await.unwrap();
        assert!(d.allowed);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let d = l.hit(&k, limit).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.limit, 3);
    assert!(d.reset_at_ms > agora_kit::time::now_ms());
    // Another key has its own budget.
    assert!(l.hit(&key(), limit).await.unwrap().allowed);
}

async fn windows_reset(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 1, window: Duration::from_secs(1) };
    let k = key();
    // Align to the start of a window so both hits land in the same one.
    let now = agora_kit::time::now_ms();
    tokio::time::sleep(Duration::from_millis((1000 - now % 1000) as u64 + 20)).await;
    assert!(l.hit(&k, limit).await.unwrap().allowed);
    assert!(!l.hit(&k, limit).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(l.hit(&k, limit).await.unwrap().allowed, "a new window starts a new budget");
}

async fn concurrent_hits_are_all_counted(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 50, window: Duration::from_secs(60) };
    let k = key();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let l = Arc::clone(&l);
        let k = k.clone();
        tasks.push(tokio::spawn(async move { l.hit(&k, limit).await.unwrap().allowed }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
}

async fn memory() -> Option<Arc<dyn RateLimiter>> {
    Some(ratelimit::connect("memory://").await.unwrap())
}

async fn redis() -> Option<Arc<dyn RateLimiter>> {
    let url = agora_testkit::test_server("AGORA_TEST_REDIS_URL")?;
    let l = ratelimit::connect(&url).await.unwrap();
    l.ping().await.unwrap();
    Some(l)
}

agora_testkit::conformance!(
    backends: [memory, redis],
    cases: [
        counts_up_to_the_limit_then_refuses,
        windows_reset,
        concurrent_hits_are_all_counted,
    ]
);
