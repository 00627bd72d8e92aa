//! Once a second during the run: what each processor holds (all time, through connections of
//! its own and unscored) against the successful POSTs so far, kept for the report's backlog
//! series, and the live progress line on stderr: elapsed, users, requests in the last second,
//! running p99, POST counts, queue lag (that backlog) and the stage in force. On a terminal the
//! line rewrites itself; otherwise one per second.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::calls::{Processor, Window};
use super::recorder::Recorder;
use super::stages::{self, Stage};

/// What the processors held at one tick of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    /// Whole seconds into the run at the tick.
    pub second: u64,
    /// Payments the default processor holds (`None`: its summary failed).
    pub default: Option<u64>,
    /// Payments the fallback processor holds.
    pub fallback: Option<u64>,
    /// Successful `POST /payments` so far.
    pub successful_posts: u64,
}

impl Held {
    /// Successful POSTs the processors do not hold yet (queued or in flight in the backend).
    pub fn backlog(&self) -> Option<i64> {
        Some(self.successful_posts as i64 - (self.default? + self.fallback?) as i64)
    }
}

/// Payments each processor stored since the previous reading, (default, fallback), one pair
/// per reading (`None` where a reading failed; the next one then covers both seconds).
pub fn stored_per_tick(held: &[Held]) -> Vec<(Option<u64>, Option<u64>)> {
    let (mut default, mut fallback) = (0u64, 0u64);
    let since = |now: Option<u64>, before: &mut u64| {
        now.map(|n| {
            let stored = n.saturating_sub(*before);
            *before = n;
            stored
        })
    };
    held.iter()
        .map(|h| {
            (
                since(h.default, &mut default),
                since(h.fallback, &mut fallback),
            )
        })
        .collect()
}

/// Reads both processors once a second until `done`, printing the progress line when `print`.
pub async fn progress(
    print: bool,
    mut default: Processor,
    mut fallback: Processor,
    recorder: &Recorder,
    active: &AtomicU64,
    done: &AtomicBool,
    schedule: &[Stage],
) -> Vec<Held> {
    let tty = std::io::stderr().is_terminal();
    let start = recorder.start();
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut held = Vec::new();
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let elapsed = start.elapsed();
        let second = elapsed.as_secs() as usize;
        let posts = recorder.counts();
        let (d, f) = tokio::join!(
            default.summary(Window::ALL, None),
            fallback.summary(Window::ALL, None)
        );
        let sample = Held {
            second: elapsed.as_secs_f64().round() as u64,
            default: d.ok().map(|s| s.total_requests),
            fallback: f.ok().map(|s| s.total_requests),
            successful_posts: posts.success,
        };
        held.push(sample);
        if !print {
            continue;
        }
        let lag = sample
            .backlog()
            .map_or_else(|| "?".to_string(), |b| b.to_string());
        let line = format!(
            "{:>5.1}s users {:>4} req/s {:>4} p99 {:>7.2}ms ok {:>6} failed {:>4} queue-lag {:>5} stage {}",
            elapsed.as_secs_f64(),
            active.load(Ordering::Relaxed),
            recorder.requests_in(second.saturating_sub(1)),
            recorder.running_p99_ms(),
            posts.success,
            posts.failed(),
            lag,
            stages::stage_at(schedule, elapsed),
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if print && tty {
        eprintln!();
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_what_the_processors_do_not_hold_yet() {
        let held = Held {
            second: 3,
            default: Some(100),
            fallback: Some(20),
            successful_posts: 130,
        };
        assert_eq!(held.backlog(), Some(10));
        let unknown = Held {
            fallback: None,
            ..held
        };
        assert_eq!(unknown.backlog(), None);
    }

    #[test]
    fn stored_per_tick_is_the_difference_between_readings() {
        let at = |second, default, fallback| Held {
            second,
            default,
            fallback,
            successful_posts: 0,
        };
        let held = [
            at(1, Some(5), Some(0)),
            at(2, Some(12), Some(0)),
            at(3, None, Some(4)),
            at(4, Some(30), Some(9)),
        ];
        assert_eq!(
            stored_per_tick(&held),
            [
                (Some(5), Some(0)),
                (Some(7), Some(0)),
                (None, Some(4)),
                (Some(18), Some(5))
            ]
        );
    }
}
