//! One core's shard of the store: the append-only list of payments the processors accepted
//! (requestedAt in µs, cents, processor), the attempts still in flight, and the window sums
//! the summary aggregator asks for. Owned by its runtime: no locks.
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
//! # As of when
//! "At T" is the moment the summary request reached us ([`AsOf`], read when the core parsed
//! it and passed on to the shards and, as wall-clock µs, to the peers), not the moment a
//! shard gets to it: behind the aggregator, a peer, or a core busy draining a backlog (second 40
//! of the official test) that can be milliseconds later, and a payment the processor stored
//! in between would be counted by us but not by the processors, asked at T. So every record
//! remembers when its attempt was sent and when it was recorded; a record made after T
//! counts only if its attempt, in flight at T, was old enough to be stored by then.
//!
//! # Stamped when it will be stored
//! The `requestedAt` a sender stamps is not the moment it sends but the moment the processor
//! is expected to store the payment: now plus the response time of the last answered attempt
//! to that processor ([`Shard::stamp_us`]). With a short delay that is a millisecond or two
//! later; with a long one it takes the ambiguity above out of the checker's windows. At the
//! official second 40, probes sent under the 2 s delay are stored by the processor from
//! 40.0 s on, just as the check at 40 s asks for `[25 s, 38.5 s]`: stamped at their sending,
//! those within a few milliseconds of the check fall inside the window, and whether the
//! processors stored one before their summary ran is a matter of microseconds neither side
//! can see (seen: 1 inconsistency in some runs, "backend 1 processors 0"). Stamped at their
//! storage, they fall after 40 s, outside the window, on both sides. A payment in flight at
//! T whose stamp is inside `[T-15 s, T-1.5 s]` was expected to be stored 1.5 s before T: the
//! estimate would have to be 1.5 s wrong for the two sides to disagree.
//!
//! Scan cost: 9.9 µs for a window over a 10,000-record shard (`cargo bench -p rinha --bench
//! shard_window`, the shared 2-core dev VM, 2026-11-25); a whole contest run is ~16,750
//! records over all shards, so a linear scan is cheaper than any index would be to keep.
//! A stamp ([`Shard::stamp_us`]) reads the answer sent last, kept aside: 24 ns, where
//! finding it among the 2,048 remembered answers took 1.46 µs per attempt (same bench,
//! `-- stamp`, 2026-11-26).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::AcceptedIds;
use crate::processor::Processor;
use crate::summary::{AsOf, Totals, Window};

/// Identifies one attempt (one `POST /payments` to a processor) within a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(u64);

/// One stored payment.
#[derive(Debug, Clone, Copy)]
struct Record {
    requested_at_us: i64,
    cents: u64,
    processor: Processor,
    /// When the attempt the processor kept was sent, and when we learned of it.
    sent_at: Instant,
    recorded_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    requested_at_us: i64,
    processor: Processor,
    sent_at: Instant,
}

/// How much younger than the response-time estimate an attempt may be and still be
/// awaited: the estimate includes the way back, so the processor stored it a little
/// earlier. Small, because an attempt in this band that is not stored yet gets counted.
const MARGIN: Duration = Duration::from_millis(3);
/// How often a waiting summary looks again at its awaited attempts.
const POLL: Duration = Duration::from_millis(2);
/// Completed attempts remembered per processor for the neighbour rule.
const COMPLETIONS: usize = 2048;

/// Ids reserved in each core's set up front, so a contest run never waits for it to grow: the
/// final's ~90,600 payments over two instances of one core each is ~45,000 per core (the map
/// rounds this up to 57,344 before its first growth; 1.5 MiB, resident as it fills).
const IDS_RESERVED: usize = 1 << 15;

/// One core's shard.
#[derive(Debug, Default)]
pub struct Shard {
    /// The correlation ids intake accepted on this core since the last purge.
    pub ids: AcceptedIds,
    records: RefCell<Vec<Record>>,
    in_flight: RefCell<HashMap<AttemptId, InFlight>>,
    next_attempt: Cell<u64>,
    /// EWMA of successful response times per processor, µs (0 = no sample yet).
    latency_us: [Cell<u64>; 2],
    /// Recent answered attempts per processor: (sent at, response time).
    completions: [RefCell<VecDeque<(Instant, Duration)>>; 2],
    /// Of those, the one sent last, per processor: what every stamp asks for, kept so that
    /// a stamp does not scan `completions`.
    last_sent_answer: [Cell<Option<(Instant, Duration)>>; 2],
}

impl Shard {
    pub fn new() -> Self {
        Self {
            ids: AcceptedIds::with_capacity(IDS_RESERVED),
            ..Self::default()
        }
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
        let recorded_at = Instant::now();
        let sent_at = self
            .in_flight
            .borrow_mut()
            .remove(&attempt)
            .map_or(recorded_at, |f| f.sent_at);
        self.records.borrow_mut().push(Record {
            requested_at_us,
            cents,
            processor,
            sent_at,
            recorded_at,
        });
    }

    /// A payment `processor` stored before this process started (replayed from the journal).
    /// When it was recorded is not on file: it counts as recorded at its `requestedAt`, the
    /// moment the processor was expected to store it, so a summary taken at a moment before
    /// the restart (a peer's, which waited through it) counts it as the processors would.
    pub fn restore(&self, requested_at_us: i64, cents: u64, processor: Processor) {
        let at = AsOf::from_wall_us(requested_at_us).0;
        self.records.borrow_mut().push(Record {
            requested_at_us,
            cents,
            processor,
            sent_at: at,
            recorded_at: at,
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
        let last = &self.last_sent_answer[processor.index()];
        if last.get().is_none_or(|(t, _)| sent >= t) {
            last.set(Some((sent, took)));
        }
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

    /// The `requestedAt` (µs, whole milliseconds) for an attempt to `processor` sent now:
    /// when the processor is expected to store it (see the module doc).
    pub fn stamp_us(&self, processor: Processor) -> i64 {
        let ahead = self.response_estimate(processor);
        crate::time::now_ms_as_us() + ahead.as_millis().min(i64::MAX as u128 / 1000) as i64 * 1000
    }

    /// How long after now an attempt to `processor` sent now is expected to be stored:
    /// `expected_storage(processor, now)`, where every answer was sent before now, so the
    /// neighbour is the answer sent last.
    pub fn response_estimate(&self, processor: Processor) -> Duration {
        self.last_sent_answer[processor.index()]
            .get()
            .map_or_else(|| self.latency(processor), |(_, took)| took)
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

    /// The summary of `window` as the processors saw it at `as_of` (see the module doc):
    /// the records made by then, plus the attempts in flight then that were old enough to be
    /// stored already, awaited for at most `bound` if they are still in flight.
    pub async fn summary(&self, window: Window, as_of: AsOf, bound: Duration) -> Totals {
        let stored_by_then = |p: Processor, sent: Instant| {
            as_of.0.saturating_duration_since(sent)
                >= self.expected_storage(p, sent).saturating_sub(MARGIN)
        };
        let mut pending: Vec<AttemptId> = self
            .in_flight
            .borrow()
            .iter()
            .filter(|(_, f)| f.sent_at <= as_of.0 && window.contains(f.requested_at_us))
            .filter(|(_, f)| stored_by_then(f.processor, f.sent_at))
            .map(|(id, _)| *id)
            .collect();
        let deadline = Instant::now() + bound;
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
        let mut totals = Totals::default();
        for r in self.records.borrow().iter() {
            if window.contains(r.requested_at_us)
                && (r.recorded_at <= as_of.0
                    || (r.sent_at <= as_of.0 && stored_by_then(r.processor, r.sent_at)))
            {
                totals.count(r.processor, r.cents);
            }
        }
        totals
    }

    /// Forgets every record, accepted id and attempt in flight (the contest's setup purge).
    pub fn purge(&self) {
        self.records.borrow_mut().clear();
        self.ids.clear();
        // Their outcomes are not recorded (queue.rs: a purge forgets what a sender holds), so
        // no summary may wait for them.
        self.in_flight.borrow_mut().clear();
    }
}

/// `stamp_us` (whole milliseconds) moved forward to the first millisecond of core `lane` of
/// `lanes`: one whose number is `lane` modulo `lanes`. Two cores of one instance then never
/// stamp two attempts alike, so when copies of one correlationId reached both, a lookup tells
/// whose payment the processor holds (worker.rs). At most `lanes - 1` ms later than the
/// estimate: nothing next to the estimate's own error; with one core, unchanged.
pub fn on_lane(stamp_us: i64, lane: usize, lanes: usize) -> i64 {
    let lanes = lanes.max(1) as i64;
    let ms = stamp_us.div_euclid(1000);
    let ahead = (lane as i64 - ms).rem_euclid(lanes);
    (ms + ahead) * 1000
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
    fn each_core_stamps_its_own_milliseconds() {
        let t = 1_752_582_896_789_000;
        assert_eq!(on_lane(t, 0, 1), t);
        for lanes in 1..5 {
            let stamps: Vec<i64> = (0..lanes).map(|lane| on_lane(t, lane, lanes)).collect();
            for (lane, s) in stamps.iter().enumerate() {
                assert_eq!((s / 1000).rem_euclid(lanes as i64), lane as i64);
                assert!(*s >= t && *s < t + lanes as i64 * 1000, "{lanes} {lane}");
                assert_eq!(s % 1000, 0);
            }
            let mut unique = stamps.clone();
            unique.dedup();
            assert_eq!(unique.len(), lanes);
        }
    }

    #[test]
    fn attempts_are_stamped_when_the_processor_should_store_them() {
        let s = Shard::new();
        let stamp = |p: Processor| {
            let before = crate::time::now_ms_as_us();
            let at = s.stamp_us(p);
            (at - before, crate::time::now_ms_as_us() - before)
        };
        // Nothing answered yet (and no latency sample): now.
        let (ahead, clock) = stamp(P);
        assert!((0..=clock).contains(&ahead), "{ahead} {clock}");
        // The last answer took 2 s (a 500 counts as much as a 200: it came after the delay).
        s.observe_response(P, Instant::now(), Duration::from_millis(2000));
        let (ahead, clock) = stamp(P);
        assert!((2_000_000..=2_000_000 + clock).contains(&ahead), "{ahead}");
        assert_eq!(
            s.stamp_us(P) % 1000,
            0,
            "whole milliseconds, as the processors keep them"
        );
        // The delay fell: the next answer rules.
        s.observe_response(P, Instant::now(), Duration::from_millis(20));
        let (ahead, clock) = stamp(P);
        assert!((20_000..=20_000 + clock).contains(&ahead), "{ahead}");
        // Another processor's answers do not count.
        let (ahead, clock) = stamp(Processor::Fallback);
        assert!((0..=clock).contains(&ahead), "{ahead}");
    }

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
                .summary(Window::default(), AsOf::now(), Duration::from_millis(500))
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
                .summary(Window::default(), AsOf::now(), Duration::from_millis(500))
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
                s.summary(Window::default(), AsOf::now(), Duration::ZERO)
                    .await
                    .requests,
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
                .summary(Window::default(), AsOf::now(), Duration::from_millis(200))
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
                .summary(Window::default(), AsOf::now(), Duration::from_millis(50))
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
            s.summary(w, AsOf::now(), Duration::from_millis(300)).await;
            assert!(t0.elapsed() < Duration::from_millis(100));
        });
    }
    #[test]
    fn records_made_after_the_moment_asked_count_only_if_stored_by_then() {
        rt(async {
            let s = Shard::new();
            // The processor answers in 50 ms: an attempt is stored ~50 ms after it was sent.
            s.observe_response(P, Instant::now(), Duration::from_millis(50));
            let old = s.begin_attempt(1_000, P);
            monoio::time::sleep(Duration::from_millis(60)).await;
            let young = s.begin_attempt(2_000, P);
            // Asked now; both answers come in only afterwards (a busy core, a slow aggregator).
            let as_of = AsOf::now();
            monoio::time::sleep(Duration::from_millis(5)).await;
            s.record(old, 1_000, 100, P);
            s.record(young, 2_000, 200, P);
            // The old one was stored when we were asked, the young one was not.
            let t = s.summary(Window::default(), as_of, Duration::ZERO).await;
            assert_eq!(t.requests, [1, 0]);
            assert_eq!(t.cents, [100, 0]);
            // Asked after both landed, both count.
            let t = s
                .summary(Window::default(), AsOf::now(), Duration::ZERO)
                .await;
            assert_eq!(t.requests, [2, 0]);
        });
    }

    #[test]
    fn restored_records_count_from_their_requested_at() {
        rt(async {
            let s = Shard::new();
            let now = crate::time::now_us();
            let as_of = AsOf::from_wall_us(now - 1_000_000);
            // Replayed after the moment asked: stored before it counts, after it does not.
            s.restore(now - 2_000_000, 100, P);
            s.restore(now - 500_000, 200, P);
            let t = s.summary(Window::default(), as_of, Duration::ZERO).await;
            assert_eq!((t.requests, t.cents), ([1, 0], [100, 0]));
            let t = s
                .summary(Window::default(), AsOf::now(), Duration::ZERO)
                .await;
            assert_eq!((t.requests, t.cents), ([2, 0], [300, 0]));
        });
    }
}
