//! Logging for the bench binary: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

/// Installs the global subscriber; safe to call more than once (later calls do nothing).
///
/// Colours only when stderr is a terminal, so scripts can match log lines. Internal errors of
/// the subscriber (a parent that closed our stderr pipe) are not reported: reporting them
/// would panic on the very stream that failed.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .try_init();
}
