//! The per-core store: each core's [`Shard`] of the payments the processors accepted
//! ([`shard`]), and the response-time estimates of its [`Timing`] ([`timing`]).
//!
//! A summary must count what the processors count at the moment it was asked
//! ([`crate::summary::AsOf`]): a payment in flight then counts if it was old enough to be
//! stored already (it is awaited, bounded), not if it was younger, even if it lands while
//! the summary waits. How long a payment takes to be stored is the response time of the
//! answered attempt sent last at or before it (its own, once it is answered), and a sender stamps `requestedAt` with that moment
//! rather than its own, which keeps payments stored late out of the checker's windows. The
//! reasoning: docs/architecture.md, "The store's as-of rule". A window's records are added
//! up from their sums by `requestedAt` ([`live`]), not one by one. Payments settled longer
//! ago than the horizon are folded into per-millisecond buckets ([`folded`], by the pass of
//! [`fold`]), so the shard does not grow with every payment ever taken.

pub mod fold;
pub mod folded;
pub mod live;
pub mod sealed;
pub mod shard;
pub mod spill;
pub mod timing;

pub use folded::{Bucket, Folded, SEAL_LAG, SETTLED_HORIZON};
pub use shard::{AttemptId, Shard};
pub use timing::{on_lane, Timing};

/// What the store's tests check windows with.
#[cfg(test)]
mod tests_support {
    use crate::processor::Processor;
    use crate::summary::{Totals, Window};

    /// Every window with both bounds among `bounds` (`None`: open on that side).
    pub fn every_window(bounds: &[Option<i64>]) -> impl Iterator<Item = Window> + '_ {
        bounds
            .iter()
            .flat_map(move |&from_us| bounds.iter().map(move |&to_us| Window { from_us, to_us }))
    }

    /// The plain sum of the payments `(requestedAt, processor, cents)` stamped in `window`.
    pub fn plain_sum(payments: &[(i64, Processor, u64)], window: Window) -> Totals {
        let mut sum = Totals::default();
        for &(_, p, c) in payments.iter().filter(|(at, _, _)| window.contains(*at)) {
            sum.count(p, c);
        }
        sum
    }
}
