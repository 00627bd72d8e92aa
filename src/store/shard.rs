//! One core's shard of the store: the payments the processors accepted, the attempts still
//! in flight, and the window sums the summary aggregator asks for, by the in-flight and
//! as-of rules of the module doc of [`crate::store`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::AcceptedIds;
use crate::processor::Processor;
use crate::summary::{AsOf, Totals, Window};

use super::folded::{Bucket, Folded};
use super::live::Live;
use super::timing::Timing;

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
/// Ids reserved in each core's set up front, so that a contest run's ids fit its first map: the
/// final's ~90,600 payments over two instances of one core each is ~45,000 per core (the map
/// rounds this up to 57,344 before a second one is needed; 1.5 MiB, resident as it fills).
const IDS_RESERVED: usize = 1 << 15;

/// Records [`Shard::fold`] copies at most when it gives memory back (~2 MB, ~0.2 ms).
const SHRINK_MAX: usize = 40_000;

/// One core's shard.
#[derive(Debug, Default)]
pub struct Shard {
    /// The correlation ids intake accepted on this core since the last purge.
    pub ids: AcceptedIds,
    /// In the order they were recorded (replayed ones first).
    records: RefCell<VecDeque<Record>>,
    /// The records' sums by `requestedAt`, kept with them.
    live: RefCell<Live>,
    /// How many records at the front may be out of order in `recorded_at` (replayed ones, and
    /// whatever came before one restored later), and the latest of theirs; `None` when none
    /// are: every record after them was recorded in order, by [`Shard::record`].
    unordered: Cell<Option<(usize, Instant)>>,
    /// Settled payments older than the horizon ([`Shard::fold`]).
    folded: RefCell<Folded>,
    in_flight: RefCell<HashMap<AttemptId, InFlight>>,
    next_attempt: Cell<u64>,
    /// The response-time estimates of both processors, from the answers this core got.
    pub timing: Timing,
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

    /// The attempt's request is about to be written (its stamp and, with a journal, its
    /// record on file came first): returns the moment, which is when the attempt counts as
    /// sent. The sender observes the answer's response time from this same moment, so that
    /// the attempt's own answer is the estimate the as-of rule finds for it
    /// ([`Timing::expected_storage`]: the answer sent last at or before it).
    pub fn sending(&self, attempt: AttemptId) -> Instant {
        let now = Instant::now();
        if let Some(f) = self.in_flight.borrow_mut().get_mut(&attempt) {
            f.sent_at = now;
        }
        now
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
        self.live
            .borrow_mut()
            .add(requested_at_us, &Bucket::of(processor, cents));
        self.records.borrow_mut().push_back(Record {
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
        let mut records = self.records.borrow_mut();
        // Out of order: with the replayed records, and with any recorded before this one.
        let before = [
            records.back().map(|r| r.recorded_at),
            self.latest_unordered(),
        ];
        let latest = before.into_iter().flatten().fold(at, Instant::max);
        self.unordered.set(Some((records.len() + 1, latest)));
        self.live
            .borrow_mut()
            .add(requested_at_us, &Bucket::of(processor, cents));
        records.push_back(Record {
            requested_at_us,
            cents,
            processor,
            sent_at: at,
            recorded_at: at,
        });
    }

    /// Payments folded before this process started (replayed from the journal), taken whole.
    pub fn restore_folded(&self, folded: Folded) {
        let mut mine = self.folded.borrow_mut();
        if mine.is_empty() {
            *mine = folded;
        } else {
            folded.for_each(|at_us, b| mine.add(at_us, b));
        }
    }

    /// Folds the records made before `recorded_before`, oldest first, into their buckets,
    /// then seals the buckets before `seal_before_us`: at most `max` records and buckets in
    /// all; returns how many (`max`: more may be left). The caller passes `now -
    /// SETTLED_HORIZON` and the wall clock's `now - SETTLED_HORIZON - SEAL_LAG`, and keeps
    /// `max` small enough that one call never holds the core for long, whatever the backlog
    /// (docs/reliability.md, "Memory").
    pub fn fold(&self, recorded_before: Instant, seal_before_us: i64, max: usize) -> usize {
        let mut records = self.records.borrow_mut();
        let mut folded = self.folded.borrow_mut();
        let mut live = self.live.borrow_mut();
        let mut n = 0;
        while n < max {
            match records.front() {
                Some(r) if r.recorded_at < recorded_before => {
                    let one = Bucket::of(r.processor, r.cents);
                    folded.add(r.requested_at_us, &one);
                    live.remove(r.requested_at_us, &one);
                    records.pop_front();
                    n += 1;
                }
                _ => break,
            }
        }
        if let Some((count, latest)) = self.unordered.get() {
            self.unordered.set(
                count
                    .checked_sub(n)
                    .filter(|&left| left > 0)
                    .map(|left| (left, latest)),
            );
        }
        if records.capacity() > 4096
            && records.len() < records.capacity() / 4
            && records.len() <= SHRINK_MAX
        {
            // Give back what a burst, or a replay, grew it to (copying what is left: bounded).
            let keep = records.len() * 2;
            records.shrink_to(keep);
        }
        if n < max {
            // Caught up: what is left was recorded later, so (but for a payment recorded
            // long after its stamp) it is stamped later too. Sealing in the middle of a
            // replay's backlog would leave its out-of-order stamps open.
            n += folded.seal(seal_before_us, max - n);
        }
        n
    }

    /// Payments held as records, and buckets of folded ones.
    pub fn held(&self) -> (usize, usize) {
        (self.records.borrow().len(), self.folded.borrow().len())
    }

    /// Every folded bucket in `requestedAt` order.
    pub fn for_each_folded(&self, f: impl FnMut(i64, &Bucket)) {
        self.folded.borrow().for_each(f);
    }

    /// Attempts not finished yet.
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Plain sums of the records in `window`.
    pub fn window(&self, window: Window) -> Totals {
        let mut totals = self.folded.borrow().window(window);
        self.live.borrow().window(window).add_to(&mut totals);
        totals
    }

    /// The summary of `window` as the processors saw it at `as_of` (see the module doc):
    /// the records made by then, plus the attempts in flight then that were old enough to be
    /// stored already, awaited for at most `bound` if they are still in flight.
    pub async fn summary(&self, window: Window, as_of: AsOf, bound: Duration) -> Totals {
        let mut pending: Vec<AttemptId> = self
            .in_flight
            .borrow()
            .iter()
            .filter(|(_, f)| f.sent_at <= as_of.0 && window.contains(f.requested_at_us))
            .filter(|(_, f)| self.stored_by(f.processor, f.sent_at, as_of))
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
        self.counted(window, as_of)
    }

    /// Whether the processor had stored an attempt `sent` to `processor` by `as_of`, by this
    /// core's estimate of the delay then.
    fn stored_by(&self, processor: Processor, sent: Instant, as_of: AsOf) -> bool {
        as_of.0.saturating_duration_since(sent)
            >= self
                .timing
                .expected_storage(processor, sent)
                .saturating_sub(MARGIN)
    }

    /// Whether record `r` counts in the summary of `window` as of `as_of`: recorded by then,
    /// or sent long enough before then to have been stored.
    fn counts(&self, r: &Record, window: Window, as_of: AsOf) -> bool {
        window.contains(r.requested_at_us)
            && (r.recorded_at <= as_of.0
                || (r.sent_at <= as_of.0 && self.stored_by(r.processor, r.sent_at, as_of)))
    }

    /// The payments that count in `window` as of `as_of`, the attempts awaited: the folded
    /// ones (recorded a horizon ago, before any moment asked about) and the records that
    /// [`Shard::counts`].
    fn counted(&self, window: Window, as_of: AsOf) -> Totals {
        let mut totals = self.folded.borrow().window(window);
        let records = self.records.borrow();
        if self.latest_unordered().is_some_and(|l| l > as_of.0) {
            // A moment before a replayed record (a peer's, from before our restart): the
            // records recorded by then are not a prefix, so every one is looked at.
            self.add_counted_records(&mut totals, window, as_of);
            return totals;
        }
        // Those recorded by `as_of` are all but a tail recorded later (in order), and count
        // if in the window: the sums hold them. Of the tail, those stored by then count too.
        let mut sum = self.live.borrow().window(window);
        for r in records.iter().rev().take_while(|r| r.recorded_at > as_of.0) {
            if window.contains(r.requested_at_us) && !self.counts(r, window, as_of) {
                sum.sub(&Bucket::of(r.processor, r.cents));
            }
        }
        sum.add_to(&mut totals);
        totals
    }

    /// The latest `recorded_at` of the records that may be out of order, if any are held.
    fn latest_unordered(&self) -> Option<Instant> {
        self.unordered.get().map(|(_, latest)| latest)
    }

    /// Adds every record that [`Shard::counts`] to `totals`, one by one.
    fn add_counted_records(&self, totals: &mut Totals, window: Window, as_of: AsOf) {
        for r in self.records.borrow().iter() {
            if self.counts(r, window, as_of) {
                totals.count(r.processor, r.cents);
            }
        }
    }

    /// Forgets every record, accepted id and attempt in flight (the contest's setup purge).
    pub fn purge(&self) {
        *self.records.borrow_mut() = VecDeque::new();
        *self.live.borrow_mut() = Live::default();
        self.unordered.set(None);
        self.folded.borrow_mut().clear();
        self.ids.clear();
        // Their outcomes are not recorded (queue.rs: a purge forgets what a sender holds), so
        // no summary may wait for them.
        self.in_flight.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests_support::every_window;
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

    /// The summary from the sums and a pass over the young tail equals a pass over every
    /// record, for every moment and window: moments between records, before replayed ones,
    /// with attempts sent before a moment and recorded after it, records replayed after live
    /// ones, and records folded away.
    #[test]
    fn summaries_from_the_sums_equal_a_pass_over_every_record() {
        let s = Shard::new();
        s.timing.observe_latency(P, Duration::from_millis(2));
        s.timing
            .observe_latency(Processor::Fallback, Duration::from_millis(40));
        let now = crate::time::now_ms_as_us();
        let processor = |n: i64| if n % 3 == 0 { Processor::Fallback } else { P };
        // Replayed, out of order, from 3 s ago on.
        for n in 0..150i64 {
            let at = now - 3_000_000 + (n * 37 % 150) * 1_000;
            s.restore(at, 100 + n as u64, processor(n));
        }
        let mut moments = vec![
            AsOf::from_wall_us(now - 3_500_000),
            AsOf::from_wall_us(now - 2_900_000),
            AsOf::from_wall_us(now - 2_000_000),
        ];
        let mut open = VecDeque::new();
        for n in 0..600i64 {
            let at = now + (n % 40) * 1_000;
            open.push_back((s.begin_attempt(at, processor(n)), at, n));
            if n % 7 == 0 {
                moments.push(AsOf::now());
            }
            if n % 3 == 2 {
                // Recorded a little after it was sent, some after a moment taken between.
                let (attempt, at, m) = open.pop_front().expect("begun");
                s.record(attempt, at, 1_000 + m as u64, processor(m));
            }
            if n % 50 == 49 {
                std::thread::sleep(Duration::from_millis(3));
            }
            if n == 300 {
                // Replayed after live records: the front of the queue is out of order now.
                s.restore(now - 1_000_000, 7, P);
            }
            if n == 450 {
                // The first records fold away (some replayed, not all).
                let folded = s.fold(Instant::now() + Duration::from_secs(1), i64::MIN, 100);
                assert_eq!(folded, 100);
            }
        }
        for (attempt, at, m) in open {
            s.record(attempt, at, 1_000 + m as u64, processor(m));
        }
        moments.push(AsOf::now());
        let bounds = [
            None,
            Some(now - 2_950_000),
            Some(now - 1_000_000),
            Some(now),
            Some(now + 19_000),
            Some(now + 39_000),
        ];
        let (mut checked, mut differs) = (0, 0);
        for as_of in &moments {
            for w in every_window(&bounds) {
                let mut every = s.folded.borrow().window(w);
                s.add_counted_records(&mut every, w, *as_of);
                assert_eq!(s.counted(w, *as_of), every, "{w:?} as of {as_of:?}");
                checked += 1;
                differs += usize::from(every != s.window(w));
            }
        }
        // The moments were not all after everything: the as-of rule had work to do.
        assert!(differs > checked / 4, "{differs} of {checked}");
    }

    #[test]
    fn old_in_flight_attempts_are_awaited_and_counted() {
        rt(async {
            let s = Rc::new(Shard::new());
            s.timing.observe_latency(P, Duration::from_millis(20));
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
            s.timing.observe_latency(P, Duration::from_millis(3000));
            // An old one that must be awaited keeps the summary waiting while the young lands.
            s.timing
                .observe_latency(Processor::Fallback, Duration::from_millis(1));
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
            s.timing.observe_response(P, t0, Duration::from_secs(2));
            monoio::time::sleep(Duration::from_millis(1)).await;
            let slow = s.begin_attempt(1_000, P);
            monoio::time::sleep(Duration::from_millis(30)).await;
            // ... then the delay dropped: later attempts answer fast.
            for _ in 0..10 {
                s.timing.observe_latency(P, Duration::from_millis(5));
                s.timing
                    .observe_response(P, Instant::now(), Duration::from_millis(5));
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
            s.timing
                .observe_response(P, Instant::now(), Duration::from_millis(50));
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

    /// Right after a delay rose, the answers seen so far are the old delay's; an attempt
    /// answered after the moment asked shows by its own response time that it was stored
    /// after it. That holds only if its answer is observed from the moment it counts as sent
    /// (a journal's commit lies between the stamp and the send).
    #[test]
    fn an_attempt_answered_after_the_moment_asked_is_judged_by_its_own_answer() {
        rt(async {
            let s = Shard::new();
            // Before the rise: answered in 5 ms.
            s.timing
                .observe_response(P, Instant::now(), Duration::from_millis(5));
            let a = s.begin_attempt(1_000, P);
            monoio::time::sleep(Duration::from_millis(3)).await;
            let sent = s.sending(a);
            monoio::time::sleep(Duration::from_millis(50)).await;
            let as_of = AsOf::now();
            // Answered later, under the new delay: the processor stored it ~300 ms after it
            // was sent, well after the moment asked.
            monoio::time::sleep(Duration::from_millis(5)).await;
            s.timing
                .observe_response(P, sent, Duration::from_millis(300));
            s.record(a, 1_000, 100, P);
            let t = s.summary(Window::default(), as_of, Duration::ZERO).await;
            assert_eq!(t.requests, [0, 0], "counted by the old delay's estimate");
            let t = s
                .summary(Window::default(), AsOf::now(), Duration::ZERO)
                .await;
            assert_eq!(t.requests, [1, 0]);
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
