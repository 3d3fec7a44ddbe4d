//! Streaming load: N open `/api/v1/streaming/user` connections (SSE) held while a workload runs,
//! and the delivery latency of new statuses to them — from the moment the author's POST is sent
//! to the `update` event arriving on each follower's stream. The author probed is the celebrity
//! when there is one (the most followers), otherwise the account with the most followers; the
//! streams are opened for its followers first, then round-robin over every account.
//!
//! With `--rss-pid` (the gateway's process on this machine) it also reads the process's
//! resident memory before the streams open and once they are all open, so the cost per
//! connection can be reported.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::record::{Outcome, Recorder};
use crate::run::Target;
use crate::setup::post_status;
use crate::workload::Social;

/// How long a probe waits for its last follower before the missing ones count as misses.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams opened at once while connecting.
const OPEN_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub count: usize,
    /// Statuses the probed author posts, one per `interval`.
    pub probes: u32,
    pub interval: Duration,
    pub rss_pid: Option<u32>,
}

/// Counters shared with every stream task.
#[derive(Default)]
struct Shared {
    opened: AtomicU64,
    refused: AtomicU64,
    open_now: AtomicU64,
    ended: AtomicU64,
    events: AtomicU64,
    /// Probe status id → when its POST was sent.
    probes: Mutex<HashMap<String, Instant>>,
    recorder: Mutex<Option<Recorder>>,
}

/// The held streams; dropping it closes them.
pub struct Streams {
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
    /// Streams per probed follower (how many deliveries one probe should see).
    expected: u64,
    author: usize,
    author_followers: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    open_seconds: f64,
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The author with the most followers (the celebrity when there is one).
fn probed_author(social: &Social, followers: &[Vec<u32>]) -> usize {
    social.celebrity.unwrap_or_else(|| (0..followers.len()).max_by_key(|&i| followers[i].len()).unwrap_or(0))
}

/// Opens `opts.count` streams and waits until each is open or refused.
pub async fn open(url: &str, social: &Social, opts: StreamOptions) -> anyhow::Result<Streams> {
    // Long-lived responses: no total timeout, one connection per stream.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .context("building the streaming client")?;
    let followers = social.graph.followers();
    let author = probed_author(social, &followers);
    let mut order: Vec<usize> = followers[author].iter().map(|&f| f as usize).collect();
    order.extend((0..social.users.len()).filter(|i| *i != author && !followers[author].contains(&(*i as u32))));
    anyhow::ensure!(!order.is_empty(), "no accounts to open streams for");
    let expected_per_follower: HashMap<usize, u64> = {
        let mut m = HashMap::new();
        for k in 0..opts.count {
            *m.entry(order[k % order.len()]).or_insert(0) += 1;
        }
        m
    };
    let expected =
        followers[author].iter().map(|f| expected_per_follower.get(&(*f as usize)).copied().unwrap_or(0)).sum();
    let shared = Arc::new(Shared { recorder: Mutex::new(Some(Recorder::new()?)), ..Default::default() });
    let rss_before_kib = rss_kib(opts.rss_pid);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(OPEN_CONCURRENCY));
    let endpoint = format!("{}/api/v1/streaming/user", url.trim_end_matches('/'));
    for k in 0..opts.count {
        let user = order[k % order.len()];
        let (client, endpoint, token, shared, gate) = (
            client.clone(),
            endpoint.clone(),
            Arc::clone(&social.users[user].token),
            Arc::clone(&shared),
            Arc::clone(&gate),
        );
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let resp = match client.get(&endpoint).bearer_auth(&*token).send().await {
                Ok(r) if r.status().is_success() => r,
                _ => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            shared.opened.fetch_add(1, Ordering::Relaxed);
            shared.open_now.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            read(resp, &shared).await;
            shared.open_now.fetch_sub(1, Ordering::Relaxed);
            shared.ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    // Every stream has answered (opened or refused).
    while shared.opened.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed) < opts.count as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open_kib = rss_kib(opts.rss_pid);
    eprintln!(
        "streams: {} open, {} refused in {open_seconds:.1}s; probing @{} ({} followers, {expected} streams of them)",
        shared.opened.load(Ordering::Relaxed),
        shared.refused.load(Ordering::Relaxed),
        social.users[author].username,
        followers[author].len()
    );
    Ok(Streams {
        shared,
        _tasks: tasks,
        expected,
        author,
        author_followers: followers[author].len(),
        rss_before_kib,
        rss_open_kib,
        open_seconds,
    })
}

/// Reads one stream's events until it ends, timing the probes' `update`s.
async fn read(mut resp: reqwest::Response, shared: &Shared) {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let arrived = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if !block.lines().any(|l| l == "event: update") {
                continue;
            }
            shared.events.fetch_add(1, Ordering::Relaxed);
            // The status entity starts with its id.
            let Some(id) = block.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()) else { continue };
            let posted = shared.probes.lock().get(id).copied();
            if let Some(posted) = posted
                && let Some(r) = shared.recorder.lock().as_mut()
            {
                r.record(Outcome::Success, arrived - posted);
            }
        }
    }
}

impl Streams {
    /// Posts the probes as the author, one per interval, and waits for their deliveries.
    pub async fn probe(&self, target: &Target, social: &Social, opts: StreamOptions) -> anyhow::Result<()> {
        let token = Arc::clone(&social.users[self.author].token);
        for i in 0..opts.probes {
            let text = format!("agora-bench stream probe {i} {:016x}", rand::random::<u64>());
            let sent = Instant::now();
            let id = post_status(target, &token, &text).await.context("posting a stream probe")?;
            self.shared.probes.lock().insert(id, sent);
            tokio::time::sleep(opts.interval).await;
        }
        // Stragglers, then misses are what never arrived.
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let want = self.expected * u64::from(opts.probes);
        while Instant::now() < deadline && self.delivered() < want {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing = want.saturating_sub(self.delivered());
        if let Some(r) = self.shared.recorder.lock().as_mut() {
            for _ in 0..missing {
                r.record(Outcome::Failure("miss".into()), Duration::ZERO);
            }
        }
        Ok(())
    }

    fn delivered(&self) -> u64 {
        self.shared.recorder.lock().as_ref().map_or(0, |r| r.successes())
    }

    pub fn held(&self) -> u64 {
        self.shared.open_now.load(Ordering::Relaxed)
    }

    pub fn json(&self, opts: &StreamOptions) -> Value {
        let rec = self.shared.recorder.lock();
        let lat = rec.as_ref().map(|r| r.latency()).unwrap_or_default();
        let per_1000 = match (self.rss_before_kib, self.rss_open_kib) {
            (Some(a), Some(b)) if self.shared.opened.load(Ordering::Relaxed) > 0 => Some(
                (b.saturating_sub(a)) as f64 / 1024.0 / (self.shared.opened.load(Ordering::Relaxed) as f64 / 1000.0),
            ),
            _ => None,
        };
        json!({
            "streams_asked": opts.count,
            "streams_opened": self.shared.opened.load(Ordering::Relaxed),
            "streams_refused": self.shared.refused.load(Ordering::Relaxed),
            "streams_held_at_end": self.held(),
            "streams_ended_early": self.shared.ended.load(Ordering::Relaxed),
            "open_seconds": self.open_seconds,
            "update_events": self.shared.events.load(Ordering::Relaxed),
            "probe_author_followers": self.author_followers,
            "probes": opts.probes,
            "deliveries_expected": self.expected * u64::from(opts.probes),
            "deliveries": rec.as_ref().map_or(0, |r| r.successes()),
            "misses": rec.as_ref().map_or(0, |r| r.error_count()),
            "delivery_ms": { "p50": lat.p50_ms, "p90": lat.p90_ms, "p99": lat.p99_ms, "max": lat.max_ms },
            "rss_before_mib": self.rss_before_kib.map(|k| k as f64 / 1024.0),
            "rss_streams_open_mib": self.rss_open_kib.map(|k| k as f64 / 1024.0),
            "rss_per_1000_streams_mib": per_1000,
        })
    }

    pub fn table(&self, opts: &StreamOptions) -> String {
        let j = self.json(opts);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "streams: {} asked, {} opened, {} refused, {} held at the end ({} ended early), opened in {:.1}s",
            j["streams_asked"],
            j["streams_opened"],
            j["streams_refused"],
            j["streams_held_at_end"],
            j["streams_ended_early"],
            self.open_seconds
        );
        let _ = writeln!(
            out,
            "delivery POST → update on a follower's stream ({} followers, {} probes): {} of {} arrived, \
             p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.author_followers,
            opts.probes,
            j["deliveries"],
            j["deliveries_expected"],
            j["delivery_ms"]["p50"].as_f64().unwrap_or(0.0),
            j["delivery_ms"]["p90"].as_f64().unwrap_or(0.0),
            j["delivery_ms"]["p99"].as_f64().unwrap_or(0.0),
            j["delivery_ms"]["max"].as_f64().unwrap_or(0.0),
        );
        if let (Some(a), Some(b)) = (self.rss_before_kib, self.rss_open_kib) {
            let _ = writeln!(
                out,
                "gateway RSS: {:.1} MiB before, {:.1} MiB with the streams open ({} MiB per 1000 streams)",
                a as f64 / 1024.0,
                b as f64 / 1024.0,
                j["rss_per_1000_streams_mib"].as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"))
            );
        }
        out
    }
}
