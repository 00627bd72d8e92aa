//! `rinha-bench soak`: a long open-loop run of valid payments through the local stack that
//! looks for slow leaks and silent losses.
//!
//! It starts the stack ([`crate::stack`]), warms it up with a closed-loop burst of
//! `--warmup-connections` for `--warmup-secs` (so every pool reaches its size: each backend
//! keeps one processor connection per busy sender, up to `SENDERS` per core, opened on the
//! first burst that needs it; without the warm-up a scheduling stall mid-run opens more and
//! looks like a descriptor leak), then drives `--rate` payments per second (each with a
//! fresh `correlationId`) through the load balancer for `--duration`, and samples every stack
//! process's resident memory (`VmRSS`) and open descriptors (`/proc/<pid>/fd`) every
//! `--sample-secs`. After the load it waits for the backlog, then checks:
//! - **RSS flat** for `rinha` and `rinha-lb`: the mean of the last quarter's samples against the
//!   mean of the second quarter's (the first quarter is warm-up: allocator arenas, buffers,
//!   store capacity). A backend stores ~60 bytes per payment by design (its shard's `Vec`
//!   and the set of accepted ids), so it may grow by [`STORE_BYTES_PER_PAYMENT`] per payment
//!   it received between the two quarters, plus [`RSS_SLACK_KIB`] or [`RSS_SLACK_RATIO`],
//!   whichever is larger. The
//!   processors are the instrument and keep every payment, so they are reported, not judged.
//! - **fd count flat** for every process: the last quarter's maximum at most
//!   [`FD_SLACK`] above the second quarter's maximum.
//! - **zero errors**: every `POST /payments` answered 2xx, no connection lost.
//! - **summary exact**: the backends' all-time totals (count and cents) equal the processors'
//!   totals and the successful POSTs (x 19.90).
//!
//! It prints the samples' summary and exits 1 on any failed check.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::contest::backlog::Backlog;
use crate::contest::totals::{backend_totals, processor_totals, quiet_and_purge};
use crate::load::{self, payments, LoadSpec, Pace, Report as LoadReport, Target};
use crate::stack::{Stack, StackOpts};

mod verdict;

pub use verdict::{
    judge, judge_series, sample, Flatness, Sample, Series, Verdict, FD_SLACK, RSS_SLACK_KIB,
    RSS_SLACK_RATIO, STORE_BYTES_PER_PAYMENT,
};

/// Cents of every payment the soak sends (`payments::writer` sends 19.90).
const PAYMENT_CENTS: i64 = 1990;
/// Command-line arguments of `rinha-bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: StackOpts,
    /// Payments per second (open loop); the default is twice the contest's peak.
    #[arg(long, default_value_t = 1100.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Client connections the load is spread over.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of closed-loop warm-up before the measured load (0: none).
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Connections of the warm-up burst.
    #[arg(long, default_value_t = 256)]
    pub warmup_connections: usize,
    /// Seconds between two samples of RSS and fd count.
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
}

/// What a soak measured and whether it passed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub series: Vec<Series>,
    /// Successful POSTs of the warm-up (also counted in `ok`).
    pub warmup_ok: u64,
    /// Successful POSTs, warm-up included; `non_2xx` and `errors` too.
    pub ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub drain_secs: f64,
    /// (requests, cents) of the backends, the processors (default + fallback), the POSTs.
    pub backend_totals: (u64, i64),
    pub processor_totals: (u64, i64),
    pub post_totals: (u64, i64),
    /// Every check that failed, in words; empty when the soak passed.
    pub failures: Vec<String>,
    /// The per-process figures, one line each.
    pub table: String,
}

/// Runs `rinha-bench soak`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let outcome = crate::stack::run_until_interrupted(2, soak(&args))?;
    print!("{}", outcome.table);
    let measured = outcome.ok - outcome.warmup_ok;
    println!(
        "load: {} ok ({} in the warm-up), {} non-2xx, {} lost; measured {} in {:.1} s ({:.0}/s); \
         drain {:.1} s",
        outcome.ok,
        outcome.warmup_ok,
        outcome.non_2xx,
        outcome.errors,
        measured,
        outcome.elapsed.as_secs_f64(),
        measured as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
        outcome.drain_secs
    );
    println!(
        "totals (requests, cents): backends {:?}, processors {:?}, successful POSTs {:?}",
        outcome.backend_totals, outcome.processor_totals, outcome.post_totals
    );
    if outcome.failures.is_empty() {
        println!("soak passed");
        Ok(ExitCode::SUCCESS)
    } else {
        for failure in &outcome.failures {
            println!("FAILED: {failure}");
        }
        Ok(ExitCode::from(1))
    }
}

/// Starts the stack, soaks it, stops it whatever happened.
pub async fn soak(args: &Args) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 s");
    let stack = Stack::start(&args.stack)
        .await
        .context("starting the stack")?;
    eprint!("{}", stack.describe());
    let result = soak_stack(args, &stack).await;
    stack.stop().await;
    result
}

/// Quiets and purges the stack, drives the sampled load, waits for the backlog, and judges.
async fn soak_stack(args: &Args, stack: &Stack) -> anyhow::Result<Outcome> {
    let (mut backend, mut processors) = quiet_and_purge(stack).await?;
    let mut series = series_of(stack);
    let driven = drive(args, stack, &mut series).await?;
    let report = &driven.report;
    let drained = Backlog::new(&stack.lb_url())?.wait_for(report.ok).await;
    let backend_totals = backend_totals(&mut backend).await?;
    let processor_totals = processor_totals(&mut processors).await?;
    let post_totals = (report.ok, report.ok as i64 * PAYMENT_CENTS);

    let mut failures = Vec::new();
    if report.non_2xx + report.errors > 0 {
        failures.push(format!(
            "{} POSTs answered non-2xx and {} were lost",
            report.non_2xx, report.errors
        ));
    }
    if backend_totals != processor_totals || backend_totals != post_totals {
        failures.push(format!(
            "summary not exact: backends {backend_totals:?}, processors {processor_totals:?}, \
             successful POSTs {post_totals:?}"
        ));
    }
    let table = judge_series(args.rate, &series, &mut failures);
    Ok(Outcome {
        series,
        warmup_ok: driven.warmup_ok,
        ok: report.ok,
        non_2xx: report.non_2xx,
        errors: report.errors,
        elapsed: driven.elapsed,
        drain_secs: drained.secs,
        backend_totals,
        processor_totals,
        post_totals,
        failures,
        table,
    })
}

/// An empty series for every running stack process.
fn series_of(stack: &Stack) -> Vec<Series> {
    stack
        .parts()
        .iter()
        .filter_map(|part| {
            part.pid().map(|pid| Series {
                name: part.name.clone(),
                pid,
                samples: Vec::new(),
            })
        })
        .collect()
}

/// What the load did: every response (warm-up included), the warm-up's share, the measured
/// load's length.
struct Driven {
    report: LoadReport,
    warmup_ok: u64,
    elapsed: Duration,
}

/// The warm-up burst, then the open-loop load, sampling every process into `series` every
/// `--sample-secs` while it runs.
async fn drive(args: &Args, stack: &Stack, series: &mut [Series]) -> anyhow::Result<Driven> {
    let target: Target = stack
        .lb_url()
        .trim_start_matches("http://")
        .parse()
        .context("the lb address")?;
    let spec = LoadSpec {
        target,
        // Unused: `run_with` writes every request.
        request: Vec::new().into(),
        pace: Pace::Open {
            rate_per_sec: args.rate,
            connections: args.connections,
        },
        duration: Duration::from_secs(args.duration),
        requests: None,
    };
    let writer = payments::writer("localhost");
    let mut totals = LoadReport::empty()?;
    if args.warmup_secs > 0 {
        let warm = LoadSpec {
            pace: Pace::Closed {
                connections: args.warmup_connections,
            },
            duration: Duration::from_secs(args.warmup_secs),
            ..spec.clone()
        };
        let writer = writer.clone();
        let warm = tokio::task::spawn_blocking(move || load::run_with(&warm, writer))
            .await
            .context("the warm-up thread")??;
        totals.merge(&warm);
    }
    let warmup_ok = totals.ok;
    let started = Instant::now();
    let mut load = tokio::task::spawn_blocking(move || load::run_with(&spec, writer));
    let every = Duration::from_secs(args.sample_secs.max(1));
    let report: LoadReport = loop {
        tokio::select! {
            joined = &mut load => break joined.context("the load thread")??,
            _ = tokio::time::sleep(every) => {
                let at_secs = started.elapsed().as_secs_f64();
                for s in series.iter_mut() {
                    if let Some(sample) = sample(s.pid, at_secs) {
                        s.samples.push(sample);
                    }
                }
            }
        }
    };
    let elapsed = started.elapsed();
    totals.merge(&report);
    Ok(Driven {
        report: totals,
        warmup_ok,
        elapsed,
    })
}
