//! `rinha-bench drivers --backend-alone`: one `rinha` backend, no lb, `WORKERS=1`, on TCP
//! loopback, driven closed-loop by N keep-alive connections posting fresh payments, once per
//! contender (io_uring, epoll, and any io_uring variant given with `--uring-variant`), the
//! contenders alternating within every round (order reversed in odd rounds).
//!
//! Each run has two measured windows on the same backend process:
//! - `slow`: both emulated processors (in this process, on their own threads) answer after
//!   `--processor-delay-ms`, so every sender is busy and the processor calls run at the rate
//!   the delay allows (`calls per request` says how many completed per intake request);
//! - `intake`: the processors then hold every call (60 s), so no call completes in the window
//!   and the backend's CPU is intake alone; `slow` minus `intake` is the processor calls' share.
//!
//! The processors are started afresh for every run (the held calls of the last run would
//! fill the new one's slots and earn 429s).
//!
//! CPU comes from every thread's `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU), split
//! into the cores' threads (`rinha-core-*`: intake and senders) and the rest (router, main).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{verify, Driver};
use crate::load::payments;
use crate::load::{self, LoadSpec, Pace, Report as LoadReport, Target};
use crate::measure::stats::{median, Spread};
use crate::measure::table::cell_with_spread;
use crate::measure::threads;
use crate::stack::{Addr, Part};
use rinha_emulator::{self as processor, Running};

/// The delay that holds every processor call through the `intake` window.
const STALL_MS: u64 = 60_000;
/// Unmeasured load before the `slow` window, and the pause before the `intake` one (the calls
/// sent before the stall finish, the stalled ones take every sender).
const SETTLE: Duration = Duration::from_secs(1);

/// Flags of the backend-alone comparison (part of `rinha-bench drivers`).
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Measure one backend alone (closed loop, slow processors, then intake alone) instead of
    /// the stack; `--rounds`, `--json`, `--quiet` and `--backend-env` apply.
    #[arg(long)]
    pub backend_alone: bool,
    /// Keep-alive client connections of the backend-alone load, one request in flight each.
    #[arg(long, default_value_t = 32)]
    pub backend_connections: usize,
    /// Seconds of each measured window of the backend-alone load.
    #[arg(long, default_value_t = 8)]
    pub backend_secs: u64,
    /// The processors' delay in the `slow` window, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub processor_delay_ms: u64,
    /// The client of the backend-alone load: `threads` (the instrument's own generator, a
    /// blocking thread per connection) or `wrk` (one `wrk -t1` thread over every connection,
    /// with a Lua script posting fresh ids; Debian's `wrk` package).
    #[arg(long, value_enum, default_value_t = Client::Threads)]
    pub backend_client: Client,
    /// A further io_uring contender with this environment, `KEY=VAL[,KEY=VAL]` (repeatable),
    /// e.g. `URING_TASKRUN=defer`.
    #[arg(long = "uring-variant", value_name = "KEY=VAL,...")]
    pub uring_variants: Vec<String>,
}

/// Who drives the backend-alone load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    Threads,
    Wrk,
}

/// A backend configuration under test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Contender {
    /// `uring`, `epoll`, or `uring KEY=VAL,...`.
    pub label: String,
    pub driver: Driver,
    pub env: Vec<(String, String)>,
}

/// One measured window.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Window {
    pub ok: u64,
    pub failed: u64,
    pub requests_per_s: f64,
    /// Backend CPU (every thread) per answered request, microseconds.
    pub cpu_us_per_request: f64,
    /// Of which the cores' threads (intake and senders).
    pub core_us_per_request: f64,
    /// Processor calls completed (stored by either processor) per answered request.
    pub calls_per_request: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One contender in one round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub round: u32,
    pub label: String,
    pub slow: Window,
    pub intake: Window,
}

/// The contenders: uring, epoll, then the variants.
pub fn contenders(args: &BackendArgs) -> anyhow::Result<Vec<Contender>> {
    let mut all = vec![
        Contender {
            label: "uring".into(),
            driver: Driver::Uring,
            env: Vec::new(),
        },
        Contender {
            label: "epoll".into(),
            driver: Driver::Epoll,
            env: Vec::new(),
        },
    ];
    for variant in &args.uring_variants {
        let env = variant
            .split(',')
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .with_context(|| format!("--uring-variant {variant:?}: expected KEY=VAL"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        all.push(Contender {
            label: format!("uring {variant}"),
            driver: Driver::Uring,
            env,
        });
    }
    Ok(all)
}

/// The order of round `round`: as given in even rounds, reversed in odd ones.
pub fn round_order(all: &[Contender], round: u32) -> Vec<Contender> {
    let mut order = all.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Runs the comparison and prints its table.
pub fn run(args: &super::Args) -> anyhow::Result<ExitCode> {
    let all = contenders(&args.backend)?;
    let runs = crate::stack::run_until_interrupted(1, compare(args, &all))?;
    print!("{}", table(args, &all, &runs));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)
            .with_context(|| format!("writing {path:?}"))?;
        println!("results written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every round, every contender.
pub async fn compare(args: &super::Args, all: &[Contender]) -> anyhow::Result<Vec<Run>> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let rinha = match &args.stack.rinha_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("rinha"),
    };
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for contender in round_order(all, round) {
            tracing::info!(round, contender = %contender.label, "starting a backend-alone run");
            let run = one(args, &rinha, round, &contender)
                .await
                .with_context(|| format!("round {round}, {}", contender.label))?;
            if !args.quiet {
                eprintln!("{}", run_line(&run));
            }
            runs.push(run);
        }
    }
    Ok(runs)
}

async fn one(
    args: &super::Args,
    rinha: &std::path::Path,
    round: u32,
    contender: &Contender,
) -> anyhow::Result<Run> {
    // Fresh processors each run: the stalled calls of the last one still hold their slots.
    let processors = [
        processor::spawn(processor::Config::for_tests(5))?,
        processor::spawn(processor::Config::for_tests(15))?,
    ];
    for p in &processors {
        p.set_delay(args.backend.processor_delay_ms);
    }
    let port = crate::stack::pick_ports(None, 1)?[0];
    let log = std::env::temp_dir().join(format!(
        "rinha-bench-backend-{}-{round}-{}.log",
        std::process::id(),
        contender.label.replace([' ', '=', ','], "_")
    ));
    let mut env: Vec<(String, String)> = args
        .stack
        .backend_env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    env.extend([
        ("WORKERS".into(), "1".into()),
        ("LISTEN".into(), format!("127.0.0.1:{port}")),
        ("PROCESSOR_DEFAULT_URL".into(), processors[0].url()),
        ("PROCESSOR_FALLBACK_URL".into(), processors[1].url()),
        // Stalled calls must not time out (and be looked up) inside the intake window.
        ("PROCESSOR_TIMEOUT_MS".into(), "120000".into()),
        ("SHUTDOWN_GRACE_MS".into(), "1".into()),
        ("RUST_LOG".into(), "info".into()),
    ]);
    env.extend(contender.env.iter().cloned());
    env.push(("IO_DRIVER".into(), contender.driver.env_value().into()));
    let mut part = Part::spawn("backend", Addr::Tcp(port), rinha, &[], &env, log.clone())?;
    part.wait_up(Instant::now() + Duration::from_secs(30))
        .await?;
    verify::confirm("backend", "rinha", &log, contender.driver).await?;
    let pid = part.pid().context("the backend exited")?;
    let result = measure(args, &processors, port, pid).await;
    part.stop().await;
    let _ = std::fs::remove_file(&log);
    let (slow, intake) = result?;
    Ok(Run {
        round,
        label: contender.label.clone(),
        slow,
        intake,
    })
}

async fn measure(
    args: &super::Args,
    processors: &[Running; 2],
    port: u16,
    pid: u32,
) -> anyhow::Result<(Window, Window)> {
    let target: Target = format!("127.0.0.1:{port}").parse()?;
    let writer = payments::writer("localhost");
    let spec = |secs: Duration| LoadSpec {
        target: target.clone(),
        request: Vec::new().into(),
        pace: Pace::Closed {
            connections: args.backend.backend_connections,
        },
        duration: secs,
        requests: None,
    };
    let client = args.backend.backend_client;
    let load = |secs: Duration| {
        let (spec, writer) = (spec(secs), writer.clone());
        async move {
            match client {
                Client::Threads => blocking_load(spec, writer).await,
                Client::Wrk => super::wrk::load(port, spec.pace.connections(), secs).await,
            }
        }
    };
    let warm = load(SETTLE).await?;
    anyhow::ensure!(warm.ok > 0, "the backend answered nothing: {} ok", warm.ok);
    let window = Duration::from_secs(args.backend.backend_secs);
    let slow = measured(load(window), processors, pid).await?;
    for p in processors {
        p.set_delay(STALL_MS);
    }
    tokio::time::sleep(SETTLE).await;
    let intake = measured(load(window), processors, pid).await?;
    Ok((slow, intake))
}

async fn measured(
    load: impl std::future::Future<Output = anyhow::Result<LoadReport>>,
    processors: &[Running; 2],
    pid: u32,
) -> anyhow::Result<Window> {
    let stored = || processors.iter().map(Running::stored).sum::<usize>();
    let (cpu_before, calls_before) = (thread_cpu(pid)?, stored());
    let report = load.await?;
    let (cpu_after, calls_after) = (thread_cpu(pid)?, stored());
    let per_req = |ns: u64| {
        if report.ok == 0 {
            f64::NAN
        } else {
            ns as f64 / 1000.0 / report.ok as f64
        }
    };
    let ms = |q: f64| report.quantile_us(q) as f64 / 1000.0;
    Ok(Window {
        ok: report.ok,
        failed: report.non_2xx + report.errors,
        requests_per_s: report.ok as f64 / report.elapsed.as_secs_f64().max(1e-9),
        cpu_us_per_request: per_req(cpu_after.all.saturating_sub(cpu_before.all)),
        core_us_per_request: per_req(cpu_after.cores.saturating_sub(cpu_before.cores)),
        calls_per_request: calls_after.saturating_sub(calls_before) as f64
            / report.ok.max(1) as f64,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    })
}

/// CPU nanoseconds of a process's threads so far: all of them, and the cores' threads.
#[derive(Debug, Clone, Copy)]
struct ThreadCpu {
    all: u64,
    cores: u64,
}

fn thread_cpu(pid: u32) -> anyhow::Result<ThreadCpu> {
    let roles = threads::sample(pid)?;
    Ok(ThreadCpu {
        all: threads::total(&roles).cpu_ns,
        cores: roles.get(threads::CORES).map_or(0, |c| c.cpu_ns),
    })
}

async fn blocking_load(
    spec: LoadSpec,
    writer: Arc<load::RequestWriter>,
) -> anyhow::Result<LoadReport> {
    Ok(tokio::task::spawn_blocking(move || load::run_with(&spec, writer)).await??)
}

fn run_line(run: &Run) -> String {
    let w = |name: &str, w: &Window| {
        format!(
            "{name} {:.0} req/s, {:.2} CPU-us/req (cores {:.2}), {:.3} calls/req, p50 {:.3} p99 {:.3} ms, failed {}",
            w.requests_per_s,
            w.cpu_us_per_request,
            w.core_us_per_request,
            w.calls_per_request,
            w.p50_ms,
            w.p99_ms,
            w.failed
        )
    };
    format!(
        "round {} {}: {}; {}",
        run.round,
        run.label,
        w("slow", &run.slow),
        w("intake", &run.intake)
    )
}

/// The table: one row per figure, a column per contender (median, lowest-highest run), and
/// each contender's ratio to epoll.
pub fn table(args: &super::Args, all: &[Contender], runs: &[Run]) -> String {
    type Pick = fn(&Window) -> f64;
    let figures: [(&str, &str, Pick); 7] = [
        ("requests/s", "req/s", |w| w.requests_per_s),
        ("backend CPU per request", "us", |w| w.cpu_us_per_request),
        ("- of which the core thread", "us", |w| {
            w.core_us_per_request
        }),
        ("processor calls per request", "", |w| w.calls_per_request),
        ("p50", "ms", |w| w.p50_ms),
        ("p99", "ms", |w| w.p99_ms),
        ("failed requests", "", |w| w.failed as f64),
    ];
    let order: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let mut out = format!(
        "rinha-bench drivers --backend-alone: one backend (WORKERS=1, TCP loopback), closed loop, \
         {} connections, {} s windows, medians over {} round(s) (lowest-highest run in \
         parentheses), order {}; `slow`: processors answering after {} ms; `intake`: every \
         processor call held (intake alone)\n\n",
        args.backend.backend_connections,
        args.backend.backend_secs,
        args.rounds,
        order.join(", "),
        args.backend.processor_delay_ms
    );
    out.push_str("| window | figure | unit |");
    for c in all {
        out.push_str(&format!(" {} |", c.label));
    }
    for c in all.iter().filter(|c| c.label != "epoll") {
        out.push_str(&format!(" {} / epoll |", c.label));
    }
    out.push('\n');
    out.push_str("|---|---|---|");
    for _ in 0..(2 * all.len() - 1) {
        out.push_str("---:|");
    }
    out.push('\n');
    type Of = fn(&Run) -> &Window;
    let windows: [(&str, Of); 2] = [("slow", |r| &r.slow), ("intake", |r| &r.intake)];
    for (wname, window) in windows {
        for (fname, unit, pick) in figures {
            let values = |label: &str| -> Vec<f64> {
                runs.iter()
                    .filter(|r| r.label == label)
                    .map(|r| pick(window(r)))
                    .collect()
            };
            out.push_str(&format!("| {wname} | {fname} | {unit} |"));
            for c in all {
                let v = values(&c.label);
                out.push_str(&format!(
                    " {} |",
                    cell_with_spread(median(&v), Spread::of(&v))
                ));
            }
            let epoll = median(&values("epoll"));
            for c in all.iter().filter(|c| c.label != "epoll") {
                let ratio = crate::measure::stats::ratio(median(&values(&c.label)), epoll);
                out.push_str(&match ratio {
                    Some(r) => format!(" {r:.3} |"),
                    None => " - |".to_owned(),
                });
            }
            out.push('\n');
        }
    }
    out.push_str("\nper run:\n");
    for run in runs {
        out.push_str(&run_line(run));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_follow_uring_and_epoll_and_odd_rounds_reverse() {
        let args = super::super::Args::from_flags([
            "--backend-alone",
            "--uring-variant",
            "URING_TASKRUN=defer,RESPONSE_SEND=runtime",
        ])
        .unwrap();
        let all = contenders(&args.backend).unwrap();
        let labels: Vec<&str> = all.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "uring",
                "epoll",
                "uring URING_TASKRUN=defer,RESPONSE_SEND=runtime"
            ]
        );
        assert_eq!(all[2].env[1], ("RESPONSE_SEND".into(), "runtime".into()));
        let odd: Vec<String> = round_order(&all, 1).into_iter().map(|c| c.label).collect();
        assert_eq!(odd[0], all[2].label);
        assert_eq!(odd[2], "uring");
    }

    #[test]
    fn a_variant_without_a_value_is_refused() {
        let args = super::super::Args::from_flags(["--uring-variant", "URING_TASKRUN"]).unwrap();
        assert!(contenders(&args.backend).is_err());
    }
}
