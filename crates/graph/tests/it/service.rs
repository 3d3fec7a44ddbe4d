//! The graph service's rules end to end through its domain object (and once over gRPC), on the
//! embedded store, with tokens minted here so no user service is needed.

use std::sync::Arc;
use std::time::Duration;

use agora_events::EventBus;
use agora_graph::graph::{FollowOptions, PageRequest};
use agora_graph::{AccountFacts, Config, Graph, GraphService, KnownAccounts};
use agora_kit::config::MapEnv;
use agora_kit::jwt::{Claims, SigningKey, StaticKeys, Verifier};
use agora_kit::{ErrorKind, Shutdown};
use agora_proto::events::v1::GraphChanged;
use agora_proto::graph::v1 as pb;
use agora_proto::graph::v1::graph_service_client::GraphServiceClient;
use prost::Message as _;

const ISSUER: &str = "https://graph.test";

struct World {
    service: Option<GraphService>,
    graph: Arc<Graph>,
    key: SigningKey,
    accounts: Arc<KnownAccounts>,
    bus: Arc<dyn EventBus>,
    shutdown: Shutdown,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn world() -> World {
    let key = SigningKey::generate().unwrap();
    let verifier = Verifier::new(ISSUER, ISSUER, StaticKeys::new(vec![key.public_key()]));
    verifier.prime().await.unwrap();
    let dir = agora_testkit::scratch_dir().unwrap();
    let env = MapEnv::new()
        .with("AGORA_GRAPH_DATABASE_URL", format!("sqlite://{}/graph.db", dir.display()))
        .with("AGORA_PUBLIC_URL", ISSUER);
    let config = Config::from_env(&env).unwrap();
    assert_eq!(config.listen.port(), 50053);
    let bus = agora_events::connect("memory://").await.unwrap();
    let accounts = Arc::new(KnownAccounts::new());
    let shutdown = Shutdown::new();
    let service = GraphService::build_with_accounts(
        &config,
        Arc::clone(&bus),
        verifier,
        Arc::clone(&accounts) as _,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let graph = Arc::clone(&service.graph);
    World { service: Some(service), graph, key, accounts, bus, shutdown }
}

impl World {
    fn account(&self, locked: bool) -> i64 {
        let id = i64::from(rand::random::<u32>()) + 1;
        self.accounts.insert(id, AccountFacts { locked });
        id
    }

    /// A token for `account` (None: an application-only token) granting `scope`.
    fn token(&self, account: Option<i64>, scope: &str) -> String {
        let now = agora_kit::time::now_ms() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub: account.map(|a| a.to_string()),
            exp: now + 600,
            iat: now,
            jti: format!("{:x}", rand::random::<u64>()),
            sid: rand::random::<u32>().to_string(),
            cid: "test-client".into(),
            scope: scope.into(),
            role: account.map(|_| "user".into()),
        };
        self.key.sign(&claims).unwrap()
    }

    /// A user and a token of theirs with every scope a Mastodon app usually asks for.
    fn user(&self, locked: bool) -> (i64, String) {
        let id = self.account(locked);
        (id, self.token(Some(id), "read write follow"))
    }

    /// How many events the service has announced so far: waits for the outbox relay (which
    /// runs in the background) to publish everything committed, then counts the topic's history.
    async fn announced(&self) -> usize {
        for _ in 0..400 {
            if self.graph.store.outbox().backlog().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let group = format!("count-{:016x}", rand::random::<u64>());
        let mut sub = self.bus.subscribe(&["agora.graph.v1".to_owned()], &group).await.unwrap();
        let mut n = 0;
        while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            sub.ack(&d).await.unwrap();
            n += 1;
        }
        n
    }
}

fn follow() -> FollowOptions {
    FollowOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_yourself_is_refused() {
    let w = world().await;
    let (me, token) = w.user(false);
    let announced = w.announced().await;
    let err = w.graph.follow(Some(&token), me, follow()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_eq!(err.message, "You cannot follow yourself");
    assert_eq!(w.announced().await, announced);
    assert_eq!(w.graph.block(Some(&token), me).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(w.graph.mute(Some(&token), me, None, 0).await.unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_someone_who_blocks_you_is_refused_and_writes_nothing() {
    let w = world().await;
    let (a, a_token) = w.user(false);
    let (b, b_token) = w.user(false);
    w.graph.follow(Some(&a_token), b, follow()).await.unwrap();
    let blocked = w.graph.block(Some(&b_token), a).await.unwrap();
    assert!(blocked.blocking && !blocked.followed_by, "the block removed a's follow");

    let announced = w.announced().await;
    let err = w.graph.follow(Some(&a_token), b, follow()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.message, "You are not allowed to follow this account");
    assert_eq!(w.announced().await, announced, "no event for a refused follow");
    let rel = &w.graph.relationships(Some(&a_token), &[b]).await.unwrap()[0];
    assert!(rel.blocked_by && !rel.following && !rel.requested);
    let counts = w.graph.counts(None, &[a, b]).await.unwrap();
    assert_eq!((counts[0].following_count, counts[1].followers_count), (0, 0));
    // Nor can the blocker follow while blocking.
    let err = w.graph.follow(Some(&b_token), a, follow()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_tokens_cannot_change_the_graph() {
    let w = world().await;
    let target = w.account(false);
    let app = w.token(None, "read write follow");
    let announced = w.announced().await;
    for err in [
        w.graph.follow(Some(&app), target, follow()).await.unwrap_err(),
        w.graph.block(Some(&app), target).await.unwrap_err(),
        w.graph.mute(Some(&app), target, None, 0).await.unwrap_err(),
    ] {
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(err.message, "This method requires an authenticated user");
    }
    assert_eq!(w.announced().await, announced);
    // Public listings are fine with an application token.
    assert!(w.graph.followers(Some(&app), target, PageRequest::default()).await.unwrap().account_ids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_needs_its_scope() {
    let w = world().await;
    let me = w.account(false);
    let other = w.account(false);
    let read_only = w.token(Some(me), "read");
    let err = w.graph.follow(Some(&read_only), other, follow()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    assert_eq!(err.message, "This action is outside the authorized scopes");

    let blocks_only = w.token(Some(me), "write:blocks");
    assert_eq!(
        w.graph.follow(Some(&blocks_only), other, follow()).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert!(w.graph.block(Some(&blocks_only), other).await.unwrap().blocking);
    assert_eq!(
        w.graph.blocks(Some(&blocks_only), PageRequest::default()).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        w.graph.relationships(Some(&blocks_only), &[other]).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );

    // `follow` covers follows, blocks and mutes, as in Mastodon.
    let follow_scope = w.token(Some(me), "follow");
    assert_eq!(w.graph.blocks(Some(&follow_scope), PageRequest::default()).await.unwrap().account_ids, vec![other]);
    assert!(!w.graph.unblock(Some(&follow_scope), other).await.unwrap().blocking);
    assert!(w.graph.follow(Some(&follow_scope), other, follow()).await.unwrap().following);
    // Suggestions want plain read / write.
    assert_eq!(w.graph.suggestions(Some(&follow_scope), 0).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    assert!(w.graph.suggestions(Some(&read_only), 0).await.unwrap().is_empty());
    assert_eq!(
        w.graph.dismiss_suggestion(Some(&read_only), other).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_tokens_are_unauthenticated() {
    let w = world().await;
    let (me, _) = w.user(false);
    let other = w.account(false);
    assert_eq!(w.graph.follow(None, other, follow()).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    assert_eq!(w.graph.follow(Some("not-a-jwt"), other, follow()).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    let foreign = SigningKey::generate().unwrap();
    let now = agora_kit::time::now_ms() / 1000;
    let forged = foreign
        .sign(&Claims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub: Some(me.to_string()),
            exp: now + 600,
            iat: now,
            jti: "x".into(),
            sid: "1".into(),
            cid: "c".into(),
            scope: "write".into(),
            role: None,
        })
        .unwrap();
    assert_eq!(w.graph.block(Some(&forged), other).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    // Public reads need no token, but a token that is there must be valid.
    assert!(w.graph.followers(None, other, PageRequest::default()).await.is_ok());
    assert_eq!(w.graph.counts(Some("garbage"), &[other]).await.unwrap_err().kind, ErrorKind::Unauthenticated);
    assert_eq!(w.graph.filter_set(None).await.unwrap_err().kind, ErrorKind::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accounts_and_bad_arguments() {
    let w = world().await;
    let (_, token) = w.user(false);
    let nobody = i64::from(u32::MAX) + 7;
    let err = w.graph.follow(Some(&token), nobody, follow()).await.unwrap_err();
    assert_eq!((err.kind, err.message.as_str()), (ErrorKind::NotFound, "Record not found"));
    assert_eq!(w.graph.block(Some(&token), nobody).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(w.graph.follow(Some(&token), 0, follow()).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    let other = w.account(false);
    let bad_lang = FollowOptions { languages: vec!["klingon!".into()], ..follow() };
    let err = w.graph.follow(Some(&token), other, bad_lang).await.unwrap_err();
    assert_eq!(err.field.as_deref(), Some("languages"));
    assert_eq!(w.graph.mute(Some(&token), other, None, -5).await.unwrap_err().kind, ErrorKind::InvalidArgument);

    let negative = PageRequest { limit: -1, ..Default::default() };
    let err = w.graph.followers(None, other, negative).await.unwrap_err();
    assert_eq!((err.kind, err.field.as_deref()), (ErrorKind::InvalidArgument, Some("limit")));
    let err = w.graph.blocks(Some(&token), PageRequest { max_id: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.field.as_deref(), Some("max_id"));
    assert_eq!(w.graph.suggestions(Some(&token), -1).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(w.graph.follower_ids(other, 0, -1).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    let too_many: Vec<i64> = (1..=1001).collect();
    assert_eq!(w.graph.relationships(Some(&token), &too_many).await.unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_limits_are_clamped_not_refused() {
    let w = world().await;
    let star = w.account(false);
    let mut fans = Vec::new();
    for _ in 0..85 {
        let (fan, token) = w.user(false);
        w.graph.follow(Some(&token), star, follow()).await.unwrap();
        fans.push(fan);
    }
    let huge = PageRequest { limit: 10_000, ..Default::default() };
    let page = w.graph.followers(None, star, huge).await.unwrap();
    assert_eq!(page.account_ids.len(), 80, "clamped to the maximum");
    assert_eq!(page.account_ids[0], fans[84], "newest first");
    assert_eq!(page.cursor_ids.len(), page.account_ids.len());
    let default = w.graph.followers(None, star, PageRequest::default()).await.unwrap();
    assert_eq!(default.account_ids.len(), 40);
    let rest = w
        .graph
        .followers(None, star, PageRequest { max_id: page.cursor_ids[79], limit: 80, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(rest.account_ids, vec![fans[4], fans[3], fans[2], fans[1], fans[0]]);
    let ids = w.graph.follower_ids(star, 0, 0).await.unwrap();
    assert_eq!((ids.follower_ids, ids.total, ids.next_after_id), (fans.clone(), 85, 0));
    assert_eq!(w.graph.counts(None, &[star]).await.unwrap()[0].followers_count, 85);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_approves_its_followers() {
    let w = world().await;
    let (owner, owner_token) = w.user(true);
    let (fan, fan_token) = w.user(false);
    let asked =
        w.graph.follow(Some(&fan_token), owner, FollowOptions { reblogs: Some(false), ..follow() }).await.unwrap();
    assert!(asked.requested && !asked.following && !asked.showing_reblogs);
    let requests = w.graph.follow_requests(Some(&owner_token), PageRequest::default()).await.unwrap();
    assert_eq!(requests.account_ids, vec![fan]);
    let rel = w.graph.authorize_follow_request(Some(&owner_token), fan).await.unwrap();
    assert!(rel.followed_by && !rel.requested_by);
    let rel = &w.graph.relationships(Some(&fan_token), &[owner]).await.unwrap()[0];
    assert!(rel.following && !rel.showing_reblogs, "the request's options carry over");
    let err = w.graph.reject_follow_request(Some(&owner_token), fan).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    // Only the caller's own requests are theirs to answer.
    assert_eq!(w.graph.authorize_follow_request(Some(&fan_token), owner).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_reach_the_bus() {
    let w = world().await;
    let (a, token) = w.user(false);
    let b = w.account(false);
    let mut sub = w.bus.subscribe(&["agora.graph.v1".to_owned()], "graph-test").await.unwrap();
    w.graph.follow(Some(&token), b, follow()).await.unwrap();
    w.graph.follow(Some(&token), b, follow()).await.unwrap();
    w.graph.mute(Some(&token), b, Some(false), 60).await.unwrap();
    // An upper bound so a broken relay fails the test instead of hanging it.
    let bound = Duration::from_secs(30);
    let first = tokio::time::timeout(bound, sub.next()).await.unwrap().unwrap();
    assert_eq!(first.envelope.r#type, "graph.followed");
    assert_eq!(first.envelope.producer, "graph");
    assert_eq!(first.envelope.aggregate_id, a.to_string());
    let payload = GraphChanged::decode(first.envelope.payload.as_slice()).unwrap();
    assert_eq!((payload.account_id, payload.target_id, payload.show_reblogs), (a, b, true));
    let second = tokio::time::timeout(bound, sub.next()).await.unwrap().unwrap();
    assert_eq!(second.envelope.r#type, "graph.muted", "the repeated follow announced nothing");
    let muted = GraphChanged::decode(second.envelope.payload.as_slice()).unwrap();
    assert!(!muted.mute_notifications && muted.mute_expires_at_ms > muted.occurred_at_ms);
    let metrics = agora_kit::metrics::render();
    for kind in ["followed", "muted"] {
        assert!(metrics.contains(&format!("agora_graph_changes_total{{kind=\"{kind}\"}}")), "{metrics}");
    }
}

#[test]
fn config_defaults_and_errors_name_the_variable() {
    let c = Config::from_env(&MapEnv::new().with("AGORA_DATA_DIR", "/var/lib/agora")).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:50053");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9103");
    assert_eq!(c.database_url, "sqlite:///var/lib/agora/graph.db");
    assert_eq!(c.user_url, "http://127.0.0.1:50051");
    assert_eq!(c.bus_url, "sqlite:///var/lib/agora/bus.db");
    assert!(c.migrate_on_start);
    let custom = MapEnv::new()
        .with("AGORA_GRAPH_DATABASE_URL", "postgres://db/graph")
        .with("AGORA_PUBLIC_URL", "https://social.example/")
        .with("AGORA_GRAPH_USER_URL", "http://user:50051")
        .with("AGORA_WORKER_ID", "12")
        .with("AGORA_MIGRATE_ON_START", "false");
    let c = Config::from_env(&custom).unwrap();
    assert_eq!((c.public_url.as_str(), c.worker_id, c.migrate_on_start), ("https://social.example", 12, false));
    let err = Config::from_env(&MapEnv::new().with("AGORA_GRAPH_DATABASE_URL", "mysql://x")).unwrap_err();
    assert_eq!(err.var, "AGORA_GRAPH_DATABASE_URL");
    let scylla =
        Config::from_env(&MapEnv::new().with("AGORA_GRAPH_DATABASE_URL", "scylla://a:9042,b:9042/agora_graph"));
    assert_eq!(scylla.unwrap().database_url, "scylla://a:9042,b:9042/agora_graph");
    for bad in
        ["scylla://a:9042", "scylla://a/graph", "scylla://a:9042/bad-name", "scylla://a:9042/g?replication_factor=0"]
    {
        let err = Config::from_env(&MapEnv::new().with("AGORA_GRAPH_DATABASE_URL", bad)).unwrap_err();
        assert_eq!(err.var, "AGORA_GRAPH_DATABASE_URL", "{bad}");
    }
    let err = Config::from_env(&MapEnv::new().with("AGORA_GRAPH_LISTEN", "nowhere")).unwrap_err();
    assert_eq!(err.var, "AGORA_GRAPH_LISTEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_and_maps_errors() {
    let mut w = world().await;
    let (me, token) = w.user(false);
    let (other, other_token) = w.user(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = w.service.take().unwrap();
    tokio::spawn(service.serve(listener, w.shutdown.clone()));
    let mut client = GraphServiceClient::new(agora_kit::grpc::channel(&format!("http://{addr}")).unwrap());
    let req = |target_id| agora_kit::grpc::request(pb::FollowRequest { target_id, ..Default::default() }, Some(&token));

    let selfish = client.follow(req(me)).await.unwrap_err();
    assert_eq!(selfish.code(), tonic::Code::InvalidArgument);
    let rel = client.follow(req(other)).await.unwrap().into_inner().relationship.unwrap();
    assert!(rel.following && rel.showing_reblogs && !rel.notifying);
    assert_eq!(rel.id, other);

    let anonymous =
        client.follow(agora_kit::grpc::request(pb::FollowRequest { target_id: other, ..Default::default() }, None));
    assert_eq!(anonymous.await.unwrap_err().code(), tonic::Code::Unauthenticated);

    let block = pb::TargetRequest { target_id: me };
    client.block(agora_kit::grpc::request(block, Some(&other_token))).await.unwrap();
    let refused = client.follow(req(other)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "You are not allowed to follow this account");

    let counts = client
        .get_counts(agora_kit::grpc::request(pb::GetCountsRequest { ids: vec![me, other] }, None))
        .await
        .unwrap()
        .into_inner()
        .counts;
    assert_eq!(
        counts.iter().map(|c| (c.id, c.followers_count, c.following_count)).collect::<Vec<_>>(),
        vec![(me, 0, 0), (other, 0, 0)]
    );
    let filter = client
        .get_filter_set(agora_kit::grpc::request(pb::GetFilterSetRequest {}, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filter.blocked_by, vec![other]);
    let bad_page =
        pb::ListAccountsRequest { account_id: other, page: Some(pb::Page { limit: -3, ..Default::default() }) };
    let err = client.list_followers(agora_kit::grpc::request(bad_page, None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
