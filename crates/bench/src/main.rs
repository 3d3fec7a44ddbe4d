//! agora-bench: a load generator for Agora's Mastodon-compatible REST API, in the spirit of
//! DeathStarBench's socialNetwork workloads.
//!
//! It sets up state through the public API only (never the stores), then drives one workload in
//! a closed or an open loop and reports HDR-histogram latencies. It talks to the `--url` it is
//! given and nothing else, every call has a timeout, and a run ends by itself.

mod cli;
mod progress;
mod record;
mod report;
mod run;
mod setup;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Args, Mode};
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{Live, Plan, Target};
use crate::setup::Setup;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agora-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: Args) -> anyhow::Result<ExitCode> {
    let in_flight = match args.mode {
        Mode::Closed => args.connections as usize,
        Mode::Open => args.open_loop_bound(),
    };
    let target = Target::new(&args.url, args.timeout, in_flight)?;

    let setup = Setup::new(target.clone(), args.users, args.spoof_forwarded_for);
    let workload = args.workload.prepare(&setup).await.context("setup failed")?;

    let seed = args.seed.unwrap_or_else(rand::random);
    let shape = match args.mode {
        Mode::Closed => format!("{} workers", args.connections),
        Mode::Open => format!("{} req/s, at most {in_flight} in flight", args.rate),
    };
    eprintln!(
        "running {} ({} loop, {shape}) against {}: {:.1}s warm-up + {:.1}s measured, seed {seed}",
        args.workload.name(),
        args.mode.as_str(),
        args.url,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );

    let plan = Plan::starting_now(args.warmup, args.duration);
    let live = Arc::new(Live::default());
    let progress = Progress::start(Arc::clone(&live), plan, !args.no_progress);
    let result = match args.mode {
        Mode::Closed => run::closed_loop(&target, &workload, plan, &live, args.connections, seed).await,
        Mode::Open => run::open_loop(&target, &workload, plan, &live, args.rate, in_flight, seed).await,
    };
    progress.finish();
    let result = result?;

    let report = Report::from_run(&result, &args);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if report.successes == 0 {
        eprintln!("agora-bench: no request succeeded");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
