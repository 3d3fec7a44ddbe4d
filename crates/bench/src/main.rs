//! agora-bench: a load generator for Agora's Mastodon-compatible REST API, in the spirit of
//! DeathStarBench's socialNetwork workloads.
//!
//! It sets up state through the public API only (never the stores): accounts, a seeded power-law
//! follow graph with an optional celebrity, a few statuses each. Then it drives one workload
//! (compose-post, read-home-timeline, read-user-timeline, their 10/60/30 mix, or
//! verify-credentials) in a closed or an open loop and reports HDR-histogram latencies, with an
//! optional SVG plot. Or, with `--fanout-lag`, it measures how long new statuses take to reach
//! followers' home timelines. It talks to the `--url` it is given and nothing else, every call has
//! a timeout, and a run ends by itself.

mod cli;
mod fanout;
mod floor;
mod plot;
mod progress;
mod record;
mod report;
mod run;
mod setup;
mod social;
mod streams;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Args, Mode};
use crate::fanout::FanoutOptions;
use crate::plot::Series;
use crate::progress::Progress;
use crate::report::Report;
use crate::run::{Live, Plan, Target};
use crate::setup::Setup;
use crate::workload::{Social, SocialOptions, WorkloadKind};

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
    if let Some(listen) = args.serve_floor {
        floor::serve(listen, &args.floor_redis).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let in_flight = match args.mode {
        Mode::Closed => args.connections as usize,
        Mode::Open => args.open_loop_bound(),
    };
    let target = Target::new(&args.url, args.timeout, in_flight)?;

    if let Some(path) = &args.plot
        && !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        // Checked before setup, which can take minutes: only SVG is written.
        anyhow::bail!("--plot {}: only SVG plots are supported (name the file *.svg)", path.display());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut setup = Setup::new(target.clone(), args.users, args.spoof_forwarded_for);
    setup.concurrency = args.setup_concurrency as usize;
    setup.progress = !args.no_progress;
    let social = SocialOptions {
        graph: args.graph,
        mean_follows: args.mean_follows,
        celebrity_followers: args.celebrity_followers,
        posts_per_user: args.posts_per_user,
        seed,
        state: args.state.clone(),
    };
    if args.fanout_lag > 0 {
        return fanout_lag(&args, &setup, &social, &target).await;
    }
    // Workloads that post leave fan-out work behind them; they wait for it after the run. Stream
    // probes post too, and need the social state.
    let posts = matches!(args.workload, WorkloadKind::ComposePost | WorkloadKind::Mix) || args.streams > 0;
    let (workload, state) = if posts {
        let state = Arc::new(Social::load_or_prepare(&setup, &social).await.context("setup failed")?);
        (args.workload.over(Arc::clone(&state), &setup).await.context("setup failed")?, Some(state))
    } else {
        (args.workload.prepare(&setup, &social).await.context("setup failed")?, None)
    };
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

    let stream_opts = streams::StreamOptions {
        count: args.streams as usize,
        probes: args.stream_probes,
        interval: args.stream_probe_interval,
        rss_pid: args.rss_pid,
    };
    let held = match (&state, args.streams) {
        (Some(social), n) if n > 0 => Some(Arc::new(streams::open(&args.url, social, stream_opts).await?)),
        _ => None,
    };
    let probing = match (&held, &state) {
        (Some(h), Some(social)) => {
            let (h, social, target, warmup) = (Arc::clone(h), Arc::clone(social), target.clone(), args.warmup);
            Some(tokio::spawn(async move {
                // Probes start once the warm-up is over.
                tokio::time::sleep(warmup).await;
                h.probe(&target, &social, stream_opts).await
            }))
        }
        _ => None,
    };

    let plan = Plan::starting_now(args.warmup, args.duration);
    let live = Arc::new(Live::default());
    let progress = Progress::start(Arc::clone(&live), plan, !args.no_progress);
    let result = match args.mode {
        Mode::Closed => run::closed_loop(&target, &workload, plan, &live, args.connections, seed).await,
        Mode::Open => run::open_loop(&target, &workload, plan, &live, args.rate, in_flight, seed).await,
    };
    progress.finish();
    let result = result?;

    if let Some(p) = probing {
        p.await.context("stream probes")??;
    }
    let mut report = Report::from_run(&result, &args);
    if let Some(state) = &state {
        let lag = fanout::drain(&target, state, Duration::from_secs(300)).await?;
        report.drain = Some(lag.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        match lag {
            Some(d) => eprintln!("fan-out caught up {:.2}s after the run", d.as_secs_f64()),
            None => eprintln!("fan-out had not caught up 300s after the run"),
        }
    }
    print!("{}", report.table());
    if let Some(h) = &held {
        print!("{}", h.table(&stream_opts));
    }
    if let Some(path) = &args.json {
        let mut json = report.json();
        if let Some(h) = &held {
            json["streams"] = h.json(&stream_opts);
        }
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "agora-bench {} ({} loop, {}): latency by percentile",
            report.workload,
            report.mode,
            match args.mode {
                Mode::Closed => format!("{} workers", args.connections),
                Mode::Open => format!("{} req/s", args.rate),
            }
        );
        let series = Series {
            label: format!("{} ({} ok, {:.0} req/s)", report.workload, report.successes, report.throughput()),
            points: result.recorder.percentile_curve(),
        };
        write_plot(path, &title, &[series])?;
    }
    if report.successes == 0 {
        eprintln!("agora-bench: no request succeeded");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The fan-out phase: social setup, then probe statuses instead of a load run.
async fn fanout_lag(
    args: &Args,
    setup: &Setup,
    social: &SocialOptions,
    target: &run::Target,
) -> anyhow::Result<ExitCode> {
    let state = Social::load_or_prepare(setup, social).await.context("setup failed")?;
    let opts = FanoutOptions {
        samples: args.fanout_lag,
        followers: args.fanout_followers as usize,
        poll: args.fanout_poll,
        timeout: args.fanout_timeout,
        seed: social.seed,
        progress: !args.no_progress,
    };
    eprintln!(
        "measuring fan-out lag: {} status(es) per author class, {} follower(s) polled each, seed {}",
        opts.samples, opts.followers, social.seed
    );
    let classes = fanout::measure(target, &state, opts).await?;
    print!("{}", fanout::table(&classes, &opts));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&fanout::json(&classes, &opts))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series> = classes
            .iter()
            .map(|c| Series {
                label: format!("{} ({:.0} followers, {} observed)", c.label, c.mean_followers, c.recorder.successes()),
                points: c.recorder.percentile_curve(),
            })
            .collect();
        write_plot(path, "agora-bench fan-out lag: POST to visible in followers' home timelines", &series)?;
    }
    if classes.iter().all(|c| c.recorder.successes() == 0) {
        eprintln!("agora-bench: no status became visible to a follower");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn write_plot(path: &std::path::Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    std::fs::write(path, plot::percentile_svg(title, series)).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
