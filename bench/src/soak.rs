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

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::contest::backlog::Backlog;
use crate::contest::calls::{cents, Backend, Processor, Window, INITIAL_TOKEN};
use crate::contest::client::{Endpoint, HostClient};
use crate::load::{self, payments, LoadSpec, Pace, Report as LoadReport, Target};
use crate::measure::process::{open_fds, rss_kib};
use crate::stack::{Stack, StackOpts};

/// Cents of every payment the soak sends (`payments::writer` sends 19.90).
const PAYMENT_CENTS: i64 = 1990;
/// Bytes of resident memory a backend may gain per payment it stores (its record is 32 B, its
/// accepted id ~29 B in a map filled to at most 7/8; twice that covers a growth of the `Vec`
/// or the map landing inside the measured span).
pub const STORE_BYTES_PER_PAYMENT: u64 = 128;
/// RSS growth always tolerated, KiB (allocator noise, a page-cache touch).
pub const RSS_SLACK_KIB: u64 = 4 * 1024;
/// RSS growth tolerated as a share of the second quarter's mean.
pub const RSS_SLACK_RATIO: f64 = 0.05;
/// Descriptors the last quarter may hold above the second (a reconnect racing a sample).
pub const FD_SLACK: u64 = 4;

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

/// One sample of one process.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_secs: f64,
    pub rss_kib: u64,
    pub fds: u64,
}

/// Every sample of one stack process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    pub name: String,
    pub pid: u32,
    pub samples: Vec<Sample>,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(soak(&args))?;
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
    let table = judge_series(args, &series, &mut failures);
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

/// Sets both processors to answer at once and never fail (a soak measures our stack), and
/// empties them and the backends; returns a client of the backends (through the lb, with a
/// timeout for big stores) and of each processor.
async fn quiet_and_purge(stack: &Stack) -> anyhow::Result<(Backend, Vec<Processor>)> {
    let mut processors = Vec::new();
    for url in [stack.default_url(), stack.fallback_url()] {
        let mut processor = Processor {
            client: HostClient::new(Endpoint::parse(&url)?),
            token: INITIAL_TOKEN.to_owned(),
        };
        processor.set_delay(0, None).await?;
        processor.set_failure(false, None).await?;
        processor.purge(None).await?;
        processors.push(processor);
    }
    let mut backend = Backend {
        client: HostClient::new(Endpoint::parse(&stack.lb_url())?)
            .with_timeout(Duration::from_secs(30)),
    };
    backend.purge(None).await.context("purging the backends")?;
    Ok((backend, processors))
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

/// (requests, cents) the backends hold over all time.
async fn backend_totals(backend: &mut Backend) -> anyhow::Result<(u64, i64)> {
    let summary = backend.summary(Window::ALL, None).await?;
    Ok((
        summary.total_requests(),
        cents(summary.default.total_amount) + cents(summary.fallback.total_amount),
    ))
}

/// (requests, cents) both processors hold over all time.
async fn processor_totals(processors: &mut [Processor]) -> anyhow::Result<(u64, i64)> {
    let mut totals = (0, 0);
    for processor in processors {
        let s = processor.summary(Window::ALL, None).await?;
        totals.0 += s.total_requests;
        totals.1 += cents(s.total_amount);
    }
    Ok(totals)
}

/// Judges every process's samples (adding to `failures`) and returns the per-process table.
fn judge_series(args: &Args, series: &[Series], failures: &mut Vec<String>) -> String {
    let backends = series
        .iter()
        .filter(|s| s.name.starts_with("backend"))
        .count()
        .max(1) as u64;
    let mut table = String::from(
        "process              samples  rss q2 KiB  rss q4 KiB  allowed +KiB  fds q2  fds q4\n",
    );
    for s in series {
        let Some(flat) = Flatness::of(&s.samples) else {
            failures.push(format!("{}: too few samples to judge", s.name));
            continue;
        };
        // Payments each backend received between the middles of the two quarters.
        let span = (args.rate * (flat.q4_mid_secs - flat.q2_mid_secs)).max(0.0) as u64 / backends;
        let verdict = judge(&s.name, &flat, span);
        let _ = writeln!(
            table,
            "{:<20} {:>7}  {:>10}  {:>10}  {:>12}  {:>6}  {:>6}{}",
            s.name,
            s.samples.len(),
            flat.rss_q2,
            flat.rss_q4,
            verdict.allowed_kib.map_or("-".into(), |a| a.to_string()),
            flat.fds_q2,
            flat.fds_q4,
            if verdict.allowed_kib.is_some() {
                ""
            } else {
                "  (instrument, RSS not judged)"
            }
        );
        failures.extend(verdict.failures);
    }
    table
}

/// What the soak concluded about one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The RSS growth allowed, KiB; `None` for the instrument's processes (not judged).
    pub allowed_kib: Option<u64>,
    pub failures: Vec<String>,
}

/// Judges one process: `rinha` backends (names `backend-*`) and `rinha-lb` on RSS, every
/// process on descriptors. `span_payments` is what one backend received between the two
/// quarters' middles (its store grows by design with them).
pub fn judge(name: &str, flat: &Flatness, span_payments: u64) -> Verdict {
    let backend = name.starts_with("backend");
    let judged = backend || name == "rinha-lb";
    let store_kib = if backend {
        span_payments * STORE_BYTES_PER_PAYMENT / 1024
    } else {
        0
    };
    let allowed = RSS_SLACK_KIB.max((flat.rss_q2 as f64 * RSS_SLACK_RATIO) as u64) + store_kib;
    let mut failures = Vec::new();
    if judged && flat.rss_q4 > flat.rss_q2 + allowed {
        failures.push(format!(
            "{name}: RSS grew from {} KiB to {} KiB (allowed +{allowed} KiB)",
            flat.rss_q2, flat.rss_q4
        ));
    }
    if flat.fds_q4 > flat.fds_q2 + FD_SLACK {
        failures.push(format!(
            "{name}: open descriptors grew from {} to {}",
            flat.fds_q2, flat.fds_q4
        ));
    }
    Verdict {
        allowed_kib: judged.then_some(allowed),
        failures,
    }
}

/// The second and last quarters of one process's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    /// Mean RSS of the quarter, KiB.
    pub rss_q2: u64,
    pub rss_q4: u64,
    /// Largest fd count of the quarter.
    pub fds_q2: u64,
    pub fds_q4: u64,
    /// Mean time of the quarter's samples, seconds into the load.
    pub q2_mid_secs: f64,
    pub q4_mid_secs: f64,
}

impl Flatness {
    /// `None` with fewer than four samples (no quarters to compare).
    pub fn of(samples: &[Sample]) -> Option<Flatness> {
        let n = samples.len();
        if n < 4 {
            return None;
        }
        let q2 = &samples[n / 4..n / 2];
        let q4 = &samples[n - n / 4..];
        let mean = |part: &[Sample], f: fn(&Sample) -> f64| {
            part.iter().map(f).sum::<f64>() / part.len() as f64
        };
        let max_fds = |part: &[Sample]| part.iter().map(|s| s.fds).max().unwrap_or(0);
        Some(Flatness {
            rss_q2: mean(q2, |s| s.rss_kib as f64) as u64,
            rss_q4: mean(q4, |s| s.rss_kib as f64) as u64,
            fds_q2: max_fds(q2),
            fds_q4: max_fds(q4),
            q2_mid_secs: mean(q2, |s| s.at_secs),
            q4_mid_secs: mean(q4, |s| s.at_secs),
        })
    }
}

/// RSS and fd count of `pid` now; `None` if the process is gone.
pub fn sample(pid: u32, at_secs: f64) -> Option<Sample> {
    let rss_kib = rss_kib(pid).ok()?;
    let fds = open_fds(pid).ok()?;
    Some(Sample {
        at_secs,
        rss_kib,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64], fds: &[u64]) -> Vec<Sample> {
        rss.iter()
            .zip(fds)
            .enumerate()
            .map(|(i, (&rss_kib, &fds))| Sample {
                at_secs: i as f64,
                rss_kib,
                fds,
            })
            .collect()
    }

    #[test]
    fn quarters_skip_the_warm_up_and_compare_the_second_with_the_last() {
        let s = samples(&[1, 1, 10, 10, 20, 20, 30, 30], &[3, 3, 5, 6, 7, 7, 9, 8]);
        let flat = Flatness::of(&s).expect("8 samples");
        assert_eq!((flat.rss_q2, flat.rss_q4), (10, 30));
        assert_eq!((flat.fds_q2, flat.fds_q4), (6, 9));
        assert_eq!((flat.q2_mid_secs, flat.q4_mid_secs), (2.5, 6.5));
        assert!(Flatness::of(&s[..3]).is_none());
    }

    #[test]
    fn a_leak_fails_where_a_growing_store_does_not() {
        let flat = |q2: u64, q4: u64, fds: (u64, u64)| Flatness {
            rss_q2: q2,
            rss_q4: q4,
            fds_q2: fds.0,
            fds_q4: fds.1,
            q2_mid_secs: 150.0,
            q4_mid_secs: 525.0,
        };
        // The lb grows 20 MiB: a leak. A backend that stored 200,000 payments meanwhile may
        // grow 25 MiB + slack; 40 MiB is still a leak, 20 MiB is its store.
        let lb = judge("rinha-lb", &flat(10_000, 30_480, (70, 70)), 200_000);
        assert_eq!(lb.failures.len(), 1, "{lb:?}");
        assert_eq!(lb.allowed_kib, Some(RSS_SLACK_KIB));
        let leak = judge("backend-1", &flat(30_000, 70_960, (70, 70)), 200_000);
        assert_eq!(leak.failures.len(), 1, "{leak:?}");
        let store = judge("backend-1", &flat(30_000, 50_480, (70, 70)), 200_000);
        assert!(store.failures.is_empty(), "{store:?}");
        // The processors keep every payment: RSS not judged, descriptors are.
        let processor = judge("default processor", &flat(10_000, 90_000, (20, 30)), 0);
        assert_eq!(processor.allowed_kib, None);
        assert_eq!(processor.failures.len(), 1, "{processor:?}");
        assert!(processor.failures[0].contains("descriptors"));
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id(), 0.0).expect("own /proc");
        assert!(me.rss_kib > 0 && me.fds >= 3, "{me:?}");
        assert!(sample(u32::MAX, 0.0).is_none());
    }
}
