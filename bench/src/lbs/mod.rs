//! `rinha-bench lbs`: rinha-lb (relaying, and handing each client's socket over) against
//! HAProxy (tcp and http mode) and nginx stream, with a direct connection to one backend as the
//! baseline, under the same load in one run.
//!
//! Two fixed-response backends ([`backend`]) run as threads of this process on unix sockets;
//! every contender ([`contenders`]) is started once and fronts both. The load ([`crate::load`])
//! then visits the contenders in rounds, each round in a rotated order so machine drift is
//! spread over all of them; latencies merge over the rounds, and the contender's CPU is read
//! from `/proc/PID/stat` around each of its measured windows only.

pub mod backend;
pub mod contenders;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::load::{self, LoadSpec, Pace, Report};
use crate::measure::process::{cpu_time, peak_rss_kib};
use crate::measure::stats::median;
use crate::measure::table::Table;
use backend::FixedBackend;
use contenders::{Contender, Entry, Kind, Setup};

/// How the load is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A fixed request rate (`--rate`), latency from the intended send time.
    Open,
    /// Each connection sends as soon as it has its answer (throughput ceiling).
    Closed,
}

/// Command-line arguments of `rinha-bench lbs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Install HAProxy and nginx (`apt-get`) when missing; without it they are skipped.
    #[arg(long)]
    pub install: bool,
    /// Measured rounds; each visits every contender once, in a rotated order.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds of load per contender per round.
    #[arg(long, default_value_t = 6)]
    pub duration_secs: u64,
    /// Seconds of unmeasured load per contender before the first round.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Open loop (fixed rate) or closed loop.
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
    /// Requests per second in open loop.
    #[arg(long, default_value_t = 4000.0)]
    pub rate: f64,
    /// Client connections (keep-alive).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// `IO_DRIVER` for rinha-lb.
    #[arg(long, default_value = "auto")]
    pub lb_io_driver: String,
    /// First of consecutive loopback ports (one per contender) for the contenders (default: ephemeral ports).
    #[arg(long)]
    pub port_base: Option<u16>,
    /// The rinha-lb binary (default: next to this one, i.e. the same `target/<profile>/`).
    #[arg(long)]
    pub rinha_lb: Option<PathBuf>,
    /// Run only these contenders (comma list of rinha-lb, rinha-lb-handoff, haproxy-tcp,
    /// haproxy-http, nginx-stream, direct).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// An extra rinha-lb contender with more environment, `LABEL:KEY=VALUE[,KEY=VALUE...]`,
    /// reported as `rinha-lb[LABEL]` (e.g. `epoll:IO_DRIVER=epoll`); repeatable.
    #[arg(long)]
    pub variant: Vec<String>,
}

/// What one contender measured over all rounds.
struct Tally {
    kind: Kind,
    label: String,
    report: Report,
    cpu: Duration,
    peak_rss_kib: Option<u64>,
    /// p99 of each round, in round order: the median of these resists a co-tenant's burst
    /// that lands in one contender's window, which the merged p99 does not.
    round_p99_us: Vec<u64>,
}

/// Runs `rinha-bench lbs`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rinha_lb = match args.rinha_lb.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("rinha-lb"),
    };
    if !rinha_lb.is_file() {
        bail!(
            "{} not found: build it with the same profile first (cargo build --release -p rinha-lb) or pass --rinha-lb",
            rinha_lb.display()
        );
    }
    let mut entries: Vec<Entry> = available_contenders(args.install)?
        .into_iter()
        .filter(|kind| {
            args.only.is_empty() || args.only.iter().any(|name| *name == kind.to_string())
        })
        .map(Entry::plain)
        .collect();
    for variant in &args.variant {
        // Variants go right after the plain rinha-lb, before the baseline.
        let at = entries
            .iter()
            .rposition(|e| e.kind == Kind::RinhaLb)
            .map_or(0, |i| i + 1);
        entries.insert(at, Entry::variant(variant)?);
    }
    if entries.is_empty() {
        bail!("no contender left to run (see --only)");
    }

    let dir = std::env::temp_dir().join(format!("rinha-bench-lbs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = compare(&args, &entries, &dir, &rinha_lb);
    let _ = std::fs::remove_dir_all(&dir);
    let table = result?;
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// The contenders that can run here, installing the missing ones when asked.
fn available_contenders(install: bool) -> anyhow::Result<Vec<Kind>> {
    let missing: Vec<&str> = ["haproxy", "nginx"]
        .into_iter()
        .filter(|program| contenders::find_program(program).is_none())
        .collect();
    if !missing.is_empty() {
        if install {
            tracing::info!(missing = ?missing, packages = ?contenders::APT_PACKAGES, "installing with apt-get");
            contenders::apt_install()?;
        } else {
            tracing::warn!(
                missing = ?missing,
                "not installed: those contenders are skipped (run with --install to apt-get them)"
            );
        }
    }
    Ok(Kind::ALL
        .into_iter()
        .filter(|kind| {
            kind.program()
                .is_none_or(|program| contenders::find_program(program).is_some())
        })
        .collect())
}

fn compare(
    args: &Args,
    entries: &[Entry],
    dir: &std::path::Path,
    rinha_lb: &std::path::Path,
) -> anyhow::Result<String> {
    let paths = [dir.join("backend-1.sock"), dir.join("backend-2.sock")];
    let _backends = [
        FixedBackend::start(&paths[0])?,
        FixedBackend::start(&paths[1])?,
    ];
    let setup = Setup {
        dir,
        backends: [&paths[0], &paths[1]],
        rinha_lb,
        rinha_lb_driver: &args.lb_io_driver,
    };
    let ports = crate::stack::pick_ports(args.port_base, entries.len())?;
    let mut started: Vec<Contender> = Vec::with_capacity(entries.len());
    for (entry, &port) in entries.iter().zip(&ports) {
        started.push(contenders::start(entry, port, &setup)?);
        tracing::info!(contender = %entry.label, port, "started");
    }

    let pace = match args.mode {
        Mode::Open => Pace::Open {
            rate_per_sec: args.rate,
            connections: args.connections,
        },
        Mode::Closed => Pace::Closed {
            connections: args.connections,
        },
    };
    let request: Arc<[u8]> = load::post_payment_request("localhost").into();
    let spec_for = |contender: &Contender, secs: u64| LoadSpec {
        target: contender.target.clone(),
        request: request.clone(),
        pace,
        duration: Duration::from_secs(secs),
        requests: None,
    };

    for contender in &started {
        if args.warmup_secs > 0 {
            let warm = load::run(&spec_for(contender, args.warmup_secs))?;
            if warm.ok == 0 {
                bail!(
                    "{} answered nothing during warm-up: {warm:?}",
                    contender.label
                );
            }
        }
    }

    let mut tallies: Vec<Tally> = started
        .iter()
        .map(|contender| {
            Ok(Tally {
                kind: contender.kind,
                label: contender.label.clone(),
                report: Report::empty()?,
                cpu: Duration::ZERO,
                peak_rss_kib: None,
                round_p99_us: Vec::new(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    for round in 0..args.rounds as usize {
        for step in 0..started.len() {
            let index = (round + step) % started.len();
            let contender = &mut started[index];
            contender.check_alive()?;
            let cpu_before = contender.pid().map(cpu_time).transpose()?;
            let report = load::run(&spec_for(contender, args.duration_secs))?;
            if let (Some(pid), Some(before)) = (contender.pid(), cpu_before) {
                tallies[index].cpu += cpu_time(pid)?.saturating_sub(before);
            }
            tracing::info!(
                round,
                contender = %contender.label,
                ok = report.ok,
                errors = report.errors + report.non_2xx,
                p50_us = report.quantile_us(0.5),
                p99_us = report.quantile_us(0.99),
                "measured"
            );
            tallies[index].round_p99_us.push(report.quantile_us(0.99));
            tallies[index].report.merge(&report);
        }
    }
    for (tally, contender) in tallies.iter_mut().zip(&started) {
        tally.peak_rss_kib = contender.pid().map(peak_rss_kib).transpose()?;
    }
    Ok(table(args, &tallies))
}

/// The comparison as a markdown table (latencies in microseconds).
fn table(args: &Args, tallies: &[Tally]) -> String {
    let direct = tallies.iter().find(|t| t.kind == Kind::Direct);
    let quantiles = [0.5, 0.99, 0.999];
    let mut out = String::new();
    let load = match args.mode {
        Mode::Open => format!("open loop, {} req/s", args.rate),
        Mode::Closed => "closed loop".to_owned(),
    };
    let _ = writeln!(
        out,
        "{load}, {} connections, {} rounds x {} s per contender (rotated order), latency in us\n",
        args.connections, args.rounds, args.duration_secs
    );
    let columns = [
        "contender",
        "requests",
        "errors",
        "req/s",
        "p50",
        "p99",
        "p99.9",
        "added p50",
        "added p99",
        "added p99.9",
        "median round p99",
        "added, median round",
        "CPU-s / 100k req",
        "peak RSS MiB",
    ];
    let mut table = Table::new(&columns, |i| i > 0);
    for tally in tallies {
        let report = &tally.report;
        let values: Vec<u64> = quantiles.iter().map(|&q| report.quantile_us(q)).collect();
        let added: Vec<String> = quantiles
            .iter()
            .zip(&values)
            .map(|(&q, &value)| match direct {
                Some(direct) if tally.kind != Kind::Direct => {
                    format!("{:+}", value as i64 - direct.report.quantile_us(q) as i64)
                }
                _ => "-".to_owned(),
            })
            .collect();
        let cpu = if tally.kind == Kind::Direct || report.responses() == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.3}",
                tally.cpu.as_secs_f64() * 100_000.0 / report.responses() as f64
            )
        };
        let round_p99 = median(&tally.round_p99_us).map_or("-".to_owned(), |m| m.to_string());
        // Per round, minus the baseline's p99 of the same round: drift cancels pairwise.
        let round_added = match direct {
            Some(direct) if tally.kind != Kind::Direct => median(
                &tally
                    .round_p99_us
                    .iter()
                    .zip(&direct.round_p99_us)
                    .map(|(&mine, &base)| mine as i64 - base as i64)
                    .collect::<Vec<_>>(),
            )
            .map_or("-".to_owned(), |m| format!("{m:+}")),
            _ => "-".to_owned(),
        };
        let rss = tally
            .peak_rss_kib
            .map_or("-".to_owned(), |kib| format!("{:.1}", kib as f64 / 1024.0));
        table.row(&[
            tally.label.clone(),
            report.responses().to_string(),
            (report.errors + report.non_2xx).to_string(),
            format!("{:.0}", report.throughput()),
            values[0].to_string(),
            values[1].to_string(),
            values[2].to_string(),
            added[0].clone(),
            added[1].clone(),
            added[2].clone(),
            round_p99,
            round_added,
            cpu,
            rss,
        ]);
    }
    out + &table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_match_the_header() {
        let args = <Args as clap::FromArgMatches>::from_arg_matches(
            &<Args as clap::Args>::augment_args(clap::Command::new("lbs"))
                .get_matches_from(["lbs"]),
        )
        .unwrap();
        let mut report = Report::empty().unwrap();
        report.ok = 1;
        report.latency_us.record(100).unwrap();
        let tally = |kind: Kind| Tally {
            kind,
            label: kind.to_string(),
            report: report.clone(),
            cpu: Duration::from_millis(10),
            peak_rss_kib: Some(4096),
            round_p99_us: vec![100, 120],
        };
        let text = table(&args, &[tally(Kind::RinhaLb), tally(Kind::Direct)]);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4);
        let columns = rows[0].matches('|').count();
        assert!(
            rows.iter().all(|row| row.matches('|').count() == columns),
            "{text}"
        );
    }
}
