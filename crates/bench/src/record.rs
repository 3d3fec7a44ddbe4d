//! What one run measured: a latency histogram of successful requests and failures by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram resolves (one hour, in microseconds); larger values saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Failure kind, e.g. `http 503`, `timeout`, `connect`.
    Failure(String),
}

/// Successful latencies (µs, 3 significant digits) and failures counted by kind. Failed requests'
/// latencies are deliberately kept out of the histogram: a fast 500 must not improve p50.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self { latency_us: Histogram::new_with_bounds(1, HIGHEST_US, 3)?, errors: BTreeMap::new() })
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
                self.latency_us.saturating_record(us);
            }
            Outcome::Failure(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Recorder) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        Ok(())
    }

    pub fn successes(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// The latency distribution as (quantile, milliseconds) points, for plotting. Quantiles stop
    /// short of 1 (the plot's x axis is 1 / (1 - q)); the last point is the maximum.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        let h = &self.latency_us;
        if h.is_empty() {
            return Vec::new();
        }
        let last_q = 1.0 - 1.0 / (h.len() as f64).max(10.0);
        let mut points: Vec<(f64, f64)> = h
            .iter_quantiles(5)
            .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1000.0))
            .filter(|&(q, _)| q < last_q)
            .collect();
        points.push((last_q, h.max() as f64 / 1000.0));
        points
    }

    pub fn latency(&self) -> Latency {
        let h = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Latency percentiles of successful requests, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        // Three significant digits: within 0.1 % (plus a hair for bucket edges).
        (actual - expected).abs() <= expected * 0.0011
    }

    #[test]
    fn percentiles_of_known_values() -> anyhow::Result<()> {
        let mut r = Recorder::new()?;
        for ms in 1..=1000u64 {
            r.record(Outcome::Success, Duration::from_millis(ms));
        }
        let l = r.latency();
        assert_eq!(r.successes(), 1000);
        assert!(close(l.p50_ms, 500.0), "p50 {}", l.p50_ms);
        assert!(close(l.p90_ms, 900.0), "p90 {}", l.p90_ms);
        assert!(close(l.p99_ms, 990.0), "p99 {}", l.p99_ms);
        assert!(close(l.p999_ms, 999.0), "p99.9 {}", l.p999_ms);
        assert!(close(l.max_ms, 1000.0), "max {}", l.max_ms);
        assert!(close(l.mean_ms, 500.5), "mean {}", l.mean_ms);
        Ok(())
    }

    #[test]
    fn sub_millisecond_values_keep_microsecond_resolution() -> anyhow::Result<()> {
        let mut r = Recorder::new()?;
        for _ in 0..99 {
            r.record(Outcome::Success, Duration::from_micros(250));
        }
        r.record(Outcome::Success, Duration::from_micros(12_345));
        let l = r.latency();
        assert!(close(l.p50_ms, 0.25), "p50 {}", l.p50_ms);
        assert!(close(l.p99_ms, 0.25), "p99 {}", l.p99_ms);
        assert!(close(l.p999_ms, 12.345), "p99.9 {}", l.p999_ms);
        assert!(close(l.max_ms, 12.345), "max {}", l.max_ms);
        Ok(())
    }

    #[test]
    fn failures_stay_out_of_the_histogram() -> anyhow::Result<()> {
        let mut a = Recorder::new()?;
        a.record(Outcome::Success, Duration::from_millis(10));
        a.record(Outcome::Failure("http 500".into()), Duration::from_micros(5));
        let mut b = Recorder::new()?;
        b.record(Outcome::Failure("http 500".into()), Duration::from_micros(5));
        b.record(Outcome::Failure("timeout".into()), Duration::from_secs(10));
        a.merge(&b)?;
        assert_eq!(a.successes(), 1);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.errors().get("http 500"), Some(&2));
        assert!(close(a.latency().p50_ms, 10.0));
        assert!(close(a.latency().max_ms, 10.0));
        Ok(())
    }

    #[test]
    fn percentile_curve_rises_to_the_maximum() -> anyhow::Result<()> {
        let mut r = Recorder::new()?;
        for ms in 1..=1000u64 {
            r.record(Outcome::Success, Duration::from_millis(ms));
        }
        let curve = r.percentile_curve();
        assert!(curve.len() > 10);
        assert!(curve.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "{curve:?}");
        let (q, max) = curve[curve.len() - 1];
        assert!(q < 1.0 && close(max, 1000.0), "{q} {max}");
        assert!(Recorder::new()?.percentile_curve().is_empty());
        Ok(())
    }

    #[test]
    fn empty_recorder_reports_zeroes() -> anyhow::Result<()> {
        let r = Recorder::new()?;
        assert_eq!(r.latency(), Latency::default());
        Ok(())
    }
}
