//! The per-core store: each core's [`Shard`] of the payments the processors accepted
//! ([`shard`]), and the response-time estimates of its [`Timing`] ([`timing`]).
//!
//! A summary must count what the processors count at the moment it was asked
//! ([`crate::summary::AsOf`]): a payment in flight then counts if it was old enough to be
//! stored already (it is awaited, bounded), not if it was younger, even if it lands while
//! the summary waits. How long a payment takes to be stored is the response time of the
//! answered attempt sent last before it, and a sender stamps `requestedAt` with that moment
//! rather than its own, which keeps payments stored late out of the checker's windows. The
//! reasoning, and why a linear scan is enough: docs/architecture.md, "The store's as-of
//! rule".

pub mod shard;
pub mod timing;

pub use shard::{AttemptId, Shard};
pub use timing::{on_lane, Timing};
