//! Waiting for the backends' backlog: `POST /payments` is answered at intake, and the processor
//! call and the record happen after, on the same CPU. A measured window that stopped at the
//! last response would leave that work to the next window, so each one runs on until the
//! backends report every accepted payment recorded (all-time `GET /payments-summary`).

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::contest::calls::{Backend, Window};
use crate::contest::client::{Endpoint, HostClient};

/// How often the summary is read while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Give up when the recorded count has not moved for this long.
const STALL: Duration = Duration::from_secs(5);
/// Give up after this long in any case.
const LIMIT: Duration = Duration::from_secs(60);
/// A summary scans every stored payment; big stores take a while.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a wait ended.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Drained {
    /// Payments the backends had recorded when the wait ended.
    pub recorded: u64,
    /// Whether every expected payment was recorded.
    pub complete: bool,
    /// Seconds waited after the load.
    pub secs: f64,
}

/// The stack's summary, read through the load balancer.
pub struct Backlog {
    backend: Backend,
}

impl Backlog {
    pub fn new(lb_url: &str) -> anyhow::Result<Backlog> {
        Ok(Backlog {
            backend: Backend {
                client: HostClient::new(Endpoint::parse(lb_url)?).with_timeout(SUMMARY_TIMEOUT),
            },
        })
    }

    /// Payments the backends have recorded, all time, both processors.
    pub async fn recorded(&mut self) -> anyhow::Result<u64> {
        let summary = self
            .backend
            .summary(Window::ALL, None)
            .await
            .context("reading the backends' summary")?;
        Ok(summary.total_requests())
    }

    /// Waits until `expected` payments are recorded, the count stalls, or the limit passes.
    /// A failed read (a backend under load may answer 502 when its peer's part of the summary
    /// is late) counts as no progress, not as the end of the comparison.
    pub async fn wait_for(&mut self, expected: u64) -> Drained {
        let start = Instant::now();
        let mut known: Option<u64> = None;
        let mut moved_at = Instant::now();
        loop {
            match self.recorded().await {
                Ok(now) if Some(now) != known => {
                    known = Some(now);
                    moved_at = Instant::now();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "summary read failed; retrying")
                }
            }
            let recorded = known.unwrap_or(0);
            let complete = known.is_some_and(|n| n >= expected);
            if complete || moved_at.elapsed() >= STALL || start.elapsed() >= LIMIT {
                if !complete {
                    tracing::warn!(recorded, expected, "backlog not drained; going on");
                }
                return Drained {
                    recorded,
                    complete,
                    secs: start.elapsed().as_secs_f64(),
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
