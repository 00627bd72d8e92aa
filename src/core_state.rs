//! Everything one core owns: its queue, its store shard, its view of the two processors,
//! and the channel to the summary aggregator. Built inside the core's runtime and shared by
//! that runtime's tasks through `Rc`; nothing here crosses threads except the channels.
//! With `DATA_DIR` set it also owns the core's journal ([`GroupCommit`]).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::journal::commit::GroupCommit;
use crate::metrics::{CoreSample, Counters};
use crate::processor::breaker::Breaker;
use crate::processor::client::ProcessorClient;
use crate::processor::refusals::Refusals;
use crate::processor::Processor;
use crate::queue::Queue;
use crate::route::Outlook;
use crate::store::Shard;
use crate::summary::{AggregatorHandle, AsOf, ShardHost, Totals, Window};

/// The fee each processor is taken to charge until it has told us (its admin summary's
/// `feePerTransaction`) or `PROCESSOR_FEES` did: the final's 7 % and 10 %, the tighter of the
/// contract's two gaps. Unknown fees must not make routing wait for a slow default longer than
/// the real gap pays for: a payment still unstored at the end loses its whole amount, a payment
/// sent to the fallback too early only the gap (docs/architecture.md, "Without fees").
pub const FEE_PRIOR: [f64; 2] = [0.07, 0.10];

/// One processor as this core sees it.
#[derive(Debug)]
pub struct Upstream {
    pub client: ProcessorClient,
    pub breaker: Breaker,
    /// Its fee per payment, a fraction of the amount.
    pub fee: Cell<f64>,
    /// Whether `fee` was read from the processor (else it is the prior).
    pub fee_known: Cell<bool>,
    /// Its answers that proved nothing (a 404, a 3XX, ...), counted and warned about.
    pub refusals: Refusals,
}

/// One core's state.
#[derive(Debug)]
pub struct CoreState {
    pub id: usize,
    pub config: Arc<Config>,
    pub queue: Queue,
    pub shard: Shard,
    upstreams: [Upstream; 2],
    pub aggregator: AggregatorHandle,
    /// The journal (`DATA_DIR` set), or `None` when memory only.
    pub journal: Option<Rc<GroupCommit>>,
    shutting_down: Cell<bool>,
    /// Payments a sender holds right now (taken from the queue, not yet settled).
    busy: Cell<usize>,
    /// What this core counts for `GET /metrics` (its own `Cell`s, summed when scraped).
    pub counters: Counters,
}

impl CoreState {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        resolved: [Option<SocketAddr>; 2],
        aggregator: AggregatorHandle,
        journal: Option<GroupCommit>,
    ) -> Self {
        let upstream = |p: Processor, url: &crate::config::ProcessorUrl| Upstream {
            client: ProcessorClient::new(
                url.clone(),
                resolved[p.index()],
                config.resolver.clone(),
                config.call_starts,
            ),
            breaker: Breaker::with_cap(config.lane_cap).named(p.name()),
            fee: Cell::new(config.processor_fees.map_or(FEE_PRIOR, |f| f.0)[p.index()]),
            fee_known: Cell::new(config.processor_fees.is_some()),
            refusals: Refusals::default(),
        };
        let upstreams = [
            upstream(Processor::Default, &config.default_url),
            upstream(Processor::Fallback, &config.fallback_url),
        ];
        CoreState {
            id,
            queue: Queue::new(config.queue_capacity),
            shard: Shard::new(),
            upstreams,
            aggregator,
            journal: journal.map(Rc::new),
            config,
            shutting_down: Cell::new(false),
            busy: Cell::new(0),
            counters: Counters::default(),
        }
    }

    pub fn upstream(&self, p: Processor) -> &Upstream {
        &self.upstreams[p.index()]
    }

    /// What this core knows of processor `p` at `now`, for [`crate::route::choose`].
    pub fn outlook(&self, p: Processor, now: Instant) -> Outlook {
        let up = self.upstream(p);
        let (in_flight, cap, waiting) = up.breaker.load();
        Outlook {
            fee: up.fee.get(),
            response: self.shard.timing.response_estimate(p),
            oldest_in_flight: up.breaker.oldest_in_flight(now),
            failing_for: up.breaker.failing_for(now),
            in_flight,
            cap,
            waiting,
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// A sender took a payment (`true`) or settled it (`false`).
    pub fn set_busy(&self, taken: bool) {
        let n = self.busy.get();
        self.busy
            .set(if taken { n + 1 } else { n.saturating_sub(1) });
    }

    /// Payments accepted and not settled yet: queued or in a sender's hands.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.busy.get()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
    }

    /// Forgets everything this core holds (`POST /purge-payments`): the queue, the payments
    /// its senders hold and intake has yet to queue (queue.rs), the shard's records and
    /// attempts in flight, and, with a journal, every payment on file (a `purged` record,
    /// then a compaction). `false` when the journal cannot record it: refusing commits (then
    /// nothing was purged), or its commit failed (then memory is purged and the file is not: the
    /// caller answers 503, and a retry completes it).
    pub async fn purge(&self) -> bool {
        if self.journal.as_ref().is_some_and(|d| d.poisoned()) {
            return false;
        }
        let queued = self.queue.purge();
        let in_flight = self.shard.in_flight_len();
        self.shard.purge();
        if let Some(d) = &self.journal {
            if d.committed(d.purged()).await.is_err() {
                return false;
            }
            d.compact_now();
        }
        tracing::info!(core = self.id, queued, in_flight, "purged");
        true
    }
}

impl ShardHost for CoreState {
    fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        bound: Duration,
    ) -> impl Future<Output = Totals> {
        self.shard.summary(window, as_of, bound)
    }

    fn purge(&self) -> impl Future<Output = bool> {
        CoreState::purge(self)
    }

    fn metrics(&self) -> CoreSample {
        let mut s = CoreSample::of(&self.counters, self.id);
        s.queue_depth = self.queue.len() as u64;
        s.busy = self.busy.get() as u64;
        for p in [Processor::Default, Processor::Fallback] {
            let up = self.upstream(p);
            let sample = &mut s.processors[p.index()];
            sample.in_flight = u64::from(up.breaker.calls());
            sample.breaker_open = up.breaker.is_open();
            sample.inconclusive = up.refusals.count();
        }
        if let Some(d) = &self.journal {
            s.journal_commits = d.commits();
            s.journal_bytes = d.bytes();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use uuid::Uuid;

    use super::*;
    use crate::journal::{replay_dir, Journal, Replay, SyncMode};
    use crate::queue::Queued;

    fn core(journal: GroupCommit) -> CoreState {
        let args = crate::config::Args::parse_from(["rinha", "--workers", "1"]);
        let config = Arc::new(Config::from_args(args).unwrap());
        CoreState::new(
            0,
            config,
            [None, None],
            AggregatorHandle::detached(),
            Some(journal),
        )
    }

    /// A purge forgets what is queued and on file; one the journal cannot record is refused
    /// and changes nothing (issue 16, item 2).
    #[test]
    fn a_purge_forgets_everything_or_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let core = core(GroupCommit::new(j));
        let d = core.journal.as_ref().unwrap();
        let accept = |n: u128| {
            let id = Uuid::from_u128(n);
            d.accepted(id, 1);
            core.queue.admit(Queued::new(id, 1));
        };
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async {
            (0..3).for_each(accept);
            assert!(core.purge().await);
            assert!(core.queue.is_empty());
            assert_eq!(replay_dir(dir.path()).unwrap(), Replay::default());
            accept(7);
            // A compaction that renamed its file in and could not map it: commits are refused
            // until it can.
            let stop = crate::journal::compact::Step::Renamed;
            d.journal_for_test().compact_until(stop).unwrap();
            assert!(!core.purge().await);
            assert_eq!(core.queue.len(), 1, "refused: nothing purged");
        });
    }
}
