//! The `rinha` binary: read the configuration, set up logging, run. Exit codes: 0 after a
//! clean shutdown, 1 if the server could not start, 2 for a bad configuration, 3 when a
//! core's journal became unusable (`journal::commit::EXIT_JOURNAL`: the restart replays it).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rinha::config::{Args, Config};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Styles only for a terminal: a file, a pipe or a log collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Config::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rinha: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match rinha::runtime::run(config) {
        Ok(left) => {
            if left > 0 {
                tracing::warn!(unprocessed = left, "stopped with payments unprocessed");
            } else {
                tracing::info!("stopped; no payment left unprocessed");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::from(1)
        }
    }
}
