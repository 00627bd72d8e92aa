//! The sums of a shard's records (the payments not folded yet) by `requestedAt`, so that a
//! summary adds them up without a pass over every record.
//!
//! Each record counts in its stamp's bucket and in its second's, both kept in order. A window
//! costs the seconds it spans plus the stamps of the (at most two) seconds it cuts: tens and
//! hundreds of entries at the contest's rates, where a pass went over every record of the last
//! [`super::SETTLED_HORIZON`] (~20,000 a core, a megabyte read per summary). A window open on
//! both sides costs nothing: the running total of everything.
//!
//! The as-of rule is the shard's: what this holds is every record, whenever it was made.

use std::collections::BTreeMap;

use crate::summary::Window;

use super::folded::Bucket;

const SECOND_US: i64 = 1_000_000;

/// Sums of records by stamp and by second.
#[derive(Debug, Default)]
pub struct Live {
    stamps: BTreeMap<i64, Bucket>,
    seconds: BTreeMap<i64, Bucket>,
    all: Bucket,
}

impl Live {
    /// Counts the payments of `bucket` (a record's: [`Bucket::of`]), stamped `at_us`.
    pub fn add(&mut self, at_us: i64, bucket: &Bucket) {
        self.stamps.entry(at_us).or_default().add(bucket);
        self.seconds.entry(second(at_us)).or_default().add(bucket);
        self.all.add(bucket);
    }

    /// Takes back what [`Live::add`] counted (the record was folded).
    pub fn remove(&mut self, at_us: i64, bucket: &Bucket) {
        take(&mut self.stamps, at_us, bucket);
        take(&mut self.seconds, second(at_us), bucket);
        self.all.sub(bucket);
    }

    /// The records stamped within `window`.
    pub fn window(&self, window: Window) -> Bucket {
        let (from, to) = match (window.from_us, window.to_us) {
            (None, None) => return self.all,
            (from, to) => (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)),
        };
        let mut sum = Bucket::default();
        if from > to {
            return sum;
        }
        let (first, last) = (second(from), second(to));
        let mut stamps = |lo: i64, hi: i64| {
            for b in self.stamps.range(lo..=hi).map(|(_, b)| b) {
                sum.add(b);
            }
        };
        if first == last {
            stamps(from, to);
            return sum;
        }
        // The cut seconds by stamp, the whole ones between by their sums.
        stamps(from, (first + 1) * SECOND_US - 1);
        stamps(last * SECOND_US, to);
        for b in self.seconds.range(first + 1..last).map(|(_, b)| b) {
            sum.add(b);
        }
        sum
    }

    /// Stamps and seconds held.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.stamps.len(), self.seconds.len())
    }
}

/// The second `at_us` falls in (floor, also before 1970).
fn second(at_us: i64) -> i64 {
    at_us.div_euclid(SECOND_US)
}

/// Subtracts `one` from the bucket at `key`, dropping the bucket once it counts nothing.
fn take(map: &mut BTreeMap<i64, Bucket>, key: i64, one: &Bucket) {
    if let Some(b) = map.get_mut(&key) {
        b.sub(one);
        if b.requests == [0, 0] {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::Processor;
    use crate::store::tests_support::{every_window, plain_sum};
    use crate::summary::Totals;

    /// Every window, with bounds on, inside and between seconds, against a plain sum, as
    /// records come and go.
    #[test]
    fn every_window_is_the_plain_sum_of_its_records() {
        let mut live = Live::default();
        let mut held: Vec<(i64, Processor, u64)> = Vec::new();
        let stamp = |n: i64| (n * 7919 % 5_000 - 1_000) * 1_000; // -1 s .. 4 s, unordered
        for n in 0..3_000i64 {
            let p = if n % 3 == 0 {
                Processor::Fallback
            } else {
                Processor::Default
            };
            live.add(stamp(n), &Bucket::of(p, n as u64 + 1));
            held.push((stamp(n), p, n as u64 + 1));
            if n % 4 == 3 {
                let (at, p, c) = held.remove((n as usize * 31) % held.len());
                live.remove(at, &Bucket::of(p, c));
            }
        }
        let bounds = [
            None,
            Some(i64::MIN),
            Some(-1_000_001),
            Some(-1),
            Some(0),
            Some(999_999),
            Some(1_000_000),
            Some(1_500_000),
            Some(3_999_000),
            Some(i64::MAX),
        ];
        for w in every_window(&bounds) {
            let mut got = Totals::default();
            live.window(w).add_to(&mut got);
            assert_eq!(got, plain_sum(&held, w), "{w:?}");
        }
        // Emptied, it holds nothing at all.
        for (at, p, c) in held.drain(..) {
            live.remove(at, &Bucket::of(p, c));
        }
        assert_eq!(live.len(), (0, 0));
        assert_eq!(live.window(Window::default()), Bucket::default());
    }
}
