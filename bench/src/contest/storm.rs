//! A summary storm (`--summary-storm N`): N clients, each on its own keep-alive connection,
//! asking the backend's `/payments-summary` for the consistency check's window in a loop for
//! the whole run, with `--summary-storm-pause MS` between an answer and the next ask (0: a
//! closed loop, whose rate is whatever the server's answers allow). Their answers stay out of
//! the score's histograms: what the storm is for is what it does to the POSTs' latency beside
//! it.
//!
//! The storm runs on a thread and a runtime of its own (`--summary-storm-threads`), never on
//! the instrument's workers: a POST's answer must not wait behind the storm's answers to be
//! timed, or the instrument would charge the backend with its own queue. With
//! `--summary-storm-nice 19` its threads take the CPUs only when the stack and the
//! instrument leave them, the nearest this machine gets to clients on another host.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::calls::{Backend, Window};
use super::client::{Endpoint, HostClient};
use crate::profile::CheckPlan;

/// What the storm did.
#[derive(Debug, Default)]
pub struct Storm {
    pub clients: usize,
    pub pause: Duration,
    pub threads: usize,
    pub nice: i32,
    pub answered: u64,
    pub failed: u64,
    pub secs: f64,
}

impl Storm {
    /// The report's note.
    pub fn note(&self) -> String {
        format!(
            "summary storm: {} clients pausing {} ms on {} thread(s) at nice {}, {} summaries \
             answered ({:.0}/s), {} failed",
            self.clients,
            self.pause.as_millis(),
            self.threads,
            self.nice,
            self.answered,
            self.answered as f64 / self.secs.max(1e-9),
            self.failed
        )
    }
}

/// How the storm is run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clients: usize,
    /// After each answer.
    pub pause: Duration,
    /// Worker threads of the storm's own runtime.
    pub threads: usize,
    /// The nice value of the storm's threads.
    pub nice: i32,
}

/// Runs the storm of `plan` against `target` on a thread of its own until `done` is set;
/// `Err` if that thread or its runtime could not start.
pub async fn run_storm(
    target: Endpoint,
    plan: Plan,
    check: CheckPlan,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Storm> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rinha-bench-storm".into())
        .spawn(move || {
            let _ = tx.send(storm_thread(target, plan, check, done));
        })?;
    rx.await?
}

/// The storm's thread: its nice value, its runtime (whose workers inherit the nice value), the
/// clients.
fn storm_thread(
    target: Endpoint,
    plan: Plan,
    check: CheckPlan,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Storm> {
    if plan.nice != 0 {
        rinha_sys::sched::set_nice(plan.nice)
            .map_err(|e| anyhow::anyhow!("nice {} for the storm's threads: {e}", plan.nice))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads.max(1))
        .thread_name("rinha-bench-storm")
        .enable_all()
        .build()?;
    Ok(runtime.block_on(clients(target, plan, check, done)))
}

/// Runs `plan.clients` summary loops against `target` until `done` is set.
async fn clients(target: Endpoint, plan: Plan, check: CheckPlan, done: Arc<AtomicBool>) -> Storm {
    let start = Instant::now();
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pause = plan.pause;
    let tasks: Vec<_> = (0..plan.clients)
        .map(|_| {
            let (target, done) = (target.clone(), done.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut backend = Backend {
                    client: HostClient::new(target),
                };
                while !done.load(Ordering::Relaxed) {
                    let window = Window::before(chrono::Utc::now(), check.from_back, check.to_back);
                    match backend.summary(window, None).await {
                        Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Storm {
        clients: plan.clients,
        pause,
        threads: plan.threads,
        nice: plan.nice,
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    }
}
