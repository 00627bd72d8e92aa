//! `rinha-bench drivers`: io_uring against epoll on the same stack, in one invocation.
//!
//! Each round starts the local stack once per driver (`IO_DRIVER` for both backends and the
//! load balancer), alternating which goes first (uring, epoll, epoll, uring, ...) so machine
//! drift hits both. A run ([`session`]) confirms the driver from every start line
//! ([`verify`]), then measures the contest test, fixed-rate open-loop loads with fresh
//! payments ([`crate::load::payments`]), and the closed-loop saturation, with the CPU time and
//! peak RSS of the lb and both backends, each window running on until the backlog of accepted
//! payments is recorded ([`crate::contest::backlog`]). [`summary`] takes the medians per
//! driver, their spread and their ratio; [`chart`] draws the percentiles. [`compare`] is the
//! library entry point. With `--backend-alone`, [`backend`] measures one backend without the
//! lb instead.

pub mod backend;
pub mod chart;
pub mod session;
pub mod summary;
pub mod verify;
pub mod wrk;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::stack::StackOpts;
pub use session::Run;
pub use summary::Row;

/// The processes whose CPU and memory are measured, by their stack part names.
pub const MEASURED: [&str; 3] = ["rinha-lb", "backend-1", "backend-2"];

/// An I/O driver of monoio, as `IO_DRIVER` asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Uring,
    Epoll,
}

impl Driver {
    /// The `IO_DRIVER` value.
    pub fn env_value(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }

    /// What the start log line says (`driver=...`).
    pub fn log_name(self) -> &'static str {
        match self {
            Driver::Uring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// The drivers of round `round`: uring first in even rounds, epoll first in odd ones.
pub fn round_order(round: u32) -> [Driver; 2] {
    if round % 2 == 0 {
        [Driver::Uring, Driver::Epoll]
    } else {
        [Driver::Epoll, Driver::Uring]
    }
}

/// Command-line arguments of `rinha-bench drivers`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rounds; each runs the stack once per driver (order uring, epoll, epoll, uring, ...).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Seconds of the contest test per run (0 skips it).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Virtual users at the end of the contest test's ramp.
    #[arg(long, default_value_t = 550)]
    pub max_requests: u64,
    /// Open-loop rates in requests per second, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000.0, 5000.0, 20000.0])]
    pub rates: Vec<f64>,
    /// Seconds of load per open-loop rate.
    #[arg(long, default_value_t = 10)]
    pub open_secs: u64,
    /// Client connections of the open-loop loads (each a thread of the generator: more of them
    /// cost this 2-core machine more than they add at 20k req/s).
    #[arg(long, default_value_t = 32)]
    pub open_connections: usize,
    /// Seconds of unmeasured load at the first rate before the open-loop measurements.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Requests of the closed-loop saturation load (0: as many as `--saturation-secs`
    /// allows). A fixed amount of work, so both drivers end the run holding the same records
    /// and the whole-run RSS compares the drivers, not how much each got through.
    #[arg(long, default_value_t = 500_000)]
    pub saturation_requests: u64,
    /// Time limit of the closed-loop saturation load, seconds (0 skips it).
    #[arg(long, default_value_t = 30)]
    pub saturation_secs: u64,
    /// Client connections of the saturation load.
    #[arg(long, default_value_t = 64)]
    pub saturation_connections: usize,
    /// Write the runs and the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG bar chart of the latency percentiles per driver to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No stack listing or live progress line.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub stack: StackOpts,
    #[command(flatten)]
    pub backend: backend::BackendArgs,
}

from_flags!(Args, "drivers");

/// What one invocation measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
    /// Medians per driver and ratios, in table order.
    pub rows: Vec<Row>,
}

impl Comparison {
    /// The markdown table with a line on how it was measured.
    pub fn table(&self) -> String {
        let order: Vec<&str> = self.runs.iter().map(|r| r.driver.env_value()).collect();
        format!(
            "rinha-bench drivers: medians over {} run(s) per driver (lowest-highest run in \
             parentheses), order {}; latency in ms from the intended send time (open loop); \
             `better` names a driver whose every run beats every run of the other (two runs a \
             side at least), in parentheses one only the medians favour\n\n{}\nper run:\n{}",
            self.runs.len() / 2,
            order.join(", "),
            summary::table(&self.rows),
            summary::runs(&self.runs)
        )
    }
}

/// Runs `rinha-bench drivers`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.backend.backend_alone {
        return backend::run(&args);
    }
    let comparison = crate::stack::run_until_interrupted(2, compare(&args))?;
    print!("{}", comparison.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&comparison)?;
        std::fs::write(path, text).with_context(|| format!("writing {path:?}"))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, chart::svg(&comparison.rows, &chart_title(&args)))
            .with_context(|| format!("writing {path:?}"))?;
        println!("chart written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn chart_title(args: &Args) -> String {
    format!(
        "POST /payments latency through rinha-lb, io_uring vs epoll (median of {} rounds)",
        args.rounds
    )
}

/// The library entry point: every round, both drivers, then the medians and ratios.
pub async fn compare(args: &Args) -> anyhow::Result<Comparison> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        args.rates.iter().all(|r| r.is_finite() && *r > 0.0),
        "--rates must be positive numbers"
    );
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for driver in round_order(round) {
            tracing::info!(round, driver = driver.env_value(), "starting a run");
            let run = session::run(args, round, driver)
                .await
                .with_context(|| format!("round {round}, IO_DRIVER={}", driver.env_value()))?;
            runs.push(run);
        }
    }
    let rows = summary::rows(
        &runs,
        args.max_requests,
        args.duration,
        args.saturation_connections,
    );
    Ok(Comparison { runs, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_driver_goes_first() {
        let order: Vec<Driver> = (0..3).flat_map(round_order).collect();
        use Driver::*;
        assert_eq!(order, [Uring, Epoll, Epoll, Uring, Uring, Epoll]);
    }

    #[test]
    fn defaults_are_the_contest_and_the_three_rates() {
        let args = Args::from_flags(["--lb-port", "1"]).unwrap();
        assert_eq!(args.rates, [1000.0, 5000.0, 20000.0]);
        assert_eq!((args.max_requests, args.duration), (550, 60));
        let args = Args::from_flags(["--rates", "10,20"]).unwrap();
        assert_eq!(args.rates, [10.0, 20.0]);
    }
}
