//! Fan-out lag: how long after `POST /api/v1/statuses` answers a new status shows up in the home
//! timelines of the author's followers. One status at a time (so probes don't queue behind each
//! other), each polled for on a sample of followers; a typical author and, when there is one,
//! the celebrity are measured separately because their fan-out costs differ by orders of
//! magnitude.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::progress::SetupBar;
use crate::record::{Latency, Outcome, Recorder};
use crate::run::{Target, classify};
use crate::setup::post_status;
use crate::workload::Social;

/// Statuses fetched per poll: the probe is the newest status in an idle system, the slack covers
/// statuses that arrive at the same time from other authors.
const POLL_LIMIT: u32 = 20;

#[derive(Debug, Clone, Copy)]
pub struct FanoutOptions {
    /// Statuses posted per author class.
    pub samples: u32,
    /// Followers polled per status.
    pub followers: usize,
    pub poll: Duration,
    pub timeout: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// Lags measured for one kind of author.
pub struct FanoutClass {
    pub label: &'static str,
    /// Mean follower count of the authors that posted.
    pub mean_followers: f64,
    pub statuses: u32,
    /// Time from the POST's response to the first poll that saw the status, per follower; misses
    /// (not visible within the timeout) and failed polls are failures.
    pub recorder: Recorder,
}

impl FanoutClass {
    pub fn latency(&self) -> Latency {
        self.recorder.latency()
    }

    pub fn misses(&self) -> u64 {
        self.recorder.error_count()
    }
}

/// Authors whose follower count is close to the mean (half to twice), the celebrity excluded;
/// any author with followers if none is that close.
pub fn typical_authors(followers: &[Vec<u32>], celebrity: Option<usize>) -> Vec<usize> {
    let with: Vec<usize> = (0..followers.len()).filter(|&i| Some(i) != celebrity && !followers[i].is_empty()).collect();
    if with.is_empty() {
        return with;
    }
    let mean = with.iter().map(|&i| followers[i].len()).sum::<usize>() as f64 / with.len() as f64;
    let close: Vec<usize> = with
        .iter()
        .copied()
        .filter(|&i| {
            let n = followers[i].len() as f64;
            n >= (mean / 2.0).max(1.0) && n <= mean * 2.0
        })
        .collect();
    if close.is_empty() { with } else { close }
}

pub async fn measure(target: &Target, social: &Social, opts: FanoutOptions) -> anyhow::Result<Vec<FanoutClass>> {
    let followers = social.graph.followers();
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x00fa_1700_u64);
    let mut classes = Vec::new();

    let typical = typical_authors(&followers, social.celebrity);
    if typical.is_empty() {
        eprintln!("fan-out: no account has followers (use --graph power-law); skipping the typical author");
    } else {
        let authors: Vec<usize> = (0..opts.samples).filter_map(|_| typical.choose(&mut rng).copied()).collect();
        classes.push(measure_class(target, social, &followers, "typical author", &authors, opts, &mut rng).await?);
    }
    if let Some(c) = social.celebrity.filter(|&c| !followers[c].is_empty()) {
        let authors = vec![c; opts.samples as usize];
        classes.push(measure_class(target, social, &followers, "celebrity", &authors, opts, &mut rng).await?);
    }
    Ok(classes)
}

async fn measure_class(
    target: &Target,
    social: &Social,
    followers: &[Vec<u32>],
    label: &'static str,
    authors: &[usize],
    opts: FanoutOptions,
    rng: &mut SmallRng,
) -> anyhow::Result<FanoutClass> {
    let mut recorder = Recorder::new()?;
    let bar = SetupBar::start(
        if label == "celebrity" { "fan-out (celebrity)" } else { "fan-out (typical)" },
        authors.len() as u64,
        opts.progress,
    );
    let mut follower_total = 0usize;
    for &author in authors {
        let sample: Vec<usize> = followers[author].choose_multiple(rng, opts.followers).map(|&f| f as usize).collect();
        follower_total += followers[author].len();
        let text = format!("agora-bench fan-out probe {:016x}", rng.random::<u64>());
        let id = post_status(target, &social.users[author].token, &text)
            .await
            .with_context(|| format!("fan-out: posting as {label} @{}", social.users[author].username))?;
        let posted = Instant::now();
        let id: Arc<str> = Arc::from(id.as_str());
        let mut polls: JoinSet<Result<Duration, String>> = JoinSet::new();
        for f in sample {
            let (target, token, id) = (target.clone(), Arc::clone(&social.users[f].token), Arc::clone(&id));
            polls.spawn(async move { wait_until_visible(&target, &token, &id, posted, opts.poll, opts.timeout).await });
        }
        while let Some(joined) = polls.join_next().await {
            match joined.context("fan-out poller failed")? {
                Ok(lag) => recorder.record(Outcome::Success, lag),
                Err(kind) => recorder.record(Outcome::Failure(kind), Duration::ZERO),
            }
        }
        bar.done.fetch_add(1, Ordering::Relaxed);
    }
    bar.finish();
    Ok(FanoutClass {
        label,
        mean_followers: follower_total as f64 / authors.len().max(1) as f64,
        statuses: authors.len() as u32,
        recorder,
    })
}

/// Polls one follower's home timeline until status `id` is in it. The lag runs from `posted` to
/// the response of the first poll that saw it: an upper bound, at most one poll interval plus one
/// round trip late. Gives up with a failure kind on an HTTP error or after `timeout` ("miss").
async fn wait_until_visible(
    target: &Target,
    token: &str,
    id: &str,
    posted: Instant,
    poll: Duration,
    timeout: Duration,
) -> Result<Duration, String> {
    let url = target.url(&format!("/api/v1/timelines/home?limit={POLL_LIMIT}"));
    loop {
        let resp = target.client.get(&url).bearer_auth(token).send().await.map_err(|e| classify(&e).to_owned())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("poll http {}", status.as_u16()));
        }
        let body: Value = resp.json().await.map_err(|e| classify(&e).to_owned())?;
        let lag = posted.elapsed();
        if contains_status(&body, id) {
            return Ok(lag);
        }
        if lag >= timeout {
            return Err("miss".to_owned());
        }
        sleep(poll).await;
    }
}

fn contains_status(timeline: &Value, id: &str) -> bool {
    timeline.as_array().is_some_and(|a| a.iter().any(|s| s.get("id").and_then(Value::as_str) == Some(id)))
}

/// The fan-out table, one row per author class.
pub fn table(classes: &[FanoutClass], opts: &FanoutOptions) -> String {
    let mut out = format!(
        "fan-out lag (POST response -> visible in a follower's home timeline; polled every {} ms, miss after {} s)\n",
        opts.poll.as_millis(),
        opts.timeout.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<16}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}",
        "author", "followers", "statuses", "observed", "p50 ms", "p90 ms", "p99 ms", "max ms", "misses"
    );
    for c in classes {
        let l = c.latency();
        let _ = writeln!(
            out,
            "{:<16}  {:>9.0}  {:>8}  {:>8}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>6}",
            c.label,
            c.mean_followers,
            c.statuses,
            c.recorder.successes(),
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            c.misses()
        );
        let kinds: Vec<String> = c.recorder.errors().iter().map(|(k, n)| format!("{k}: {n}")).collect();
        if !kinds.is_empty() {
            let _ = writeln!(out, "  {}: {}", c.label, kinds.join(", "));
        }
    }
    if classes.is_empty() {
        out.push_str("(nothing measured: no author has followers)\n");
    }
    out
}

pub fn json(classes: &[FanoutClass], opts: &FanoutOptions) -> Value {
    let rows: Vec<Value> = classes
        .iter()
        .map(|c| {
            let l = c.latency();
            let errors: serde_json::Map<String, Value> =
                c.recorder.errors().iter().map(|(k, n)| (k.clone(), json!(n))).collect();
            json!({
                "author": c.label,
                "mean_followers": c.mean_followers,
                "statuses": c.statuses,
                "observed": c.recorder.successes(),
                "misses": c.misses(),
                "errors_by_kind": errors,
                "lag_ms": { "p50": l.p50_ms, "p90": l.p90_ms, "p99": l.p99_ms, "max": l.max_ms, "mean": l.mean_ms },
            })
        })
        .collect();
    json!({
        "fanout_lag": rows,
        "poll_interval_ms": opts.poll.as_secs_f64() * 1000.0,
        "timeout_s": opts.timeout.as_secs_f64(),
        "followers_polled_per_status": opts.followers,
    })
}

/// After a run that posted: how long until fan-out has caught up. Posts one probe status as a
/// typical author and waits until one of its followers sees it (up to `timeout`). A closed-loop
/// compose can accept statuses faster than fan-out delivers them; this says how far behind it
/// fell, and the next workload starts once it has caught up instead of measuring the backlog.
pub async fn drain(target: &Target, social: &Social, timeout: Duration) -> anyhow::Result<Option<Duration>> {
    let followers = social.graph.followers();
    let Some(&author) = typical_authors(&followers, social.celebrity).first() else {
        return Ok(None);
    };
    let follower = followers[author][0] as usize;
    let text = format!("agora-bench drain probe {:016x}", rand::random::<u64>());
    let id = post_status(target, &social.users[author].token, &text).await.context("drain: posting the probe")?;
    let posted = Instant::now();
    match wait_until_visible(target, &social.users[follower].token, &id, posted, Duration::from_millis(50), timeout)
        .await
    {
        Ok(lag) => Ok(Some(lag)),
        Err(kind) if kind == "miss" => Ok(None),
        Err(kind) => anyhow::bail!("drain: polling the follower's home: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_authors_sit_near_the_mean_and_exclude_the_celebrity() {
        // Follower counts: 0, 1000 (celebrity), then 10, 12, 8, 1.
        let counts = [0usize, 1000, 10, 12, 8, 1];
        let followers: Vec<Vec<u32>> = counts.iter().map(|&n| vec![0; n]).collect();
        let typical = typical_authors(&followers, Some(1));
        // Mean without the celebrity is 31/4 = 7.75: 10, 12 and 8 are within [3.9, 15.5].
        assert_eq!(typical, vec![2, 3, 4]);
        assert!(typical_authors(&[vec![], vec![]], None).is_empty());
    }

    #[test]
    fn status_is_found_by_id() {
        let tl = json!([{ "id": "3" }, { "id": "2" }]);
        assert!(contains_status(&tl, "2"));
        assert!(!contains_status(&tl, "4"));
        assert!(!contains_status(&json!({ "error": "x" }), "2"));
    }

    #[test]
    fn table_has_one_row_per_class() -> anyhow::Result<()> {
        let mut recorder = Recorder::new()?;
        recorder.record(Outcome::Success, Duration::from_millis(40));
        recorder.record(Outcome::Failure("miss".into()), Duration::ZERO);
        let classes = vec![FanoutClass { label: "celebrity", mean_followers: 10_000.0, statuses: 3, recorder }];
        let opts = FanoutOptions {
            samples: 3,
            followers: 20,
            poll: Duration::from_millis(15),
            timeout: Duration::from_secs(30),
            seed: 1,
            progress: false,
        };
        let t = table(&classes, &opts);
        assert!(t.contains("celebrity") && t.contains("10000") && t.contains("miss: 1"), "{t}");
        let j = json(&classes, &opts);
        assert_eq!(j["fanout_lag"][0]["misses"], 1);
        assert_eq!(j["fanout_lag"][0]["observed"], 1);
        Ok(())
    }
}
