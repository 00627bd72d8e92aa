//! Threads and io drivers: one monoio runtime per core (`WORKERS` of them), each serving
//! its share of connections, draining its own queue and owning its own shard, plus the
//! summary aggregator's thread. This is where the driver is chosen and the start log line
//! is written.
//!
//! Driver choice (`IO_DRIVER`, `rinha_sys::driver`): made once on the main thread, before any
//! runtime starts; `auto` builds an io_uring ring and falls back to epoll when that fails for
//! any reason (no io_uring, EPERM under seccomp, memlock limits on old kernels).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rinha_sys::cap::ConnectionCap;
use rinha_sys::discovery::{Discovery, DiscoveryError, Own, Sources, Watch};
use rinha_sys::driver::{Driver, DriverError, RingSize};
use rinha_sys::signals::Signals;

use crate::config::{Config, Endpoint};
use crate::core_state::CoreState;
use crate::handoff::{self, CoreHandoff};
use crate::journal::commit::{self, GroupCommit};
use crate::journal::Journal;
use crate::listener::{Accepted, CoreListener, Prepared};
use crate::metrics::server::MetricsSocket;
use crate::origin::Origin;
use crate::processor::resolve::Resolver;
use crate::processor::Processor;
use crate::replicas::{self, Replicas};
use crate::summary::aggregator::serve_shard;
use crate::summary::{Aggregator, AggregatorHandle, ShardCmd};
use crate::{conn, senders, store};

/// The io_uring rings of the cores and the summary aggregator. Submission queue: the most
/// operations pushed between two `io_uring_enter` calls before monoio submits early (a full
/// queue is flushed, never an error); each entry is 64 bytes of ring memory mapped into the
/// process and touched as the ring turns, so it is resident, once per ring: monoio's minimum,
/// 256, keeps the rings' RSS close to epoll's (docs/benchmarks.md, "Findings that shaped the
/// design", answers sent at once). Completion queue (16 bytes each): completions past it wait
/// in the kernel's overflow list until the next reap (slower, never lost:
/// `IORING_FEAT_NODROP`, Linux 5.5), so it is sized for a burst of the senders and a few
/// hundred connections completing in one wait.
const RING: RingSize = RingSize {
    entries: 256,
    completions: Some(1024),
};

/// What a core reports once it listens.
#[derive(Debug)]
struct Ready {
    tcp_addr: Option<SocketAddr>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Listen(String, io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("core {0} failed to start: {1}")]
    Core(usize, String),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// Starts everything, serves until SIGTERM/SIGINT, drains, and returns how many payments
/// were left unprocessed.
pub fn run(config: Config) -> Result<usize, StartError> {
    let config = Arc::new(config);
    // Before any thread exists, so every thread inherits the mask and only `wait` sees them.
    let signals = Signals::block();
    let driver = Driver::choose(config.io_driver, config.uring_taskrun, RING)?;
    reserve_descriptors(&config);
    // Before any thread exists, so every thread inherits it.
    if let Some(slice) = config.sched_slice {
        match rinha_sys::sched::set_slice(slice) {
            Ok(()) => tracing::info!(slice_us = slice.as_micros() as u64, "scheduler slice set"),
            Err(e) => tracing::warn!(error = %e, "cannot set the scheduler slice (Linux 6.12+)"),
        }
    }
    let resolved = [
        resolve_logged(&config.resolver, "default", &config.default_url),
        resolve_logged(&config.resolver, "fallback", &config.fallback_url),
    ];
    prepare_storage(&config)?;
    let (mut prepared, handoff_socket, peer_socket) = prepare_listeners(&config)?;
    let mut peer_socket_for = peer_socket.clone();
    let mut handoffs = match &handoff_socket {
        Some(socket) => handoff::per_core(socket.clone(), config.workers),
        None => Vec::new(),
    }
    .into_iter();

    let metrics = prepare_metrics(&config)?;
    let metrics_socket_path = match &metrics {
        Some(MetricsSocket::Unix(_, p)) => Some(p.clone()),
        _ => None,
    };
    let watch = start_discovery(&config)?;

    let (shard_txs, shard_rxs): (Vec<_>, Vec<_>) = (0..config.workers)
        .map(|_| flume::unbounded::<ShardCmd>())
        .unzip();
    let cap = ConnectionCap::new(config.max_connections);
    let metrics = metrics.map(|socket| (socket, cap.clone()));
    let aggregator = spawn_aggregator(&config, driver, shard_txs, metrics, watch.clone())
        .map_err(StartError::Thread)?;

    let mut cores = Vec::new();
    for (id, shard_rx) in shard_rxs.into_iter().enumerate() {
        let start = CoreStart {
            id,
            config: config.clone(),
            resolved,
            source: prepared.clone(),
            aggregator: aggregator.clone(),
            shard_rx,
            cap: cap.clone(),
            handoff: handoffs.next(),
            // One core answers the peers: their calls are few, and it binds a TCP port 0 once.
            peer: peer_socket_for.take(),
            watch: watch.clone(),
        };
        let (core, ready) = spawn_core(start, driver)?;
        // Port 0: every later core binds the port the first one got (SO_REUSEPORT).
        if let Some(addr) = ready.tcp_addr {
            prepared.set_tcp_addr(addr);
        }
        cores.push(core);
    }
    log_started(&config, driver, &prepared, handoff_socket.as_ref());
    if let Some(socket) = &peer_socket {
        tracing::info!(peer_listen = %socket.describe(), "peers ask here");
    }

    let signal = signals.wait();
    tracing::info!(signal, "shutting down");
    for core in &cores {
        let _ = core.stop.send(());
    }
    // A hand-over offered from now on finds no socket and goes to the other backend at once.
    if let Some(socket) = &handoff_socket {
        socket.cleanup();
    }
    let left = cores
        .into_iter()
        .map(|core| core.thread.join().unwrap_or(0))
        .sum();
    prepared.cleanup();
    if let Some(path) = metrics_socket_path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(socket) = &peer_socket {
        socket.cleanup();
    }
    Ok(left)
}

/// The metrics socket (`METRICS_LISTEN`), bound now so a bad address fails the start.
fn prepare_metrics(config: &Config) -> Result<Option<MetricsSocket>, StartError> {
    let Some(endpoint) = &config.metrics_listen else {
        return Ok(None);
    };
    let socket =
        MetricsSocket::bind(endpoint).map_err(|e| StartError::Listen(endpoint.to_string(), e))?;
    tracing::info!(listen = %socket.describe(), "metrics: GET /metrics");
    Ok(Some(socket))
}

/// The discovery of the `dns:` peers, if `PEERS` has any; this instance is recognised by
/// its `PEER_LISTEN` address, which is what `PEERS` names (a unix socket is never in the
/// records).
fn start_discovery(config: &Config) -> Result<Option<Watch>, StartError> {
    if config.peer_names.is_empty() {
        return Ok(None);
    }
    let own = match config.peer_listen.as_ref().unwrap_or(&config.listen) {
        Endpoint::Tcp(text) => std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .map_or(Own::Nobody, Own::Listening),
        Endpoint::Unix(_) => Own::Nobody,
    };
    let sources = Sources::names(config.peer_names.clone(), config.peer_lookup.clone(), own);
    let watch = Discovery::start(sources, config.discovery_every)?;
    Ok(Some(watch))
}

/// With `DATA_DIR`, the journal files dealt to this run's core count (before any core opens
/// its own); the start log of where payments are kept and how many each core may queue.
fn prepare_storage(config: &Config) -> Result<(), StartError> {
    match &config.data_dir {
        // Before any core opens its file: the core count may differ from the last run.
        Some(dir) => {
            crate::journal::rebalance(dir, config.workers)?;
            // A long life's sealed buckets go to unnamed files beside the journal.
            crate::store::spill::keep_in(dir);
            tracing::info!(dir = %dir.display(), sync = ?config.journal_sync, "journal on");
        }
        None => tracing::info!(
            "memory only: DATA_DIR unset, accepted payments do not survive a restart"
        ),
    }
    tracing::info!(
        per_core = config.queue_capacity,
        basis = %config.queue_basis,
        "queue capacity"
    );
    tracing::info!(
        max = config.max_connections,
        basis = %config.connections_basis,
        "connection cap"
    );
    Ok(())
}

/// The client listener (`LISTEN`), the hand-over socket (`HANDOFF_LISTEN`) and the peer
/// socket (`PEER_LISTEN`), the last two if set.
type Listeners = (Prepared, Option<Prepared>, Option<Prepared>);

fn prepare_listeners(config: &Config) -> Result<Listeners, StartError> {
    let prepared = Prepared::new(&config.listen)
        .map_err(|e| StartError::Listen(config.listen.to_string(), e))?;
    let handoff_socket = match &config.handoff_listen {
        Some(path) => {
            let endpoint = Endpoint::Unix(path.clone());
            let socket = Prepared::new(&endpoint)
                .map_err(|e| StartError::Listen(endpoint.to_string(), e))?;
            Some(socket)
        }
        None => None,
    };
    let peer_socket = match &config.peer_listen {
        Some(endpoint) => {
            Some(Prepared::new(endpoint).map_err(|e| StartError::Listen(endpoint.to_string(), e))?)
        }
        None => None,
    };
    Ok((prepared, handoff_socket, peer_socket))
}

/// Raises the calling thread's nice value by `by` over the cores' (clamped to the kernel's
/// -20..=19); a refusal (lowering it without CAP_SYS_NICE) is logged and changes nothing.
fn be_nicer(by: i32) {
    let nice = (rinha_sys::sched::current_nice() + by).clamp(-20, 19);
    match rinha_sys::sched::set_nice(nice) {
        Ok(()) => tracing::info!(nice, "summary aggregator's nice value"),
        Err(e) => {
            tracing::warn!(nice, error = %e, "cannot set the summary aggregator's nice value")
        }
    }
}

/// What one core's thread is started with.
struct CoreStart {
    id: usize,
    config: Arc<Config>,
    resolved: [Option<SocketAddr>; 2],
    source: Prepared,
    aggregator: AggregatorHandle,
    shard_rx: flume::Receiver<ShardCmd>,
    cap: Arc<ConnectionCap>,
    handoff: Option<CoreHandoff>,
    /// The peer socket, on the one core that accepts on it.
    peer: Option<Prepared>,
    /// The `dns:` peers, when `PEERS` has any: this core's share follows them.
    watch: Option<Watch>,
}

/// A running core's thread, and how to stop it.
struct CoreThread {
    stop: flume::Sender<()>,
    /// Returns the payments it left unprocessed.
    thread: std::thread::JoinHandle<usize>,
}

/// Starts one core's thread and waits until it listens.
fn spawn_core(start: CoreStart, driver: Driver) -> Result<(CoreThread, Ready), StartError> {
    let id = start.id;
    let (stop, stop_rx) = flume::bounded::<()>(1);
    let (ready_tx, ready_rx) = flume::bounded::<Result<Ready, String>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("rinha-core-{id}"))
        .spawn(move || {
            let ready_err = ready_tx.clone();
            match driver.block_on(core_main(start, stop_rx, ready_tx)) {
                Ok(left) => left,
                Err(e) => {
                    let _ = ready_err.send(Err(e.to_string()));
                    0
                }
            }
        })
        .map_err(StartError::Thread)?;
    let ready = ready_rx
        .recv()
        .map_err(|_| StartError::Core(id, "exited".into()))?
        .map_err(|e| StartError::Core(id, e))?;
    Ok((CoreThread { stop, thread }, ready))
}

/// The start log line (docs/architecture.md).
fn log_started(config: &Config, driver: Driver, prepared: &Prepared, handoff: Option<&Prepared>) {
    tracing::info!(
        "rinha started version={} driver={} workers={} listen={} default={} fallback={} peers={} handoff={}",
        env!("CARGO_PKG_VERSION"),
        driver,
        config.workers,
        prepared.describe(),
        config.default_url,
        config.fallback_url,
        config
            .peers
            .iter()
            .map(|p| p.to_string())
            .chain(config.peer_names.iter().map(|n| n.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        handoff.map_or_else(|| "off".to_owned(), Prepared::describe),
    );
}

/// Starts the summary aggregator's thread (its own runtime, on the cores' driver, `ROUTER_NICE`
/// nicer than the cores), which also answers the metrics scrapes; returns the handle the cores
/// clone.
fn spawn_aggregator(
    config: &Config,
    driver: Driver,
    shards: Vec<flume::Sender<ShardCmd>>,
    metrics: Option<crate::metrics::server::Listening>,
    watch: Option<Watch>,
) -> io::Result<AggregatorHandle> {
    let (aggregator, handle) = Aggregator::new(
        shards,
        Replicas::new(config.peers.clone(), watch, config.peer_forget),
        config.peer_timeout,
        config.purge_token.as_deref(),
        config.summary_rate,
    );
    let nicer_by = config.router_nice;
    std::thread::Builder::new()
        .name("rinha-router".into())
        .spawn(move || {
            if nicer_by != 0 {
                be_nicer(nicer_by);
            }
            if let Err(e) = driver.block_on(aggregator.serve(metrics)) {
                tracing::error!(error = %e, "summary aggregator runtime failed");
            }
        })?;
    Ok(handle)
}

/// Raises the open-files limit and grows the descriptor table to what this configuration
/// can open, while this is the only thread (see `rinha_sys::fds`: growing it later stalls every
/// core for an RCU grace period). Failure only costs those stalls: logged, not fatal.
fn reserve_descriptors(config: &Config) {
    // Each connection one; each sender at most one processor connection; the rest (rings,
    // eventfds, journal files, peer and aggregator connections) fits in the margin.
    let needed = (config.max_connections + config.workers * config.senders + 256) as u64;
    match rinha_sys::fds::prepare(needed) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "open-files limit is below what MAX_CONNECTIONS and SENDERS need; accepts will fail with EMFILE first"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot grow the descriptor table ahead"),
    }
}

/// The start-time lookup of a processor's name (blocking: no core runs yet).
fn resolve_logged(
    resolver: &Resolver,
    name: &str,
    url: &crate::config::ProcessorUrl,
) -> Option<SocketAddr> {
    match resolver.resolve(&url.authority) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(processor = name, %url, error = %e, "cannot resolve yet; will retry on use");
            None
        }
    }
}

/// One core's life on its runtime: open its listener and journal, build its state, report
/// ready, serve until told to stop, drain; returns the payments left unprocessed.
async fn core_main(
    start: CoreStart,
    stop_rx: flume::Receiver<()>,
    ready_tx: flume::Sender<Result<Ready, String>>,
) -> usize {
    let (shard_rx, cap, watch) = (
        start.shard_rx.clone(),
        start.cap.clone(),
        start.watch.clone(),
    );
    let peer = match start.peer.as_ref().map(Prepared::for_core).transpose() {
        Ok(peer) => peer,
        Err(e) => {
            let _ = ready_tx.send(Err(format!("peer socket: {e}")));
            return 0;
        }
    };
    let (listener, core, handoff) = match open_core(start) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return 0;
        }
    };
    let _ = ready_tx.send(Ok(Ready {
        tcp_addr: listener.tcp_addr(),
    }));
    spawn_tasks(&core, shard_rx, watch);
    // The peers' acceptor stops when `peers_stop` drops, after the clients' one.
    let (peers_stop, peers_stop_rx) = flume::bounded::<()>(1);
    if let Some(peer) = peer {
        let (core, cap) = (core.clone(), cap.clone());
        monoio::spawn(async move {
            accept_until_stopped(&peer, Origin::Peer, &core, &cap, &peers_stop_rx).await;
        });
    }
    accept_until_stopped(&listener, Origin::Public, &core, &cap, &stop_rx).await;
    drop(peers_stop);
    drop(listener);
    drop(handoff);
    drain(&core).await
}

/// The core's listener, its state (the replayed journal put back) and its hand-over inbox.
fn open_core(
    start: CoreStart,
) -> Result<(CoreListener, Rc<CoreState>, Option<handoff::Running>), String> {
    let CoreStart {
        id,
        config,
        resolved,
        source,
        aggregator,
        cap,
        handoff,
        ..
    } = start;
    let listener = source.for_core().map_err(|e| e.to_string())?;
    let (journal, replay) = match &config.data_dir {
        None => (None, None),
        Some(dir) => {
            let (j, replay) =
                Journal::open_state(dir, id, config.journal_sync).map_err(|e| e.to_string())?;
            (Some(GroupCommit::new(j)), Some(replay))
        }
    };
    let core = Rc::new(CoreState::new(id, config, resolved, aggregator, journal));
    if let Some(replay) = replay {
        commit::restore(id, &core.shard, &core.queue, replay);
    }
    let handoff = handoff
        .map(|h| h.start(&core, &cap))
        .transpose()
        .map_err(|e| format!("hand-over socket: {e}"))?;
    Ok((listener, core, handoff))
}

/// The core's own tasks: its shard's server, the journal's committer, its share of
/// `MAX_IN_FLIGHT` following the replicas present, the senders and the fee reader.
fn spawn_tasks(core: &Rc<CoreState>, shard_rx: flume::Receiver<ShardCmd>, watch: Option<Watch>) {
    monoio::spawn(serve_shard(core.clone(), shard_rx));
    let c = core.clone();
    monoio::spawn(async move { store::fold::keep_folding(&c.shard).await });
    if let Some(watch) = watch {
        let c = core.clone();
        let resize = move |instances| {
            let config = &c.config;
            let cap = crate::config::lane_cap_for(config.max_in_flight, config.workers, instances);
            for p in [Processor::Default, Processor::Fallback] {
                c.upstream(p).breaker.set_cap(cap);
            }
            if c.id == 0 {
                tracing::info!(instances, cap, "each core's share of MAX_IN_FLIGHT");
            }
        };
        let (fixed, every) = (core.config.peers.len(), core.config.discovery_every);
        monoio::spawn(replicas::follow_share(watch, fixed, every, resize));
    }
    if let Some(d) = &core.journal {
        monoio::spawn(commit::committer(d.clone()));
    }
    for _ in 0..core.config.senders {
        monoio::spawn(senders::sender(core.clone()));
    }
    monoio::spawn(crate::fees::reader(core.clone()));
}

/// Accepts connections of `origin`, each served in a task of its own under the connection
/// cap, until the stop signal (or its sender is dropped).
async fn accept_until_stopped(
    listener: &CoreListener,
    origin: Origin,
    core: &Rc<CoreState>,
    cap: &Arc<ConnectionCap>,
    stop_rx: &flume::Receiver<()>,
) {
    loop {
        monoio::select! {
            _ = stop_rx.recv_async() => break,
            accepted = listener.accept() => match accepted {
                // At the cap the new stream is dropped here: closed at once, nothing read.
                Ok(Accepted::Tcp(s)) => if let Some(slot) = cap.try_acquire() {
                    let _ = s.set_nodelay(true);
                    monoio::spawn(conn::serve(s, origin, core.clone(), slot));
                }
                Ok(Accepted::Unix(s)) => if let Some(slot) = cap.try_acquire() {
                    monoio::spawn(conn::serve(s, origin, core.clone(), slot));
                }
                Err(e) => {
                    // EMFILE and kin: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Lets the queue drain for at most `SHUTDOWN_GRACE_MS`, then writes the journal's last
/// records; returns the payments left unprocessed.
async fn drain(core: &CoreState) -> usize {
    core.begin_shutdown();
    let deadline = Instant::now() + core.config.shutdown_grace;
    while core.pending() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(d) = &core.journal {
        // Confirmations of the last turn; what is still unsettled replays at the next start.
        d.commit_now();
        if core.pending() == 0 {
            d.maybe_compact();
        }
    }
    core.pending()
}
