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

/// Posts `text` as `token` with `visibility`; the status id.
async fn post_as(api: &Api, token: &str, text: &str, visibility: &str) -> String {
    let r = api
        .http
        .post(format!("{}/api/v1/statuses", api.base))
        .bearer_auth(token)
        .form(&[("status", text), ("visibility", visibility)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{text}");
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn block(api: &Api, token: &str, id: &str) {
    let r = api.http.post(format!("{}/api/v1/accounts/{id}/block", api.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The status id of an `update` (or `status.update`) event.
fn status_id(data: &str) -> String {
    let status: Value = serde_json::from_str(data).unwrap();
    status["id"].as_str().unwrap().to_owned()
}

/// The public and hashtag streams carry public statuses only (never private, unlisted or direct
/// ones, never reblogs), each viewer without the authors they block; edits arrive as
/// `status.update` and deletions as `delete`. Anonymous callers may read them.
async fn public_and_hashtag_streams_carry_only_public_statuses(p: Platform) {
    let api = Api::new(&p).await;
    let (_, alice, _) = api.user().await;
    let (_, bob, _) = api.user().await;
    let (_, dave, _) = api.user().await;
    let dave_id = api.account_id(&dave).await;
    block(&api, &alice, &dave_id).await;
    let tag = agora_testkit::api::uniq("tag");
    let mut public = Stream::open(&api, "/api/v1/streaming/public", &alice).await;
    let mut local = Stream::open(&api, "/api/v1/streaming/public/local", &alice).await;
    let mut hashtag = Stream::open(&api, &format!("/api/v1/streaming/hashtag?tag={}", tag.to_uppercase()), &bob).await;
    let anonymous =
        api.http.get(format!("{}/api/v1/streaming/hashtag/local?tag={tag}", api.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK, "public streams are open without a token");
    let mut anonymous = Stream { response: anonymous, buffer: String::new() };

    let private = post_as(&api, &bob, &format!("#{tag} for followers"), "private").await;
    let unlisted = post_as(&api, &bob, &format!("#{tag} quietly"), "unlisted").await;
    let direct = post_as(&api, &bob, &format!("#{tag} @nobody"), "direct").await;
    let blocked = post_as(&api, &dave, &format!("#{tag} from Dave"), "public").await;
    let open = post_as(&api, &bob, &format!("#{tag} for everyone"), "public").await;
    let hidden = [private.as_str(), unlisted.as_str(), direct.as_str()];
    for (name, stream) in [("public", &mut public), ("local", &mut local)] {
        let (event, data) = stream.event().await;
        let got = status_id(&data);
        assert!(!hidden.contains(&got.as_str()), "{name}: a status that is not public ({got}) was sent");
        assert_eq!((event.as_str(), got.as_str()), ("update", open.as_str()), "{name}: not Dave's ({blocked})");
    }
    // Bob's hashtag stream (the tag asked in capitals) and the anonymous one have Dave's too. Two
    // authors' statuses travel on different partitions of the event bus, so either may come first.
    for (name, stream) in [("hashtag", &mut hashtag), ("anonymous", &mut anonymous)] {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (event, data) = stream.event().await;
            got.push((event, status_id(&data)));
        }
        got.sort();
        let mut want = vec![("update".to_owned(), blocked.clone()), ("update".to_owned(), open.clone())];
        want.sort();
        assert_eq!(got, want, "{name}");
    }

    // A reblog is not a new public status; an edit is sent as status.update.
    let r =
        api.http.post(format!("{}/api/v1/statuses/{open}/reblog", api.base)).bearer_auth(&dave).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .http
        .put(format!("{}/api/v1/statuses/{open}", api.base))
        .bearer_auth(&bob)
        .form(&[("status", format!("#{tag} for everyone, edited"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (event, data) = public.event().await;
    assert_eq!((event.as_str(), status_id(&data)), ("status.update", open.clone()), "the reblog was not sent");
    let edited: Value = serde_json::from_str(&data).unwrap();
    assert!(edited["content"].as_str().unwrap().contains("edited"), "{edited}");
    assert_eq!(hashtag.event().await.0, "status.update");
    assert_eq!(anonymous.event().await.0, "status.update");

    let r = api.http.delete(format!("{}/api/v1/statuses/{open}", api.base)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(public.event().await, ("delete".to_owned(), open.clone()));
    assert_eq!(anonymous.event().await, ("delete".to_owned(), open.clone()));

    // A stream name Mastodon does not have, or a hashtag stream without a tag: 400.
    let r = api.http.get(format!("{}/api/v1/streaming/hashtag", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api.http.get(format!("{}/api/v1/streaming/hashtag?tag=a%20b", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_hashtag_streams_carry_only_public_statuses_embedded() {
    public_and_hashtag_streams_carry_only_public_statuses(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_hashtag_streams_carry_only_public_statuses_on_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    public_and_hashtag_streams_carry_only_public_statuses(builder(backend).start().await.unwrap()).await;
}

/// Streams hearing one event share its render, yet each edit arrives as it is: two streams of
/// one account and an anonymous public stream get a status, then its first edit, then (within
/// the time a render is shared) its second, each `status.update` with its own text.
async fn shared_renders_follow_each_edit(p: Platform) {
    let api = Api::new(&p).await;
    let (_, alice, _) = api.user().await;
    let (_, bob, _) = api.user().await;
    let bob_id = api.account_id(&bob).await;
    api.follow(&alice, &bob_id).await;
    let phone = Stream::open(&api, "/api/v1/streaming/user", &alice).await;
    let laptop = Stream::open(&api, "/api/v1/streaming/user", &alice).await;
    let anonymous = api.http.get(format!("{}/api/v1/streaming/public", api.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK);
    let anonymous = Stream { response: anonymous, buffer: String::new() };
    // Carol, who favourites the status, hears its edits with her mark; Alice without one.
    let (_, carol, _) = api.user().await;
    api.follow(&carol, &bob_id).await;
    let carols = Stream::open(&api, "/api/v1/streaming/user", &carol).await;
    let mut streams = [("phone", phone), ("laptop", laptop), ("anonymous", anonymous), ("carol", carols)];

    let id = post_as(&api, &bob, "first words", "public").await;
    for (name, s) in &mut streams {
        let (event, data) = s.event().await;
        assert_eq!((event.as_str(), status_id(&data)), ("update", id.clone()), "{name}");
        let status: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(status["favourited"], Value::Bool(false), "{name}");
    }
    let r = api.http.post(format!("{}/api/v1/statuses/{id}/favourite", api.base)).bearer_auth(&carol).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    for text in ["second words", "third words"] {
        let r = api
            .http
            .put(format!("{}/api/v1/statuses/{id}", api.base))
            .bearer_auth(&bob)
            .form(&[("status", text)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        for (name, s) in &mut streams {
            let (event, data) = if *name == "carol" {
                // She favourited it, so each edit notifies her too (`update`), in either order.
                let (first, second) = (s.event().await, s.event().await);
                let (notification, update) = if first.0 == "notification" { (first, second) } else { (second, first) };
                let n: Value = serde_json::from_str(&notification.1).unwrap();
                assert_eq!((notification.0.as_str(), n["type"].as_str()), ("notification", Some("update")), "{name}");
                update
            } else {
                s.event().await
            };
            assert_eq!(event, "status.update", "{name}");
            let status: Value = serde_json::from_str(&data).unwrap();
            let content = status["content"].as_str().unwrap();
            assert!(content.contains(text), "{name} got {content:?} for the edit to {text:?}");
            assert_eq!(status["favourited"], Value::Bool(*name == "carol"), "{name}'s own mark");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_renders_follow_each_edit_embedded() {
    shared_renders_follow_each_edit(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_renders_follow_each_edit_on_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    shared_renders_follow_each_edit(builder(backend).start().await.unwrap()).await;
}

// ---- WebSocket ------------------------------------------------------------------------------

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/api/v1/streaming` with `query`, the token sent as `how` says.
async fn socket(api: &Api, query: &str, token: Option<&str>, how: &str) -> Result<Socket, StatusCode> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let base = api.base.replacen("http", "ws", 1);
    let query = match (how, token) {
        ("query", Some(t)) => format!("{query}&access_token={t}"),
        _ => query.to_owned(),
    };
    let mut req = format!("{base}/api/v1/streaming?{query}").into_client_request().unwrap();
    match (how, token) {
        ("header", Some(t)) => {
            req.headers_mut().insert(http::header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        ("protocol", Some(t)) => {
            req.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, t.parse().unwrap());
        }
        _ => {}
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((s, response)) => {
            if how == "protocol" {
                let echoed = response.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL).map(|v| v.to_str().unwrap());
                assert_eq!(echoed, token, "the subprotocol carrying the token is echoed");
            }
            Ok(s)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status()),
        Err(e) => panic!("{e}"),
    }
}

async fn send(s: &mut Socket, text: &str) {
    use futures::SinkExt as _;
    s.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
}

/// The next text frame as JSON; None once the socket closed.
async fn frame(s: &mut Socket) -> Option<Value> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("the socket went quiet for 10 s");
        match m {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
}

/// An event frame: (stream, event, payload).
async fn ws_event(s: &mut Socket) -> (Vec<String>, String, String) {
    let f = frame(s).await.expect("the socket closed");
    let stream = f["stream"].as_array().unwrap_or_else(|| panic!("{f}")).iter().map(|v| v.as_str().unwrap().to_owned());
    (stream.collect(), f["event"].as_str().unwrap().to_owned(), f["payload"].as_str().unwrap().to_owned())
}

/// One WebSocket carries several streams, each frame naming its stream; subscribe and
/// unsubscribe messages change what it carries; bad messages get error frames, a token in the
/// header, the query or the subprotocol opens it, and a flood of messages closes it.
async fn a_websocket_multiplexes_streams(p: Platform) {
    let api = Api::new(&p).await;
    let (alice_name, alice, _) = api.user().await;
    let (bob_name, bob, _) = api.user().await;
    let alice_id = api.account_id(&alice).await;
    let tag = agora_testkit::api::uniq("ws");
    api.follow(&bob, &alice_id).await;

    let mut ws = socket(&api, "stream=user", Some(&bob), "header").await.unwrap();
    send(&mut ws, &format!(r#"{{"type":"subscribe","stream":"hashtag","tag":"{tag}"}}"#)).await;
    // The stream list is read before anything is posted: a ping round trip is not enough to
    // know the subscription landed, so an error frame for a bad message marks the point.
    send(&mut ws, r#"{"type":"subscribe","stream":"list","list":"1"}"#).await;
    let refused = frame(&mut ws).await.unwrap();
    assert_eq!((refused["status"].as_u64(), refused["error"].as_str()), (Some(400), Some("Unknown stream type")));

    let tagged = post_as(&api, &alice, &format!("#{tag} hi @{bob_name}"), "public").await;
    // Bob follows Alice: the status enters his home (user), carries the tag (hashtag) and
    // mentions him (a notification on user).
    let mut got = Vec::new();
    for _ in 0..3 {
        let (stream, event, payload) = ws_event(&mut ws).await;
        let id = if event == "notification" {
            let n: Value = serde_json::from_str(&payload).unwrap();
            n["status"]["id"].as_str().unwrap().to_owned()
        } else {
            status_id(&payload)
        };
        assert_eq!(id, tagged);
        got.push((stream.join("/"), event));
    }
    got.sort();
    let want = [
        (format!("hashtag/{tag}"), "update".to_owned()),
        ("user".to_owned(), "notification".to_owned()),
        ("user".to_owned(), "update".to_owned()),
    ];
    assert_eq!(got, want);

    send(&mut ws, &format!(r#"{{"type":"unsubscribe","stream":"hashtag","tag":"{tag}"}}"#)).await;
    send(&mut ws, "not json").await;
    assert_eq!(frame(&mut ws).await.unwrap()["status"].as_u64(), Some(400), "garbage gets an error frame");
    let second = post_as(&api, &alice, &format!("#{tag} again"), "public").await;
    let (stream, event, payload) = ws_event(&mut ws).await;
    assert_eq!((stream, event, status_id(&payload)), (vec!["user".to_owned()], "update".to_owned(), second));

    // The token in the query and as the subprotocol (browsers); a bad token is refused before
    // the upgrade; the personal streams need one, the public ones do not.
    let mut by_query = socket(&api, "stream=public", Some(&alice), "query").await.unwrap();
    let mut by_protocol = socket(&api, "stream=user:notification", Some(&alice), "protocol").await.unwrap();
    assert_eq!(socket(&api, "stream=user", Some("forged"), "header").await.err(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(socket(&api, "stream=user", None, "none").await.err(), Some(StatusCode::UNAUTHORIZED));
    let mut anonymous = socket(&api, "", None, "none").await.unwrap();
    send(&mut anonymous, r#"{"type":"subscribe","stream":"user"}"#).await;
    let refused = frame(&mut anonymous).await.unwrap();
    assert_eq!((refused["status"].as_u64(), refused["stream"][0].as_str()), (Some(401), Some("user")));
    send(&mut anonymous, r#"{"type":"subscribe","stream":"public:local"}"#).await;
    send(&mut anonymous, r#"{"type":"subscribe","stream":"public"}"#).await;
    send(&mut anonymous, r#"{"type":"subscribe","stream":"public"}"#).await; // again: nothing changes
    send(&mut anonymous, "{}").await;
    assert_eq!(frame(&mut anonymous).await.unwrap()["status"].as_u64(), Some(400));
    let third = post_as(&api, &bob, "for the public streams", "public").await;
    let (stream, event, payload) = ws_event(&mut by_query).await;
    assert_eq!((stream, event, status_id(&payload)), (vec!["public".to_owned()], "update".to_owned(), third));
    let mut anon = vec![ws_event(&mut anonymous).await.0, ws_event(&mut anonymous).await.0];
    anon.sort();
    assert_eq!(anon, [vec!["public".to_owned()], vec!["public:local".to_owned()]], "once per stream, not twice");
    // Alice's notification stream (the token came as the subprotocol) hears Bob mention her.
    post_as(&api, &bob, &format!("@{alice_name} hey"), "public").await;
    let (stream, event, _) = ws_event(&mut by_protocol).await;
    assert_eq!((stream, event), (vec!["user:notification".to_owned()], "notification".to_owned()));

    // A flood of messages closes the socket.
    for _ in 0..40 {
        use futures::SinkExt as _;
        if ws
            .send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"unsubscribe","stream":"public"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut closed = false;
    for _ in 0..50 {
        if frame(&mut ws).await.is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a flooding client is disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_multiplexes_streams_embedded() {
    a_websocket_multiplexes_streams(builder(Backend::Embedded).start().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_multiplexes_streams_on_redis_and_kafka() {
    let Some(backend) = Backend::real_from_env() else {
        let _ = agora_testkit::test_server("AGORA_TEST_REDIS_URL");
        return;
    };
    a_websocket_multiplexes_streams(builder(backend).start().await.unwrap()).await;
}
