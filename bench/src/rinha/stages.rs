//! The processor stages of RINHA-2025.md section 4: six settings of delay and failure on both
//! processors, applied at fixed seconds of a 60 s run. The seconds scale with the duration; the
//! delays do not (they are what the backend must survive).

use std::time::Duration;

use super::calls::Processor;
use super::recorder::Recorder;

/// The official run length the stage seconds are written for.
const OFFICIAL_SECS: f64 = 60.0;

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

/// The official table: (second, default delay, default failing, fallback delay, fallback failing).
const OFFICIAL: [(u64, u64, bool, u64, bool); 6] = [
    (1, 0, false, 0, false),
    (10, 100, false, 0, false),
    (20, 100, true, 0, false),
    (30, 2000, true, 1000, true),
    (40, 20, false, 20, false),
    (50, 0, false, 5000, false),
];

/// The stage table for a run of `duration`.
pub fn schedule(duration: Duration) -> Vec<Stage> {
    let scale = duration.as_secs_f64() / OFFICIAL_SECS;
    OFFICIAL
        .iter()
        .map(|&(at, dd, df, fd, ff)| Stage {
            at: Duration::from_secs_f64(at as f64 * scale),
            default_delay_ms: dd,
            default_failing: df,
            fallback_delay_ms: fd,
            fallback_failing: ff,
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

/// Applies every stage at its time (the four admin calls in parallel), returning what happened.
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
        let (d, f) = tokio::join!(
            apply(
                default,
                stage.default_delay_ms,
                stage.default_failing,
                recorder
            ),
            apply(
                fallback,
                stage.fallback_delay_ms,
                stage.fallback_failing,
                recorder
            ),
        );
        let errors = [d, f].into_iter().flatten().collect();
        applied.push(Applied {
            stage: index + 1,
            at_secs: start.elapsed().as_secs_f64(),
            errors,
        });
    }
    applied
}

/// Sets delay then failure on one processor; returns the failures.
async fn apply(
    processor: &mut Processor,
    delay_ms: u64,
    failing: bool,
    recorder: &Recorder,
) -> Vec<String> {
    let mut errors = Vec::new();
    let who = processor.client.endpoint.to_string();
    if let Err(e) = processor.set_delay(delay_ms, Some(recorder)).await {
        errors.push(format!("{who}: delay {delay_ms}: {e}"));
    }
    if let Err(e) = processor.set_failure(failing, Some(recorder)).await {
        errors.push(format!("{who}: failure {failing}: {e}"));
    }
    errors
}

/// Puts a processor back to no delay, no failure (after the measured part of the run).
pub async fn reset(processor: &mut Processor) {
    let _ = processor.set_delay(0, None).await;
    let _ = processor.set_failure(false, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_schedule_at_60_s() {
        let s = schedule(Duration::from_secs(60));
        let at: Vec<u64> = s.iter().map(|s| s.at.as_secs()).collect();
        assert_eq!(at, [1, 10, 20, 30, 40, 50]);
        assert_eq!(s[3].default_delay_ms, 2000);
        assert!(s[3].default_failing && s[3].fallback_failing);
        assert_eq!(s[5].fallback_delay_ms, 5000);
    }

    #[test]
    fn schedule_scales_with_the_duration_but_not_the_delays() {
        let s = schedule(Duration::from_secs(12));
        let at: Vec<u128> = s.iter().map(|s| s.at.as_millis()).collect();
        assert_eq!(at, [200, 2000, 4000, 6000, 8000, 10000]);
        assert_eq!(s[1].default_delay_ms, 100);
        assert_eq!(s[5].fallback_delay_ms, 5000);
    }

    #[test]
    fn stage_in_force() {
        let s = schedule(Duration::from_secs(60));
        assert_eq!(stage_at(&s, Duration::from_millis(500)), 0);
        assert_eq!(stage_at(&s, Duration::from_secs(1)), 1);
        assert_eq!(stage_at(&s, Duration::from_secs(35)), 4);
        assert_eq!(stage_at(&s, Duration::from_secs(59)), 6);
    }
}
