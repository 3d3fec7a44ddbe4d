//! The gRPC face: a feed service built in-process on SQLite, the in-process bus and fake graph
//! and post services, called with locally minted tokens.

use std::sync::Arc;
use std::time::Duration;

use agora_events::EventBus;
use agora_feed::{Config, FeedService};
use agora_kit::Shutdown;
use agora_kit::config::MapEnv;
use agora_kit::grpc::Channel;
use agora_kit::jwt::{Claims, SigningKey, StaticKeys, Verifier};
use agora_proto::events::v1::{GraphChanged, StatusPosted};
use agora_proto::feed::v1 as pb;
use agora_proto::feed::v1::feed_service_client::FeedServiceClient;
use tokio::net::TcpListener;

use crate::fakes::{FakeGraph, FakePosts};

const ISSUER: &str = "http://feed.test";

struct Running {
    client: FeedServiceClient<Channel>,
    key: SigningKey,
    bus: Arc<dyn EventBus>,
    graph: Arc<FakeGraph>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn token(&self, account: i64, scope: &str) -> String {
        let now = agora_kit::time::now_ms() / 1000;
        let token = self
            .key
            .sign(&Claims {
                iss: ISSUER.into(),
                aud: ISSUER.into(),
                sub: Some(account.to_string()),
                exp: now + 600,
                iat: now,
                jti: format!("j{account}"),
                sid: "1".into(),
                cid: "client".into(),
                scope: scope.into(),
                role: Some("user".into()),
            })
            .unwrap();
        self.graph.register_token(&token, account);
        token
    }

    fn with<T>(&self, msg: T, token: Option<&str>) -> tonic::Request<T> {
        agora_kit::grpc::request(msg, token)
    }

    async fn publish<M: prost::Message>(&self, topic: &str, kind: &str, id: i64, payload: &M) {
        let env = agora_events::Envelope {
            id,
            r#type: kind.into(),
            aggregate_id: id.to_string(),
            occurred_at_ms: agora_kit::time::now_ms(),
            payload: payload.encode_to_vec(),
            ..Default::default()
        };
        self.bus.publish(topic, &env).await.unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn start() -> Running {
    let dir = agora_testkit::scratch_dir().unwrap();
    let env = MapEnv::new()
        .with("AGORA_FEED_DATABASE_URL", format!("sqlite://{}/feed.db", dir.display()))
        .with("AGORA_PUBLIC_URL", ISSUER);
    let config = Config::from_env(&env).unwrap();
    let key = SigningKey::generate().unwrap();
    let verifier = Verifier::new(ISSUER, ISSUER, StaticKeys::new(vec![key.public_key()]));
    verifier.prime().await.unwrap();
    let bus: Arc<dyn EventBus> = agora_events::connect("memory://").await.unwrap();
    let graph = Arc::new(FakeGraph::default());
    let shutdown = Shutdown::new();
    let service = FeedService::build(
        &config,
        Arc::clone(&bus),
        verifier,
        graph.clone(),
        Arc::new(FakePosts::default()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(service.serve(listener, shutdown.clone()));
    let channel = agora_kit::grpc::channel(&format!("http://{addr}")).unwrap();
    Running { client: FeedServiceClient::new(channel), key, bus, graph, shutdown, task }
}

/// Polls until the consumers have applied what was published (the bus is asynchronous);
/// gives up after a generous bound so a broken consumer fails instead of hanging.
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the feed never caught up with the published events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_needs_a_token_with_read_statuses() {
    let s = start().await;
    let mut c = s.client.clone();
    let err = c.get_home_timeline(s.with(pb::GetHomeTimelineRequest::default(), None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err =
        c.get_home_timeline(s.with(pb::GetHomeTimelineRequest::default(), Some("not-a-token"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let write_only = s.token(1, "write:statuses");
    let err = c.get_home_timeline(s.with(pb::GetHomeTimelineRequest::default(), Some(&write_only))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let read = s.token(1, "read:statuses");
    let page = c.get_home_timeline(s.with(pb::GetHomeTimelineRequest::default(), Some(&read))).await.unwrap();
    assert!(page.into_inner().status_ids.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_reach_timelines_through_the_consumers() {
    let s = start().await;
    let mut c = s.client.clone();
    s.graph.follow(2, 1);
    s.publish(
        "agora.graph.v1",
        "graph.followed",
        1,
        &GraphChanged { account_id: 2, target_id: 1, show_reblogs: true, ..Default::default() },
    )
    .await;
    let status = StatusPosted {
        id: 5_000,
        account_id: 1,
        visibility: "public".into(),
        tags: vec!["hello".into()],
        created_at_ms: agora_kit::time::now_ms(),
        ..Default::default()
    };
    s.publish("agora.post.v1", "post.created", 2, &status).await;
    let token = s.token(2, "read");
    eventually(|| {
        let mut c = c.clone();
        let req = s.with(pb::GetHomeTimelineRequest::default(), Some(&token));
        async move { c.get_home_timeline(req).await.unwrap().into_inner().status_ids == vec![5_000] }
    })
    .await;
    let public = c.get_public_timeline(s.with(pb::GetPublicTimelineRequest::default(), None)).await.unwrap();
    assert_eq!(public.into_inner().status_ids, vec![5_000]);
    let tag = c
        .get_tag_timeline(s.with(pb::GetTagTimelineRequest { tag: "Hello".into(), ..Default::default() }, None))
        .await
        .unwrap();
    assert_eq!(tag.into_inner().status_ids, vec![5_000]);
    let tags = c.get_trending_tags(s.with(pb::GetTrendsRequest::default(), None)).await.unwrap().into_inner();
    assert_eq!(tags.tags[0].name, "hello");
    // Operators can see fan-out and hot-set behaviour.
    let metrics = agora_kit::metrics::render();
    for name in ["agora_feed_fanout_seconds", "agora_feed_fanout_recipients_total", "agora_feed_hot_set_hits_total"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pages_are_invalid_arguments() {
    let s = start().await;
    let mut c = s.client.clone();
    let page = |max_id, limit| Some(pb::Page { max_id, since_id: 0, min_id: 0, limit });
    let err = c
        .get_public_timeline(s.with(pb::GetPublicTimelineRequest { page: page(0, -1), only_media: false }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .get_public_timeline(s.with(pb::GetPublicTimelineRequest { page: page(-4, 10), only_media: false }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let ok = c
        .get_public_timeline(s.with(pb::GetPublicTimelineRequest { page: page(0, 500), only_media: false }, None))
        .await
        .unwrap();
    assert!(ok.into_inner().status_ids.is_empty());
    let err = c
        .get_tag_timeline(s.with(pb::GetTagTimelineRequest { tag: "#".into(), ..Default::default() }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_need_the_statuses_scopes_and_bump_versions() {
    let s = start().await;
    let mut c = s.client.clone();
    let reader = s.token(3, "read:statuses");
    let writer = s.token(3, "read:statuses write:statuses");
    let save = |id| pb::SaveMarkersRequest {
        markers: vec![pb::Marker { timeline: "home".into(), last_read_id: id, ..Default::default() }],
    };
    let err = c.save_markers(s.with(save(10), Some(&reader))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    c.save_markers(s.with(save(10), Some(&writer))).await.unwrap();
    let saved = c.save_markers(s.with(save(11), Some(&writer))).await.unwrap().into_inner();
    assert_eq!((saved.markers[0].last_read_id, saved.markers[0].version), (11, 2));
    let got = c
        .get_markers(
            s.with(pb::GetMarkersRequest { timelines: vec!["home".into(), "notifications".into()] }, Some(&reader)),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.markers.len(), 1);
    assert_eq!(got.markers[0].version, 2);
    let bad = pb::SaveMarkersRequest {
        markers: vec![pb::Marker { timeline: "public".into(), last_read_id: 1, ..Default::default() }],
    };
    let err = c.save_markers(s.with(bad, Some(&writer))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    s.stop().await;
}

/// Direct statuses become conversations for everyone they are between: unread for the
/// recipients, read for the author, a reply in the same one, a deletion taking its status out,
/// and nobody else's id answering anything but not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_statuses_make_conversations_for_those_they_are_between() {
    let s = start().await;
    let mut c = s.client.clone();
    let dm = |id: i64, author: i64, mentions: Vec<i64>, in_reply_to_id: i64| StatusPosted {
        id,
        account_id: author,
        visibility: "direct".into(),
        mention_ids: mentions,
        in_reply_to_id,
        created_at_ms: agora_kit::time::now_ms(),
        ..Default::default()
    };
    let lister = s.client.clone();
    let list = |token: String| {
        let mut c = lister.clone();
        let req = s.with(pb::GetConversationsRequest::default(), Some(&token));
        async move { c.get_conversations(req).await.unwrap().into_inner().conversations }
    };
    let (alice, bob, carol) = (s.token(1, "read write"), s.token(2, "read write"), s.token(3, "read write"));
    s.publish("agora.post.v1", "post.created", 11, &dm(100, 1, vec![2], 0)).await;
    s.publish("agora.post.v1", "post.created", 12, &dm(101, 2, vec![1], 100)).await;
    eventually(|| {
        let l = list(alice.clone());
        async move { l.await.first().map(|c| c.last_status_id) == Some(101) }
    })
    .await;
    let mine = list(alice.clone()).await;
    assert_eq!(mine.len(), 1, "the reply is in the same conversation");
    assert_eq!((mine[0].id, mine[0].participant_ids.clone(), mine[0].unread), (100, vec![2], true));
    let theirs = list(bob.clone()).await;
    assert_eq!((theirs[0].participant_ids.clone(), theirs[0].unread), (vec![1], false), "bob wrote the last one");
    assert!(list(carol.clone()).await.is_empty(), "a third party has none");

    // Someone else's conversation is not found, to read, mark or remove.
    let one = |id| pb::ConversationRequest { id };
    for err in [
        c.get_conversation(s.with(one(100), Some(&carol))).await.unwrap_err(),
        c.read_conversation(s.with(one(100), Some(&carol))).await.unwrap_err(),
        c.delete_conversation(s.with(one(100), Some(&carol))).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    // Marking read takes write:conversations (or write).
    let read_only = s.token(1, "read:statuses");
    let err = c.read_conversation(s.with(one(100), Some(&read_only))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let read = c.read_conversation(s.with(one(100), Some(&alice))).await.unwrap().into_inner();
    assert!(!read.unread);

    // A muted author's conversation is left out while their status is the last one.
    s.graph.mute(1, 2);
    assert!(list(alice.clone()).await.is_empty());
    let err = c.get_conversation(s.with(one(100), Some(&alice))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.graph.unmute(1, 2);

    // Deleting the reply makes the first status the last again.
    let deleted = agora_proto::events::v1::StatusDeleted { id: 101, account_id: 2, ..Default::default() };
    s.publish("agora.post.v1", "post.deleted", 13, &deleted).await;
    eventually(|| {
        let l = list(bob.clone());
        async move { l.await.first().map(|c| c.last_status_id) == Some(100) }
    })
    .await;
    c.delete_conversation(s.with(one(100), Some(&alice))).await.unwrap();
    assert!(list(alice.clone()).await.is_empty());
    assert_eq!(list(bob.clone()).await.len(), 1, "removing it is for alice alone");
    s.stop().await;
}

#[test]
fn config_defaults_and_validation() {
    let config = Config::from_env(&MapEnv::new().with("AGORA_DATA_DIR", "/data")).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:50054");
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9104");
    assert_eq!(config.database_url, "sqlite:///data/feed.db");
    assert_eq!(config.cache_url, "memory://");
    assert_eq!(config.graph_url, "http://127.0.0.1:50053");
    assert_eq!(config.post_url, "http://127.0.0.1:50052");
    assert_eq!(config.user_url, "http://127.0.0.1:50051");
    assert_eq!(config.hot_set_size, 200, "a home in memory keeps 200 entries");
    let on_redis = Config::from_env(&MapEnv::new().with("AGORA_FEED_CACHE_URL", "redis://cache:6379")).unwrap();
    assert_eq!(on_redis.hot_set_size, 800, "a home in Redis keeps Mastodon's 800");
    let set = MapEnv::new().with("AGORA_FEED_HOT_SET_SIZE", "50");
    assert_eq!(Config::from_env(&set).unwrap().hot_set_size, 50);
    assert_eq!(config.large_account_followers, 10_000);
    assert_eq!(config.inactive_after, Duration::from_secs(14 * 24 * 3600));
    assert_eq!(config.backfill, 40);
    let err = Config::from_env(&MapEnv::new().with("AGORA_FEED_CACHE_URL", "mongo://x")).unwrap_err();
    assert!(err.to_string().contains("AGORA_FEED_CACHE_URL"));
    assert!(Config::from_env(&MapEnv::new().with("AGORA_FEED_HOT_SET_SIZE", "0")).is_err());
}
