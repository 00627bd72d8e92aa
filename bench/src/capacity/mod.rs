//! `rinha-bench capacity`: the highest payment rate the stack holds within the deployment's
//! limits. It starts the native stack as docker-compose.yml runs it (`WORKERS=1` everywhere,
//! journals on, processors answering at once and never failing), puts each process under the
//! compose file's CPU quota (`capacity/cgroup.rs`), warms it up, then ramps an open-loop load
//! of fresh payments step by step (`--start-rate`, `--step`, each held `--hold` seconds). A
//! step holds when every POST succeeded, their p99 (from the intended send time, so stalls
//! count in full) is within `--p99-ms`, the backlog is gone within `--drain-ms` of the step's
//! end (no lag) and the backends' all-time summary equals the processors' and the successful
//! POSTs (exact). A step that does not hold is tried again, up to `--tries` in all; the ramp
//! stops at the first step no try of which held, and the capacity is the last one that did.

mod cgroup;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::contest::backlog::Backlog;
use crate::contest::totals::{backend_totals, processor_totals, quiet_and_purge};
use crate::load::{self, payments, LoadSpec, Pace, Report as LoadReport, Target};
use crate::measure::table::{cell, Table};
use crate::stack::{run_until_interrupted, Stack, StackOpts};

/// Cents of every payment (`payments::writer` sends 19.90).
const PAYMENT_CENTS: i64 = 1990;

/// Command-line arguments of `rinha-bench capacity`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: StackOpts,
    /// `IO_DRIVER` of both backends and the lb (`auto`, `uring`, `epoll`).
    #[arg(long, default_value = "auto")]
    pub driver: String,
    /// CPUs of the lb (docker-compose.yml's `cpus`).
    #[arg(long, default_value_t = 0.5)]
    pub lb_cpus: f64,
    /// CPUs of each backend (docker-compose.yml's `cpus`).
    #[arg(long, default_value_t = 0.5)]
    pub backend_cpus: f64,
    /// The first step's payments per second.
    #[arg(long, default_value_t = 1000.0)]
    pub start_rate: f64,
    /// Payments per second added at each step.
    #[arg(long, default_value_t = 1000.0)]
    pub step: f64,
    /// The last step's rate at most.
    #[arg(long, default_value_t = 20_000.0)]
    pub max_rate: f64,
    /// Seconds each step holds its rate.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Client connections the load is spread over (each step opens them afresh, so more of
    /// them put more connection set-ups into every step's p99).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// The highest POST p99 a step may have, in ms.
    #[arg(long, default_value_t = 5.0)]
    pub p99_ms: f64,
    /// How long after a step's end the backlog may take to drain, in ms.
    #[arg(long, default_value_t = 1000)]
    pub drain_ms: u64,
    /// Tries a step gets before it counts as not holding (the machine's own stalls, other
    /// processes' bursts, can spoil one try's p99).
    #[arg(long, default_value_t = 2)]
    pub tries: u32,
    /// Seconds of closed-loop warm-up (64 connections) before the ramp (0: none).
    #[arg(long, default_value_t = 3)]
    pub warmup_secs: u64,
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct Step {
    pub rate: f64,
    pub achieved: f64,
    pub p99_ms: f64,
    pub failed: u64,
    pub drain_secs: f64,
    pub exact: bool,
    /// Why the step does not hold (empty: it holds).
    pub why: Vec<String>,
}

/// Runs `rinha-bench capacity`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ramp = run_until_interrupted(2, capacity(&args))?;
    print!("{}", table(&args, &ramp.steps));
    // Whether a quota bound at all: without throttling, the ramp ended on something else.
    for (group, waited) in &ramp.throttled {
        println!("{group}: throttled {:.2} s in all", waited.as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

/// The stack as compose runs it, with `--driver`; the flags' own env comes last and wins.
fn compose_like(args: &Args) -> StackOpts {
    let mut opts = args.stack.clone();
    opts.journal = true;
    let driver = format!("IO_DRIVER={}", args.driver);
    let mut backend = vec![
        "WORKERS=1".to_string(),
        "JOURNAL_SYNC=none".to_string(),
        driver.clone(),
    ];
    backend.append(&mut opts.backend_env);
    opts.backend_env = backend;
    let mut lb = vec!["WORKERS=1".to_string(), driver];
    lb.append(&mut opts.lb_env);
    opts.lb_env = lb;
    opts
}

/// What a ramp measured: its steps (every try), and how long each quota's group waited for
/// its quota over the whole ramp (`cpu.stat`'s `throttled_time`).
#[derive(Debug, Clone)]
pub struct Ramp {
    pub steps: Vec<Step>,
    pub throttled: Vec<(String, Duration)>,
}

/// Starts the stack under its quotas, ramps, stops it whatever happened. Dropped before its
/// end (an interrupted run), it still leaves nothing behind: the stack goes first (its
/// children are killed), then the groups it was in, once empty.
pub async fn capacity(args: &Args) -> anyhow::Result<Ramp> {
    anyhow::ensure!(
        args.step > 0.0 && args.start_rate > 0.0,
        "rates must be positive"
    );
    // Made before the stack so that it is dropped after it.
    let mut quotas = cgroup::Quotas::default();
    let stack = Stack::start(&compose_like(args))
        .await
        .context("starting the stack")?;
    eprint!("{}", stack.describe());
    let result = match limit(args, &stack, &mut quotas) {
        Ok(()) => ramp(args, &stack).await,
        Err(e) => Err(e),
    };
    let throttled = quotas.throttled();
    stack.stop().await;
    drop(quotas);
    Ok(Ramp {
        steps: result?,
        throttled,
    })
}

/// The backends and the lb under their quotas; the processors are the instrument, unlimited.
fn limit(args: &Args, stack: &Stack, quotas: &mut cgroup::Quotas) -> anyhow::Result<()> {
    for part in stack.parts() {
        let cpus = match part.name.as_str() {
            "rinha-lb" => args.lb_cpus,
            name if name.starts_with("backend-") => args.backend_cpus,
            _ => continue,
        };
        let pid = part.pid().context("a stack part has exited")?;
        quotas.limit(&part.name, pid, cpus)?;
    }
    Ok(())
}

/// The warm-up, then the steps until one does not hold or the last rate.
async fn ramp(args: &Args, stack: &Stack) -> anyhow::Result<Vec<Step>> {
    let (mut backend, mut processors) = quiet_and_purge(stack).await?;
    let target: Target = stack
        .lb_url()
        .trim_start_matches("http://")
        .parse()
        .context("the lb address")?;
    let writer = payments::writer("localhost");
    let base = LoadSpec {
        target,
        // Unused: `run_with` writes every request.
        request: Vec::new().into(),
        pace: Pace::Closed { connections: 64 },
        duration: Duration::from_secs(args.warmup_secs),
        requests: None,
    };
    let mut backlog = Backlog::new(&stack.lb_url())?;
    let mut ok = 0;
    if args.warmup_secs > 0 {
        ok += drive(base.clone(), &writer).await?.ok;
        backlog.wait_for(ok).await;
    }
    let mut steps = Vec::new();
    let mut rate = args.start_rate;
    while rate <= args.max_rate {
        let mut holds = false;
        for _ in 0..args.tries.max(1) {
            let spec = LoadSpec {
                pace: Pace::Open {
                    rate_per_sec: rate,
                    connections: args.connections,
                },
                duration: Duration::from_secs(args.hold.max(1)),
                ..base.clone()
            };
            let report = drive(spec, &writer).await?;
            ok += report.ok;
            let drained = backlog.wait_for(ok).await;
            let backends = backend_totals(&mut backend).await?;
            let held = processor_totals(&mut processors).await?;
            let posts = (ok, ok as i64 * PAYMENT_CENTS);
            let exact = backends == held && held == posts;
            let step = judge(args, rate, &report, drained.complete, drained.secs, exact);
            eprintln!("{}", step_line(&step));
            holds = step.why.is_empty();
            steps.push(step);
            if holds {
                break;
            }
        }
        if !holds {
            break;
        }
        rate += args.step;
    }
    Ok(steps)
}

async fn drive(
    spec: LoadSpec,
    writer: &std::sync::Arc<load::RequestWriter>,
) -> anyhow::Result<LoadReport> {
    let writer = writer.clone();
    Ok(
        tokio::task::spawn_blocking(move || load::run_with(&spec, writer))
            .await
            .context("the load thread")??,
    )
}

/// A step's figures and whether it holds.
fn judge(
    args: &Args,
    rate: f64,
    report: &LoadReport,
    drained: bool,
    drain_secs: f64,
    exact: bool,
) -> Step {
    let p99_ms = report.quantile_us(0.99) as f64 / 1000.0;
    let failed = report.non_2xx + report.errors;
    let mut why = Vec::new();
    if failed > 0 {
        why.push(format!("{failed} POSTs failed"));
    }
    if p99_ms > args.p99_ms {
        why.push(format!("p99 {p99_ms:.2} ms"));
    }
    if !drained || drain_secs * 1000.0 > args.drain_ms as f64 {
        why.push(format!("backlog drained after {drain_secs:.1} s"));
    }
    if !exact {
        why.push("summaries not exact".to_string());
    }
    Step {
        rate,
        achieved: report.ok as f64 / report.elapsed.as_secs_f64().max(1e-9),
        p99_ms,
        failed,
        drain_secs,
        exact,
        why,
    }
}

fn step_line(step: &Step) -> String {
    format!(
        "{:.0}/s: {:.0}/s served, p99 {:.2} ms, {} failed, drained in {:.2} s, {}: {}",
        step.rate,
        step.achieved,
        step.p99_ms,
        step.failed,
        step.drain_secs,
        if step.exact { "exact" } else { "NOT exact" },
        if step.why.is_empty() {
            "holds".to_string()
        } else {
            step.why.join(", ")
        }
    )
}

/// The steps (every try) as a markdown table, and the capacity.
pub fn table(args: &Args, steps: &[Step]) -> String {
    let mut t = Table::new(
        &[
            "rate (/s)",
            "served (/s)",
            "POST p99 (ms)",
            "failed",
            "drain (s)",
            "exact",
            "holds",
        ],
        |i| i < 5,
    );
    for s in steps {
        t.row(&[
            cell(Some(s.rate)),
            cell(Some(s.achieved.round())),
            cell(Some(s.p99_ms)),
            s.failed.to_string(),
            format!("{:.2}", s.drain_secs),
            if s.exact { "yes" } else { "no" }.to_string(),
            if s.why.is_empty() {
                "yes".to_string()
            } else {
                format!("no: {}", s.why.join(", "))
            },
        ]);
    }
    let mut out = t.render();
    // A rate holds when any of its tries did (the rows list every try).
    let best = steps
        .iter()
        .rev()
        .find(|s| s.why.is_empty())
        .map(|s| s.rate);
    let _ = writeln!(
        out,
        "\ncapacity (lb {:?}, IO_DRIVER={}, lb {} CPU, backends {} CPU each, {} s steps): {}",
        args.stack.lb_mode,
        args.driver,
        args.lb_cpus,
        args.backend_cpus,
        args.hold,
        best.map_or_else(
            || "below the first step".to_string(),
            |r| format!("{r:.0} payments/s")
        )
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        crate::parse_flags("capacity", flags).unwrap()
    }

    fn report(ok: u64, failed: u64, latency_us: u64) -> LoadReport {
        let mut r = LoadReport::empty().unwrap();
        for _ in 0..ok {
            r.latency_us.record(latency_us).unwrap();
        }
        r.ok = ok;
        r.errors = failed;
        r.elapsed = Duration::from_secs(1);
        r
    }

    #[test]
    fn a_step_holds_only_when_fast_drained_exact_and_without_failures() {
        let a = args(&[]);
        assert!(judge(&a, 500.0, &report(500, 0, 1_000), true, 0.1, true)
            .why
            .is_empty());
        let slow = judge(&a, 500.0, &report(500, 0, 6_000), true, 0.1, true);
        assert_eq!(slow.why, ["p99 6.00 ms"]);
        assert_eq!(
            judge(&a, 500.0, &report(500, 1, 1_000), true, 0.1, true).why,
            ["1 POSTs failed"]
        );
        assert_eq!(
            judge(&a, 500.0, &report(500, 0, 1_000), true, 2.0, true).why,
            ["backlog drained after 2.0 s"]
        );
        assert_eq!(
            judge(&a, 500.0, &report(500, 0, 1_000), true, 0.1, false).why,
            ["summaries not exact"]
        );
    }

    #[test]
    fn the_stack_runs_as_compose_does_and_the_flags_win() {
        let a = args(&["--driver", "epoll", "--backend-env", "WORKERS=2"]);
        let opts = compose_like(&a);
        assert!(opts.journal);
        assert_eq!(
            opts.backend_env,
            [
                "WORKERS=1",
                "JOURNAL_SYNC=none",
                "IO_DRIVER=epoll",
                "WORKERS=2"
            ]
        );
        assert_eq!(opts.lb_env, ["WORKERS=1", "IO_DRIVER=epoll"]);
    }
}
