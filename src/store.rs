//! One core's shard of the store: the append-only list of payments the processors accepted
//! (requestedAt in µs, cents, processor), the attempts still in flight, and the window sums
//! the summary router asks for. Owned by its runtime: no locks.
//!
//! # In-flight payments and the summary
//! The checker asks the processors and us, at the same moment T, for `[T-15 s, T-1.5 s]`.
//! A payment stamped inside that window whose attempt has not finished at T is in one of
//! two states, and only the processor's clock tells which:
//! - already stored by the processor (it stores about `delay` ms after the request
//!   arrives), its answer is on the way back to us: the processors count it, so must we:
//!   wait for the answer;
//! - not stored yet (the delay is still running): the processors do not count it at T, so
//!   neither may we, even if it lands while we wait.
//!
//! The processor's delay is not announced, and it is the delay in force when the attempt
//! *arrived* that counts (a probe sent under a 2 s delay just before the delay drops to
//! 20 ms still takes 2 s, and is stored if the failure was switched off meanwhile, as at
//! second 40 of the official test). So for each in-flight attempt the shard takes the
//! answered attempt to the same processor sent last before it (any answer: a 500 also
//! comes after the delay) and uses its response time as the time this one needs to be
//! stored; with no such neighbour, the first one sent after it, else a moving average of
//! recent successes. (Known limit: right after the delay *rises*, while every attempt sent
//! under the new delay is still unanswered, the neighbour is from the old regime; the
//! official test only raises the delay together with the failure, when nothing is stored.) At T,
//! attempts in the window at least that old (minus a small margin for the way back) are in
//! the first state: [`Shard::summary`] waits for them (bounded) and counts the ones that
//! were recorded. Younger ones are excluded even if they land during the wait: the sum is
//! the records present at T plus the records of the awaited attempts, nothing else. An
//! attempt whose outcome was unknown (timed out) stays in flight until it is resolved, and
//! unresolved payments go to the head of the queue so the wait is short.
//!
//! Scan cost: 9.9 µs for a window over a 10,000-record shard (`cargo bench -p rinha --bench
//! shard_window`, the shared 2-core dev VM, 2026-11-25); a whole contest run is ~16,750
//! records over all shards, so a linear scan is cheaper than any index would be to keep.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::processor::Processor;

/// Identifies one attempt (one `POST /payments` to a processor) within a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(u64);

/// One stored payment.
#[derive(Debug, Clone, Copy)]
struct Record {
    requested_at_us: i64,
    cents: u64,
    processor: Processor,
    attempt: AttemptId,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    requested_at_us: i64,
    processor: Processor,
    sent_at: Instant,
}

/// An inclusive window in µs since the epoch (`None` = unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        self.from_us.is_none_or(|f| t >= f) && self.to_us.is_none_or(|e| t <= e)
    }
}

/// Counts and sums per processor (index: [`Processor::index`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: [u64; 2],
    pub cents: [u128; 2],
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        for i in 0..2 {
            self.requests[i] += other.requests[i];
            self.cents[i] += other.cents[i];
        }
    }

    fn count(&mut self, processor: Processor, cents: u64) {
        self.requests[processor.index()] += 1;
        self.cents[processor.index()] += u128::from(cents);
    }
}

/// How much younger than the response-time estimate an attempt may be and still be
/// awaited: the estimate includes the way back, so the processor stored it a little
/// earlier. Small, because an attempt in this band that is not stored yet gets counted.
const MARGIN: Duration = Duration::from_millis(3);
/// How often a waiting summary looks again at its awaited attempts.
const POLL: Duration = Duration::from_millis(2);
/// Completed attempts remembered per processor for the neighbour rule.
const COMPLETIONS: usize = 2048;

/// One core's shard.
#[derive(Debug, Default)]
pub struct Shard {
    records: RefCell<Vec<Record>>,
    in_flight: RefCell<HashMap<AttemptId, InFlight>>,
    next_attempt: Cell<u64>,
    /// EWMA of successful response times per processor, µs (0 = no sample yet).
    latency_us: [Cell<u64>; 2],
    /// Recent answered attempts per processor: (sent at, response time).
    completions: [RefCell<VecDeque<(Instant, Duration)>>; 2],
}

impl Shard {
    pub fn new() -> Self {
        Self::default()
    }

    /// An attempt stamped `requested_at_us` is about to be sent to `processor`.
    pub fn begin_attempt(&self, requested_at_us: i64, processor: Processor) -> AttemptId {
        let id = AttemptId(self.next_attempt.get());
        self.next_attempt.set(id.0 + 1);
        self.in_flight.borrow_mut().insert(
            id,
            InFlight {
                requested_at_us,
                processor,
                sent_at: Instant::now(),
            },
        );
        id
    }

    /// The attempt is known to have stored nothing.
    pub fn end_attempt(&self, attempt: AttemptId) {
        self.in_flight.borrow_mut().remove(&attempt);
    }

    /// The outcome seam: `processor` holds this payment with this `requestedAt`. One call
    /// per payment, ever.
    pub fn record(
        &self,
        attempt: AttemptId,
        requested_at_us: i64,
        cents: u64,
        processor: Processor,
    ) {
        self.in_flight.borrow_mut().remove(&attempt);
        self.records.borrow_mut().push(Record {
            requested_at_us,
            cents,
            processor,
            attempt,
        });
    }

    /// A successful call to `processor` took `took`.
    pub fn observe_latency(&self, processor: Processor, took: Duration) {
        let cell = &self.latency_us[processor.index()];
        let sample = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let old = cell.get();
        cell.set(if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        });
    }

    /// An attempt sent at `sent` got an answer (any status) after `took`.
    pub fn observe_response(&self, processor: Processor, sent: Instant, took: Duration) {
        let mut c = self.completions[processor.index()].borrow_mut();
        if c.len() == COMPLETIONS {
            c.pop_front();
        }
        c.push_back((sent, took));
    }

    /// How long after `sent` an attempt to `processor` is expected to be stored: the
    /// response time of the answered attempt sent last at or before it (it arrived under the
    /// same delay, whatever changed since), else of the one sent first after it, else the
    /// average of recent successes.
    fn expected_storage(&self, processor: Processor, sent: Instant) -> Duration {
        let c = self.completions[processor.index()].borrow();
        let before = c.iter().filter(|(t, _)| *t <= sent).max_by_key(|(t, _)| *t);
        let after = || c.iter().filter(|(t, _)| *t > sent).min_by_key(|(t, _)| *t);
        before
            .or_else(after)
            .map_or_else(|| self.latency(processor), |(_, took)| *took)
    }

    /// The current response-time estimate of `processor`.
    pub fn latency(&self, processor: Processor) -> Duration {
        Duration::from_micros(self.latency_us[processor.index()].get())
    }

    /// Attempts not finished yet.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Plain sums of the records in `window`.
    pub fn window(&self, window: Window) -> Totals {
        let mut totals = Totals::default();
        for r in self.records.borrow().iter() {
            if window.contains(r.requested_at_us) {
                totals.count(r.processor, r.cents);
            }
        }
        totals
    }

    /// The summary of `window` as the processors see it now (see the module doc): records
    /// present now, plus the in-flight attempts old enough to be stored already, awaited
    /// for at most `bound`.
    pub async fn summary(&self, window: Window, bound: Duration) -> Totals {
        let now = Instant::now();
        let seen = self.records.borrow().len();
        let mut awaited: Vec<AttemptId> = self
            .in_flight
            .borrow()
            .iter()
            .filter(|(_, f)| window.contains(f.requested_at_us))
            .filter(|(_, f)| {
                let stored_after = self
                    .expected_storage(f.processor, f.sent_at)
                    .saturating_sub(MARGIN);
                now.duration_since(f.sent_at) >= stored_after
            })
            .map(|(id, _)| *id)
            .collect();
        let mut totals = self.window(window);
        if awaited.is_empty() {
            return totals;
        }
        let deadline = now + bound;
        let mut pending = awaited.clone();
        loop {
            pending.retain(|id| self.in_flight.borrow().contains_key(id));
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            monoio::time::sleep(POLL).await;
        }
        if !pending.is_empty() {
            tracing::debug!(unresolved = pending.len(), "summary wait bound reached");
        }
        // Records appended since `now`: only those of awaited attempts count.
        awaited.sort_unstable_by_key(|a| a.0);
        for r in self.records.borrow().get(seen..).unwrap_or(&[]) {
            if window.contains(r.requested_at_us)
                && awaited.binary_search_by_key(&r.attempt.0, |a| a.0).is_ok()
            {
                totals.count(r.processor, r.cents);
            }
        }
        totals
    }

    /// Forgets every record (the contest's setup purge). Attempts in flight stay tracked.
    pub fn purge(&self) {
        self.records.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn rt<F: std::future::Future<Output = ()>>(f: F) {
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(f)
    }

    const P: Processor = Processor::Default;

    #[test]
    fn window_sums_are_inclusive() {
        let s = Shard::new();
        for (t, c) in [(1000, 100), (2000, 200), (3000, 300)] {
            let a = s.begin_attempt(t, P);
            s.record(a, t, c, P);
        }
        let a = s.begin_attempt(2000, Processor::Fallback);
        s.record(a, 2000, 50, Processor::Fallback);
        let w = Window {
            from_us: Some(2000),
            to_us: Some(3000),
        };
        assert_eq!(
            s.window(w),
            Totals {
                requests: [2, 1],
                cents: [500, 50]
            }
        );
        assert_eq!(s.window(Window::default()).requests, [3, 1]);
        s.purge();
        assert_eq!(s.window(Window::default()), Totals::default());
    }

    #[test]
    fn old_in_flight_attempts_are_awaited_and_counted() {
        rt(async {
            let s = Rc::new(Shard::new());
            s.observe_latency(P, Duration::from_millis(20));
            let a = s.begin_attempt(5_000, P);
            // Older than the estimate: the processor holds it already.
            monoio::time::sleep(Duration::from_millis(30)).await;
            let s2 = s.clone();
            monoio::spawn(async move {
                monoio::time::sleep(Duration::from_millis(40)).await;
                s2.record(a, 5_000, 700, P);
            });
            let t = s
                .summary(Window::default(), Duration::from_millis(500))
                .await;
            assert_eq!(t.requests[0], 1);
            assert_eq!(t.cents[0], 700);
        });
    }

    #[test]
    fn young_in_flight_attempts_are_not_counted_even_if_they_land() {
        rt(async {
            let s = Rc::new(Shard::new());
            s.observe_latency(P, Duration::from_millis(3000));
            // An old one that must be awaited keeps the summary waiting while the young lands.
            s.observe_latency(Processor::Fallback, Duration::from_millis(1));
            let old = s.begin_attempt(1_000, Processor::Fallback);
            let young = s.begin_attempt(2_000, P);
            monoio::time::sleep(Duration::from_millis(20)).await;
            let s2 = s.clone();
            monoio::spawn(async move {
                monoio::time::sleep(Duration::from_millis(10)).await;
                s2.record(young, 2_000, 100, P);
                monoio::time::sleep(Duration::from_millis(20)).await;
                s2.record(old, 1_000, 10, Processor::Fallback);
            });
            let t = s
                .summary(Window::default(), Duration::from_millis(500))
                .await;
            assert_eq!(
                t,
                Totals {
                    requests: [0, 1],
                    cents: [0, 10]
                }
            );
            // Asked again after it landed, it counts.
            assert_eq!(
                s.summary(Window::default(), Duration::ZERO).await.requests,
                [1, 1]
            );
        });
    }

    #[test]
    fn the_delay_in_force_when_sent_decides_not_the_latest_one() {
        rt(async {
            let s = Rc::new(Shard::new());
            let t0 = Instant::now();
            // Sent under a 2 s delay (its neighbour answered after 2 s) ...
            s.observe_response(P, t0, Duration::from_secs(2));
            monoio::time::sleep(Duration::from_millis(1)).await;
            let slow = s.begin_attempt(1_000, P);
            monoio::time::sleep(Duration::from_millis(30)).await;
            // ... then the delay dropped: later attempts answer fast.
            for _ in 0..10 {
                s.observe_latency(P, Duration::from_millis(5));
                s.observe_response(P, Instant::now(), Duration::from_millis(5));
            }
            let s2 = s.clone();
            monoio::spawn(async move {
                monoio::time::sleep(Duration::from_millis(10)).await;
                s2.record(slow, 1_000, 100, P);
            });
            // 30 ms old, needs 2 s: not stored at the processor yet, not counted.
            let t = s
                .summary(Window::default(), Duration::from_millis(200))
                .await;
            assert_eq!(t.requests, [0, 0]);
        });
    }

    #[test]
    fn the_wait_is_bounded_and_unresolved_attempts_are_left_out() {
        rt(async {
            let s = Shard::new();
            let _a = s.begin_attempt(1_000, P);
            let t0 = Instant::now();
            let t = s
                .summary(Window::default(), Duration::from_millis(50))
                .await;
            assert!(t0.elapsed() < Duration::from_millis(200));
            assert_eq!(t, Totals::default());
            assert_eq!(s.in_flight_len(), 1);
        });
    }

    #[test]
    fn attempts_outside_the_window_are_not_awaited() {
        rt(async {
            let s = Shard::new();
            let _a = s.begin_attempt(1_000, P);
            let t0 = Instant::now();
            let w = Window {
                from_us: Some(2_000),
                to_us: Some(3_000),
            };
            s.summary(w, Duration::from_millis(300)).await;
            assert!(t0.elapsed() < Duration::from_millis(100));
        });
    }
}
