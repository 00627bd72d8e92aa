//! What an operator scrapes (`GET /metrics` on `METRICS_LISTEN`, never the public port): the
//! per-core counters ([`Counters`], plain `Cell`s a core bumps on its own thread: no lock, no
//! atomic shared across cores), a core's sample of them taken on that core when asked
//! ([`CoreSample`]), the aggregator's own ([`SummaryStats`]), the Prometheus text they are
//! written as ([`text`]) and the listener that answers scrapes off the cores ([`server`]).

pub mod server;
pub mod text;

use std::cell::Cell;
use std::time::Duration;

use crate::processor::Processor;

/// A counter one core bumps on its own thread.
#[derive(Debug, Default)]
pub struct Count(Cell<u64>);

impl Count {
    pub fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }

    pub fn add(&self, n: u64) {
        self.0.set(self.0.get() + n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// One core's counters, by processor where it applies (indexed by [`Processor::index`]).
#[derive(Debug, Default)]
pub struct Counters {
    /// Payments answered 202 that were new (a repeated correlationId is not counted again).
    pub accepted: Count,
    /// Payments a processor stored, recorded in the shard (by its answer or a lookup).
    pub processed: [Count; 2],
    /// Placements of an unpinned payment: the processor the routing chose (or scouted).
    pub routed: [Count; 2],
    /// Attempts whose outcome was unknown (timeout, lost connection, unreadable answer).
    pub unknown: [Count; 2],
    /// `GET /payments/{id}` lookups made for unknown outcomes.
    pub lookups: [Count; 2],
}

impl Counters {
    pub fn processed(&self, p: Processor) {
        self.processed[p.index()].inc();
    }

    pub fn routed(&self, p: Processor) {
        self.routed[p.index()].inc();
    }

    pub fn unknown(&self, p: Processor) {
        self.unknown[p.index()].inc();
    }

    pub fn lookup(&self, p: Processor) {
        self.lookups[p.index()].inc();
    }
}

/// One processor as one core sees it at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorSample {
    pub in_flight: u64,
    pub breaker_open: bool,
    pub processed: u64,
    pub routed: u64,
    pub unknown: u64,
    pub lookups: u64,
    /// Answers that proved nothing (a 404, a 3XX, ...: [`crate::processor::refusals`]).
    pub inconclusive: u64,
}

/// One core's numbers at a scrape, taken on that core and sent to the scraping thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreSample {
    pub core: usize,
    /// Payments waiting: in the line or set aside.
    pub queue_depth: u64,
    /// Payments a sender holds now.
    pub busy: u64,
    pub accepted: u64,
    pub processors: [ProcessorSample; 2],
    /// Journal commits and the record bytes they wrote (0 without `DATA_DIR`).
    pub journal_commits: u64,
    pub journal_bytes: u64,
}

impl CoreSample {
    /// The sample of `counters` plus what the caller read off the core's state.
    pub fn of(counters: &Counters, core: usize) -> Self {
        let mut s = CoreSample {
            core,
            accepted: counters.accepted.get(),
            ..CoreSample::default()
        };
        for (i, p) in s.processors.iter_mut().enumerate() {
            p.processed = counters.processed[i].get();
            p.routed = counters.routed[i].get();
            p.unknown = counters.unknown[i].get();
            p.lookups = counters.lookups[i].get();
        }
        s
    }
}

/// The upper bounds of the summary latency histogram, seconds (the client gives up at 1.5 s).
pub const SUMMARY_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.5];

/// Summaries the aggregator answered, on its own thread: whole or failed, public (this
/// instance and its peers) or internal (a peer's question, this instance only), and how long
/// each took from the core's request to the aggregator's answer.
#[derive(Debug, Default)]
pub struct SummaryStats {
    /// `[public, internal]` answered whole.
    pub served: [Count; 2],
    /// `[public, internal]` failed (a 5XX).
    pub failed: [Count; 2],
    /// Histogram of how long a summary took, public and internal together: one count per
    /// bucket of [`SUMMARY_BUCKETS`] (not cumulative), then the ones past the last.
    buckets: [Count; SUMMARY_BUCKETS.len() + 1],
    sum_us: Count,
}

impl SummaryStats {
    /// A summary that took `took`, `public` or internal, whole or not.
    pub fn observe(&self, public: bool, whole: bool, took: Duration) {
        let kind = usize::from(!public);
        if whole {
            self.served[kind].inc();
        } else {
            self.failed[kind].inc();
        }
        let s = took.as_secs_f64();
        let i = SUMMARY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(SUMMARY_BUCKETS.len());
        self.buckets[i].inc();
        self.sum_us.add(took.as_micros() as u64);
    }

    /// The instance-wide part of a scrape.
    pub fn sample(&self) -> SummarySample {
        let mut cumulative = [0; SUMMARY_BUCKETS.len() + 1];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.get();
            *c = total;
        }
        SummarySample {
            served: [self.served[0].get(), self.served[1].get()],
            failed: [self.failed[0].get(), self.failed[1].get()],
            cumulative,
            sum_seconds: self.sum_us.get() as f64 / 1e6,
        }
    }
}

/// The summaries' numbers at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummarySample {
    pub served: [u64; 2],
    pub failed: [u64; 2],
    /// Cumulative counts per bucket of [`SUMMARY_BUCKETS`], then `+Inf` (all of them).
    pub cumulative: [u64; SUMMARY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub cores: Vec<CoreSample>,
    pub summaries: SummarySample,
    /// Client connections open now (the process's connection cap).
    pub connections_open: u64,
}

/// Where a scrape's numbers come from: the aggregator, asking every core.
pub trait Source {
    /// Every core's sample and the instance's own; `None` when a core did not answer.
    fn scrape(&self) -> impl std::future::Future<Output = Option<Scrape>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_lands_in_its_bucket_and_every_later_one() {
        let s = SummaryStats::default();
        s.observe(true, true, Duration::from_millis(3));
        s.observe(false, false, Duration::from_secs(2));
        let got = s.sample();
        assert_eq!(got.served, [1, 0]);
        assert_eq!(got.failed, [0, 1]);
        assert_eq!(got.cumulative, [0, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        assert!((got.sum_seconds - 2.003).abs() < 1e-9);
    }
}
