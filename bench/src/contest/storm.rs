//! A summary storm (`--summary-storm N`): N clients, each on its own keep-alive connection,
//! asking the backend's `/payments-summary` for the consistency check's window in a loop for
//! the whole run, with `--summary-storm-pause MS` between an answer and the next ask (0: a
//! closed loop, whose rate is whatever the server's answers allow). Their answers stay out of the score's histograms: what the storm is for is
//! what it does to the POSTs' latency beside it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::calls::{Backend, Window};
use super::client::{Endpoint, HostClient};
use crate::profile::Profile;

/// What the storm did.
#[derive(Debug, Default)]
pub struct Storm {
    pub clients: usize,
    pub pause: Duration,
    pub answered: u64,
    pub failed: u64,
    pub secs: f64,
}

impl Storm {
    /// The report's note.
    pub fn note(&self) -> String {
        format!(
            "summary storm: {} clients pausing {} ms, {} summaries answered ({:.0}/s), {} failed",
            self.clients,
            self.pause.as_millis(),
            self.answered,
            self.answered as f64 / self.secs.max(1e-9),
            self.failed
        )
    }
}

/// Runs `clients` summary loops against `target`, each pausing `pause` after an answer,
/// until `done` is set.
pub async fn run_storm(
    target: Endpoint,
    clients: usize,
    pause: Duration,
    profile: &Profile,
    done: Arc<AtomicBool>,
) -> Storm {
    let start = Instant::now();
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let plan = profile.check;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (target, done) = (target.clone(), done.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut backend = Backend {
                    client: HostClient::new(target),
                };
                while !done.load(Ordering::Relaxed) {
                    let window = Window::before(chrono::Utc::now(), plan.from_back, plan.to_back);
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
        clients,
        pause,
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    }
}
