//! The process: the driver chosen once (`rinha_sys::driver`), the descriptor table and the
//! signal mask set up while the main thread is alone, one thread per worker runtime on its
//! own `SO_REUSEPORT` listener, and a signal thread that ends them on SIGTERM/SIGINT.

use std::io;
use std::sync::Arc;

use rinha_sys::cap::ConnectionCap;
use rinha_sys::discovery::{Discovery, DiscoveryError};
use rinha_sys::driver::{Driver, DriverError, RingSize};
use rinha_sys::signals::Signals;

use crate::config::{AddrError, Config, Mode};
use crate::server;

/// io_uring rings per worker. Each open connection has at most two operations in flight (one
/// read per direction); the kernel queues completions past this.
///
/// Why `defer` is the default task-work mode (`URING_TASKRUN`): in the default mode `perf`
/// put ~4 % of the lb's samples in `get_signal`, the kernel interrupting the thread to run
/// completion work; `defer` runs that work inside the wait the worker makes anyway, with no
/// interruption. In interleaved `rinha-bench lbs` runs the three modes measured within noise
/// of each other (docs/benchmarks.md, "Load balancers"), so the choice rests on the
/// mechanism.
const RING: RingSize = RingSize {
    entries: 1024,
    completions: None,
};

/// Why the load balancer could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No runtime of the requested driver.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A `BACKENDS` or `HANDOFF_BACKENDS` entry that cannot be used in this mode.
    #[error(transparent)]
    Backends(#[from] AddrError),
    /// The descriptor table, the listeners or a thread.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The discovery thread could not start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// A worker thread panicked.
    #[error("a worker panicked")]
    WorkerPanicked,
}

/// Starts the workers, serves until SIGTERM/SIGINT, and returns once every worker has drained.
pub fn run(config: Arc<Config>) -> Result<(), StartError> {
    let driver = Driver::choose(config.io_driver, config.uring_taskrun, RING)?;
    let targets = config.targets()?;
    let (max_connections, cap_basis) = config.connection_cap();
    let needed = max_connections as u64 * 2 + 64;
    // While this is the only thread (rinha_sys::fds: growing the table later stalls every worker).
    let fd_limit = rinha_sys::fds::prepare(needed)?;
    if fd_limit < needed {
        tracing::warn!(fd_limit, max_connections, "open-files limit is below what MAX_CONNECTIONS needs; accepts will fail with EMFILE first");
    }
    // Before any thread exists, so every worker inherits the mask and only sigwait sees them.
    let signals = Signals::block();
    // After the mask: the discovery's thread must not take the signals either.
    let found = match config.sources() {
        Some(sources) => Some(Discovery::start(sources, config.discovery_every())?),
        None => None,
    };
    let workers = usize::from(config.workers);
    let (listeners, listen) = rinha_sys::listener::bind_reuseport_all(config.listen, workers)?;
    tracing::info!(
        "rinha-lb started version={} driver={} workers={} listen={} backends={} mode={}",
        env!("CARGO_PKG_VERSION"),
        driver,
        workers,
        listen,
        config.backends_display(),
        match config.lb_mode {
            Mode::Relay => "relay".to_owned(),
            Mode::Handoff => format!(
                "handoff:{}{}",
                config
                    .handoff_dir
                    .as_ref()
                    .map_or_else(String::new, |d| format!("dir:{} ", d.display())),
                targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    );

    if let Driver::IoUring { taskrun, .. } = driver {
        tracing::info!(?taskrun, "io_uring task-work mode");
    }
    tracing::info!(max_connections, basis = %cap_basis, "connection cap");
    let cap = ConnectionCap::new(max_connections);
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let mut threads = Vec::with_capacity(workers);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (config, cap, stop) = (config.clone(), cap.clone(), stop_rx.clone());
        let found = found.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lb-worker-{index}"))
            .spawn(move || {
                let result = driver.block_on(server::run_worker(
                    index, listener, config, cap, stop, found,
                ));
                // A worker that cannot run leaves the port half-served: stop the whole process
                // rather than wait for a signal that a supervisor has no reason to send.
                let error = match result {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                };
                tracing::error!(worker = index, "rinha-lb failed: {error}");
                std::process::exit(1);
            })?;
        threads.push(thread);
    }
    drop(stop_rx);

    // The signal waiter ends the workers by dropping the only sender.
    std::thread::Builder::new()
        .name("lb-signals".into())
        .spawn(move || {
            let signal = signals.wait();
            tracing::info!(
                signal,
                grace_ms = config.shutdown_grace_ms,
                "rinha-lb stopping: no new clients, open connections may finish"
            );
            drop(stop_tx);
        })?;

    for thread in threads {
        if thread.join().is_err() {
            return Err(StartError::WorkerPanicked);
        }
    }
    tracing::info!("rinha-lb stopped");
    Ok(())
}
