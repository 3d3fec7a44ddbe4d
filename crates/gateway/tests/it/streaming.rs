//! The streaming API over Server-Sent Events, as Mastodon clients read it: a stream carries its
//! owner's new notifications and nobody else's, as `event: notification` with a JSON-string
//! payload, and the user stream what enters and leaves the home timeline (`update`, `delete`); what a block suppresses is never sent; a stream needs a valid token (header or
//! `access_token`), ends once its session is revoked, and an account's open streams are bounded.
//! On embedded stores (in-process backplane) and on PostgreSQL + Redis + Kafka (Redis pub/sub).

use std::time::Duration;

use agora_testkit::{Backend, Platform, PlatformBuilder};
use http::StatusCode;
use serde_json::Value;

use crate::api::Api;

fn builder(backend: Backend) -> PlatformBuilder {
    PlatformBuilder::new(backend)
        .setting("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_IP", "off")
        .setting("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off")
        .setting("AGORA_GATEWAY_STREAMS_PER_ACCOUNT", "2")
}

/// One open SSE stream, read event by event.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

/// One SSE event: its `event:` name and its `data:` payload.
#[derive(Debug)]
struct Sse {
    event: String,
    data: String,
}

impl Stream {
    async fn open(api: &Api, path: &str, token: &str) -> Stream {
        let r = api.http.get(format!("{}{path}", api.base)).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let kind = r.headers().get(http::header::CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream { response: r, buffer: String::new() }
    }

    /// The next event (comments such as heartbeats skipped); None once the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_owned();
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // a comment (heartbeat)
                }
                return Some(Sse { event, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("the stream went quiet for 10 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event's name and payload.
    async fn event(&mut self) -> (String, String) {
        let e = self.next().await.expect("the stream ended");
        (e.event, e.data)
    }

    /// The next notification: (type, actor id).
    async fn notification(&mut self) -> (String, String) {
        let e = self.next().await.expect("the stream ended");
        assert_eq!(e.event, "notification", "{e:?}");
        // Mastodon sends the entity as a JSON string inside `data`.
        let n: Value = serde_json::from_str(&e.data).unwrap();
        (n["type"].as_str().unwrap().to_owned(), n["account"]["id"].as_str().unwrap().to_owned())
    }
}

async fn streams_carry_their_owners_notifications(p: Platform) {
    let api = Api::new(&p).await;
    let (alice_name, alice, _) = api.user().await;
    let (_, bob, _) = api.user().await;
    let (_, carol, _) = api.user().await;
    let (_, dave, _) = api.user().await;
    let (alice_id, bob_id, carol_id, dave_id) = (
        api.account_id(&alice).await,
        api.account_id(&bob).await,
        api.account_id(&carol).await,
        api.account_id(&dave).await,
    );
    let mut alices = Stream::open(&api, "/api/v1/streaming/user/notification", &alice).await;
    let mut carols = Stream::open(&api, "/api/v1/streaming/user", &carol).await;

    api.follow(&bob, &alice_id).await;
    assert_eq!(alices.notification().await, ("follow".to_owned(), bob_id.clone()));
    // Alice blocks Dave: his mention is never sent to her; Bob's, after it, is.
    let r = api
        .http
        .post(format!("{}/api/v1/accounts/{dave_id}/block", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    api.post(&dave, &format!("@{alice_name} are you there?")).await;
    api.post(&bob, &format!("@{alice_name} hello")).await;
    assert_eq!(alices.notification().await, ("mention".to_owned(), bob_id.clone()), "nothing from Dave came first");

    // Carol's stream heard none of Alice's: her own follow is the first thing on it.
    api.follow(&dave, &carol_id).await;
    assert_eq!(carols.notification().await, ("follow".to_owned(), dave_id));
}

/// What enters a home is sent as `update`, what is deleted from it as `delete`; a muted author's
/// statuses are not sent, though they are fanned out (the home leaves them out when read).
async fn a_user_stream_follows_the_home_timeline(p: Platform) {
    let api = Api::new(&p).await;
    let (_, alice, _) = api.user().await;
    let (_, bob, _) = api.user().await;
    let (_, carol, _) = api.user().await;
    let (bob_id, carol_id) = (api.account_id(&bob).await, api.account_id(&carol).await);
    api.follow(&alice, &bob_id).await;
    api.follow(&alice, &carol_id).await;
    let r = api
        .http
        .post(format!("{}/api/v1/accounts/{carol_id}/mute", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut home = Stream::open(&api, "/api/v1/streaming/user", &alice).await;
    let mut notifications_only = Stream::open(&api, "/api/v1/streaming/user/notification", &bob).await;

    let muted = api.post(&carol, "muted words").await;
    let first = api.post(&bob, "hello followers").await;
    let (event, data) = home.event().await;
    assert_eq!(event, "update");
    let status: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(status["id"].as_str().unwrap(), first, "Bob's status, not Carol's muted one ({muted}) first");
    assert_eq!(status["account"]["id"].as_str().unwrap(), bob_id);

    let own = api.post(&alice, "my own").await;
    let (event, data) = home.event().await;
    let status: Value = serde_json::from_str(&data).unwrap();
    let got = status["id"].as_str().unwrap();
    let which = if got == first {
        "Bob's again"
    } else if got == muted {
        "Carol's muted one"
    } else {
        "another"
    };
    assert_eq!((event.as_str(), got), ("update", own.as_str()), "one's own statuses too, not {which}");

    let r = api.http.delete(format!("{}/api/v1/statuses/{first}", api.base)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(home.event().await, ("delete".to_owned(), first.clone()), "the bare id");

    // Bob's notification stream carried none of his own home (his two statuses and the
    // deletion): Alice's new follow is its first event.
    let alice_id = api.account_id(&alice).await;
    let r = api
        .http
        .post(format!("{}/api/v1/accounts/{bob_id}/unfollow", api.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    api.follow(&alice, &bob_id).await;
    assert_eq!(notifications_only.notification().await, ("follow".to_owned(), alice_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_stream_follows_the_home_timeline_embedded() {
    a_user_stream_follows_the_home_timeline(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_stream_follows_the_home_timeline_on_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    a_user_stream_follows_the_home_timeline(builder(backend).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_their_owners_notifications_embedded() {
    streams_carry_their_owners_notifications(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_their_owners_notifications_on_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    streams_carry_their_owners_notifications(builder(backend).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_needs_a_live_token_and_streams_are_bounded() {
    let p = builder(Backend::Embedded).start().await.unwrap();
    let api = Api::new(&p).await;
    let health = api.http.get(format!("{}/api/v1/streaming/health", api.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "OK");

    let url = format!("{}/api/v1/streaming/user", api.base);
    assert_eq!(api.http.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "no token");
    let forged = api.http.get(&url).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let (_, alice, _) = api.user().await;
    // Browsers' EventSource sends the token in the query.
    let by_query = api.http.get(format!("{url}?access_token={alice}")).send().await.unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    let second = Stream::open(&api, "/api/v1/streaming/user/notification", &alice).await;
    let third = api.http.get(&url).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS, "two streams per account here");
    drop(by_query);
    drop(second);
    // A closed stream frees its place.
    let mut reopened = None;
    for _ in 0..50 {
        let r = api.http.get(&url).bearer_auth(&alice).send().await.unwrap();
        if r.status() == StatusCode::OK {
            reopened = Some(Stream { response: r, buffer: String::new() });
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = reopened.expect("a closed stream's place is freed");

    // Revoking the session ends its streams within 5 s.
    assert_eq!(api.revoke(&alice).await.status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(6), stream.next()).await.expect("ended within 5 s");
    assert!(ended.is_none(), "{ended:?}");
    let after = api.http.get(&url).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "a revoked token opens no stream");
}
