//! The processor stages of RINHA-2025.md sections 4 and 4b: the profile's settings of delay and
//! failure on both processors (six in the preview, ten in the final), applied at fixed seconds
//! of the run. The seconds scale with the duration; the delays do not (they are what the
//! backend must survive).

use std::time::Duration;

use super::calls::Processor;
use super::client::ClientError;
use super::recorder::Recorder;
use crate::profile::Profile;

/// One row of the stage table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stage {
    /// When it is applied, from the start of the run.
    #[serde(serialize_with = "secs")]
    pub at: Duration,
    pub default_delay_ms: u64,
    pub default_failing: bool,
    pub fallback_delay_ms: u64,
    pub fallback_failing: bool,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The profile's stage table for a run of `duration`.
pub fn schedule(profile: &Profile, duration: Duration) -> Vec<Stage> {
    // In whole nanoseconds, so a shortened run's stage times are exact (0.6 s, not 0.599..).
    let scaled = |secs: u64| {
        let nanos = duration.as_nanos() * u128::from(secs) / u128::from(profile.duration_secs);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    };
    profile
        .stages
        .iter()
        .map(|row| Stage {
            at: scaled(row.at_secs),
            default_delay_ms: row.default_delay_ms,
            default_failing: row.default_failing,
            fallback_delay_ms: row.fallback_delay_ms,
            fallback_failing: row.fallback_failing,
        })
        .collect()
}

/// The stage in force `elapsed` into the run (1-based, as the report numbers them; 0 = none yet).
pub fn stage_at(stages: &[Stage], elapsed: Duration) -> usize {
    stages.iter().take_while(|s| s.at <= elapsed).count()
}

/// What applying one stage did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub stage: usize,
    /// Seconds into the run when the four admin calls were done.
    pub at_secs: f64,
    /// Admin calls that failed, with why.
    pub errors: Vec<String>,
}

/// Applies every stage at its time, with the official script's four calls in its order, one
/// after the other: default delay, fallback delay, default failure, fallback failure.
pub async fn run_stages(
    stages: Vec<Stage>,
    default: &mut Processor,
    fallback: &mut Processor,
    recorder: &Recorder,
) -> Vec<Applied> {
    let start = recorder.start();
    let mut applied = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        tokio::time::sleep_until((start + stage.at).into()).await;
        let mut errors = Vec::new();
        let mut note = |who: &Processor, what: String, result: Result<(), ClientError>| {
            if let Err(e) = result {
                errors.push(format!("{}: {what}: {e}", who.client.endpoint));
            }
        };
        let r = default
            .set_delay(stage.default_delay_ms, Some(recorder))
            .await;
        note(default, format!("delay {}", stage.default_delay_ms), r);
        let r = fallback
            .set_delay(stage.fallback_delay_ms, Some(recorder))
            .await;
        note(fallback, format!("delay {}", stage.fallback_delay_ms), r);
        let r = default
            .set_failure(stage.default_failing, Some(recorder))
            .await;
        note(default, format!("failure {}", stage.default_failing), r);
        let r = fallback
            .set_failure(stage.fallback_failing, Some(recorder))
            .await;
        note(fallback, format!("failure {}", stage.fallback_failing), r);
        applied.push(Applied {
            stage: index + 1,
            at_secs: start.elapsed().as_secs_f64(),
            errors,
        });
    }
    applied
}

/// Puts a processor back to no delay, no failure (after the measured part of the run).
pub async fn reset(processor: &mut Processor) {
    let _ = processor.set_delay(0, None).await;
    let _ = processor.set_failure(false, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FINAL, PREVIEW};

    #[test]
    fn official_schedule_at_60_s() {
        let s = schedule(&PREVIEW, Duration::from_secs(60));
        let at: Vec<u64> = s.iter().map(|s| s.at.as_secs()).collect();
        assert_eq!(at, [1, 10, 20, 30, 40, 50]);
        assert_eq!(s[3].default_delay_ms, 2000);
        assert!(s[3].default_failing && s[3].fallback_failing);
        assert_eq!(s[5].fallback_delay_ms, 5000);
    }

    #[test]
    fn schedule_scales_with_the_duration_but_not_the_delays() {
        let s = schedule(&PREVIEW, Duration::from_secs(12));
        let at: Vec<u128> = s.iter().map(|s| s.at.as_millis()).collect();
        assert_eq!(at, [200, 2000, 4000, 6000, 8000, 10000]);
        assert_eq!(s[1].default_delay_ms, 100);
        assert_eq!(s[5].fallback_delay_ms, 5000);
    }

    #[test]
    fn the_final_schedule_at_300_s() {
        let s = schedule(&FINAL, Duration::from_secs(300));
        let at: Vec<u64> = s.iter().map(|s| s.at.as_secs()).collect();
        assert_eq!(at, [1, 30, 60, 90, 120, 150, 180, 210, 240, 270]);
        let delays: Vec<(u64, u64)> = s
            .iter()
            .map(|s| (s.default_delay_ms, s.fallback_delay_ms))
            .collect();
        assert_eq!(
            delays,
            [
                (0, 0),
                (1000, 0),
                (500, 0),
                (2000, 1000),
                (5000, 5),
                (0, 5),
                (100, 5),
                (50, 0),
                (103, 10),
                (2000, 0)
            ]
        );
        let failing: Vec<(bool, bool)> = s
            .iter()
            .map(|s| (s.default_failing, s.fallback_failing))
            .collect();
        assert_eq!(failing[3], (true, false));
        assert_eq!(failing[4], (true, false));
        assert_eq!(failing[5], (false, true));
        assert_eq!(failing.iter().filter(|f| f.0 || f.1).count(), 3);
        assert_eq!(stage_at(&s, Duration::from_secs(299)), 10);
    }

    #[test]
    fn the_final_schedule_scales_with_the_duration() {
        let s = schedule(&FINAL, Duration::from_secs(6));
        let at: Vec<u128> = s.iter().map(|s| s.at.as_millis()).collect();
        assert_eq!(
            at,
            [20, 600, 1200, 1800, 2400, 3000, 3600, 4200, 4800, 5400]
        );
        assert_eq!(s[9].default_delay_ms, 2000);
    }

    #[test]
    fn stage_in_force() {
        let s = schedule(&PREVIEW, Duration::from_secs(60));
        assert_eq!(stage_at(&s, Duration::from_millis(500)), 0);
        assert_eq!(stage_at(&s, Duration::from_secs(1)), 1);
        assert_eq!(stage_at(&s, Duration::from_secs(35)), 4);
        assert_eq!(stage_at(&s, Duration::from_secs(59)), 6);
    }
}
