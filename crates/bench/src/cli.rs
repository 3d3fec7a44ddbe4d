//! Command-line options.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::workload::WorkloadKind;

/// Load generator for Agora's Mastodon-compatible REST API (DeathStarBench socialNetwork).
///
/// Registers throw-away accounts through the public API (not measured), then drives one workload
/// in a closed loop (N workers back to back: saturation throughput) or an open loop (constant
/// arrival rate, latency measured from each request's intended start: no coordinated omission).
///
/// The socialNetwork workloads (compose-post, read-home-timeline, read-user-timeline, mix) first
/// build a follow graph (--graph, --celebrity-followers) and seed statuses (--posts-per-user).
/// --fanout-lag N measures how long a new status takes to reach followers' home timelines instead
/// of running the workload.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "agora-bench",
    version,
    after_help = "\
The server must run with its rate limits raised, or setup stops at the first HTTP 429:
  AGORA_GATEWAY_RATE_LIMIT_IP=100000000/1 AGORA_GATEWAY_RATE_LIMIT_ACCOUNT=100000000/1 \\
  AGORA_GATEWAY_RATE_LIMIT_REGISTRATION=100000000/1 AGORA_GATEWAY_RATE_LIMIT_SIGN_IN=100000000/1 agora dev ...
(\"off\" works too.) Build the bench with --release: a debug load generator measures itself.

Examples:
  # 1000 users on a power-law graph, the 10/60/30 mix at 2500 req/s for 30 s, latency plot:
  cargo run --release -p agora-bench -- --url http://127.0.0.1:8080 --users 1000 --graph power-law \\
    --workload mix --mode open --rate 2500 --duration 30s --plot mix.svg
  # Fan-out lag, a normal author and a celebrity followed by 10000 accounts:
  cargo run --release -p agora-bench -- --url http://127.0.0.1:8080 --users 10001 \\
    --celebrity-followers 10000 --fanout-lag 20 --plot fanout.svg"
)]
pub struct Args {
    /// Base URL of the gateway. All traffic goes here and nowhere else.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Operation mix to run.
    #[arg(long, value_enum, default_value_t = WorkloadKind::VerifyCredentials)]
    pub workload: WorkloadKind,

    /// closed: N workers issue requests back to back; open: constant arrival rate (--rate).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,

    /// Closed loop: number of concurrent workers. Open loop: base of the in-flight bound
    /// (see --max-in-flight).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Measured duration (e.g. 10s, 500ms, 2m, 1.5s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unrecorded warm-up before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open loop: target arrival rate in requests per second.
    #[arg(long, default_value_t = 5000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Open loop: most requests in flight at once (default: 8 x --connections). When it is
    /// reached the dispatcher waits; those requests count as late and their wait is latency.
    #[arg(long)]
    pub max_in_flight: Option<u32>,

    /// Accounts registered during setup; each operation picks one at random.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub users: u32,

    /// Per-request timeout (connect + response + body), setup included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Seed for the operation stream (which user, which target). Random when absent.
    /// Usernames are always random so runs against the same data directory don't collide.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Send a distinct fake X-Forwarded-For (198.18.0.0/15, the benchmarking range) with each
    /// registration, for servers that trust the loopback proxy and rate-limit sign-ups per IP.
    #[arg(long)]
    pub spoof_forwarded_for: bool,

    /// Follow graph built before the socialNetwork workloads: power-law out-degrees (mean
    /// --mean-follows) towards Zipf-popular accounts, seeded by --seed; or none.
    #[arg(long, value_enum, default_value_t = GraphKind::PowerLaw)]
    pub graph: GraphKind,

    /// Mean number of accounts each user follows in the power-law graph.
    #[arg(long, default_value_t = 15.0, value_parser = parse_mean)]
    pub mean_follows: f64,

    /// Make the first account a celebrity followed by this many others (needs --users above N;
    /// the case is 10000).
    #[arg(long, default_value_t = 0)]
    pub celebrity_followers: u32,

    /// Public statuses each user posts during setup, so timelines are not empty.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub posts_per_user: u32,

    /// Requests in flight at once while creating follows and seed statuses.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub setup_concurrency: u32,

    /// Hold this many streaming connections (SSE /api/v1/streaming/user, the probed author's
    /// followers first) while the workload runs, and measure how long the probed author's new
    /// statuses take to arrive on them (see --stream-probes).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub streams: u32,

    /// With --streams: statuses posted by the probed author (the celebrity, or the account with
    /// the most followers) during the run, one per --stream-probe-interval.
    #[arg(long, default_value_t = 20)]
    pub stream_probes: u32,

    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub stream_probe_interval: Duration,

    /// With --streams: the gateway's process id on this machine, whose resident memory is read
    /// before and after the streams open.
    #[arg(long)]
    pub rss_pid: Option<u32>,

    /// Measure fan-out lag instead of running --workload: N statuses by a typical author (and N
    /// by the celebrity, if any), each polled for on sampled followers' home timelines.
    #[arg(long, default_value_t = 0)]
    pub fanout_lag: u32,

    /// Fan-out lag: followers polled per status.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub fanout_followers: u32,

    /// Fan-out lag: delay between two polls of one follower's home timeline.
    #[arg(long, default_value = "15ms", value_parser = parse_duration)]
    pub fanout_poll: Duration,

    /// Fan-out lag: a status not visible to a follower after this long counts as a miss.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub fanout_timeout: Duration,

    /// Social state file: when it exists, the accounts, tokens, follow graph and seeded statuses
    /// it names are reused and setup is skipped (the server must hold that data, e.g. the same
    /// data directory); when it does not, setup runs and writes it. Lets several workloads, or
    /// several runs, share one large graph.
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,

    /// Serve the floor (`GET /floor`: 20 ids from Redis at --floor-redis) on this address instead
    /// of generating load; measure it with `--workload floor --url http://ADDR`.
    #[arg(long)]
    pub serve_floor: Option<std::net::SocketAddr>,

    /// Redis of the floor server.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub floor_redis: String,

    /// Write a latency plot (percentile distribution, SVG) to this file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,

    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

impl Args {
    /// In-flight bound for the open loop.
    pub fn open_loop_bound(&self) -> usize {
        self.max_in_flight.map_or(self.connections as usize * 8, |m| m.max(1) as usize)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphKind {
    /// Nobody follows anybody (besides --celebrity-followers).
    None,
    /// Power-law out-degrees, preferential (Zipf) choice of whom to follow.
    PowerLaw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Closed,
    Open,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
        }
    }
}

/// `10s`, `250ms`, `2m`, `1h`, `1.5s`, `750us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid duration {s:?}: expected a number with a unit, e.g. 10s or 500ms"));
    }
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}: {num:?} is not a number"))?;
    let secs_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("invalid duration {s:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * secs_per_unit).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn parse_mean(s: &str) -> Result<f64, String> {
    let m: f64 = s.trim().parse().map_err(|_| format!("invalid mean {s:?}: expected a number"))?;
    if m.is_finite() && (1.0..=10_000.0).contains(&m) {
        Ok(m)
    } else {
        Err(format!("invalid mean {s:?}: must be between 1 and 10000"))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.trim().parse().map_err(|_| format!("invalid rate {s:?}: expected requests per second"))?;
    if r.is_finite() && r > 0.0 && r <= 10_000_000.0 {
        Ok(r)
    } else {
        Err(format!("invalid rate {s:?}: must be > 0 and at most 10000000 req/s"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("750us"), Ok(Duration::from_micros(750)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in ["", "s", "10x", "-1s", "1..2s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500"), Ok(500.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("inf").is_err());
    }

    #[test]
    fn cli_parses_the_documented_flags() {
        let a = Args::try_parse_from([
            "agora-bench",
            "--url",
            "http://127.0.0.1:18181",
            "--mode",
            "open",
            "--rate",
            "500",
            "--duration",
            "5s",
            "--warmup",
            "1s",
            "--connections",
            "4",
            "--no-progress",
            "--json",
            "out.json",
        ]);
        let a = match a {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(a.mode, Mode::Open);
        assert_eq!(a.duration, Duration::from_secs(5));
        assert_eq!(a.open_loop_bound(), 32);
        assert_eq!(a.workload, WorkloadKind::VerifyCredentials);
        assert_eq!(a.graph, GraphKind::PowerLaw);
        assert_eq!(a.fanout_lag, 0);
    }

    #[test]
    fn cli_parses_the_readme_command() -> anyhow::Result<()> {
        let a = Args::try_parse_from(
            "agora-bench --url http://127.0.0.1:8080 --users 1000 --graph power-law --workload mix --mode open \
             --rate 2500 --duration 30s --plot mix.svg --celebrity-followers 500 --fanout-lag 5"
                .split_whitespace(),
        )?;
        assert_eq!(a.workload, WorkloadKind::Mix);
        assert_eq!(a.users, 1000);
        assert_eq!(a.rate, 2500.0);
        assert_eq!(a.plot.as_deref(), Some(std::path::Path::new("mix.svg")));
        assert_eq!(a.celebrity_followers, 500);
        assert_eq!(a.fanout_lag, 5);
        for w in ["compose-post", "read-home-timeline", "read-user-timeline", "mix", "verify-credentials"] {
            Args::try_parse_from(["agora-bench", "--workload", w])?;
        }
        Ok(())
    }
}
