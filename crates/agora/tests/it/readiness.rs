//! A service whose engines are down when it starts: it starts anyway, says it is not ready,
//! and becomes ready once they come up — without a restart. Here the graph service, with its
//! store on Cassandra and its bus on Kafka, both started only after the service.

use std::time::{Duration, Instant};

use agora_testkit::stable_port;

use crate::process::Proc;

async fn status(url: &str) -> Option<u16> {
    // Readiness checks each get 2 s to answer; a dead engine makes /readyz take that long.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(6)).build().unwrap();
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_service_waits_for_cassandra_and_kafka_without_a_restart() {
    let (Some(cassandra), Some(kafka)) = (
        agora_testkit::test_server("AGORA_TEST_CASSANDRA_NODE"),
        agora_testkit::test_server("AGORA_TEST_KAFKA_BROKER"),
    ) else {
        return;
    };
    let dir = agora_testkit::tempdir().unwrap();
    let (cql, broker, grpc, admin) = (stable_port(), stable_port(), stable_port(), stable_port());
    let env: Vec<(String, String)> = [
        ("AGORA_GRAPH_DATABASE_URL", format!("scylla://127.0.0.1:{cql}/graph_ready?replication_factor=1")),
        ("AGORA_BUS_URL", format!("kafka://127.0.0.1:{broker}?session_timeout_ms=2000")),
        ("AGORA_GRAPH_LISTEN", format!("127.0.0.1:{grpc}")),
        ("AGORA_GRAPH_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut graph = Proc::new("graph", &["serve", "--target", "graph"], &env, &dir.0);
    graph.start();
    let health = format!("http://127.0.0.1:{admin}/healthz");
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    graph.wait_ready(&health).await;
    assert_eq!(status(&ready).await, Some(503), "not ready while Cassandra and Kafka are down");

    let node_dir = dir.0.join("cassandra");
    let broker_dir = dir.0.join("kafka");
    let mut node = Proc::new_command("cassandra", &cassandra, &[node_dir.to_str().unwrap(), &cql.to_string()], &dir.0);
    let mut bus = Proc::new_command("kafka", &kafka, &[broker_dir.to_str().unwrap(), &broker.to_string()], &dir.0);
    node.start();
    bus.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(&ready).await != Some(200) {
        assert!(graph.running_ok(), "the graph service died:\n{}", graph.log_tail());
        assert!(Instant::now() < deadline, "not ready 120 s after the engines started:\n{}", graph.log_tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    graph.kill();
    node.kill();
    bus.kill();
}
