//! How fast this instance lets public summaries through (`SUMMARY_RATE`): a storm of them must
//! not take the CPUs the payments' intake needs (issue 24, item 10).
//!
//! Sharing a pass ([`super::aggregator`]) makes a storm's scans cheap, but each summary still
//! costs its HTTP round trip through the lb and a core, and its trip to the aggregator and back:
//! ~22 µs of CPU, so a closed loop of 200 clients asking again at once (50,000 a second) takes
//! more than a CPU of two. Summaries past the rate wait for their turn here, on the aggregator's
//! thread, where waiting costs nothing; a closed loop then asks no faster than the rate.
//!
//! The turns are a generic cell rate algorithm: each summary reserves the next slot of
//! `1 / rate`, the first [`burst`] of a quiet spell go at once, and turns are handed out in the
//! order asked. An answer depends only on the window and the moment it was asked (the as-of
//! rule), never on when its pass runs, so waiting changes no count. No summary waits more
//! than [`MAX_WAIT`]: one whose turn would come later goes then, without a turn, so that its
//! wait and its pass fit in a client's timeout (the contest's: 1.5 s). A storm of `n` clients
//! in a closed loop then asks at most `rate + 2n` a second; none is refused (a refused
//! summary fails the contest's check as a wrong one would).
//!
//! Internal summaries (a peer's part of its own public one) are not paced here: the peer paced
//! the public one already, and a pace here would only make the peer's call time out.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The longest a summary waits for its turn; one that would wait longer goes after this long
/// without one.
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// How many summaries a quiet instance answers at once before the rate applies: a tenth of a
/// second's worth, at least one.
pub fn burst(rate: u32) -> u32 {
    (rate / 10).max(1)
}

/// The turns of public summaries at `rate` a second.
#[derive(Debug)]
pub struct Pace {
    /// The time between two turns at the rate.
    interval: Duration,
    /// How far ahead of a turn's slot it may start: `burst - 1` intervals.
    tolerance: Duration,
    /// The slot the next summary reserves (its theoretical arrival time).
    next: Cell<Instant>,
}

impl Pace {
    /// `rate` summaries a second; `None` for 0, unbounded.
    pub fn new(rate: u32) -> Option<Pace> {
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / rate;
        Some(Pace {
            interval,
            tolerance: interval * (burst(rate) - 1),
            next: Cell::new(Instant::now()),
        })
    }

    /// When a summary asked at `now` may start: its turn (`now` itself, or later), reserved;
    /// or, when that is more than [`MAX_WAIT`] away, `now + MAX_WAIT`, reserving nothing.
    pub fn turn(&self, now: Instant) -> Instant {
        let slot = self.next.get().max(now);
        let start = slot.checked_sub(self.tolerance).unwrap_or(now).max(now);
        if start > now + MAX_WAIT {
            return now + MAX_WAIT;
        }
        self.next.set(slot + self.interval);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(pace: &Pace, now: Instant, n: usize) -> Vec<Duration> {
        (0..n).map(|_| pace.turn(now) - now).collect()
    }

    #[test]
    fn zero_is_unbounded() {
        assert!(Pace::new(0).is_none());
    }

    #[test]
    fn a_burst_goes_at_once_then_one_per_interval_in_order() {
        // 100 a second: 10 ms apart, a burst of 10.
        let pace = Pace::new(100).unwrap();
        let now = Instant::now();
        let got = waits(&pace, now, 13);
        assert!(got[..10].iter().all(|w| w.is_zero()), "{got:?}");
        assert_eq!(
            got[10..],
            [
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_millis(30),
            ]
        );
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_and_no_more() {
        let pace = Pace::new(100).unwrap();
        let start = Instant::now();
        waits(&pace, start, 40);
        // The 40 reserved turns up to start + 300 ms; a second after, a burst again, not 100.
        let later = start + Duration::from_secs(1);
        let got = waits(&pace, later, 11);
        assert!(got[..10].iter().all(|w| w.is_zero()), "{got:?}");
        assert_eq!(got[10], Duration::from_millis(10));
    }

    #[test]
    fn past_the_longest_wait_a_summary_goes_then_without_a_turn() {
        // 10 a second: 100 ms apart, a burst of 1; turns at 0, 100, ..., 500 ms fit.
        let pace = Pace::new(10).unwrap();
        let now = Instant::now();
        let got = waits(&pace, now, 8);
        let fit: Vec<_> = (0..6).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(got[..6], fit[..]);
        assert_eq!(got[6..], [MAX_WAIT, MAX_WAIT]);
        // Those reserved nothing: once the first slot has passed, the next turn is the one
        // after the last reserved.
        let then = now + Duration::from_millis(100);
        assert_eq!(pace.turn(then), now + Duration::from_millis(600));
    }

    #[test]
    fn the_burst_is_a_tenth_of_the_rate_and_at_least_one() {
        assert_eq!(burst(1000), 100);
        assert_eq!(burst(5), 1);
    }
}
