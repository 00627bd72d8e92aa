//! The run's measurements: HDR histograms at microsecond resolution of every successful request
//! (the score's p99) and of `POST /payments` alone, per-second buckets for the chart and the
//! progress line, and the POST outcome counters that the lag is computed from.
//!
//! One mutex guards it all: at ~550 requests per second a lock per sample is far below noise.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The longest duration a histogram holds (longer samples are clamped): a minute.
const MAX_MICROS: u64 = 60_000_000;

/// A fresh histogram: 1 µs .. 60 s, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Cannot fail: the bounds are constants and valid.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// What kind of request a sample was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /payments` by a virtual user.
    Payment,
    /// Anything else the test sends (summaries, admin calls, purges).
    Other,
}

/// How a `POST /payments` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// 200, 201, 202 or 204, the statuses the official script counts as a transaction.
    Success,
    /// Answered with another status (one in 200..400 still enters the p99, as k6's
    /// `expected_response` does).
    Status(u16),
    /// No answer within the client timeout.
    Timeout,
    /// Connect or protocol error.
    Error,
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Latencies of the successful POSTs that finished in this second.
    pub posts: Histogram<u64>,
    /// POSTs finished in this second (any outcome).
    pub post_count: u64,
    pub post_failed: u64,
    /// Every request finished in this second.
    pub requests: u64,
    /// Virtual users at the end of the second.
    pub users: u64,
}

impl Second {
    fn new() -> Self {
        Second {
            posts: new_histogram(),
            post_count: 0,
            post_failed: 0,
            requests: 0,
            users: 0,
        }
    }
}

/// POST outcome counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PostCounts {
    pub success: u64,
    /// Answered with a status other than 200, 201, 202, 204.
    pub bad_status: u64,
    pub timeout: u64,
    pub error: u64,
}

impl PostCounts {
    pub fn failed(&self) -> u64 {
        self.bad_status + self.timeout + self.error
    }
    pub fn total(&self) -> u64 {
        self.success + self.failed()
    }
}

#[derive(Debug)]
struct Inner {
    all: Histogram<u64>,
    posts: Histogram<u64>,
    seconds: Vec<Second>,
    counts: PostCounts,
    /// Non-2xx statuses of POSTs, by status.
    statuses: Vec<(u16, u64)>,
}

/// Shared by every task of the run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

/// A copy of the recorder's state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub all: Histogram<u64>,
    pub posts: Histogram<u64>,
    pub seconds: Vec<Second>,
    pub counts: PostCounts,
    pub statuses: Vec<(u16, u64)>,
}

impl Recorder {
    /// Starts the clock of the run: second 0 begins now.
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            inner: Mutex::new(Inner {
                all: new_histogram(),
                posts: new_histogram(),
                seconds: Vec::new(),
                counts: PostCounts::default(),
                statuses: Vec::new(),
            }),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the histograms half-written in a way that
        // matters for a report, so a poisoned lock is still read.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn second(inner: &mut Inner, index: usize) -> &mut Second {
        while inner.seconds.len() <= index {
            inner.seconds.push(Second::new());
        }
        &mut inner.seconds[index]
    }

    /// Records a successful (2xx) request other than a payment POST.
    pub fn success(&self, elapsed: Duration) {
        let now = Instant::now();
        let index = now.saturating_duration_since(self.start).as_secs() as usize;
        let mut inner = self.lock();
        let _ = inner.all.record(micros(elapsed));
        Self::second(&mut inner, index).requests += 1;
    }

    /// Records a request other than a payment POST that failed (it does not enter the p99).
    pub fn failure(&self) {
        let index = self.start.elapsed().as_secs() as usize;
        Self::second(&mut self.lock(), index).requests += 1;
    }

    /// Records one `POST /payments` (its latency enters the p99 when the answer was expected).
    pub fn post(&self, outcome: PostOutcome, elapsed: Duration) {
        let index = self.start.elapsed().as_secs() as usize;
        let mut inner = self.lock();
        match outcome {
            PostOutcome::Success => {
                let us = micros(elapsed);
                let _ = inner.all.record(us);
                let _ = inner.posts.record(us);
                inner.counts.success += 1;
                let second = Self::second(&mut inner, index);
                let _ = second.posts.record(us);
            }
            PostOutcome::Status(status) => {
                if (200..400).contains(&status) {
                    let _ = inner.all.record(micros(elapsed));
                }
                inner.counts.bad_status += 1;
                match inner.statuses.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, n)) => *n += 1,
                    None => inner.statuses.push((status, 1)),
                }
            }
            PostOutcome::Timeout => inner.counts.timeout += 1,
            PostOutcome::Error => inner.counts.error += 1,
        }
        let second = Self::second(&mut inner, index);
        second.requests += 1;
        second.post_count += 1;
        if outcome != PostOutcome::Success {
            second.post_failed += 1;
        }
    }

    /// Notes the number of virtual users in the current second.
    pub fn users(&self, users: u64) {
        let index = self.start.elapsed().as_secs() as usize;
        Self::second(&mut self.lock(), index).users = users;
    }

    /// POST counters so far.
    pub fn counts(&self) -> PostCounts {
        self.lock().counts
    }

    /// p99 of every successful request so far, in ms.
    pub fn running_p99_ms(&self) -> f64 {
        let inner = self.lock();
        if inner.all.is_empty() {
            0.0
        } else {
            inner.all.value_at_quantile(0.99) as f64 / 1000.0
        }
    }

    /// Requests finished in the given second.
    pub fn requests_in(&self, second: usize) -> u64 {
        self.lock().seconds.get(second).map_or(0, |s| s.requests)
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            all: inner.all.clone(),
            posts: inner.posts.clone(),
            seconds: inner.seconds.clone(),
            counts: inner.counts,
            statuses: inner.statuses.clone(),
        }
    }
}
