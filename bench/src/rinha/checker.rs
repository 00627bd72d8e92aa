//! The consistency scenario: every 10 s (scaled with the duration) one user asks both
//! processors' admin summary and the backend's `/payments-summary` for `[now-15 s, now-1.5 s]`,
//! in parallel. Any difference in `totalRequests` (default + fallback) counts as that many
//! inconsistencies, as the official script adds them.

use std::time::Duration;

use super::calls::{Backend, Processor, Window};
use super::recorder::Recorder;

/// The official period of the checks in a 60 s run.
const OFFICIAL_PERIOD_SECS: f64 = 10.0;
const OFFICIAL_SECS: f64 = 60.0;

/// How far back the window starts and ends.
pub const WINDOW_FROM: Duration = Duration::from_secs(15);
pub const WINDOW_TO: Duration = Duration::from_millis(1500);

/// The check period for a run of `duration`.
pub fn period(duration: Duration) -> Duration {
    Duration::from_secs_f64(duration.as_secs_f64() * OFFICIAL_PERIOD_SECS / OFFICIAL_SECS)
}

/// One consistency check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Seconds into the run when the three calls were sent.
    pub at_secs: f64,
    /// How long the slowest of the three took to answer, in ms.
    pub took_ms: f64,
    /// The window asked, as the query string.
    pub window: String,
    /// Backend default + fallback totalRequests (None if the call failed).
    pub backend: Option<u64>,
    /// Processors' default + fallback totalRequests (None if a call failed).
    pub processors: Option<u64>,
    /// |backend - processors| when both answered.
    pub inconsistencies: u64,
    pub error: Option<String>,
}

/// Runs the checks at `period, 2 period, ...` strictly before the end of the run.
pub async fn run_checker(
    duration: Duration,
    backend: &mut Backend,
    default: &mut Processor,
    fallback: &mut Processor,
    recorder: &Recorder,
) -> Vec<Check> {
    let start = recorder.start();
    let period = period(duration);
    let mut checks = Vec::new();
    let mut n = 1u32;
    while period * n < duration {
        tokio::time::sleep_until((start + period * n).into()).await;
        n += 1;
        let sent = std::time::Instant::now();
        let at_secs = start.elapsed().as_secs_f64();
        let window = Window::before(chrono::Utc::now(), WINDOW_FROM, WINDOW_TO);
        let (b, d, f) = tokio::join!(
            backend.summary(window, Some(recorder)),
            default.summary(window, Some(recorder)),
            fallback.summary(window, Some(recorder)),
        );
        let took_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let backend_total = b.as_ref().ok().map(|s| s.total_requests());
        let processors_total = match (&d, &f) {
            (Ok(d), Ok(f)) => Some(d.total_requests + f.total_requests),
            _ => None,
        };
        let errors: Vec<String> = [
            b.err().map(|e| format!("backend: {e}")),
            d.err().map(|e| format!("default processor: {e}")),
            f.err().map(|e| format!("fallback processor: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        checks.push(Check {
            at_secs,
            took_ms,
            window: window.query(),
            backend: backend_total,
            processors: processors_total,
            inconsistencies: match (backend_total, processors_total) {
                (Some(b), Some(p)) => b.abs_diff(p),
                _ => 0,
            },
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_scales() {
        assert_eq!(period(Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(period(Duration::from_secs(12)), Duration::from_secs(2));
    }
}
