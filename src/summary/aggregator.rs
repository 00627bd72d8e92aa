//! The summary aggregator: answers summaries and purges across this instance's shards (one
//! per core, each reached by a flume channel and served on its core by [`serve_shard`]) and
//! the peers ([`super::peers`]). It runs on a thread of its own, started by the runtime
//! with [`Aggregator::serve`]; cores reach it through an [`AggregatorHandle`].
//!
//! A summary is all or nothing: a shard or a peer that does not answer within the bound
//! makes it fail with a 5XX, never answer half the data. Each shard applies the in-flight
//! rule of the store before answering (it may wait up to [`SHARD_WAIT`]), so the bound on
//! a peer ([`crate::config::Config::peer_timeout`]) is longer than that wait. Within that
//! bound a peer that refuses or drops the call is asked again every
//! [`super::peers::PEER_RETRY_PAUSE`]: a restart shorter than the bound costs a slower
//! summary, not a failed one.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use crate::config::Endpoint;

use super::peers::{self, PeerError};
use super::window::{AsOf, Totals, Window};

/// The longest a shard waits for in-flight payments before answering.
pub const SHARD_WAIT: Duration = Duration::from_millis(500);

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
}

/// Why a summary or purge could not be answered whole.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("peer {peer}: {error}")]
    Peer {
        peer: String,
        #[source]
        error: PeerError,
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
            error,
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
    peers: Vec<Endpoint>,
    peer_timeout: Duration,
    /// `POST /internal/purge-payments`, with the purge token when one is set.
    purge_request: Vec<u8>,
}

impl Aggregator {
    /// The aggregator of these shards and peers, and the handle cores clone.
    pub fn new(
        shards: Vec<flume::Sender<ShardCmd>>,
        peers: Vec<Endpoint>,
        peer_timeout: Duration,
        purge_token: Option<&str>,
    ) -> (Self, AggregatorHandle) {
        let (tx, rx) = flume::unbounded::<AggregatorCmd>();
        let aggregator = Aggregator {
            rx,
            shards,
            peers,
            peer_timeout,
            purge_request: peers::purge_request(purge_token),
        };
        (aggregator, AggregatorHandle { tx })
    }

    /// Answers every request, each in a task of its own, until every handle is gone.
    pub async fn serve(self) {
        let rx = self.rx.clone();
        let this = Rc::new(self);
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
                let _ = reply.send(self.summary(window, as_of, include_peers).await);
            }
            AggregatorCmd::Purge {
                include_peers,
                reply,
            } => {
                let _ = reply.send(self.purge(include_peers).await);
            }
        }
    }

    async fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        include_peers: bool,
    ) -> Result<Totals, SummaryError> {
        // Ask everyone first, then collect: the shards' waits and the peers' run together.
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
        let mut peer_calls = Vec::new();
        if include_peers {
            let path = peers::summary_path(window, as_of);
            for peer in &self.peers {
                let peer = peer.clone();
                let path = path.clone();
                let timeout = self.peer_timeout;
                peer_calls.push(monoio::spawn(async move {
                    let answer = peers::summary(&peer, &path, timeout).await;
                    (peer, answer)
                }));
            }
        }
        let mut totals = Totals::default();
        let bound = self
            .peer_timeout
            .max(SHARD_WAIT + Duration::from_millis(200));
        for rx in waits {
            match monoio::time::timeout(bound, rx.recv_async()).await {
                Ok(Ok(t)) => totals.add(&t),
                _ => return Err(SummaryError::Shard),
            }
        }
        for call in peer_calls {
            let (peer, answer) = call.await;
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
            for peer in &self.peers {
                peers::call(peer, self.purge_request.clone(), self.peer_timeout)
                    .await
                    .map_err(SummaryError::peer(peer))?;
            }
        }
        Ok(())
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
