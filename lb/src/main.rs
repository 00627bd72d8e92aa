//! `rinha-lb`: reads the configuration, starts one monoio runtime per worker, and waits for
//! SIGTERM/SIGINT. Everything else lives in the library (`src/lib.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rinha_lb::config::{Config, Mode};
use rinha_lb::{runtime, server};

fn main() -> ExitCode {
    init_logging();
    // clap exits with status 2 and a usage message when BACKENDS is absent or unparsable.
    let config = Arc::new(Config::parse());
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("rinha-lb failed: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Arc<Config>) -> anyhow::Result<()> {
    let driver = runtime::choose(config.io_driver, config.uring_taskrun)?;
    let targets = config.targets()?;
    let needed = u64::from(config.max_connections) * 2 + 64;
    // While this is the only thread (rinha_sys::fds: growing the table later stalls every worker).
    let fd_limit = rinha_sys::fds::prepare(needed)?;
    if fd_limit < needed {
        tracing::warn!(fd_limit, max_connections = config.max_connections, "open-files limit is below what MAX_CONNECTIONS needs; accepts will fail with EMFILE first");
    }
    // Before any thread exists, so every worker inherits the mask and only sigwait sees them.
    server::block_shutdown_signals()?;
    let workers = usize::from(config.workers);
    let (listeners, listen) = server::bind_listeners(config.listen, workers)?;
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
                "handoff:{}",
                targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    );

    if let runtime::Driver::IoUring(taskrun) = driver {
        tracing::info!(?taskrun, "io_uring task-work mode");
    }
    let cap = Arc::new(server::ConnectionCap::new(config.max_connections as usize));
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let mut threads = Vec::with_capacity(workers);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (config, cap, stop) = (config.clone(), cap.clone(), stop_rx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("lb-worker-{index}"))
            .spawn(move || {
                let result = runtime::block_on(
                    driver,
                    server::run_worker(index, listener, config, cap, stop),
                );
                // A worker that cannot run leaves the port half-served: stop the whole process
                // rather than wait for a signal that a supervisor has no reason to send.
                let error = match result {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => anyhow::Error::from(error),
                    Err(error) => anyhow::Error::from(error),
                };
                tracing::error!(worker = index, "rinha-lb failed: {error:#}");
                std::process::exit(1);
            })?;
        threads.push(thread);
    }
    drop(stop_rx);

    // The signal waiter ends the workers by dropping the only sender.
    std::thread::Builder::new()
        .name("lb-signals".into())
        .spawn(move || {
            match server::wait_for_signal() {
                Ok(signal) => tracing::info!(
                    signal,
                    grace_ms = config.shutdown_grace_ms,
                    "rinha-lb stopping: no new clients, open connections may finish"
                ),
                Err(error) => tracing::error!(%error, "waiting for signals failed; stopping"),
            }
            drop(stop_tx);
        })?;

    for thread in threads {
        if thread.join().is_err() {
            anyhow::bail!("a worker panicked");
        }
    }
    tracing::info!("rinha-lb stopped");
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
