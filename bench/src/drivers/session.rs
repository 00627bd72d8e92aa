//! One run of one driver: start the stack with `IO_DRIVER` set for both backends and the load
//! balancer, confirm the driver from each start line, then the contest test, the fixed-rate
//! open-loop loads and the closed-loop saturation, reading each process's CPU time around
//! every measured window and its peak RSS after the contest and at the end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{verify, Args, Driver, MEASURED};
use crate::contest::backlog::{Backlog, Drained};
use crate::contest::calls::Processor;
use crate::contest::client::{Endpoint, HostClient};
use crate::load::{self, payments, LoadSpec, Pace, Report as LoadReport, RequestWriter, Target};
use crate::measure::process::{cpu_time, peak_rss_kib};
use crate::measure::stats::{per_sec, Percentiles};
use crate::stack::Stack;

/// The processors' admin token: their initial one, which the contest test also sets (its
/// `--token` default).
const ADMIN_TOKEN: &str = "123";

/// Percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl From<Percentiles> for Latency {
    fn from(p: Percentiles) -> Latency {
        Latency {
            p50: p.p50,
            p99: p.p99,
            p999: p.p999,
        }
    }
}

/// CPU seconds (user + system) of each measured process over one window, in [`MEASURED`] order.
pub type CpuSecs = [f64; 3];

/// The contest test of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Contest {
    /// Successful `POST /payments`.
    pub post: Latency,
    /// The score's p99 (every successful request, rounded as the contest does), ms.
    pub score_p99_ms: f64,
    /// The score (`total_liquido`).
    pub profit: f64,
    pub successful_posts: u64,
    pub failed_posts: u64,
    pub inconsistencies: u64,
    /// The consistency checks that found a difference (when, the window, both totals).
    pub failed_checks: Vec<crate::contest::checker::Check>,
    pub lag: i64,
    /// The wait for the backlog after the test (counted in `cpu_secs`).
    pub drained: Drained,
    pub cpu_secs: CpuSecs,
}

/// One fixed-rate open-loop load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rate {
    pub rate: f64,
    pub latency: Latency,
    pub ok: u64,
    /// Non-2xx answers and lost requests.
    pub failed: u64,
    /// Responses per second from the first send to the last response (below `rate` when the
    /// stack, or the machine, could not keep up).
    pub achieved: f64,
    /// The wait for the backlog after the load (counted in `cpu_secs`).
    pub drained: Drained,
    pub cpu_secs: CpuSecs,
}

/// The closed-loop saturation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saturation {
    /// Successful responses per second (intake).
    pub throughput: f64,
    /// Payments accepted and recorded per second, the wait for the backlog included.
    pub processed: f64,
    pub ok: u64,
    pub failed: u64,
    /// The wait for the backlog after the load (counted in `cpu_secs`).
    pub drained: Drained,
    pub cpu_secs: CpuSecs,
}

/// Everything one run of one driver measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub round: u32,
    pub driver: Driver,
    /// `(part, driver=...)` as each process's start line said.
    pub confirmed: Vec<(String, String)>,
    pub contest: Option<Contest>,
    pub rates: Vec<Rate>,
    pub saturation: Option<Saturation>,
    /// `VmHWM` in KiB right after the contest test.
    pub peak_rss_contest_kib: Option<[u64; 3]>,
    /// `VmHWM` in KiB at the end of the run (all phases).
    pub peak_rss_kib: [u64; 3],
}

/// Starts the stack with `driver`, measures, and stops the stack whatever happened.
pub async fn run(args: &Args, round: u32, driver: Driver) -> anyhow::Result<Run> {
    let mut opts = args.stack.clone();
    // Appended last, so they win over any IO_DRIVER given with --backend-env/--lb-env.
    let io_driver = format!("IO_DRIVER={}", driver.env_value());
    opts.backend_env.push(io_driver.clone());
    opts.lb_env.push(io_driver);
    let stack = Stack::start(&opts)
        .await
        .with_context(|| format!("starting the stack with IO_DRIVER={}", driver.env_value()))?;
    if !args.quiet {
        eprint!("{}", stack.describe());
    }
    let result = measure(args, &stack, round, driver).await;
    stack.stop().await;
    result
}

/// The pids of the measured processes, in [`MEASURED`] order.
fn pids(stack: &Stack) -> anyhow::Result<[u32; 3]> {
    let pid = |name: &str| {
        stack
            .parts()
            .iter()
            .find(|part| part.name == name)
            .and_then(|part| part.pid())
            .with_context(|| format!("{name} is not running"))
    };
    Ok([pid(MEASURED[0])?, pid(MEASURED[1])?, pid(MEASURED[2])?])
}

fn cpu_now(pids: &[u32; 3]) -> anyhow::Result<[Duration; 3]> {
    let read = |pid: u32| cpu_time(pid).with_context(|| format!("CPU time of pid {pid}"));
    Ok([read(pids[0])?, read(pids[1])?, read(pids[2])?])
}

fn cpu_since(pids: &[u32; 3], before: &[Duration; 3]) -> anyhow::Result<CpuSecs> {
    let after = cpu_now(pids)?;
    Ok(std::array::from_fn(|i| {
        after[i].saturating_sub(before[i]).as_secs_f64()
    }))
}

fn peak_rss(pids: &[u32; 3]) -> anyhow::Result<[u64; 3]> {
    let read = |pid: u32| peak_rss_kib(pid).with_context(|| format!("VmHWM of pid {pid}"));
    Ok([read(pids[0])?, read(pids[1])?, read(pids[2])?])
}

async fn measure(args: &Args, stack: &Stack, round: u32, driver: Driver) -> anyhow::Result<Run> {
    let confirmed = confirm_drivers(stack, driver).await?;
    let pids = pids(stack)?;
    let mut run = Run {
        round,
        driver,
        confirmed,
        contest: None,
        rates: Vec::new(),
        saturation: None,
        peak_rss_contest_kib: None,
        peak_rss_kib: [0; 3],
    };
    let mut backlog = Backlog::new(&stack.lb_url())?;
    // Payments the backends should hold by now (the contest test purges them first).
    let mut expected = backlog.recorded().await?;
    if args.duration > 0 {
        let contest = contest(args, stack, &pids, &mut backlog).await?;
        expected = contest.drained.recorded.max(contest.successful_posts);
        run.contest = Some(contest);
        run.peak_rss_contest_kib = Some(peak_rss(&pids)?);
    } else {
        quiet_processors(stack).await?;
    }
    let mut loads = Loads {
        args,
        pids,
        backlog,
        expected,
        target: format!("127.0.0.1:{}", args.stack.lb_port).parse()?,
        writer: payments::writer("localhost"),
        driver,
        round,
    };
    loads.warm_up().await?;
    for &rate in &args.rates {
        run.rates.push(loads.open_rate(rate).await?);
    }
    if args.saturation_secs > 0 {
        run.saturation = Some(loads.saturation().await?);
    }
    run.peak_rss_kib = peak_rss(&pids)?;
    Ok(run)
}

/// The driver each backend and the lb says it runs, from its start line.
async fn confirm_drivers(stack: &Stack, driver: Driver) -> anyhow::Result<Vec<(String, String)>> {
    let mut confirmed = Vec::new();
    for part in stack.parts() {
        let program = match part.name.as_str() {
            "rinha-lb" => "rinha-lb",
            name if name.starts_with("backend-") => "rinha",
            _ => continue,
        };
        let got = verify::confirm(&part.name, program, &part.log, driver).await?;
        confirmed.push((part.name.clone(), format!("driver={got}")));
    }
    Ok(confirmed)
}

/// The generated loads after the contest: each measured over the same processes and waited
/// out until the backends record every payment sent so far.
struct Loads<'a> {
    args: &'a Args,
    pids: [u32; 3],
    backlog: Backlog,
    /// Payments the backends should hold by now.
    expected: u64,
    target: Target,
    writer: Arc<RequestWriter>,
    driver: Driver,
    round: u32,
}

impl Loads<'_> {
    fn spec(&self, pace: Pace, secs: u64) -> LoadSpec {
        LoadSpec {
            target: self.target.clone(),
            // Unused: `run_with` writes every request.
            request: Vec::new().into(),
            pace,
            duration: Duration::from_secs(secs),
            requests: None,
        }
    }

    fn open(&self, rate: f64) -> Pace {
        Pace::Open {
            rate_per_sec: rate,
            connections: self.args.open_connections,
        }
    }

    /// Unmeasured load at the first rate (when there is one and `--warmup-secs` asks).
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        let (Some(&first), true) = (self.args.rates.first(), self.args.warmup_secs > 0) else {
            return Ok(());
        };
        let spec = self.spec(self.open(first), self.args.warmup_secs);
        let warm = blocking_load(spec, self.writer.clone()).await?;
        anyhow::ensure!(
            warm.ok > 0,
            "the stack answered nothing during the warm-up: {warm:?}"
        );
        self.expected += warm.ok;
        self.backlog.wait_for(self.expected).await;
        Ok(())
    }

    /// Runs `spec`, waits for its backlog; what it did, the wait, and the CPU of both.
    async fn measured(
        &mut self,
        spec: LoadSpec,
        what: &str,
    ) -> anyhow::Result<(LoadReport, Drained, CpuSecs)> {
        let before = cpu_now(&self.pids)?;
        let report = blocking_load(spec, self.writer.clone()).await?;
        self.expected += report.ok;
        let drained = self.backlog.wait_for(self.expected).await;
        let cpu_secs = cpu_since(&self.pids, &before)?;
        log_load(self.driver, self.round, what, &report, &drained);
        Ok((report, drained, cpu_secs))
    }

    /// One fixed-rate open-loop load.
    async fn open_rate(&mut self, rate: f64) -> anyhow::Result<Rate> {
        let spec = self.spec(self.open(rate), self.args.open_secs);
        let (report, drained, cpu_secs) = self.measured(spec, &format!("open {rate}/s")).await?;
        Ok(Rate {
            rate,
            latency: Percentiles::of(&report.latency_us).into(),
            ok: report.ok,
            failed: report.non_2xx + report.errors,
            achieved: per_sec(report.ok, report.elapsed.as_secs_f64()),
            drained,
            cpu_secs,
        })
    }

    /// The closed-loop saturation, a fixed budget of requests unless `--saturation-requests 0`.
    async fn saturation(&mut self) -> anyhow::Result<Saturation> {
        let args = self.args;
        let pace = Pace::Closed {
            connections: args.saturation_connections,
        };
        let budget = (args.saturation_requests > 0).then_some(args.saturation_requests);
        let spec = LoadSpec {
            requests: budget,
            ..self.spec(pace, args.saturation_secs)
        };
        let (report, drained, cpu_secs) = self.measured(spec, "saturation").await?;
        let secs = report.elapsed.as_secs_f64();
        let saturation = Saturation {
            throughput: per_sec(report.ok, secs),
            processed: per_sec(report.ok, secs + drained.secs),
            ok: report.ok,
            failed: report.non_2xx + report.errors,
            drained,
            cpu_secs,
        };
        let made = saturation.ok + saturation.failed;
        if budget.is_some_and(|budget| made < budget) {
            tracing::warn!(
                driver = self.driver.env_value(),
                round = self.round,
                made,
                budget = args.saturation_requests,
                "the saturation load ran out of time before its budget: the drivers did unequal \
                 work, so the whole-run RSS does not compare"
            );
        }
        Ok(saturation)
    }
}

/// The contest test against the running stack, through the contest layer's entry point, then
/// the wait for its backlog with the processors answering at once.
async fn contest(
    args: &Args,
    stack: &Stack,
    pids: &[u32; 3],
    backlog: &mut Backlog,
) -> anyhow::Result<Contest> {
    let mut flags = vec![
        "--target".to_owned(),
        stack.lb_url(),
        "--default".to_owned(),
        stack.default_url(),
        "--fallback".to_owned(),
        stack.fallback_url(),
        "--max-requests".to_owned(),
        args.max_requests.to_string(),
        "--duration".to_owned(),
        args.duration.to_string(),
    ];
    if args.quiet {
        flags.push("--quiet".to_owned());
    }
    let rinha_args = crate::contest::Args::from_flags(flags)?;
    let before = cpu_now(pids)?;
    let report = crate::contest::run_test(&rinha_args)
        .await
        .context("the contest test")?;
    // From here on the processors answer at once: what is measured is our stack.
    quiet_processors(stack).await?;
    let drained = backlog.wait_for(report.snapshot.counts.success).await;
    let cpu_secs = cpu_since(pids, &before)?;
    let counts = report.snapshot.counts;
    Ok(Contest {
        post: Percentiles::of(&report.snapshot.posts).into(),
        score_p99_ms: report.score.p99_ms,
        profit: report.score.profit,
        successful_posts: counts.success,
        failed_posts: counts.failed(),
        inconsistencies: report.score.inconsistencies,
        failed_checks: report
            .checks
            .iter()
            .filter(|c| c.inconsistencies > 0)
            .cloned()
            .collect(),
        lag: report.score.lag,
        drained,
        cpu_secs,
    })
}

/// Sets both processors to answer at once and never fail (the contest test's stages leave
/// them reset already; this makes it a checked precondition).
async fn quiet_processors(stack: &Stack) -> anyhow::Result<()> {
    for url in [stack.default_url(), stack.fallback_url()] {
        let mut processor = Processor {
            client: HostClient::new(Endpoint::parse(&url)?),
            token: ADMIN_TOKEN.to_owned(),
        };
        processor
            .set_delay(0, None)
            .await
            .with_context(|| format!("setting {url}'s delay to 0"))?;
        processor
            .set_failure(false, None)
            .await
            .with_context(|| format!("clearing {url}'s failure"))?;
    }
    Ok(())
}

/// Runs a load on a blocking thread (the generator sleeps and blocks by design).
async fn blocking_load(spec: LoadSpec, writer: Arc<RequestWriter>) -> anyhow::Result<LoadReport> {
    Ok(tokio::task::spawn_blocking(move || load::run_with(&spec, writer)).await??)
}

fn log_load(driver: Driver, round: u32, what: &str, report: &LoadReport, drained: &Drained) {
    tracing::info!(
        round,
        driver = driver.env_value(),
        load = what,
        ok = report.ok,
        failed = report.non_2xx + report.errors,
        req_per_s = format!("{:.0}", report.throughput()),
        p50_us = report.quantile_us(0.5),
        p99_us = report.quantile_us(0.99),
        p999_us = report.quantile_us(0.999),
        drain_s = format!("{:.1}", drained.secs),
        "measured"
    );
}
