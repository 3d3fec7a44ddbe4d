//! The outbox under a broker outage: accounts registered while Kafka is down (killed, then
//! restarted on its log directory) are announced once it is back — every event arrives, and
//! after dedupe exactly once.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agora_events::dedupe::MemoryDedupe;
use agora_proto::events::v1::UserCreated;
use agora_testkit::PlatformBuilder;
use prost::Message as _;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// A private Apache Kafka node (`scripts/infra.sh kafka-broker`), stopped like a crash
/// (SIGKILL) and started again on the same log directory, as a real broker restart is.
struct Broker {
    cmd: String,
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).unwrap();
        let child = Command::new(&self.cmd)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the kafka broker");
        self.child = Some(child);
        let bus = agora_events::connect(&format!("kafka://127.0.0.1:{}", self.port)).await.unwrap();
        // A time bound, not a count of pings: one ping can itself take seconds while the
        // broker is still down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), bus.ping()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("the kafka broker did not start within 60 s; the end of its log:\n{}", tail.join("\n"));
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}

async fn wait_for(seen: &Mutex<HashMap<i64, usize>>, want: &HashSet<i64>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if want.iter().all(|id| seen.try_lock().map(|s| s.contains_key(id)).unwrap_or(false)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_during_a_broker_outage_arrive_once_it_is_back() {
    let _log = agora_kit::telemetry::init(
        "outage-test",
        &agora_kit::config::MapEnv::new().with("AGORA_LOG", "warn,agora_events=info,librdkafka=off,rdkafka=off"),
    );
    let Some(cmd) = agora_testkit::test_server("AGORA_TEST_KAFKA_BROKER") else {
        return;
    };
    let dir = agora_testkit::tempdir().unwrap();
    // Both of the broker's ports lie outside the ephemeral range, so that no other test's
    // listener takes one while the broker is down (it must come back on the same ports).
    std::fs::write(dir.0.join("controller.port"), agora_testkit::stable_port().to_string()).unwrap();
    let mut broker = Broker { cmd, dir: dir.0.clone(), port: agora_testkit::stable_port(), child: None };
    broker.start().await;
    let kafka = format!("kafka://127.0.0.1:{}?session_timeout_ms=2000&partitions=3", broker.port);

    let platform =
        PlatformBuilder::embedded().without_gateway().setting("AGORA_BUS_URL", &kafka).start().await.unwrap();
    let a = Arc::clone(&platform.accounts);
    eprintln!("outage test: platform up");

    // An independent consumer counts user.created events per account, deduping by event id.
    let consumer_bus = agora_events::connect(&kafka).await.unwrap();
    let seen: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let raw = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dedupe = Arc::new(MemoryDedupe::new(100_000));
    {
        let seen = Arc::clone(&seen);
        let raw = Arc::clone(&raw);
        let stop = platform.shutdown.clone();
        tokio::spawn(async move {
            let mut sub = consumer_bus.subscribe(&["agora.user.v1".to_owned()], "outage-test").await.unwrap();
            loop {
                let d = tokio::select! { _ = stop.cancelled() => return, d = sub.next() => d };
                let Ok(d) = d else { continue };
                raw.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if d.envelope.r#type == "user.created" && dedupe.first_time(d.envelope.id) {
                    let payload = UserCreated::decode(d.envelope.payload.as_slice()).unwrap();
                    *seen.lock().await.entry(payload.account_id).or_default() += 1;
                }
                let _ = sub.ack(&d).await;
            }
        });
    }

    let (app, secret) = a.create_application("outage", "", &[], &["read write".into()]).await.unwrap();
    let app_token = a.client_grant(&app.client_id, &secret, &["write".into()]).await.unwrap().access_token;
    let register = async |n: usize| {
        let mut ids = HashSet::new();
        for _ in 0..n {
            let name = format!("o{:08x}", rand::random::<u32>());
            let (_, acct) = a
                .register(Some(&app_token), &name, &format!("{name}@example.com"), "long enough pw", true, &[])
                .await
                .unwrap();
            ids.insert(acct.id);
        }
        ids
    };

    eprintln!("outage test: app token issued");
    let before = register(5).await;
    eprintln!("outage test: registered 5 before the outage");
    assert!(wait_for(&seen, &before, Duration::from_secs(60)).await, "events before the outage arrive");

    eprintln!("outage test: stopping the broker");
    broker.stop().await;
    let during = register(5).await;
    assert!(a.store.outbox().backlog().await.unwrap() >= 1, "events wait in the outbox while the broker is down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("outage test: restarting the broker");
    broker.start().await;

    let mut all = before.clone();
    all.extend(during.iter().copied());
    assert!(wait_for(&seen, &all, Duration::from_secs(90)).await, "every event arrives after the outage");
    eprintln!("outage test: every event arrived");
    let seen = seen.lock().await;
    assert!(
        seen.iter().filter(|(id, _)| all.contains(id)).all(|(_, n)| *n == 1),
        "after dedupe, exactly once: {seen:?}"
    );
    assert!(raw.load(std::sync::atomic::Ordering::Relaxed) >= all.len());
    drop(seen);
    assert_eq!(a.store.outbox().backlog().await.unwrap(), 0);
    platform.stop().await.unwrap();
    eprintln!("outage test: platform stopped");
    // Killing the broker now leaves the consumers' closes waiting on it; they run on threads of
    // their own, so this runtime still shuts down.
    broker.stop().await;
}
