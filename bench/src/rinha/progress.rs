//! The live progress line on stderr, once a second: elapsed, users, requests in the last
//! second, running p99, POST counts, queue lag (successful POSTs - payments the processors
//! hold) and the stage in force. On a terminal it rewrites one line; otherwise one per second.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::calls::{Processor, Window};
use super::recorder::Recorder;
use super::stages::{self, Stage};

/// Prints the progress line once a second until `done`.
/// The processors are asked through their own connections and those calls are not scored.
pub async fn progress(
    enabled: bool,
    mut default: Processor,
    mut fallback: Processor,
    recorder: &Recorder,
    active: &AtomicU64,
    done: &AtomicBool,
    schedule: &[Stage],
) {
    if !enabled {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let start = recorder.start();
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let elapsed = start.elapsed();
        let second = elapsed.as_secs() as usize;
        let posts = recorder.counts();
        let (d, f) = tokio::join!(
            default.summary(Window::ALL, None),
            fallback.summary(Window::ALL, None)
        );
        let lag = match (d, f) {
            (Ok(d), Ok(f)) => format!(
                "{}",
                posts.success as i64 - (d.total_requests + f.total_requests) as i64
            ),
            _ => "?".to_string(),
        };
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
    if tty {
        eprintln!();
    }
}
