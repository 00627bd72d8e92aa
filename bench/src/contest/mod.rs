//! The contest's k6 tests rebuilt (RINHA-2025.md sections 4, 4b and 5), the preview
//! (`rinha.js`) or the final (`rinha-final.js`) as `--profile` picks ([`crate::profile`]): the
//! layer `rinha-bench rinha` prints and `drivers` measures with, and whose client ([`client`],
//! [`calls`]), users ([`users`]) and [`backlog`] wait `floor` and `soak` use.
//!
//! [`run_test`] is the entry point: setup (tokens, purges), then for the duration the
//! ramping users ([`users`]), the consistency checker ([`checker`]), the processor stages
//! ([`stages`]) and the once-a-second reading of what the processors hold ([`progress`]) side by
//! side, then the teardown summaries, the [`score`], and optionally a drain that re-reads every
//! summary over all time. Without `--target` it first starts the local stack ([`crate::stack`],
//! processors at the profile's fees) and stops it at the end.

pub mod backlog;
pub mod calls;
pub mod chart;
pub mod checker;
pub mod client;
pub mod cost;
pub mod drain;
pub mod freeze;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod score;
pub mod stages;
pub mod storm;
pub mod totals;
pub mod users;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::measure::process::own_cpu_seconds;
use crate::measure::stats::p99_ms;
use crate::profile::{Profile, TeardownSource};
use crate::stack::{Stack, StackOpts};
use calls::{Backend, Parties, Processor, ProcessorSummary, Window};
use client::{Endpoint, HostClient};
use recorder::Recorder;
pub use report::Report;

/// The test's settings: the flags of `rinha-bench rinha`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The backend (load balancer) to test; without it the local stack is started.
    #[arg(long, env = "RINHA_TARGET")]
    pub target: Option<String>,
    /// The default processor (with --target); default http://127.0.0.1:DEFAULT_PORT.
    #[arg(long)]
    pub default: Option<String>,
    /// The fallback processor (with --target); default http://127.0.0.1:FALLBACK_PORT.
    #[arg(long)]
    pub fallback: Option<String>,
    /// Virtual users at the end of the ramp (MAX_REQUESTS of the official script); default:
    /// the profile's (550 preview, 603 final).
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Length of the run in seconds (default: the profile's, 60 preview, 300 final); the ramp,
    /// stage times and check period scale with it.
    #[arg(long)]
    pub duration: Option<u64>,
    /// The processors' admin token.
    #[arg(long, default_value = "123")]
    pub token: String,
    /// Write the results (official fields and more) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG chart to this file: latency percentiles and request rate per second, and
    /// below them the payments each processor stored per second and the backlog.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Exit 1 on any inconsistency, negative lag, failed POST, failed check, or (with --drain)
    /// a payment missing or counted twice.
    #[arg(long)]
    pub strict: bool,
    /// After the teardown, wait this many seconds and re-read every summary over all time.
    #[arg(long)]
    pub drain: Option<u64>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Run this many clients asking `/payments-summary` in a loop beside the load (their
    /// answers stay out of the score's histograms): what a storm of summaries costs the POSTs.
    #[arg(long, default_value_t = 0)]
    pub summary_storm: usize,
    /// How long each storm client waits after an answer before it asks again (0: a closed
    /// loop, as fast as answers come back).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        requires = "summary_storm"
    )]
    pub summary_storm_pause: u64,
    /// Worker threads of the storm's own runtime (the storm never runs on the instrument's
    /// workers, so the POSTs' timing does not wait behind its answers).
    #[arg(long, default_value_t = 1, requires = "summary_storm")]
    pub summary_storm_threads: usize,
    /// Nice value of the storm's threads: 19 leaves the CPUs to the stack and the instrument
    /// first, the nearest this machine gets to storm clients on another host.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, requires = "summary_storm",
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub summary_storm_nice: i32,
    /// Worker threads of the instrument's runtime.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Freeze the local stack's last backend (`SIGSTOP`) this many seconds mid-run, then
    /// resume it (`SIGCONT`); the report notes when.
    #[arg(long, value_name = "SECS")]
    pub freeze_instance: Option<u64>,
    /// When the freeze starts, seconds into the test (default: centred in the run).
    #[arg(long, value_name = "SECS", requires = "freeze_instance")]
    pub freeze_at: Option<f64>,
    #[command(flatten)]
    pub stack: StackOpts,
}

from_flags!(Args, "rinha");

impl Args {
    /// The run this reproduces (`--profile`, shared with the stack's fees).
    pub fn profile(&self) -> &'static Profile {
        self.stack.profile.profile()
    }

    /// `--duration`, else the profile's.
    pub fn duration_secs(&self) -> u64 {
        self.duration.unwrap_or(self.profile().duration_secs)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs())
    }

    /// `--max-requests`, else the profile's.
    pub fn max_requests(&self) -> u64 {
        self.max_requests.unwrap_or(self.profile().users)
    }
}

/// Where the parts under test are.
struct Targets {
    backend: Endpoint,
    default: Endpoint,
    fallback: Endpoint,
}

fn targets(args: &Args, stack: Option<&Stack>) -> anyhow::Result<Targets> {
    let local = |port: u16| format!("http://127.0.0.1:{port}");
    let (backend, default, fallback) = match stack {
        Some(stack) => (stack.lb_url(), stack.default_url(), stack.fallback_url()),
        None => (
            args.target.clone().unwrap_or_default(),
            args.default
                .clone()
                .unwrap_or_else(|| local(args.stack.default_port)),
            args.fallback
                .clone()
                .unwrap_or_else(|| local(args.stack.fallback_port)),
        ),
    };
    Ok(Targets {
        backend: Endpoint::parse(&backend)?,
        default: Endpoint::parse(&default)?,
        fallback: Endpoint::parse(&fallback)?,
    })
}

/// Runs the whole test and returns its report (printing nothing but the progress line).
pub async fn run_test(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.duration_secs() >= 1, "--duration must be at least 1 s");
    anyhow::ensure!(
        args.max_requests() >= 1,
        "--max-requests must be at least 1"
    );
    let stack = match args.target {
        Some(_) => None,
        None => {
            let stack = Stack::start(&args.stack).await?;
            eprint!("{}", stack.describe());
            Some(stack)
        }
    };
    let t = targets(args, stack.as_ref())?;
    // The contestant's processes: the backends and the lb, not the processors' emulators.
    let measured: cost::Processes = stack
        .iter()
        .flat_map(|s| s.parts())
        .filter(|p| !p.name.contains("processor"))
        .filter_map(|p| Some((p.name.clone(), p.pid()?)))
        .collect();
    let frozen = match (args.freeze_instance, &stack) {
        (Some(secs), Some(stack)) => {
            let pids = stack.backend_pids();
            let pid = *pids.last().context("no backend to freeze")?;
            let name = format!("backend-{}", pids.len());
            let at = freeze::start(args.freeze_at, secs, args.duration());
            Some(freeze::freeze(name, pid, at, Duration::from_secs(secs)))
        }
        (Some(_), None) => anyhow::bail!("--freeze-instance needs the local stack (no --target)"),
        (None, _) => None,
    };
    let report = match frozen {
        Some(frozen) => {
            let (report, note) = tokio::join!(run_against(args, &t, &measured), frozen);
            report.map(|mut r| {
                r.notes.push(note);
                r
            })
        }
        None => run_against(args, &t, &measured).await,
    };
    if let Some(stack) = stack {
        stack.stop().await;
    }
    report
}

fn processor(endpoint: &Endpoint, token: &str) -> Processor {
    Processor {
        client: HostClient::new(endpoint.clone()),
        token: token.to_string(),
    }
}

impl Targets {
    /// A fresh client of each, the processors' with the admin `token`.
    fn parties(&self, token: &str) -> Parties {
        Parties {
            backend: Backend {
                client: HostClient::new(self.backend.clone()),
            },
            default: processor(&self.default, token),
            fallback: processor(&self.fallback, token),
        }
    }
}

/// The test against running targets: setup, the run, the teardown and score, the drain.
async fn run_against(
    args: &Args,
    t: &Targets,
    measured: &cost::Processes,
) -> anyhow::Result<Report> {
    let profile = args.profile();
    let duration = args.duration();
    let cpu_before = own_cpu_seconds();
    let mut parties = t.parties(&args.token);
    // Setup requests count in the p99, so they have a recorder of their own that joins the
    // run's histogram below.
    let setup = Recorder::new(Instant::now());
    let mut notes = set_up(&mut parties, &args.token, &setup).await?;
    let cost_start = cost::start(measured);
    let ran = run_load(args, t, &mut parties).await;
    let cost = cost_start.finish(ran.recorder.snapshot().counts.success);
    notes.extend(ran.storm.as_ref().map(|storm| match storm {
        Ok(storm) => storm.note(),
        Err(e) => format!("summary storm did not run: {e:#}"),
    }));

    let teardown = teardown(profile, duration, &mut parties, &ran.recorder, &mut notes).await;
    notes.extend(fee_notes(profile, &teardown.default, &teardown.fallback));
    let mut snapshot = ran.recorder.snapshot();
    snapshot.all.add(setup.snapshot().all).ok();
    let score = score::compute(&score::Inputs {
        counted: teardown.counted(),
        default: teardown.default,
        fallback: teardown.fallback,
        p99_ms: p99_ms(&snapshot.all),
        inconsistencies: ran.checks.iter().map(|c| c.inconsistencies).sum(),
        successful_posts: snapshot.counts.success,
    });

    // Not part of the official run: leave the processors healthy for the drain and next runs.
    stages::reset(&mut parties.default).await;
    stages::reset(&mut parties.fallback).await;
    let drain = match args.drain {
        Some(secs) => Some(drain::drain(secs, &mut parties, snapshot.counts).await),
        None => None,
    };
    let cpu_secs = own_cpu_seconds() - cpu_before;

    Ok(Report {
        target: t.backend.to_string(),
        default: t.default.to_string(),
        fallback: t.fallback.to_string(),
        profile: args.stack.profile,
        max_requests: args.max_requests(),
        duration_secs: args.duration_secs(),
        started_at: ran.started_at.to_rfc3339(),
        run_secs: ran.secs,
        score,
        teardown,
        snapshot,
        checks: ran.checks,
        stages: ran.schedule,
        applied: ran.applied,
        held: ran.held,
        notes,
        drain,
        bench_cpu_secs: cpu_secs,
        cost,
    })
}

/// Setup, as the official script: tokens, processor purges (these must work), backend purge
/// (its error is ignored, and becomes a note, the first of the returned ones).
async fn set_up(
    parties: &mut Parties,
    token: &str,
    setup: &Recorder,
) -> anyhow::Result<Vec<String>> {
    parties
        .default
        .set_token(calls::INITIAL_TOKEN, token, Some(setup))
        .await
        .context("setting the default processor's token")?;
    parties
        .fallback
        .set_token(calls::INITIAL_TOKEN, token, Some(setup))
        .await
        .context("setting the fallback processor's token")?;
    parties
        .default
        .purge(Some(setup))
        .await
        .context("purging the default processor")?;
    parties
        .fallback
        .purge(Some(setup))
        .await
        .context("purging the fallback processor")?;
    let mut notes = Vec::new();
    if let Err(e) = parties.backend.purge(Some(setup)).await {
        notes.push(format!(
            "backend purge failed (ignored, as the official test does): {e}"
        ));
    }
    Ok(notes)
}

/// What the run itself left: its recorder, checks, stages and readings.
struct Ran {
    started_at: chrono::DateTime<chrono::Utc>,
    secs: f64,
    recorder: Arc<Recorder>,
    checks: Vec<checker::Check>,
    schedule: Vec<stages::Stage>,
    applied: Vec<stages::Applied>,
    held: Vec<progress::Held>,
    storm: Option<anyhow::Result<storm::Storm>>,
}

/// The run: for the duration, the ramping users, the checker (on `parties`), the stages (on
/// clients of their own) and the once-a-second progress side by side.
async fn run_load(args: &Args, t: &Targets, parties: &mut Parties) -> Ran {
    let profile = args.profile();
    let duration = args.duration();
    let start = Instant::now();
    let started_at = chrono::Utc::now();
    let recorder = Arc::new(Recorder::new(start));
    let active = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let schedule = stages::schedule(profile, duration);
    let ramp = users::Ramp {
        max: args.max_requests(),
        duration,
    };

    let users = users::run_users(
        t.backend.clone(),
        ramp,
        profile.amount,
        recorder.clone(),
        active.clone(),
    );
    let checker = checker::run_checker(profile, duration, parties, &recorder);
    let mut stage_default = processor(&t.default, &args.token);
    let mut stage_fallback = processor(&t.fallback, &args.token);
    let stage_run = stages::run_stages(
        schedule.clone(),
        &mut stage_default,
        &mut stage_fallback,
        &recorder,
    );
    let progress = progress::progress(
        !args.quiet,
        processor(&t.default, &args.token),
        processor(&t.fallback, &args.token),
        &recorder,
        &active,
        &done,
        &schedule,
    );
    let storm = async {
        match args.summary_storm {
            0 => None,
            clients => {
                let plan = storm::Plan {
                    clients,
                    pause: Duration::from_millis(args.summary_storm_pause),
                    threads: args.summary_storm_threads,
                    nice: args.summary_storm_nice,
                };
                let storm = storm::run_storm(t.backend.clone(), plan, profile.check, done.clone());
                Some(storm.await)
            }
        }
    };
    // The checker and the stages finish by themselves before the end; the users at the end.
    let main = async {
        let result = tokio::join!(users, checker, stage_run);
        done.store(true, Ordering::Relaxed);
        result
    };
    let ((_, checks, applied), held, storm) = tokio::join!(main, progress, storm);
    Ran {
        started_at,
        secs: start.elapsed().as_secs_f64(),
        recorder,
        checks,
        schedule,
        applied,
        held,
        storm,
    }
}

/// The teardown, as the profile's script: right after the run, the summaries over
/// `[now - back, now]` (70 s in the preview, 360 s in the final; longer runs reach back past
/// their start), default then fallback, then the backend's when the profile reads it; a failed
/// summary counts as zeros.
async fn teardown(
    profile: &Profile,
    duration: Duration,
    parties: &mut Parties,
    recorder: &Recorder,
    notes: &mut Vec<String>,
) -> report::Teardown {
    let Parties {
        backend,
        default,
        fallback,
    } = parties;
    let back = profile.teardown.back(duration);
    let window = Window::before(chrono::Utc::now(), back, Duration::ZERO);
    let mut zero_on_error = |who: &str, error: Option<client::ClientError>| {
        if let Some(e) = error {
            notes.push(format!(
                "teardown: {who} summary failed, counted as zeros: {e}"
            ));
        }
    };
    let d = default.summary(window, Some(recorder)).await;
    let f = fallback.summary(window, Some(recorder)).await;
    let b = match profile.teardown.source {
        TeardownSource::Backend => Some(backend.summary(window, Some(recorder)).await),
        TeardownSource::Processors => None,
    };
    let teardown = report::Teardown {
        window: window.query(),
        default: d.as_ref().copied().unwrap_or_default(),
        fallback: f.as_ref().copied().unwrap_or_default(),
        backend: b.as_ref().map(|b| b.as_ref().copied().unwrap_or_default()),
        source: profile.teardown.source,
    };
    zero_on_error("the default processor's", d.err());
    zero_on_error("the fallback processor's", f.err());
    if let Some(b) = b {
        zero_on_error("the backend's", b.err());
    }
    teardown
}

/// Notes when a processor's `feePerTransaction` is not the one the profile's run charged (a
/// final against processors at the preview's fees scores a different contest). A summary that
/// failed (fee 0) has its own note.
fn fee_notes(
    profile: &Profile,
    default: &ProcessorSummary,
    fallback: &ProcessorSummary,
) -> Vec<String> {
    let millionths = |fee: f64| (fee * 1e6).round() as u64;
    [
        ("default", default, profile.fees.default_fee()),
        ("fallback", fallback, profile.fees.fallback_fee()),
    ]
    .into_iter()
    .filter(|(_, summary, fee)| {
        let charged = millionths(summary.fee_per_transaction);
        charged != 0 && charged != fee.millionths()
    })
    .map(|(name, summary, fee)| {
        format!(
            "the {name} processor charges {} per payment; the {} ran at {fee}",
            summary.fee_per_transaction, profile.name
        )
    })
    .collect()
}
