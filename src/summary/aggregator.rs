//! The summary aggregator: answers summaries and purges across this instance's shards (one
//! per core, each reached by a flume channel and served on its core by [`serve_shard`]) and
//! the peers ([`super::peers`]). It runs on a thread of its own, started by the runtime
//! with [`Aggregator::serve`]; cores reach it through an [`AggregatorHandle`].
//!
//! A storm of summaries costs the cores little: summaries of one window as of one moment
//! (the moment rounded up to the end of its millisecond, the resolution of every stamp) share one
//! pass over the shards and one call to each peer, and at most [`MAX_SCANS`] passes are under
//! way at once; the rest wait here, on this thread, not in the cores' queues. The thread runs
//! `ROUTER_NICE` nicer than the cores, so under a storm it takes the CPUs after their intake
//! (and, running less often, shares each pass among more summaries). Public summaries past
//! `SUMMARY_RATE` wait for their turn ([`super::pace`]), at most 500 ms, so a storm in a closed
//! loop asks little faster than that.
//! An answer depends only on the window and the moment, never on when the pass runs (the
//! as-of rule), so sharing and waiting change no count.
//!
//! A summary is all or nothing: a shard or a peer that does not answer within the bound
//! makes it fail with a 5XX, never answer half the data. Each shard applies the in-flight
//! rule of the store before answering (it may wait up to [`SHARD_WAIT`]), so the bound on
//! a peer ([`crate::config::Config::peer_timeout`]) is longer than that wait. Within that
//! bound a peer that refuses or drops the call is asked again every
//! [`super::peers::PEER_RETRY_PAUSE`]: a restart shorter than the bound costs a slower
//! summary, not a failed one.
//!
//! It also answers the metrics scrapes (`METRICS_LISTEN`, [`crate::metrics::server`]) on its
//! thread: each core sends its sample over the same channel, and the aggregator adds its own
//! count of summaries and how long they took.

use local_sync::semaphore::Semaphore;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Endpoint;
use crate::metrics::{CoreSample, Scrape, Source, SummaryStats};
use crate::replicas::Replicas;

use super::pace::Pace;
use super::peers::{self, PeerError};
use super::window::{AsOf, Totals, Window};

/// The longest a shard waits for in-flight payments before answering.
pub const SHARD_WAIT: Duration = Duration::from_millis(500);

/// Scans of this instance's shards (one summary's pass over every shard) under way at once.
pub const MAX_SCANS: usize = 2;

/// A request from a core to the aggregator.
#[derive(Debug)]
pub enum AggregatorCmd {
    Summary {
        window: Window,
        as_of: AsOf,
        include_peers: bool,
        reply: flume::Sender<Result<Totals, SummaryError>>,
    },
    Purge {
        include_peers: bool,
        reply: flume::Sender<Result<(), SummaryError>>,
    },
}

/// A request from the aggregator to one core's shard.
#[derive(Debug)]
pub enum ShardCmd {
    Summary {
        window: Window,
        as_of: AsOf,
        reply: flume::Sender<Totals>,
    },
    Purge {
        reply: flume::Sender<()>,
    },
    /// The core's metrics sample, taken on the core.
    Metrics {
        reply: flume::Sender<CoreSample>,
    },
}

/// Why a summary or purge could not be answered whole (cloned to every summary that shared
/// the pass).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SummaryError {
    #[error("peer {peer}: {error}")]
    Peer {
        peer: String,
        #[source]
        error: Arc<PeerError>,
    },
    #[error("a shard did not answer")]
    Shard,
    #[error("the summary aggregator is gone")]
    Aggregator,
}

impl SummaryError {
    fn peer(peer: &Endpoint) -> impl FnOnce(PeerError) -> SummaryError + '_ {
        move |error| SummaryError::Peer {
            peer: peer.to_string(),
            error: Arc::new(error),
        }
    }
}

/// A core's handle on the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorHandle {
    tx: flume::Sender<AggregatorCmd>,
}

impl AggregatorHandle {
    /// A handle whose aggregator is gone: for tests of one core alone.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        AggregatorHandle {
            tx: flume::unbounded().0,
        }
    }

    /// The summary of `window` as of the moment the request reached this instance.
    pub async fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        include_peers: bool,
    ) -> Result<Totals, SummaryError> {
        let (reply, rx) = flume::bounded(1);
        let cmd = AggregatorCmd::Summary {
            window,
            as_of,
            include_peers,
            reply,
        };
        self.ask(cmd, rx).await
    }

    pub async fn purge(&self, include_peers: bool) -> Result<(), SummaryError> {
        let (reply, rx) = flume::bounded(1);
        let cmd = AggregatorCmd::Purge {
            include_peers,
            reply,
        };
        self.ask(cmd, rx).await
    }

    /// Sends `cmd` and waits for its answer on `rx`.
    async fn ask<T>(
        &self,
        cmd: AggregatorCmd,
        rx: flume::Receiver<Result<T, SummaryError>>,
    ) -> Result<T, SummaryError> {
        self.tx.send(cmd).map_err(|_| SummaryError::Aggregator)?;
        rx.recv_async()
            .await
            .map_err(|_| SummaryError::Aggregator)?
    }
}

/// The aggregator, before its thread runs it ([`Aggregator::serve`]).
#[derive(Debug)]
pub struct Aggregator {
    rx: flume::Receiver<AggregatorCmd>,
    shards: Vec<flume::Sender<ShardCmd>>,
    peers: Replicas,
    peer_timeout: Duration,
    /// `POST /internal/purge-payments`, with the purge token when one is set.
    purge_request: Vec<u8>,
    stats: SummaryStats,
    /// The summaries under way, each with the replies of every request that shares it.
    sharing: RefCell<HashMap<Shared, Vec<Reply>>>,
    /// One permit per pass over the shards that may run ([`MAX_SCANS`]): a local semaphore,
    /// as every pass runs on this thread. (A flume channel of tokens did this before: in an
    /// optimized build, 40 passes waiting on it grew its list of waiters until the OOM killer
    /// came, in `a_storm_of_different_summaries_is_exact_and_bounded`.)
    scans: Semaphore,
    /// What as-of moments are rounded from (to whole milliseconds after it).
    epoch: Instant,
    /// The turns of public summaries (`SUMMARY_RATE`); `None`: unbounded.
    pace: Option<Pace>,
}

/// Where a summary's answer goes, and when it was asked (for the metrics' wait).
type Reply = (flume::Sender<Result<Totals, SummaryError>>, Instant);

/// What makes two summaries the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shared {
    window: Window,
    as_of: Instant,
    include_peers: bool,
}

impl Aggregator {
    /// The aggregator of these shards and peers, answering at most `summary_rate` public
    /// summaries a second (0: unbounded), and the handle cores clone.
    pub fn new(
        shards: Vec<flume::Sender<ShardCmd>>,
        peers: Replicas,
        peer_timeout: Duration,
        purge_token: Option<&str>,
        summary_rate: u32,
    ) -> (Self, AggregatorHandle) {
        let (tx, rx) = flume::unbounded::<AggregatorCmd>();
        let aggregator = Aggregator {
            rx,
            shards,
            peers,
            peer_timeout,
            purge_request: peers::purge_request(purge_token),
            stats: SummaryStats::default(),
            sharing: RefCell::new(HashMap::new()),
            scans: Semaphore::new(MAX_SCANS),
            epoch: Instant::now(),
            pace: Pace::new(summary_rate),
        };
        (aggregator, AggregatorHandle { tx })
    }

    /// Answers every request, each in a task of its own, until every handle is gone; with
    /// `metrics`, the scrapes too (started in a task of their own that lives as long).
    pub async fn serve(self, metrics: Option<crate::metrics::server::Listening>) {
        let rx = self.rx.clone();
        let this = Rc::new(self);
        if let Some((socket, cap)) = metrics {
            monoio::spawn(crate::metrics::server::serve(socket, this.clone(), cap));
        }
        if this.peers.discovered() {
            let this = this.clone();
            monoio::spawn(async move {
                loop {
                    this.peers.observe();
                    monoio::time::sleep(crate::replicas::OBSERVE_EVERY).await;
                }
            });
        }
        while let Ok(cmd) = rx.recv_async().await {
            let this = this.clone();
            monoio::spawn(async move { this.handle(cmd).await });
        }
    }

    async fn handle(&self, cmd: AggregatorCmd) {
        match cmd {
            AggregatorCmd::Summary {
                window,
                as_of,
                include_peers,
                reply,
            } => {
                let asked = Instant::now();
                if include_peers {
                    self.take_turn(asked).await;
                }
                self.shared_summary(window, as_of, include_peers, (reply, asked))
                    .await
            }
            AggregatorCmd::Purge {
                include_peers,
                reply,
            } => {
                let _ = reply.send(self.purge(include_peers).await);
            }
        }
    }

    /// Waits for the turn of a public summary asked at `asked` (at most [`super::pace::MAX_WAIT`]).
    async fn take_turn(&self, asked: Instant) {
        if let Some(pace) = &self.pace {
            let start = pace.turn(asked);
            if start > asked {
                monoio::time::sleep(start - asked).await;
            }
        }
    }

    /// Answers `reply` with the summary under way for the same window and moment, or starts
    /// it and answers every request that joins it meanwhile.
    async fn shared_summary(&self, window: Window, as_of: AsOf, include_peers: bool, reply: Reply) {
        let as_of = self.to_millisecond(as_of);
        let key = Shared {
            window,
            as_of: as_of.0,
            include_peers,
        };
        match self.sharing.borrow_mut().entry(key) {
            Entry::Occupied(mut shared) => return shared.get_mut().push(reply),
            Entry::Vacant(new) => {
                new.insert(vec![reply]);
            }
        }
        let answer = self.summary(window, as_of, include_peers).await;
        for (reply, asked) in self.sharing.borrow_mut().remove(&key).unwrap_or_default() {
            self.stats
                .observe(include_peers, answer.is_ok(), asked.elapsed());
            let _ = reply.send(answer.clone());
        }
    }

    /// `as_of` rounded up to the end of its millisecond (counted from [`Aggregator::epoch`]; a
    /// moment from before, a peer's old one, is kept as it is). Up, never down: a payment sent
    /// and stored in the instant before the request arrived must count, as the processor
    /// counts it; one stored in the rest of that millisecond counts too, as it would for a
    /// request a few µs later.
    fn to_millisecond(&self, as_of: AsOf) -> AsOf {
        match as_of.0.checked_duration_since(self.epoch) {
            Some(since) => {
                let ms = since.as_nanos().div_ceil(1_000_000) as u64;
                AsOf(self.epoch + Duration::from_millis(ms))
            }
            None => as_of,
        }
    }

    async fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        include_peers: bool,
    ) -> Result<Totals, SummaryError> {
        // The peers first, unbounded here (each bounds its own passes), so that a pass never
        // holds a token while it waits for a peer that waits for one of ours.
        let mut peer_calls = Vec::new();
        if include_peers {
            let path = peers::summary_path(window, as_of);
            for peer in self.peers.to_ask() {
                let path = path.clone();
                let timeout = self.peer_timeout;
                peer_calls.push(monoio::spawn(async move {
                    let answer = peers::summary(&peer, &path, timeout).await;
                    (peer, answer)
                }));
            }
        }
        // Then the shards, at most MAX_SCANS passes at once: the rest wait on this thread.
        let mut totals = Totals::default();
        {
            // The permit goes back when the pass ends, however it ends.
            let _permit = match self.scans.acquire().await {
                Ok(permit) => permit,
                Err(_) => return Err(SummaryError::Aggregator),
            };
            // Every shard asked before any is awaited: their waits run together.
            let mut waits = Vec::with_capacity(self.shards.len());
            for shard in &self.shards {
                let (reply, rx) = flume::bounded(1);
                shard
                    .send(ShardCmd::Summary {
                        window,
                        as_of,
                        reply,
                    })
                    .map_err(|_| SummaryError::Shard)?;
                waits.push(rx);
            }
            let bound = self
                .peer_timeout
                .max(SHARD_WAIT + Duration::from_millis(200));
            for rx in waits {
                match monoio::time::timeout(bound, rx.recv_async()).await {
                    Ok(Ok(t)) => totals.add(&t),
                    _ => return Err(SummaryError::Shard),
                }
            }
        }
        for call in peer_calls {
            let (peer, answer) = call.await;
            if answer.is_err() {
                self.peers.call_failed();
            }
            let t = answer.map_err(SummaryError::peer(&peer))?;
            totals.add(&t);
        }
        Ok(totals)
    }

    async fn purge(&self, include_peers: bool) -> Result<(), SummaryError> {
        for shard in &self.shards {
            let (reply, rx) = flume::bounded(1);
            shard
                .send(ShardCmd::Purge { reply })
                .map_err(|_| SummaryError::Shard)?;
            match monoio::time::timeout(self.peer_timeout, rx.recv_async()).await {
                Ok(Ok(())) => {}
                _ => return Err(SummaryError::Shard),
            }
        }
        if include_peers {
            for peer in &self.peers.to_ask() {
                peers::call(peer, self.purge_request.clone(), self.peer_timeout)
                    .await
                    .inspect_err(|_| self.peers.call_failed())
                    .map_err(SummaryError::peer(peer))?;
            }
        }
        Ok(())
    }
}

impl Source for Aggregator {
    async fn scrape(&self) -> Option<Scrape> {
        let mut cores = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, rx) = flume::bounded(1);
            shard.send(ShardCmd::Metrics { reply }).ok()?;
            cores.push(rx);
        }
        let mut scrape = Scrape {
            summaries: self.stats.sample(),
            ..Scrape::default()
        };
        for rx in cores {
            let sample = monoio::time::timeout(self.peer_timeout, rx.recv_async()).await;
            scrape.cores.push(sample.ok()?.ok()?);
        }
        Some(scrape)
    }
}

/// What the shard server needs of the core it runs on.
pub trait ShardHost {
    /// The summary of `window` as the processors saw it at `as_of`, waiting at most `bound`
    /// for attempts in flight then.
    fn summary(&self, window: Window, as_of: AsOf, bound: Duration)
        -> impl Future<Output = Totals>;
    /// Forgets everything the core holds; `false` when the journal cannot record it.
    fn purge(&self) -> impl Future<Output = bool>;
    /// The core's metrics now.
    fn metrics(&self) -> CoreSample;
}

/// Serves the aggregator's requests to one core's shard (runs on that core).
pub async fn serve_shard<H: ShardHost + 'static>(host: Rc<H>, rx: flume::Receiver<ShardCmd>) {
    while let Ok(cmd) = rx.recv_async().await {
        match cmd {
            ShardCmd::Summary {
                window,
                as_of,
                reply,
            } => {
                let host = host.clone();
                monoio::spawn(async move {
                    let totals = host.summary(window, as_of, SHARD_WAIT).await;
                    let _ = reply.send(totals);
                });
            }
            ShardCmd::Metrics { reply } => {
                let _ = reply.send(host.metrics());
            }
            ShardCmd::Purge { reply } => {
                // Not acknowledged when the journal cannot record it: what is on file would
                // come back at the next start (the aggregator then answers 503).
                if host.purge().await {
                    let _ = reply.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Instant;

    use super::*;
    use crate::processor::Processor;

    fn rt<F: Future<Output = ()>>(f: F) {
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(f)
    }

    /// A shard that answers every window with `from_us` payments of 1 cent after a few ms
    /// (so that summaries overlap), counting its scans and the most at once.
    fn fake_shard(rx: flume::Receiver<ShardCmd>, scans: Rc<Cell<usize>>, peak: Rc<Cell<usize>>) {
        let now = Rc::new(Cell::new(0usize));
        monoio::spawn(async move {
            while let Ok(cmd) = rx.recv_async().await {
                let ShardCmd::Summary { window, reply, .. } = cmd else {
                    continue;
                };
                let (scans, peak, now) = (scans.clone(), peak.clone(), now.clone());
                scans.set(scans.get() + 1);
                now.set(now.get() + 1);
                peak.set(peak.get().max(now.get()));
                monoio::spawn(async move {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                    let mut t = Totals::default();
                    for _ in 0..window.from_us.unwrap_or(0) {
                        t.count(Processor::Default, 1);
                    }
                    now.set(now.get() - 1);
                    let _ = reply.send(t);
                });
            }
        });
    }

    /// An aggregator over two fake shards and no peer, pacing public summaries at `rate`;
    /// returns its handle, the scans the shards made and the most one shard ran at once.
    fn aggregator(rate: u32) -> (AggregatorHandle, Rc<Cell<usize>>, Rc<Cell<usize>>) {
        let (scans, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let mut shards = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = flume::unbounded();
            fake_shard(rx, scans.clone(), peak.clone());
            shards.push(tx);
        }
        let (aggregator, handle) = Aggregator::new(
            shards,
            Replicas::fixed(Vec::new()),
            Duration::from_secs(2),
            None,
            rate,
        );
        monoio::spawn(aggregator.serve(None));
        (handle, scans, peak)
    }

    fn window(n: i64) -> Window {
        Window {
            from_us: Some(n),
            to_us: Some(n + 1000),
        }
    }

    /// Summaries of one window as of one moment, asked at once, share one scan of each shard
    /// and all get what one asked alone gets.
    #[test]
    fn identical_summaries_share_one_scan_and_answer_exactly() {
        rt(async {
            let (handle, scans, _) = aggregator(0);
            let as_of = AsOf(Instant::now());
            let alone = handle.summary(window(7), as_of, false).await.unwrap();
            assert_eq!(alone.requests, [14, 0]);
            assert_eq!(scans.get(), 2);
            let asks: Vec<_> = (0..64)
                .map(|_| {
                    let handle = handle.clone();
                    monoio::spawn(async move { handle.summary(window(7), as_of, false).await })
                })
                .collect();
            for ask in asks {
                assert_eq!(ask.await.unwrap(), alone);
            }
            assert_eq!(
                scans.get(),
                4,
                "64 identical summaries at once: one scan a shard"
            );
        });
    }

    /// A shared moment is never before the request's own: what a processor stored by then
    /// is never left out; and it is less than a millisecond after it.
    #[test]
    fn moments_round_up_within_their_millisecond() {
        let (aggregator, _handle) = Aggregator::new(
            Vec::new(),
            Replicas::fixed(Vec::new()),
            Duration::ZERO,
            None,
            0,
        );
        for micros in [0, 1, 999, 1000, 1001, 123_456] {
            let at = aggregator.epoch + Duration::from_micros(micros);
            let rounded = aggregator.to_millisecond(AsOf(at)).0;
            assert!(rounded >= at, "{micros} µs rounded down");
            assert!(rounded - at < Duration::from_millis(1), "{micros} µs");
            assert_eq!((rounded - aggregator.epoch).as_micros() % 1000, 0);
        }
    }

    /// Many different summaries at once: each is answered exactly, and no shard runs more
    /// than [`MAX_SCANS`] scans at a time.
    #[test]
    fn a_storm_of_different_summaries_is_exact_and_bounded() {
        rt(async {
            let (handle, scans, peak) = aggregator(0);
            let asks: Vec<_> = (0..40)
                .map(|n| {
                    let handle = handle.clone();
                    monoio::spawn(async move {
                        (n, handle.summary(window(n), AsOf::now(), false).await)
                    })
                })
                .collect();
            for ask in asks {
                let (n, totals) = ask.await;
                assert_eq!(totals.unwrap().requests, [2 * n as u64, 0]);
            }
            assert_eq!(scans.get(), 80);
            assert!(peak.get() <= MAX_SCANS, "{} scans at once", peak.get());
        });
    }

    /// Public summaries past the rate wait their turn, and each is exact:
    /// 30 at once at 100 a second (a burst of 10, then one every 10 ms) take at least 200 ms.
    #[test]
    fn public_summaries_past_the_rate_wait_their_turn() {
        rt(async {
            let (handle, _, _) = aggregator(100);
            let start = Instant::now();
            let asks: Vec<_> = (0..30)
                .map(|n| {
                    let handle = handle.clone();
                    monoio::spawn(async move {
                        let totals = handle.summary(window(n), AsOf::now(), true).await;
                        (n, totals, start.elapsed())
                    })
                })
                .collect();
            let mut took = Vec::new();
            for ask in asks {
                let (n, totals, elapsed) = ask.await;
                assert_eq!(totals.unwrap().requests, [2 * n as u64, 0]);
                took.push(elapsed);
            }
            // Turns are slots 10 ms apart from the 11th on: the 30th starts 200 ms in.
            assert!(took[29] >= Duration::from_millis(200), "{took:?}");
            assert!(
                took.windows(2).all(|w| w[0] <= w[1]),
                "out of order: {took:?}"
            );
        });
    }

    /// A public summary whose turn is further than the longest wait goes after that wait,
    /// answered all the same; a peer's internal summaries are never paced (the peer paced its
    /// public one).
    #[test]
    fn past_the_longest_wait_a_public_summary_goes_and_internal_ones_never_wait() {
        rt(async {
            // 1 a second: the second turn is 1 s away, past the 500 ms wait.
            let (handle, _, _) = aggregator(1);
            let first = handle.summary(window(1), AsOf::now(), true).await;
            assert_eq!(first.unwrap().requests, [2, 0]);
            let asked = Instant::now();
            let second = handle.summary(window(1), AsOf::now(), true).await;
            assert_eq!(second.unwrap().requests, [2, 0]);
            assert!(
                asked.elapsed() >= crate::summary::pace::MAX_WAIT,
                "{:?}",
                asked.elapsed()
            );
            // Paced, 20 internal ones would take 10 s at least.
            let asked = Instant::now();
            for n in 0..20 {
                let internal = handle.summary(window(n), AsOf::now(), false).await;
                assert_eq!(internal.unwrap().requests, [2 * n as u64, 0]);
            }
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{:?}",
                asked.elapsed()
            );
        });
    }
}
