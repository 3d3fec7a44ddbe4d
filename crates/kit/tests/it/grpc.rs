//! In-process gRPC: a client of `inproc://NAME` reaches the server registered under NAME in this
//! process, with no socket, and gets UNAVAILABLE while none is registered.

use agora_kit::Shutdown;
use agora_kit::grpc::{GrpcListener, channel, serve};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn inproc_client_reaches_the_registered_server_only_while_it_runs() {
    let name = format!("health-{}", rand::random::<u32>());
    let mut client = HealthClient::new(channel(&format!("inproc://{name}")).unwrap());
    let ask = || HealthCheckRequest { service: String::new() };

    // Made before the server exists, like a lazily-connecting socket channel.
    let err = client.check(ask()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let shutdown = Shutdown::new();
    let server = tokio::spawn(serve(GrpcListener::in_process(&name), shutdown.clone(), health));
    // The registration happens when the server task first runs.
    let mut answered = None;
    for _ in 0..100 {
        match client.check(ask()).await {
            Ok(r) => {
                answered = Some(r.into_inner().status);
                break;
            }
            Err(e) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e}"),
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(answered, Some(ServingStatus::Serving as i32));

    // Another name is another server: nothing answers there.
    let mut other = HealthClient::new(channel(&format!("inproc://{name}-other")).unwrap());
    assert_eq!(other.check(ask()).await.unwrap_err().code(), tonic::Code::Unavailable);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    let err = client.check(ask()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}
