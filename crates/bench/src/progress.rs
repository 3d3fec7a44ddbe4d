//! The progress line on stderr: rewritten in place every second on a terminal, a plain line
//! every five seconds otherwise (logs, CI), nothing with --no-progress.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    format!(
        "[{elapsed:5.1}s] {phase} {measured:.0}/{:.0}s  {rate:.0} req/s  {ok} ok  {errors} errors",
        plan.duration().as_secs_f64()
    )
}
