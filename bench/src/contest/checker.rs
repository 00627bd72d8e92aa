//! The consistency scenario, as the official scripts run it: one user that asks both
//! processors' admin summary and the backend's `/payments-summary` for the profile's window
//! (`[now-15 s, now-1.5 s]` in the preview, `[now-15 s, now-2 s]` in the final), in parallel,
//! then sleeps 10 s (scaled with the duration), from the start to the end of the run; so checks
//! fall at 0 s and just after each stage change. The profile's [`Inconsistency`] formula counts
//! the inconsistencies from the `totalRequests`; a summary that fails or does not answer 200
//! within 1.5 s counts as all zeros, as the scripts' fallback value does.

use std::time::Duration;

use super::calls::{Parties, Window};
use super::recorder::Recorder;
use crate::profile::{Inconsistency, Profile};

/// The check period for a run of `duration` (the profile's period, scaled).
pub fn period(profile: &Profile, duration: Duration) -> Duration {
    let nanos = duration.as_nanos() * u128::from(profile.check.period_secs)
        / u128::from(profile.duration_secs);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The `totalRequests` of one check on each side (a failed call counts 0), kept when the
/// profile counts per processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sides {
    pub backend_default: u64,
    pub backend_fallback: u64,
    pub processor_default: u64,
    pub processor_fallback: u64,
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
    /// The profile's formula over the two sides.
    pub inconsistencies: u64,
    pub error: Option<String>,
    /// Each side's counts, when the profile counts per processor (the final).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sides: Option<Sides>,
    /// How long the backend's summary took, in ms, and whether it answered 200.
    pub backend_ms: f64,
    pub backend_ok: bool,
}

/// The backend's summaries over a run, as the checker saw them: answered (and how fast),
/// failed loudly (a 5XX, a timeout: the client knows), or answered wrong (a 200 whose counts
/// are not the processors' at that moment: nobody knows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub answered: usize,
    pub failed: usize,
    pub wrong: usize,
    /// Of the answered ones, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Verdict {
    pub fn of(checks: &[Check]) -> Verdict {
        let mut ms: Vec<f64> = checks
            .iter()
            .filter(|c| c.backend_ok)
            .map(|c| c.backend_ms)
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
            ms.get(i).copied().unwrap_or(0.0)
        };
        Verdict {
            answered: ms.len(),
            failed: checks.iter().filter(|c| !c.backend_ok).count(),
            wrong: checks
                .iter()
                .filter(|c| c.backend_ok && !c.agrees())
                .count(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backend summaries: {} answered (ms p50 {:.1}  p99 {:.1}  max {:.1}), {} failed loudly, {} wrong",
            self.answered, self.p50_ms, self.p99_ms, self.max_ms, self.failed, self.wrong
        )
    }
}

impl Check {
    /// Whether the backend's counts are the processors' (per processor when kept).
    fn agrees(&self) -> bool {
        match self.sides {
            Some(s) => {
                s.backend_default == s.processor_default
                    && s.backend_fallback == s.processor_fallback
            }
            None => self.backend == self.processors,
        }
    }
}

/// Runs check, sleep(period), check, ... while the run lasts.
pub async fn run_checker(
    profile: &Profile,
    duration: Duration,
    parties: &mut Parties,
    recorder: &Recorder,
) -> Vec<Check> {
    let Parties {
        backend,
        default,
        fallback,
    } = parties;
    let start = recorder.start();
    let period = period(profile, duration);
    let plan = profile.check;
    let mut checks = Vec::new();
    while start.elapsed() < duration {
        let sent = std::time::Instant::now();
        let at_secs = start.elapsed().as_secs_f64();
        let window = Window::before(chrono::Utc::now(), plan.from_back, plan.to_back);
        let timed_backend = async {
            let began = std::time::Instant::now();
            let answer = backend.summary(window, Some(recorder)).await;
            (answer, began.elapsed().as_secs_f64() * 1000.0)
        };
        let ((b, backend_ms), d, f) = tokio::join!(
            timed_backend,
            default.summary(window, Some(recorder)),
            fallback.summary(window, Some(recorder)),
        );
        let took_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let backend_ok = b.is_ok();
        let sides = Sides {
            backend_default: b.as_ref().map_or(0, |s| s.default.total_requests),
            backend_fallback: b.as_ref().map_or(0, |s| s.fallback.total_requests),
            processor_default: d.as_ref().map_or(0, |s| s.total_requests),
            processor_fallback: f.as_ref().map_or(0, |s| s.total_requests),
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
            backend: sides.backend_default + sides.backend_fallback,
            processors: sides.processor_default + sides.processor_fallback,
            inconsistencies: plan.formula.count(
                (sides.backend_default, sides.backend_fallback),
                (sides.processor_default, sides.processor_fallback),
            ),
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            sides: (plan.formula == Inconsistency::PerProcessor).then_some(sides),
            backend_ms,
            backend_ok,
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

    use crate::profile::{FINAL, PREVIEW};

    #[test]
    fn period_scales() {
        assert_eq!(
            period(&PREVIEW, Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(
            period(&PREVIEW, Duration::from_secs(12)),
            Duration::from_secs(2)
        );
        assert_eq!(
            period(&FINAL, Duration::from_secs(300)),
            Duration::from_secs(10)
        );
        assert_eq!(
            period(&FINAL, Duration::from_secs(30)),
            Duration::from_secs(1)
        );
    }
}
