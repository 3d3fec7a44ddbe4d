//! Progress on stderr: during the run, a bar with live rates rewritten in place every second on
//! a terminal, a plain line every five seconds otherwise (logs, CI), nothing with --no-progress.
//! Setup phases get a counting bar (`SetupBar`) drawn the same way.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::run::{Live, Plan};

pub struct Progress {
    task: Option<JoinHandle<()>>,
    tty: bool,
}

impl Progress {
    pub fn start(live: Arc<Live>, plan: Plan, enabled: bool) -> Self {
        if !enabled {
            return Self { task: None, tty: false };
        }
        let tty = std::io::stderr().is_terminal();
        let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(5) };
        let task = tokio::spawn(async move {
            let mut tick = interval_at(plan.start + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let line = status_line(&live, plan, Instant::now());
                if tty {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Self { task: Some(task), tty }
    }

    /// Stops the line and leaves the terminal clean for the report.
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
            if self.tty {
                eprint!("\r\x1b[2K");
            }
        }
    }
}

fn status_line(live: &Live, plan: Plan, now: Instant) -> String {
    let elapsed = now.saturating_duration_since(plan.start).as_secs_f64();
    let ok = live.ok.load(Ordering::Relaxed);
    let errors = live.errors.load(Ordering::Relaxed);
    if now < plan.measure_from {
        let rate = live.warmup.load(Ordering::Relaxed) as f64 / elapsed.max(1e-3);
        return format!("[{elapsed:5.1}s] warm-up {elapsed:.0}/{:.0}s  {rate:.0} req/s", plan.warmup().as_secs_f64());
    }
    let measured = now.min(plan.end).saturating_duration_since(plan.measure_from).as_secs_f64();
    let rate = (ok + errors) as f64 / measured.max(1e-3);
    let phase = if now < plan.end { "measuring" } else { "draining" };
    let total = plan.duration().as_secs_f64();
    format!(
        "[{elapsed:5.1}s] {phase} {} {measured:.0}/{total:.0}s  {rate:.0} req/s  {ok} ok  {errors} errors",
        bar(measured, total)
    )
}

const BAR_WIDTH: usize = 30;

/// `[=========>          ]` for `done` out of `total`.
pub fn bar(done: f64, total: f64) -> String {
    let frac = if total > 0.0 { (done / total).clamp(0.0, 1.0) } else { 1.0 };
    let filled = (frac * BAR_WIDTH as f64).round() as usize;
    let mut s = String::with_capacity(BAR_WIDTH + 2);
    s.push('[');
    for i in 0..BAR_WIDTH {
        s.push(if i + 1 < filled || (i + 1 == filled && filled == BAR_WIDTH) {
            '='
        } else if i + 1 == filled {
            '>'
        } else {
            ' '
        });
    }
    s.push(']');
    s
}

/// A counting bar for one phase ("setup: follows 1234/15000"). Tasks bump `done`/`failed`;
/// the bar redraws itself until `finish`.
pub struct SetupBar {
    pub done: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
    tty: bool,
    label: &'static str,
    total: u64,
    started: Instant,
}

impl SetupBar {
    pub fn start(label: &'static str, total: u64, enabled: bool) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let started = Instant::now();
        let task = enabled.then(|| {
            let (done, failed, stop) = (Arc::clone(&done), Arc::clone(&failed), Arc::clone(&stop));
            // On a terminal redraw often; in logs one line every 5 s is plenty.
            let every = if tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
            tokio::spawn(async move {
                let mut tick = interval_at(started + every, every);
                tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let line = setup_line(label, &done, &failed, total, started);
                    if tty {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\r\x1b[2K{line}");
                        let _ = err.flush();
                    } else {
                        eprintln!("{line}");
                    }
                }
            })
        });
        Self { done, failed, stop, task, tty, label, total, started }
    }

    /// Stops redrawing and leaves one final line.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = &self.task {
            task.abort();
            if self.tty {
                eprint!("\r\x1b[2K");
            }
        }
        eprintln!("{}", setup_line(self.label, &self.done, &self.failed, self.total, self.started));
    }
}

fn setup_line(label: &str, done: &AtomicU64, failed: &AtomicU64, total: u64, started: Instant) -> String {
    let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let secs = started.elapsed().as_secs_f64();
    let failed = if f > 0 { format!("  {f} failed") } else { String::new() };
    format!(
        "{label:<26} {} {d}/{total}  {:.0}/s  {secs:.1}s{failed}",
        bar(d as f64, total as f64),
        d as f64 / secs.max(1e-3)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0.0, 10.0), format!("[{}]", " ".repeat(BAR_WIDTH)));
        assert_eq!(bar(10.0, 10.0), format!("[{}]", "=".repeat(BAR_WIDTH)));
        assert_eq!(bar(20.0, 10.0), format!("[{}]", "=".repeat(BAR_WIDTH)));
        let half = bar(5.0, 10.0);
        assert_eq!(half.len(), BAR_WIDTH + 2);
        assert_eq!(half.matches('=').count(), BAR_WIDTH / 2 - 1);
        assert!(half.contains('>'));
    }
}
