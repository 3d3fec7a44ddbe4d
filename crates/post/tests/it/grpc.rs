//! The service as deployed: built with `PostService::build`, served over gRPC on an ephemeral
//! port, its events reaching the bus through the outbox relay.

use std::sync::Arc;

use agora_events::EventBus;
use agora_kit::Shutdown;
use agora_kit::jwt::{SigningKey, StaticKeys, Verifier};
use agora_post::{Config, PostService};
use agora_proto::events::v1 as ev;
use agora_proto::post::v1 as pb;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use prost::Message as _;

use crate::fakes::{self, AUTHOR, ISS, MENTIONED, STRANGER};

fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}/post.db", dir.display()),
        bus_url: "memory://".into(),
        public_url: ISS.into(),
        user_url: "http://127.0.0.1:1".into(),
        graph_url: "http://127.0.0.1:1".into(),
        max_chars: 500,
        migrate_on_start: true,
        worker_id: 7,
        epochs_url: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_over_grpc_announce_themselves_on_the_bus() {
    let dir = agora_testkit::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let bus: Arc<dyn EventBus> = agora_events::connect("memory://").await.unwrap();
    let mut events = bus.subscribe(&["agora.post.v1".to_owned()], "grpc-test").await.unwrap();
    let key = SigningKey::generate().unwrap();
    let verifier = Verifier::new(ISS, ISS, StaticKeys::new(vec![key.public_key()]));
    verifier.prime().await.unwrap();
    let service = PostService::build(
        &config(&dir.0),
        Arc::clone(&bus),
        verifier,
        Arc::new(fakes::directory()),
        Arc::new(fakes::graph()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert!(service.health.failures().await.is_empty());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(service.serve(listener, shutdown.clone()));
    let mut client = PostServiceClient::new(agora_kit::grpc::channel(&format!("http://{addr}")).unwrap());

    let author = fakes::mint(&key, Some(AUTHOR), "read write");
    let req = pb::CreateStatusRequest {
        text: "hello @Mentioned #Agora".into(),
        visibility: pb::Visibility::Direct as i32,
        ..Default::default()
    };
    let created =
        client.create_status(agora_kit::grpc::request(req, Some(&author))).await.unwrap().into_inner().status.unwrap();
    assert_eq!(created.tags, vec!["agora".to_owned()]);

    let delivery = events.next().await.unwrap();
    assert_eq!(delivery.envelope.r#type, "post.created");
    assert_eq!(delivery.envelope.aggregate_id, created.id.to_string());
    let posted = ev::StatusPosted::decode(delivery.envelope.payload.as_slice()).unwrap();
    assert_eq!(posted.id, created.id);
    assert_eq!(posted.account_id, AUTHOR);
    assert_eq!(posted.visibility, "direct");
    assert_eq!(posted.mention_ids, vec![MENTIONED]);
    events.ack(&delivery).await.unwrap();

    // Hidden from a stranger exactly as a missing status is.
    let stranger = fakes::mint(&key, Some(STRANGER), "read write");
    for id in [created.id, created.id + 1] {
        let err = client
            .get_context(agora_kit::grpc::request(pb::StatusIdRequest { id }, Some(&stranger)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "Record not found");
    }
    let listed = client
        .get_statuses(agora_kit::grpc::request(
            pb::GetStatusesRequest { ids: vec![created.id], ..Default::default() },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.statuses.is_empty());

    let err = client
        .create_status(agora_kit::grpc::request(pb::CreateStatusRequest::default(), Some(&author)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "Text can't be blank");

    let deleted = client
        .delete_status(agora_kit::grpc::request(pb::StatusIdRequest { id: created.id }, Some(&author)))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(deleted.text, "hello @Mentioned #Agora");
    let delivery = events.next().await.unwrap();
    assert_eq!(delivery.envelope.r#type, "post.deleted");
    assert_eq!(ev::StatusDeleted::decode(delivery.envelope.payload.as_slice()).unwrap().id, created.id);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
