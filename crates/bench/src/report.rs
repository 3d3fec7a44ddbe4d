//! The final report: one table on stdout, the same numbers as JSON on request.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::cli::Args;
use crate::record::Latency;
use crate::run::{LATE_AFTER, OpenStats, RunResult};
use crate::setup::RATE_LIMIT_HINT;

pub struct Report {
    pub workload: &'static str,
    pub mode: &'static str,
    pub url: String,
    pub connections: u32,
    pub users: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub requests: u64,
    pub successes: u64,
    pub errors: u64,
    pub errors_by_kind: Vec<(String, u64)>,
    pub latency: Latency,
    pub open: Option<OpenStats>,
    /// Seconds from the end of the run until fan-out had caught up (workloads that post;
    /// infinite when it had not within the limit).
    pub drain: Option<f64>,
}

impl Report {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// Completed requests (successes and errors) per second of the measured window.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.duration_s.max(1e-9)
    }

    pub fn success_throughput(&self) -> f64 {
        self.successes as f64 / self.duration_s.max(1e-9)
    }

    pub fn from_run(run: &RunResult, args: &Args) -> Self {
        let r = &run.recorder;
        let (successes, errors) = (r.successes(), r.error_count());
        Self {
            workload: args.workload.name(),
            mode: args.mode.as_str(),
            url: args.url.clone(),
            connections: args.connections,
            users: args.users,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            requests: successes + errors,
            successes,
            errors,
            errors_by_kind: r.errors().iter().map(|(k, n)| (k.clone(), *n)).collect(),
            latency: r.latency(),
            open: run.open,
            drain: None,
        }
    }

    pub fn table(&self) -> String {
        let l = &self.latency;
        let ms = |v: f64| format!("{v:.2}");
        let rows: [(&str, String); 12] = [
            ("workload", self.workload.to_owned()),
            ("mode", self.mode.to_owned()),
            ("connections", self.connections.to_string()),
            ("duration", format!("{:.2}s", self.duration_s)),
            ("requests", self.requests.to_string()),
            ("req/s", format!("{:.1}", self.throughput())),
            ("p50 ms", ms(l.p50_ms)),
            ("p90 ms", ms(l.p90_ms)),
            ("p99 ms", ms(l.p99_ms)),
            ("p99.9 ms", ms(l.p999_ms)),
            ("max ms", ms(l.max_ms)),
            ("errors", format!("{} ({:.2}%)", self.errors, self.error_rate() * 100.0)),
        ];
        let widths: Vec<usize> = rows.iter().map(|(h, v)| h.len().max(v.len())).collect();
        let mut header = String::new();
        let mut values = String::new();
        for (((h, v), w), i) in rows.iter().zip(&widths).zip(0..) {
            let sep = if i == 0 { "" } else { "  " };
            // Text left-aligned, numbers right-aligned.
            if i < 2 {
                let _ = write!(header, "{sep}{h:<w$}");
                let _ = write!(values, "{sep}{v:<w$}");
            } else {
                let _ = write!(header, "{sep}{h:>w$}");
                let _ = write!(values, "{sep}{v:>w$}");
            }
        }
        let mut out = format!("{header}\n{values}\n");
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(out, "errors by kind: {}", kinds.join(", "));
            if self.errors_by_kind.iter().any(|(k, _)| k == "http 429") {
                let _ = writeln!(out, "warning: {RATE_LIMIT_HINT}");
            }
        }
        if let Some(o) = &self.open {
            let _ = writeln!(
                out,
                "open loop: target {:.1} req/s, achieved {:.1} req/s ({} of {} scheduled sent), dropped {}, \
                 late (>{} ms) {}, in-flight bound {} (hit {} times), max send lag {:.2} ms",
                o.target_rate,
                o.sent as f64 / self.duration_s.max(1e-9),
                o.sent,
                o.scheduled,
                o.dropped,
                LATE_AFTER.as_millis(),
                o.late,
                o.max_in_flight,
                o.bound_waits,
                o.max_send_lag.as_secs_f64() * 1000.0
            );
            if o.bound_waits > 0 || o.dropped > 0 {
                let _ = writeln!(
                    out,
                    "warning: the in-flight bound ({}) was hit: the server did not keep up with {:.1} req/s. Waits are \
                     included in latency; the {} dropped requests are not. Raise --max-in-flight or lower --rate.",
                    o.max_in_flight, o.target_rate, o.dropped
                );
            } else if o.late > 0 {
                let _ = writeln!(
                    out,
                    "note: {} requests left more than {} ms after their intended time (client short of CPU?); \
                     the delay is included in their latency.",
                    o.late,
                    LATE_AFTER.as_millis()
                );
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let l = &self.latency;
        let errors: serde_json::Map<String, Value> =
            self.errors_by_kind.iter().map(|(k, n)| (k.clone(), json!(n))).collect();
        json!({
            "workload": self.workload,
            "mode": self.mode,
            "url": self.url,
            "connections": self.connections,
            "users": self.users,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "successes": self.successes,
            "throughput_rps": self.throughput(),
            "success_throughput_rps": self.success_throughput(),
            "latency_ms": {
                "p50": l.p50_ms,
                "p90": l.p90_ms,
                "p99": l.p99_ms,
                "p99_9": l.p999_ms,
                "max": l.max_ms,
                "mean": l.mean_ms,
            },
            "errors": self.errors,
            "error_rate": self.error_rate(),
            "errors_by_kind": errors,
            "fanout_drain_s": self.drain.map(|d| if d.is_finite() { json!(d) } else { json!("not caught up") }),
            "open_loop": self.open.map(|o| json!({
                "target_rate_rps": o.target_rate,
                "achieved_rate_rps": o.sent as f64 / self.duration_s.max(1e-9),
                "scheduled": o.scheduled,
                "sent": o.sent,
                "late": o.late,
                "late_threshold_ms": LATE_AFTER.as_secs_f64() * 1000.0,
                "bound_waits": o.bound_waits,
                "dropped": o.dropped,
                "max_in_flight": o.max_in_flight,
                "max_send_lag_ms": o.max_send_lag.as_secs_f64() * 1000.0,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;
    use crate::record::{Outcome, Recorder};

    #[test]
    fn table_and_json_carry_the_same_numbers() -> anyhow::Result<()> {
        let args = Args::try_parse_from(["agora-bench", "--mode", "open", "--duration", "2s", "--connections", "4"])?;
        let mut recorder = Recorder::new()?;
        for ms in 1..=100u64 {
            recorder.record(Outcome::Success, Duration::from_millis(ms));
        }
        recorder.record(Outcome::Failure("http 503".into()), Duration::from_millis(1));
        let open = OpenStats {
            target_rate: 60.0,
            max_in_flight: 32,
            scheduled: 120,
            sent: 101,
            late: 3,
            bound_waits: 2,
            dropped: 19,
            max_send_lag: Duration::from_millis(40),
        };
        let report = Report::from_run(&RunResult { recorder, open: Some(open) }, &args);
        let table = report.table();
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        let row = lines.next().unwrap_or_default();
        for h in ["workload", "mode", "connections", "duration", "requests", "req/s", "p50 ms", "p99.9 ms", "errors"] {
            assert!(header.contains(h), "header lacks {h}: {header}");
        }
        let l = report.latency;
        assert!((l.p50_ms - 50.0).abs() < 0.1 && (l.max_ms - 100.0).abs() < 0.1, "{l:?}");
        let (p50, max) = (format!("{:.2}", l.p50_ms), format!("{:.2}", l.max_ms));
        for v in ["verify-credentials", "open", "2.00s", "101", "50.5", &p50, &max, "1 (0.99%)"] {
            assert!(row.contains(v), "row lacks {v}: {row}");
        }
        assert!(table.contains("http 503: 1"));
        assert!(table.contains("dropped 19"));
        assert!(table.contains("warning: the in-flight bound (32) was hit"));

        let j = report.json();
        assert_eq!(j["requests"], 101);
        assert_eq!(j["errors"], 1);
        assert_eq!(j["errors_by_kind"]["http 503"], 1);
        assert_eq!(j["latency_ms"]["p50"], l.p50_ms);
        assert_eq!(j["latency_ms"]["max"], l.max_ms);
        assert_eq!(j["throughput_rps"], 50.5);
        assert_eq!(j["open_loop"]["dropped"], 19);
        assert_eq!(j["open_loop"]["achieved_rate_rps"], 50.5);
        Ok(())
    }
}
