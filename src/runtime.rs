//! Threads and io drivers: one monoio runtime per core (`WORKERS` of them), each serving
//! its share of connections, draining its own queue and owning its own shard, plus the
//! router thread. This is where the driver is chosen and the start log line is written.
//!
//! Driver choice (`IO_DRIVER`): `uring` requires io_uring; `epoll` uses monoio's legacy
//! driver; `auto` tries to build an io_uring runtime and falls back to epoll when that
//! fails for any reason (no io_uring, EPERM under seccomp, memlock limits on old kernels:
//! monoio's own `FusionDriver` only covers the first two).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use rinha_sys::uring::Taskrun;

use crate::config::{Config, Endpoint, IoDriver};
use crate::core::Core;
use crate::durable::{self, Durable};
use crate::handoff::CoreHandoff;
use crate::journal::Journal;
use crate::limits::ConnectionCap;
use crate::listener::{Accepted, Prepared};
use crate::processor::resolve::Resolver;
use crate::router::{self, RouterHandle, ShardCmd};
use crate::{conn, shutdown, worker};

/// io_uring submission queue size per runtime: the most operations pushed between two
/// `io_uring_enter` calls before monoio submits early (a full queue is flushed, never an
/// error). Each entry is 64 bytes of ring memory mapped into the process and touched as
/// the ring turns, so it is resident: 4,096 entries cost each backend ~1.2 MiB more RSS than
/// epoll (three rings: two cores and the router), 256 (monoio's minimum) cost ~0.1 MiB.
const RING_ENTRIES: u32 = 256;
/// io_uring completion queue size per runtime (16 bytes each). Completions past it wait in
/// the kernel's overflow list until the next reap (slower, never lost: `IORING_FEAT_NODROP`,
/// Linux 5.5), so it is sized for a burst of the senders and a few hundred connections
/// completing in one wait.
const COMPLETION_ENTRIES: u32 = 1024;

/// Runs `make()` to completion on a fresh runtime of the chosen driver, on this thread. A
/// task-work mode the kernel refuses falls back to the default one
/// ([`Taskrun::build_or_default`]).
pub fn block_on<F, Fut>(driver: IoDriver, taskrun: Taskrun, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let ring = |taskrun: Taskrun| {
        let mut ring = io_uring::IoUring::builder();
        ring.setup_cqsize(COMPLETION_ENTRIES);
        taskrun.apply(&mut ring);
        RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .uring_builder(ring)
            .enable_timer()
            .build()
    };
    let uring = || {
        let (rt, used) = taskrun.build_or_default(ring)?;
        if used != taskrun {
            tracing::debug!(?taskrun, "task-work mode refused; using the default");
        }
        Ok::<_, io::Error>(rt)
    };
    let legacy = || RuntimeBuilder::<LegacyDriver>::new().enable_timer().build();
    match driver {
        IoDriver::Uring => Ok(uring()?.block_on(make())),
        IoDriver::Epoll => Ok(legacy()?.block_on(make())),
        IoDriver::Auto => match uring() {
            Ok(mut rt) => Ok(rt.block_on(make())),
            Err(e) => {
                tracing::debug!(error = %e, "io_uring unavailable; using epoll");
                Ok(legacy()?.block_on(make()))
            }
        },
    }
}

/// What a core reports once it listens.
#[derive(Debug)]
struct Ready {
    tcp_addr: Option<SocketAddr>,
    legacy: bool,
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
}

/// Starts everything, serves until SIGTERM/SIGINT, drains, and returns how many payments
/// were left unprocessed.
pub fn run(config: Config) -> Result<usize, StartError> {
    let config = Arc::new(config);
    // Before any thread exists, so every thread inherits the mask and only `wait` sees them.
    let signals = shutdown::Signals::block();
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
    match &config.data_dir {
        // Before any core opens its file: the core count may differ from the last run.
        Some(dir) => {
            crate::journal::rebalance(dir, config.workers)?;
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
    let mut prepared = Prepared::new(&config.listen)
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
    let mut handoffs = match &handoff_socket {
        Some(socket) => crate::handoff::per_core(socket.clone(), config.workers),
        None => Vec::new(),
    }
    .into_iter();

    let (shard_txs, shard_rxs): (Vec<_>, Vec<_>) = (0..config.workers)
        .map(|_| flume::unbounded::<ShardCmd>())
        .unzip();
    let router = router::spawn(
        shard_txs,
        config.peers.clone(),
        config.peer_timeout,
        config.io_driver,
        config.uring_taskrun,
        config.purge_token.clone(),
    )
    .map_err(StartError::Thread)?;

    let cap = ConnectionCap::new(config.max_connections);
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    let mut legacy = false;
    for (id, shard_rx) in shard_rxs.into_iter().enumerate() {
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let (ready_tx, ready_rx) = flume::bounded::<Result<Ready, String>>(1);
        let (config, router, source) = (config.clone(), router.clone(), prepared.clone());
        let cap = cap.clone();
        let handoff = handoffs.next();
        let handle = std::thread::Builder::new()
            .name(format!("rinha-core-{id}"))
            .spawn(move || {
                let (driver, taskrun) = (config.io_driver, config.uring_taskrun);
                let ready_err = ready_tx.clone();
                let run = move || {
                    core_main(
                        id, config, resolved, source, router, shard_rx, stop_rx, ready_tx, cap,
                        handoff,
                    )
                };
                match block_on(driver, taskrun, run) {
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
        // Port 0: every later core binds the port the first one got (SO_REUSEPORT).
        if let Some(addr) = ready.tcp_addr {
            prepared.set_tcp_addr(addr);
        }
        legacy |= ready.legacy;
        stops.push(stop_tx);
        threads.push(handle);
    }

    tracing::info!(
        "rinha started version={} driver={} workers={} listen={} default={} fallback={} peers={} handoff={}",
        env!("CARGO_PKG_VERSION"),
        if legacy { "epoll" } else { "io_uring" },
        config.workers,
        prepared.describe(),
        config.default_url,
        config.fallback_url,
        config
            .peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
        handoff_socket
            .as_ref()
            .map_or_else(|| "off".to_owned(), Prepared::describe),
    );

    let signal = signals.wait();
    tracing::info!(signal, "shutting down");
    for stop in &stops {
        let _ = stop.send(());
    }
    // A hand-over offered from now on finds no socket and goes to the other backend at once.
    if let Some(socket) = &handoff_socket {
        socket.cleanup();
    }
    let mut left = 0;
    for t in threads {
        left += t.join().unwrap_or(0);
    }
    prepared.cleanup();
    Ok(left)
}

/// Raises the open-files limit and grows the descriptor table to what this configuration
/// can open, while this is the only thread (see `rinha_sys::fds`: growing it later stalls every
/// core for an RCU grace period). Failure only costs those stalls: logged, not fatal.
fn reserve_descriptors(config: &Config) {
    // Each connection one; each sender at most one processor connection; the rest (rings,
    // eventfds, journal files, peer and router connections) fits in the margin.
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

#[allow(clippy::too_many_arguments)]
async fn core_main(
    id: usize,
    config: Arc<Config>,
    resolved: [Option<SocketAddr>; 2],
    source: Prepared,
    router: RouterHandle,
    shard_rx: flume::Receiver<ShardCmd>,
    stop_rx: flume::Receiver<()>,
    ready_tx: flume::Sender<Result<Ready, String>>,
    cap: Arc<ConnectionCap>,
    handoff: Option<CoreHandoff>,
) -> usize {
    let listener = match source.for_core() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready_tx.send(Err(e.to_string()));
            return 0;
        }
    };
    let (durable, replay) = match &config.data_dir {
        None => (None, None),
        Some(dir) => match Journal::open_state(dir, id, config.journal_sync) {
            Ok((j, replay)) => (Some(Durable::new(j)), Some(replay)),
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return 0;
            }
        },
    };
    let core = Rc::new(Core::new(id, config.clone(), resolved, router, durable));
    if let Some(replay) = replay {
        durable::restore(&core, replay);
    }
    let handoff = match handoff.map(|h| h.start(&core, &cap)).transpose() {
        Ok(running) => running,
        Err(e) => {
            let _ = ready_tx.send(Err(format!("hand-over socket: {e}")));
            return 0;
        }
    };
    let _ = ready_tx.send(Ok(Ready {
        tcp_addr: listener.tcp_addr(),
        legacy: monoio::utils::is_legacy(),
    }));
    monoio::spawn(router::serve_shard(core.clone(), shard_rx));
    monoio::spawn(durable::committer(core.clone()));
    for _ in 0..config.senders {
        monoio::spawn(worker::sender(core.clone()));
    }
    monoio::spawn(worker::fee_reader(core.clone()));
    loop {
        monoio::select! {
            _ = stop_rx.recv_async() => break,
            accepted = listener.accept() => match accepted {
                // At the cap the new stream is dropped here: closed at once, nothing read.
                Ok(Accepted::Tcp(s)) => if let Some(slot) = cap.try_acquire() {
                    let _ = s.set_nodelay(true);
                    monoio::spawn(conn::serve(s, core.clone(), slot));
                }
                Ok(Accepted::Unix(s)) => if let Some(slot) = cap.try_acquire() {
                    monoio::spawn(conn::serve(s, core.clone(), slot));
                }
                Err(e) => {
                    // EMFILE and kin: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    drop(handoff);
    core.begin_shutdown();
    let deadline = Instant::now() + config.shutdown_grace;
    while core.pending() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(d) = &core.durable {
        // Confirmations of the last turn; what is still unsettled replays at the next start.
        d.commit_now();
        if core.pending() == 0 {
            d.maybe_compact();
        }
    }
    core.pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every driver and task-work mode runs io on the driver it names: `epoll` always the
    /// legacy one, `uring` never, `auto` io_uring wherever the kernel has it.
    #[test]
    fn every_driver_and_taskrun_mode_runs_io() {
        let uring_here = monoio::utils::detect_uring();
        for taskrun in [Taskrun::Default, Taskrun::Coop, Taskrun::Defer] {
            for driver in [IoDriver::Epoll, IoDriver::Auto, IoDriver::Uring] {
                if driver == IoDriver::Uring && !uring_here {
                    continue;
                }
                let (legacy, echoed) = block_on(driver, taskrun, || async {
                    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
                    let (mut a, mut b) = monoio::net::UnixStream::pair().unwrap();
                    let (written, _) = a.write_all(b"ping".to_vec()).await;
                    written.unwrap();
                    let (read, buf) = b.read(Vec::with_capacity(8)).await;
                    read.unwrap();
                    (monoio::utils::is_legacy(), buf)
                })
                .unwrap();
                assert_eq!(echoed, b"ping", "{driver:?} {taskrun:?}");
                let expect_legacy = driver == IoDriver::Epoll || !uring_here;
                assert_eq!(legacy, expect_legacy, "{driver:?} {taskrun:?}");
            }
        }
    }
}
