//! The social core across services, over HTTP: a feed-service or notification-service outage in
//! the middle of a burst of posts loses nothing and duplicates nothing, and a timeline page costs a bounded number of
//! internal calls whatever its length (at most three with warm caches). On embedded stores, and on PostgreSQL + Redis + Kafka.

use std::collections::HashMap;
use std::time::Duration;

use agora_testkit::{Backend, Platform, PlatformBuilder};

use crate::api::Api;

fn builder(backend: Backend) -> PlatformBuilder {
    PlatformBuilder::new(backend)
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
}

/// Posts a burst; the feed service is stopped after the first third and started again after the
/// second. Once it is back, every follower's home holds every status exactly once.
async fn feed_outage_mid_burst(mut p: Platform) {
    const FOLLOWERS: usize = 8;
    const POSTS: usize = 60;
    let api = Api::new(&p).await;
    let (_, author, _) = api.user().await;
    let author_id = api.account_id(&author).await;
    let mut followers = Vec::new();
    for _ in 0..FOLLOWERS {
        let (_, t, _) = api.user().await;
        api.follow(&t, &author_id).await;
        followers.push(t);
    }
    let mut posted = Vec::new();
    for i in 0..POSTS {
        if i == POSTS / 3 {
            p.stop_feed().await.unwrap();
        }
        if i == 2 * POSTS / 3 {
            p.start_feed().await.unwrap();
        }
        posted.push(api.post(&author, &format!("burst {i}")).await);
    }
    let mut want = posted.clone();
    want.sort_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    for token in &followers {
        let mut home = Vec::new();
        for _ in 0..300 {
            home = api.whole_home(token).await;
            if home.len() >= POSTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &home {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        assert!(counts.values().all(|n| *n == 1), "a status appears twice: {counts:?}");
        assert_eq!(home, want, "every status, newest first, exactly once");
    }
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_outage_mid_burst_loses_nothing_embedded() {
    feed_outage_mid_burst(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_outage_mid_burst_loses_nothing_on_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_KAFKA_URL");
        return;
    };
    feed_outage_mid_burst(builder(backend).start().await.unwrap()).await;
}

/// Mentions a burst; the notification service is stopped after the first third and started again
/// after the second. Once it is back, the mentioned account holds one notification per status.
async fn notification_outage_mid_burst(mut p: Platform) {
    const POSTS: usize = 45;
    let api = Api::new(&p).await;
    let (_, author, _) = api.user().await;
    let (name, reader, _) = api.user().await;
    let mut posted = Vec::new();
    for i in 0..POSTS {
        if i == POSTS / 3 {
            p.stop_notification().await.unwrap();
        }
        if i == 2 * POSTS / 3 {
            p.start_notification().await.unwrap();
        }
        posted.push(api.post(&author, &format!("@{name} burst {i}")).await);
    }
    let mut want = posted.clone();
    want.sort_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    let mut got: Vec<(String, String)> = Vec::new();
    for _ in 0..300 {
        let page: Vec<serde_json::Value> = api
            .http
            .get(format!("{}/api/v1/notifications?limit=80", api.base))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        got = page
            .iter()
            .map(|n| (n["type"].as_str().unwrap().to_owned(), n["status"]["id"].as_str().unwrap().to_owned()))
            .collect();
        if got.len() >= POSTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.iter().all(|(kind, _)| kind == "mention"), "{got:?}");
    // Notifications are numbered when they are written: a backlog drained from several bus
    // partitions at once comes out in the order it was handled, not the order of the statuses.
    let mut statuses: Vec<String> = got.into_iter().map(|(_, s)| s).collect();
    statuses.sort_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    assert_eq!(statuses, want, "one notification per status, none lost or doubled");
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_outage_mid_burst_loses_nothing_embedded() {
    notification_outage_mid_burst(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_outage_mid_burst_loses_nothing_on_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_KAFKA_URL");
        return;
    };
    notification_outage_mid_burst(builder(backend).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_outage_mid_burst_loses_nothing_on_kafka_and_cassandra() {
    let Some(backend) = Backend::real_with_scylla_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL");
        return;
    };
    let p = builder(backend).start().await.unwrap();
    // The Cassandra stores connect in the background: wait for readiness.
    for h in &p.health {
        agora_testkit::wait_until_ready(|| h.ready()).await.unwrap();
    }
    notification_outage_mid_burst(p).await;
}

/// Internal calls served by `p`'s services, excluding the verifiers' background refresh. Counted
/// per platform: tests running beside this one in the binary make calls of their own.
fn internal_calls(p: &Platform) -> u64 {
    p.internal_calls(&["ListRevokedSessions", "GetSigningKeys"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_page_costs_the_same_internal_calls_whatever_its_length() {
    let p = builder(Backend::Embedded).start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, reader, _) = api.user().await;
    // 30 authors, one status each: a page of 30 has 30 distinct authors to hydrate.
    let mut last = String::new();
    for i in 0..30 {
        let (_, t, _) = api.user().await;
        let id = api.account_id(&t).await;
        api.follow(&reader, &id).await;
        last = api.post(&t, &format!("status {i}")).await;
    }
    for _ in 0..300 {
        if api.home_page(&reader, "limit=40").await.len() == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.home_page(&reader, "limit=1").await[0]["id"], last.as_str());
    let cost = |limit: u32| {
        let (api, reader, p) = (&api, &reader, &p);
        async move {
            let before = internal_calls(p);
            let page = api.home_page(reader, &format!("limit={limit}")).await;
            assert_eq!(page.len(), limit as usize);
            internal_calls(p) - before
        }
    };
    // The reads above warmed the caches (the reader's filter set and relationships, the authors'
    // accounts): what is left is the timeline ids and the statuses.
    let short = cost(2).await;
    let long = cost(30).await;
    assert!(short > 0, "the metrics see the calls");
    assert_eq!(short, long, "a page of 30 costs what a page of 2 costs");
    assert!(long <= 3, "a home page with warm caches costs {long} internal calls");
    p.stop().await.unwrap();
}

/// A status the viewer may not see and one that does not exist answer alike, and cost the same
/// internal calls, so neither the body nor the time taken tells them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_status_costs_what_a_missing_one_costs() {
    let p = builder(Backend::Embedded).start().await.unwrap();
    let api = Api::new(&p).await;
    let (_, author, _) = api.user().await;
    let (_, viewer, _) = api.user().await;
    let r = api
        .http
        .post(format!("{}/api/v1/statuses", api.base))
        .bearer_auth(&author)
        .form(&[("status", "followers only"), ("visibility", "private")])
        .send()
        .await
        .unwrap();
    let hidden = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let missing = (hidden.parse::<i64>().unwrap() + 12_345).to_string();
    tokio::time::sleep(Duration::from_millis(500)).await; // let fan-out settle
    for suffix in ["", "/context", "/favourited_by"] {
        let cost = |id: String| {
            let (api, viewer, p) = (&api, &viewer, &p);
            async move {
                let before = internal_calls(p);
                let r = api
                    .http
                    .get(format!("{}/api/v1/statuses/{id}{suffix}", api.base))
                    .bearer_auth(viewer)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let body = r.text().await.unwrap();
                (status, body, internal_calls(p) - before)
            }
        };
        let (hs, hb, hc) = cost(hidden.clone()).await;
        let (ms, mb, mc) = cost(missing.clone()).await;
        assert_eq!(hs, 404, "{suffix}");
        assert_eq!((hs, &hb), (ms, &mb), "{suffix}: the answers differ");
        assert_eq!(hc, mc, "{suffix}: a hidden status costs {hc} internal calls, a missing one {mc}");
    }
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_outage_mid_burst_loses_nothing_on_kafka_and_cassandra() {
    let Some(backend) = Backend::real_with_scylla_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_SCYLLA_URL");
        return;
    };
    let p = builder(backend).start().await.unwrap();
    // The graph and feed stores connect to Cassandra in the background: wait for readiness.
    for h in &p.health {
        agora_testkit::wait_until_ready(|| h.ready()).await.unwrap();
    }
    feed_outage_mid_burst(p).await;
}
