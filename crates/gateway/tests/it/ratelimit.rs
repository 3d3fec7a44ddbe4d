//! Rate-limiter conformance: the same cases on the in-memory and the Redis adapter; then the
//! limits as a client meets them over HTTP (sign-in throttling).

use std::sync::Arc;
use std::time::Duration;

use agora_gateway::ratelimit::{self, Limit, RateLimiter};
use agora_testkit::PlatformBuilder;

use crate::api::Api;

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
    assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 20_000, "one request frees up after window/max: {d:?}");
    // Another key has its own budget.
    assert!(l.hit(&key(), limit).await.unwrap().allowed);
}

async fn budgets_come_back(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 1, window: Duration::from_secs(1) };
    let k = key();
    assert!(l.hit(&k, limit).await.unwrap().allowed);
    assert!(!l.hit(&k, limit).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(l.hit(&k, limit).await.unwrap().allowed, "the budget comes back after the window");
}

/// Fixed windows let `max` through just before a window's edge and `max` more just after it.
/// Here a burst straddles what would be such an edge: at most `max` (plus what trickles back
/// in the 100 ms between) passes.
async fn no_double_burst_at_a_window_edge(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 10, window: Duration::from_secs(2) };
    let k = key();
    let now = agora_kit::time::now_ms();
    tokio::time::sleep(Duration::from_millis((2000 - now % 2000) as u64).saturating_sub(Duration::from_millis(50)))
        .await;
    let mut allowed = 0;
    for _ in 0..10 {
        allowed += l.hit(&k, limit).await.unwrap().allowed as usize;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        allowed += l.hit(&k, limit).await.unwrap().allowed as usize;
    }
    assert!((10..=11).contains(&allowed), "{allowed} of 20 passed around the edge");
}

/// After a burst, requests pass at the steady rate (one per window/max), not all at once later.
async fn a_spent_budget_refills_at_the_steady_rate(l: Arc<dyn RateLimiter>) {
    let limit = Limit { max: 5, window: Duration::from_secs(1) };
    let k = key();
    for _ in 0..5 {
        assert!(l.hit(&k, limit).await.unwrap().allowed);
    }
    let refused = l.hit(&k, limit).await.unwrap();
    assert!(!refused.allowed);
    tokio::time::sleep(Duration::from_millis(refused.retry_after_ms as u64 + 20)).await;
    assert!(l.hit(&k, limit).await.unwrap().allowed, "one request after Retry-After");
    assert!(!l.hit(&k, limit).await.unwrap().allowed, "but only one");
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
        budgets_come_back,
        no_double_burst_at_a_window_edge,
        a_spent_budget_refills_at_the_steady_rate,
        concurrent_hits_are_all_counted,
    ]
);

async fn token_request(api: &Api, bearer: Option<&str>, username: &str, password: &str) -> reqwest::Response {
    let mut r = api.sign_in(username, password, "read");
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// A valid bearer header on a sign-in request does not move it out of the address's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_counts_against_the_address_whatever_token_it_carries() {
    let p = PlatformBuilder::embedded()
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_SIGN_IN", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "5/300")
        .start()
        .await
        .unwrap();
    let api = Api::new(&p).await; // the app and its token: two requests from this address
    let (name, token, _) = api.user().await; // a sign-up: three
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(token_request(&api, Some(&token), &name, "long enough password").await.status().as_u16());
    }
    assert_eq!(
        statuses,
        vec![200, 200, 429],
        "the address's budget of 5 covers the app, its token, the sign-up and two sign-ins"
    );
    p.stop().await.unwrap();
}

/// Password guessing against one account slows down after a few failures — even the right
/// password waits its turn — and the owner, signing in from where they signed in before, is not
/// slowed by it. An unknown account name is throttled the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_slowed_down_but_the_owner_is_not_locked_out() {
    let p = PlatformBuilder::embedded()
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_SIGN_IN", "off")
        .setting("AGORA_GATEWAY_TRUSTED_PROXIES", "127.0.0.1/32")
        .start()
        .await
        .unwrap();
    let api = Api::new(&p).await;
    let (name, _, _) = api.user().await;
    let owner = reqwest::Client::builder()
        .default_headers([("x-forwarded-for".parse().unwrap(), "198.51.100.7".parse().unwrap())].into_iter().collect())
        .build()
        .unwrap();
    let owner_api = Api { http: owner, ..Api::at(&api.base).await };
    assert_eq!(token_request(&owner_api, None, &name, "long enough password").await.status(), 200);

    // The attacker, from many addresses.
    let guess = async |i: u32, user: &str, password: &str| {
        api.sign_in(user, password, "read")
            .header("x-forwarded-for", format!("203.0.113.{}", i % 250))
            .send()
            .await
            .unwrap()
    };
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(guess(i, &name, &format!("wrong guess {i}")).await.status().as_u16());
    }
    assert_eq!(statuses, vec![400, 400, 400, 400, 400, 429, 429, 429], "five free failures, then a wait");
    let right = guess(9, &name, "long enough password").await;
    assert_eq!(right.status(), 429, "while throttled even the right password is not checked");
    assert!(right.headers().get("retry-after").is_some(), "the wait is announced");
    let body: serde_json::Value = right.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Try again"), "{body}");

    // The owner, from the address they used before, is not slowed down.
    assert_eq!(token_request(&owner_api, None, &name, "long enough password").await.status(), 200);

    // An account that does not exist answers exactly alike: no oracle for which names exist.
    let ghost = format!("{name}nobody");
    let mut ghost_statuses = Vec::new();
    for i in 0..6 {
        ghost_statuses.push(guess(i, &ghost, "whatever it is").await.status().as_u16());
    }
    assert_eq!(ghost_statuses, vec![400, 400, 400, 400, 400, 429]);

    // After the wait, an attempt goes through again (the lock is never hard).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(guess(1, &name, "long enough password").await.status(), 200, "no hard lock");
    p.stop().await.unwrap();
}
