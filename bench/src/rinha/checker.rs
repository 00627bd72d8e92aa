//! The consistency scenario, as the official script runs it: one user that asks both
//! processors' admin summary and the backend's `/payments-summary` for `[now-15 s, now-1.5 s]`,
//! in parallel, then sleeps 10 s (scaled with the duration), from the start to the end of the
//! run; so checks fall at 0 s and just after each stage change. The inconsistencies are
//! |backend total - processors' total| of `totalRequests`; a summary that fails or does not
//! answer 200 within 1.5 s counts as all zeros, as the script's fallback value does.

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
    /// Backend default + fallback totalRequests (0 if the call failed).
    pub backend: u64,
    /// Processors' default + fallback totalRequests (a failed call counts 0).
    pub processors: u64,
    /// |backend - processors| when both answered.
    pub inconsistencies: u64,
    pub error: Option<String>,
}

/// Runs check, sleep(period), check, ... while the run lasts.
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
    while start.elapsed() < duration {
        let sent = std::time::Instant::now();
        let at_secs = start.elapsed().as_secs_f64();
        let window = Window::before(chrono::Utc::now(), WINDOW_FROM, WINDOW_TO);
        let (b, d, f) = tokio::join!(
            backend.summary(window, Some(recorder)),
            default.summary(window, Some(recorder)),
            fallback.summary(window, Some(recorder)),
        );
        let took_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let backend_total = b.as_ref().map_or(0, |s| s.total_requests());
        let processors_total =
            d.as_ref().map_or(0, |s| s.total_requests) + f.as_ref().map_or(0, |s| s.total_requests);
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
            inconsistencies: backend_total.abs_diff(processors_total),
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        });
        // k6's `sleep` after the calls: the schedule drifts by the calls' time, as there.
        let wake = std::time::Instant::now() + period;
        if wake >= start + duration {
            break;
        }
        tokio::time::sleep_until(wake.into()).await;
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
