//! The two load shapes. Closed loop: N workers, each sending its next request as soon as the
//! previous one answered (measures saturation throughput; latency is per request). Open loop:
//! requests are due at `start + i / rate` whatever the server does, and latency runs from that
//! intended time, so a stalled server shows up as latency instead of silently lowering the load
//! (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use reqwest::redirect::Policy;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::record::{Outcome, Recorder};
use crate::workload::{Operation, Workload};

/// The server under test: one HTTP client (connection pool) and its base URL.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    base: Arc<str>,
}

impl Target {
    /// `pool` is how many idle keep-alive connections to keep: the most requests in flight.
    pub fn new(url: &str, timeout: Duration, pool: usize) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            anyhow::bail!("--url {url:?} must be an http:// or https:// URL with a host");
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Traffic goes to --url and nowhere else: no redirects, no proxy from the environment.
            .redirect(Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .user_agent(concat!("agora-bench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client, base: Arc::from(parsed.as_str().trim_end_matches('/')) })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn build(&self, op: Operation) -> reqwest::RequestBuilder {
        let mut req = self.client.request(op.method, self.url(&op.path));
        if let Some(token) = &op.bearer {
            req = req.bearer_auth(token);
        }
        if !op.form.is_empty() {
            req = req.form(&op.form);
        }
        req
    }
}

/// A short name for a transport failure, used as the error kind in reports.
pub fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

/// Sends one operation and reads the whole response body (so the connection can be reused and
/// the latency covers the full response).
async fn execute(target: &Target, workload: &dyn Workload, op: Operation) -> Outcome {
    match target.build(op).send().await {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(_) if workload.is_success(status) => Outcome::Success,
                Ok(_) => Outcome::Failure(format!("http {}", status.as_u16())),
                Err(e) => Outcome::Failure(classify(&e).to_owned()),
            }
        }
        Err(e) => Outcome::Failure(classify(&e).to_owned()),
    }
}

/// When the run starts, when measuring starts (after warm-up), and when new requests stop.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Plan {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Self { start, measure_from: start + warmup, end: start + warmup + duration }
    }

    pub fn warmup(&self) -> Duration {
        self.measure_from - self.start
    }

    pub fn duration(&self) -> Duration {
        self.end - self.measure_from
    }
}

/// Counters the progress line reads while the run is going.
#[derive(Debug, Default)]
pub struct Live {
    pub warmup: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

impl Live {
    fn count(&self, outcome: &Outcome, measured: bool) {
        let c = match (measured, outcome) {
            (false, _) => &self.warmup,
            (true, Outcome::Success) => &self.ok,
            (true, Outcome::Failure(_)) => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The open loop's arrival schedule: operation `i` is due `i / rate` seconds after the start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    pub fn new(rate: f64) -> Self {
        Self { rate }
    }

    /// Intended start of operation `i`, relative to the start of the run.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::try_from_secs_f64(i as f64 / self.rate).unwrap_or(Duration::MAX)
    }

    /// How many operations are due strictly before `t` (so indices `0..count_before(t)`).
    pub fn count_before(&self, t: Duration) -> u64 {
        // The estimate can be off by one either way through rounding; settle it with `offset`
        // itself so the count and the times always agree.
        let mut n = (t.as_secs_f64() * self.rate).ceil() as u64;
        while n > 0 && self.offset(n - 1) >= t {
            n -= 1;
        }
        while self.offset(n) < t {
            n += 1;
        }
        n
    }
}

/// A request sent later than this after its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// What the open loop did beyond the recorded requests.
#[derive(Debug, Clone, Copy)]
pub struct OpenStats {
    pub target_rate: f64,
    pub max_in_flight: usize,
    /// Operations due inside the measured window.
    pub scheduled: u64,
    /// Of those, how many were sent.
    pub sent: u64,
    /// Sent more than `LATE_AFTER` after the intended time (bound hit, or the client is short of
    /// CPU). Their delay is part of their latency.
    pub late: u64,
    /// How often the dispatcher found every in-flight slot taken and had to wait.
    pub bound_waits: u64,
    /// Never sent: still waiting for a slot when the run ended.
    pub dropped: u64,
    /// Worst gap between an operation's intended time and its actual send (measured window).
    pub max_send_lag: Duration,
}

pub struct RunResult {
    pub recorder: Recorder,
    pub open: Option<OpenStats>,
}

/// Closed loop: `connections` workers, each one request at a time, until the end of the plan.
/// Requests still in flight at the end are waited for (each is bounded by the client timeout).
pub async fn closed_loop(
    target: &Target,
    workload: &Arc<dyn Workload>,
    plan: Plan,
    live: &Arc<Live>,
    connections: u32,
    seed: u64,
) -> anyhow::Result<RunResult> {
    let mut workers: JoinSet<anyhow::Result<Recorder>> = JoinSet::new();
    for w in 0..connections {
        let (target, workload, live) = (target.clone(), Arc::clone(workload), Arc::clone(live));
        let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(u64::from(w)));
        workers.spawn(async move {
            let mut recorder = Recorder::new()?;
            loop {
                let sent = Instant::now();
                if sent >= plan.end {
                    break;
                }
                let op = workload.request(&mut rng);
                let outcome = execute(&target, &*workload, op).await;
                let latency = sent.elapsed();
                // A request belongs to the window it started in; warm-up is not recorded.
                let measured = sent >= plan.measure_from;
                live.count(&outcome, measured);
                if measured {
                    recorder.record(outcome, latency);
                }
            }
            Ok(recorder)
        });
    }
    let mut total = Recorder::new()?;
    while let Some(done) = workers.join_next().await {
        total.merge(&done.context("closed-loop worker failed")??)?;
    }
    Ok(RunResult { recorder: total, open: None })
}

/// Open loop at `rate` requests per second, at most `max_in_flight` outstanding.
pub async fn open_loop(
    target: &Target,
    workload: &Arc<dyn Workload>,
    plan: Plan,
    live: &Arc<Live>,
    rate: f64,
    max_in_flight: usize,
    seed: u64,
) -> anyhow::Result<RunResult> {
    let schedule = Schedule::new(rate);
    let first_measured = schedule.count_before(plan.warmup());
    let last = schedule.count_before(plan.end - plan.start);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Outcome, Duration)>();
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new()?;
        while let Some((outcome, latency)) = rx.recv().await {
            recorder.record(outcome, latency);
        }
        anyhow::Ok(recorder)
    });

    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut sent, mut late, mut bound_waits, mut max_send_lag) = (0u64, 0u64, 0u64, Duration::ZERO);
    let mut i = 0;
    while i < last {
        let intended = plan.start + schedule.offset(i);
        let measured = i >= first_measured;
        if !measured && Instant::now() >= plan.measure_from {
            // A warm-up backlog must not eat into the measured window: skip what is left of it.
            i = first_measured;
            continue;
        }
        if Instant::now() < intended {
            sleep_until(intended).await;
        }
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // The bound is hit: wait (this and later requests go out late, and the wait is
                // part of their latency) but never past the end of the run, nor past the end of
                // the warm-up for a warm-up request.
                if measured {
                    bound_waits += 1;
                }
                let give_up = if measured { plan.end } else { plan.measure_from };
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.context("in-flight semaphore closed")?,
                    () = sleep_until(give_up) => {
                        if measured {
                            break;
                        }
                        i = first_measured;
                        continue;
                    }
                }
            }
        };
        if measured {
            sent += 1;
            let lag = intended.elapsed();
            max_send_lag = max_send_lag.max(lag);
            if lag > LATE_AFTER {
                late += 1;
            }
        }
        let op = workload.request(&mut rng);
        let (target, workload, live, tx) = (target.clone(), Arc::clone(workload), Arc::clone(live), tx.clone());
        tokio::spawn(async move {
            let outcome = execute(&target, &*workload, op).await;
            // From the intended time, not from the send: queueing in the client counts.
            let latency = intended.elapsed();
            live.count(&outcome, measured);
            if measured {
                let _ = tx.send((outcome, latency));
            }
            drop(slot);
        });
        i += 1;
    }
    // Every request task holds a sender; the collector ends once the last one has answered.
    drop(tx);
    let recorder = collector.await.context("open-loop collector failed")??;
    let scheduled = last - first_measured;
    let dropped = last - i.max(first_measured);
    Ok(RunResult {
        recorder,
        open: Some(OpenStats {
            target_rate: rate,
            max_in_flight,
            scheduled,
            sent,
            late,
            bound_waits,
            dropped,
            max_send_lag,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced_from_the_start() {
        let s = Schedule::new(500.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(2));
        assert_eq!(s.offset(250), Duration::from_millis(500));
        assert_eq!(s.offset(500), Duration::from_secs(1));
        assert_eq!(s.offset(2500), Duration::from_secs(5));
        // Spacing is constant: no drift accumulates over a long run.
        for i in [10u64, 1_000, 100_000] {
            let gap = s.offset(i + 1) - s.offset(i);
            assert!(gap.abs_diff(Duration::from_millis(2)) < Duration::from_nanos(2), "gap {gap:?} at {i}");
        }
    }

    #[test]
    fn counts_split_warmup_from_the_measured_window() {
        // 500 req/s, 2 s warm-up, 5 s measured: 1000 warm-up operations, then 2500 measured.
        let s = Schedule::new(500.0);
        assert_eq!(s.count_before(Duration::from_secs(2)), 1000);
        assert_eq!(s.count_before(Duration::from_secs(7)), 3500);
        assert_eq!(s.count_before(Duration::ZERO), 0);
        // The boundary operation (exactly at 2 s) belongs to the measured window.
        assert_eq!(s.offset(1000), Duration::from_secs(2));
    }

    #[test]
    fn counts_agree_with_offsets_for_awkward_rates() {
        for rate in [3.0, 7.0, 0.5, 333.3, 4999.9] {
            let s = Schedule::new(rate);
            for t in
                [Duration::from_millis(1), Duration::from_secs(1), Duration::from_millis(2345), Duration::from_secs(10)]
            {
                let n = s.count_before(t);
                assert!(s.offset(n) >= t, "rate {rate}: op {n} at {:?} should be at or after {t:?}", s.offset(n));
                if n > 0 {
                    assert!(s.offset(n - 1) < t, "rate {rate}: op {} should be before {t:?}", n - 1);
                }
            }
        }
        // Three per second: due at 0, 1/3, 2/3, then exactly 1 s.
        let s = Schedule::new(3.0);
        assert_eq!(s.count_before(Duration::from_secs(1)), 3);
        assert_eq!(s.count_before(Duration::from_millis(334)), 2);
    }
}
