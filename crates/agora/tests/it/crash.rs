//! Crash safety: a burst of posts (each with an Idempotency-Key), SIGKILL in the middle of it,
//! a restart on the same data. Every status that was acknowledged — and every one whose retry
//! after the restart is acknowledged — appears exactly once in the author's profile, in a
//! follower's home and in the hashtag timeline, and `statuses_count` agrees. Repeated, in
//! `agora dev` (embedded stores and bus) and in the services shape on PostgreSQL and Kafka
//! (the post and feed services killed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_testkit::api::{Api, uniq};
use agora_testkit::stable_port;
use serde_json::Value;

use crate::process::Proc;

/// Posts per round, sent by `CLIENTS` concurrent clients; the crash comes after `BURST / 4`
/// were acknowledged, so that some are in flight and more are still to be sent.
const BURST: usize = 48;
const CLIENTS: usize = 16;
const ROUNDS: usize = 4;

fn no_limits() -> Vec<(String, String)> {
    [
        ("AGORA_GATEWAY_RATE_LIMIT_IP", "off"),
        ("AGORA_GATEWAY_RATE_LIMIT_ACCOUNT", "off"),
        ("AGORA_GATEWAY_RATE_LIMIT_REGISTRATION", "off"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `POST /api/v1/statuses` with an Idempotency-Key: the new status id, or why not.
async fn post_keyed(http: &reqwest::Client, base: &str, token: &str, key: &str, text: &str) -> Result<String, String> {
    let r = http
        .post(format!("{base}/api/v1/statuses"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .form(&[("status", text)])
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["id"].as_str().unwrap().to_owned())
}

/// Every status id of a paginated timeline at `path`, newest first.
async fn walk(api: &Api, token: &str, path: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut max_id: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{path}{sep}limit=40", api.base);
        if let Some(m) = &max_id {
            url.push_str(&format!("&max_id={m}"));
        }
        let r = api.http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let page: Vec<Value> = r.json().await.unwrap();
        let Some(last) = page.last() else { break };
        max_id = Some(last["id"].as_str().unwrap().to_owned());
        all.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
    }
    all
}

/// The three timelines and the counter agree with `want`: each id once, nothing else.
async fn consistent(
    api: &Api,
    author: &str,
    author_id: &str,
    follower: &str,
    tag: &str,
    want: &[String],
) -> Result<(), String> {
    let mut sorted = want.to_vec();
    sorted.sort_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    for (name, token, path) in [
        ("profile", author, format!("/api/v1/accounts/{author_id}/statuses")),
        ("home", follower, "/api/v1/timelines/home".to_owned()),
        ("hashtag", follower, format!("/api/v1/timelines/tag/{tag}")),
    ] {
        let got = walk(api, token, &path).await;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &got {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        if let Some((id, n)) = counts.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{name}: status {id} appears {n} times"));
        }
        if got != sorted {
            let missing: Vec<&String> = sorted.iter().filter(|id| !counts.contains_key(id.as_str())).collect();
            return Err(format!("{name}: {} of {} statuses, missing {missing:?}", got.len(), sorted.len()));
        }
    }
    let me: Value = api.me(author).await.json().await.unwrap();
    if me["statuses_count"].as_u64() != Some(want.len() as u64) {
        return Err(format!("statuses_count {} for {} statuses", me["statuses_count"], want.len()));
    }
    Ok(())
}

/// A platform the crash test can kill and restart.
trait Shape {
    fn base(&self) -> String;
    async fn start(&mut self);
    /// Kills (SIGKILL) the processes a crash takes down.
    fn crash(&mut self);
}

async fn crash_rounds(shape: &mut impl Shape) {
    shape.start().await;
    let api = Api::at(&shape.base()).await;
    let (_, author, _) = api.user().await;
    let author_id = api.account_id(&author).await;
    let (_, follower, _) = api.user().await;
    api.follow(&follower, &author_id).await;
    let tag = uniq("crash");
    let mut want: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let (http, base, token, tx) = (api.http.clone(), api.base.clone(), author.clone(), tx.clone());
            let tag = tag.clone();
            tasks.push(tokio::spawn(async move {
                for i in (client..BURST).step_by(CLIENTS) {
                    let key = format!("{tag}-{round}-{i}");
                    let text = format!("round {round} status {i} #{tag}");
                    let r = post_keyed(&http, &base, &token, &key, &text).await;
                    let failed = r.is_err();
                    let _ = tx.send((i, r));
                    if failed {
                        break; // the platform is down: the rest is retried after the restart
                    }
                }
            }));
        }
        drop(tx);
        let mut acked: HashMap<usize, String> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.len() < BURST / 4 && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some((i, Ok(id)))) => {
                    acked.insert(i, id);
                }
                Ok(Some((_, Err(_)))) | Err(_) => {}
                Ok(None) => break,
            }
        }
        assert!(acked.len() >= BURST / 4, "round {round}: only {} posts acknowledged before the crash", acked.len());
        shape.crash();
        while let Some((i, r)) = rx.recv().await {
            if let Ok(id) = r {
                acked.insert(i, id);
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        shape.start().await;
        // The client retries what it never heard back about, with the same key; what was
        // acknowledged before must come back as the same status, not a second one.
        for i in 0..BURST {
            let key = format!("{tag}-{round}-{i}");
            let text = format!("round {round} status {i} #{tag}");
            let id = post_keyed(&api.http, &api.base, &author, &key, &text)
                .await
                .unwrap_or_else(|e| panic!("round {round}: retry of {i} after the restart failed: {e}"));
            if let Some(before) = acked.get(&i) {
                assert_eq!(&id, before, "round {round}: the retry of an acknowledged post made a new status");
            }
            want.push(id);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match consistent(&api, &author, &author_id, &follower, &tag, &want).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => panic!("round {round}, 60 s after the restart: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        eprintln!(
            "round {round}: {} acknowledged before the kill, {} statuses in all, consistent",
            acked.len(),
            want.len()
        );
    }
}

/// `agora dev`: one process, embedded stores and bus.
struct Dev {
    proc: Proc,
    port: u16,
    _dir: agora_testkit::TempDir,
}

impl Dev {
    fn new() -> Self {
        let dir = agora_testkit::tempdir().unwrap();
        let port = stable_port();
        let mut env = no_limits();
        env.push(("AGORA_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")));
        let data = dir.0.join("data");
        let proc = Proc::new(
            "agora-dev",
            &["dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()],
            &env,
            &dir.0,
        );
        Self { proc, port, _dir: dir }
    }
}

impl Shape for Dev {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    async fn start(&mut self) {
        self.proc.start();
        let url = format!("{}/readyz", self.base());
        self.proc.wait_ready(&url).await;
    }
    fn crash(&mut self) {
        self.proc.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_killed_mid_burst_loses_no_event() {
    crash_rounds(&mut Dev::new()).await;
}

/// One process per service on PostgreSQL, Redis and Kafka; a crash kills post and feed.
struct Services {
    procs: Vec<(Proc, String)>,
    gateway_port: u16,
    _dir: agora_testkit::TempDir,
}

impl Services {
    async fn new(postgres: &str, redis: &str, kafka: &str) -> Self {
        let dir = agora_testkit::tempdir().unwrap();
        let mut env = no_limits();
        let sep = if kafka.contains('?') { '&' } else { '?' };
        let namespace = format!("crash{:08x}", rand::random::<u32>());
        env.push(("AGORA_BUS_URL".into(), format!("{kafka}{sep}session_timeout_ms=2000&namespace={namespace}")));
        env.push(("AGORA_FEED_CACHE_URL".into(), redis.to_owned()));
        let mut grpc = HashMap::new();
        let mut admin = HashMap::new();
        for svc in ["user", "post", "graph", "feed", "gateway"] {
            grpc.insert(svc, stable_port());
            admin.insert(svc, stable_port());
        }
        let gateway_port = grpc["gateway"];
        env.push(("AGORA_PUBLIC_URL".into(), format!("http://127.0.0.1:{gateway_port}")));
        for svc in ["user", "post", "graph", "feed", "gateway"] {
            let upper = svc.to_uppercase();
            env.push((format!("AGORA_{upper}_LISTEN"), format!("127.0.0.1:{}", grpc[svc])));
            env.push((format!("AGORA_{upper}_ADMIN_LISTEN"), format!("127.0.0.1:{}", admin[svc])));
            if svc != "gateway" {
                let db = agora_testkit::fresh_postgres_database(postgres).await.unwrap();
                env.push((format!("AGORA_{upper}_DATABASE_URL"), db));
            }
        }
        for (client, peers) in [
            ("GATEWAY", &["user", "post", "graph", "feed"][..]),
            ("POST", &["user", "graph"][..]),
            ("GRAPH", &["user"][..]),
            ("FEED", &["user", "graph", "post"][..]),
        ] {
            for peer in peers {
                env.push((
                    format!("AGORA_{client}_{}_URL", peer.to_uppercase()),
                    format!("http://127.0.0.1:{}", grpc[peer]),
                ));
            }
        }
        let procs = ["user", "graph", "post", "feed", "gateway"]
            .iter()
            .map(|svc| {
                let p = Proc::new(svc, &["serve", "--target", svc], &env, &dir.0);
                (p, format!("http://127.0.0.1:{}/readyz", admin[svc]))
            })
            .collect();
        Self { procs, gateway_port, _dir: dir }
    }
}

impl Shape for Services {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }
    async fn start(&mut self) {
        // In dependency order; only what is not running (after a crash: post and feed).
        for (p, ready) in &mut self.procs {
            if !p.running() {
                p.start();
                p.wait_ready(ready).await;
            }
        }
    }
    fn crash(&mut self) {
        for (p, _) in &mut self.procs {
            if p.name == "post" || p.name == "feed" {
                p.kill();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_mid_burst_lose_no_event_on_kafka() {
    let (Some(pg), Some(redis), Some(kafka)) = (
        agora_testkit::test_server("AGORA_TEST_POSTGRES_URL"),
        agora_testkit::test_server("AGORA_TEST_REDIS_URL"),
        agora_testkit::test_server("AGORA_TEST_KAFKA_URL"),
    ) else {
        return;
    };
    crash_rounds(&mut Services::new(&pg, &redis, &kafka).await).await;
}
