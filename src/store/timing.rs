//! The response-time estimates of one core, per processor, from the answers its senders
//! got: how long after it was sent an attempt is expected to be stored (what the summary's
//! as-of rule asks), and the `requestedAt` a sender stamps (when the processor should store
//! the payment, on the core's own milliseconds). See the module doc of [`crate::store`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::processor::Processor;

/// Completed attempts remembered per processor for the neighbour rule.
const COMPLETIONS: usize = 2048;

/// The estimates of one core (owned by its shard; no locks).
#[derive(Debug, Default)]
pub struct Timing {
    /// EWMA of successful response times per processor, µs (0 = no sample yet).
    latency_us: [Cell<u64>; 2],
    /// Recent answered attempts per processor: (sent at, response time).
    completions: [RefCell<VecDeque<(Instant, Duration)>>; 2],
    /// Of those, the one sent last, per processor: what every stamp asks for, kept so that
    /// a stamp does not scan `completions`.
    last_sent_answer: [Cell<Option<(Instant, Duration)>>; 2],
    /// Per processor, how long after it was sent the last payment a lookup found stored had
    /// been out (an upper bound of its storage delay when calls end before it answers).
    found_after: [Cell<Duration>; 2],
}

impl Timing {
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

    /// A lookup found stored, `took` after it was sent, an attempt to `processor` whose call
    /// ended unknown.
    pub fn observe_found(&self, processor: Processor, took: Duration) {
        self.found_after[processor.index()].set(took);
    }

    /// The longest storage delay of `processor` its last answer or found lookup shows.
    pub fn storage_seen(&self, processor: Processor) -> Duration {
        self.found_after[processor.index()]
            .get()
            .max(self.response_estimate(processor))
    }

    /// How long after `sent` an attempt to `processor` is expected to be stored: the
    /// response time of the answered attempt sent last at or before it (it arrived under the
    /// same delay, whatever changed since), else of the one sent first after it, else the
    /// average of recent successes.
    pub fn expected_storage(&self, processor: Processor, sent: Instant) -> Duration {
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
}

/// `stamp_us` (whole milliseconds) moved forward to the first millisecond of core `lane` of
/// `lanes`: one whose number is `lane` modulo `lanes`. Two cores of one instance then never
/// stamp two attempts alike, so when copies of one correlationId reached both, a lookup tells
/// whose payment the processor holds (src/senders.rs). At most `lanes - 1` ms later than the
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
        let s = Timing::default();
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
}
