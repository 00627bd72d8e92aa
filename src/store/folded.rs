//! Settled payments older than the horizon, folded: one [`Bucket`] (count and cents per
//! processor) per `requestedAt`, which is one per millisecond a core stamped (stamps are
//! whole milliseconds on the core's own lane), whatever the number of payments in it.
//!
//! A folded payment was recorded [`SETTLED_HORIZON`] before the fold, long before any moment
//! a summary is asked as of (at most the peer's timeout ago), so the as-of rule counts it in
//! every window that holds its `requestedAt`: buckets answer every summary exactly. Sealed
//! buckets keep running totals ([`super::sealed`]), so a window costs two binary searches
//! and a short decode, not a scan.
//! Why and what it costs: docs/reliability.md, "Memory".

use std::collections::BTreeMap;
use std::time::Duration;

use crate::processor::Processor;
use crate::summary::{Totals, Window};

use super::sealed::Sealed;

/// How long a settled payment stays an individual record (its id known for idempotency,
/// its times kept for the as-of rule) before it is folded into its bucket.
pub const SETTLED_HORIZON: Duration = Duration::from_secs(60);
/// How long a folded bucket stays open for payments recorded late (their answer came well
/// after their stamp) before it is sealed into the running totals.
pub const SEAL_LAG: Duration = Duration::from_secs(10);

/// The payments of one `requestedAt`, per processor.
/// `repr(C)`: sealed blocks hold one and are spilled as their bytes (`super::sealed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Bucket {
    pub requests: [u64; 2],
    pub cents: [u64; 2],
}

impl Bucket {
    /// One payment of `cents` stored by `processor`.
    pub fn of(processor: Processor, cents: u64) -> Bucket {
        let mut one = Bucket::default();
        one.count(processor, cents);
        one
    }

    // Wrapping: running totals are differenced, and a difference of wrapped sums is exact
    // whenever the window's own sum fits (cents are dollars times 100: it always does).
    pub fn count(&mut self, processor: Processor, cents: u64) {
        let i = processor.index();
        self.requests[i] = self.requests[i].wrapping_add(1);
        self.cents[i] = self.cents[i].wrapping_add(cents);
    }

    pub fn add(&mut self, other: &Bucket) {
        for i in 0..2 {
            self.requests[i] = self.requests[i].wrapping_add(other.requests[i]);
            self.cents[i] = self.cents[i].wrapping_add(other.cents[i]);
        }
    }

    pub(super) fn sub(&mut self, other: &Bucket) {
        for i in 0..2 {
            self.requests[i] = self.requests[i].wrapping_sub(other.requests[i]);
            self.cents[i] = self.cents[i].wrapping_sub(other.cents[i]);
        }
    }

    /// Adds this bucket's payments to `totals`.
    pub(super) fn add_to(&self, totals: &mut Totals) {
        for i in 0..2 {
            totals.requests[i] += self.requests[i];
            totals.cents[i] += u128::from(self.cents[i]);
        }
    }
}

/// One core's folded payments.
#[derive(Debug, Default, Clone)]
pub struct Folded {
    /// In `requestedAt` order, packed ([`Sealed`]).
    sealed: Sealed,
    /// Buckets not sealed yet (younger than `SEAL_LAG` past the horizon), and buckets not
    /// after the last sealed one (a payment recorded long after its stamp): few.
    open: BTreeMap<i64, Bucket>,
}

impl Folded {
    /// Adds a bucket's payments at `at_us`.
    pub fn add(&mut self, at_us: i64, bucket: &Bucket) {
        self.open.entry(at_us).or_default().add(bucket);
    }

    /// Adds a bucket a replay brings back: sealed at once when it comes after the last sealed
    /// one (a replay hands them out in time order), so a restart leaves no backlog to seal.
    pub fn restore(&mut self, at_us: i64, bucket: &Bucket) {
        match self.sealed.last_at_us() {
            Some(last) if last >= at_us => self.add(at_us, bucket),
            _ => self.sealed.push(at_us, bucket),
        }
    }

    /// Seals at most `max` of the open buckets before `before_us` that come after the last
    /// sealed one, oldest first (older ones stay open); returns how many it sealed (`max`:
    /// more may be left).
    pub fn seal(&mut self, before_us: i64, max: usize) -> usize {
        let from = self
            .sealed
            .last_at_us()
            .map_or(i64::MIN, |l| l.saturating_add(1));
        let mut n = 0;
        while n < max {
            let Some((&at_us, _)) = self.open.range(from..before_us).next() else {
                break;
            };
            if let Some(b) = self.open.remove(&at_us) {
                self.sealed.push(at_us, &b);
            }
            n += 1;
        }
        n
    }

    /// The folded payments in `window`.
    pub fn window(&self, window: Window) -> Totals {
        let mut totals = Totals::default();
        let from = window.from_us.unwrap_or(i64::MIN);
        let to = window.to_us.unwrap_or(i64::MAX);
        if from > to {
            return totals;
        }
        let mut range = self.sealed.upto(to);
        range.sub(&self.sealed.upto(from.saturating_sub(1)));
        range.add_to(&mut totals);
        for b in self.open.range(from..=to).map(|(_, b)| b) {
            b.add_to(&mut totals);
        }
        totals
    }

    /// Every bucket, in `requestedAt` order (the journal's compaction writes them).
    pub fn for_each(&self, mut f: impl FnMut(i64, &Bucket)) {
        let mut open = self.open.iter().peekable();
        self.sealed.for_each(|at, b| {
            while let Some((&o, ob)) = open.next_if(|(&o, _)| o < at) {
                f(o, ob);
            }
            f(at, b);
        });
        for (&o, ob) in open {
            f(o, ob);
        }
    }

    /// Buckets held (sealed and open).
    pub fn len(&self) -> usize {
        self.sealed.len() + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        // A purge gives the memory back, and the spill file's blocks: off the core.
        let sealed = std::mem::take(&mut self.sealed);
        if !sealed.is_empty() {
            crate::helper::off_core(sealed);
        }
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests_support::{every_window, plain_sum};

    /// Every window over sealed and open buckets, against a sum over the payments.
    #[test]
    fn every_window_is_exact() {
        let mut f = Folded::default();
        let mut naive: Vec<(i64, Processor, u64)> = Vec::new();
        for n in 0..200i64 {
            let at = (n * 7 % 50) * 1000;
            let p = if n % 3 == 0 {
                Processor::Fallback
            } else {
                Processor::Default
            };
            f.add(at, &Bucket::of(p, n as u64 + 1));
            naive.push((at, p, n as u64 + 1));
            if n % 40 == 39 {
                f.seal((n / 2) * 1000, usize::MAX);
            }
        }
        assert!(!f.sealed.is_empty() && !f.open.is_empty());
        let bounds = [
            None,
            Some(-1),
            Some(0),
            Some(3_000),
            Some(20_500),
            Some(49_000),
            Some(60_000),
        ];
        for w in every_window(&bounds) {
            assert_eq!(f.window(w), plain_sum(&naive, w), "{w:?}");
        }
        let mut all = Bucket::default();
        let mut last = i64::MIN;
        f.for_each(|at, b| {
            assert!(at >= last);
            last = at;
            all.add(b);
        });
        assert_eq!(all.requests.iter().sum::<u64>(), 200);
    }

    /// A purge gives the spill file back (its blocks freed on a helper thread) and the
    /// store starts empty.
    #[test]
    fn a_purge_closes_the_spill_file() {
        let dir = tempfile::tempdir().unwrap();
        let open_spills = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.starts_with(dir.path()))
                .count()
        };
        let mut f = Folded {
            sealed: Sealed::new(Some(dir.path())),
            open: BTreeMap::new(),
        };
        for n in 0..100_000i64 {
            f.add(n * 1000, &Bucket::of(Processor::Default, 1990));
        }
        f.seal(i64::MAX, usize::MAX);
        assert_eq!(open_spills(), 1, "full pages spilled");
        f.clear();
        assert!(f.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open_spills() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the spill file stayed open"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(f.window(Window::default()), Totals::default());
    }
}
