//! `rinha-lb`: reads the configuration, sets up logging and runs the load balancer
//! (`rinha_lb::runtime`) until SIGTERM/SIGINT. Exit codes: 0 after a clean shutdown, 1 if it
//! could not start or a worker failed, 2 for a bad configuration (clap's usage error).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rinha_lb::config::Config;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // clap exits with status 2 and a usage message when BACKENDS is absent or unparsable.
    let config = Arc::new(Config::parse());
    match rinha_lb::runtime::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("rinha-lb failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
