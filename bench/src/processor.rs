//! `rinha-bench processor`: the payment-processor emulator ([`rinha_emulator`]) as a command,
//! its settings as flags (each also an environment variable), until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rinha_emulator::{bind, Chaos, Config, Fee, Limits};

/// Command-line arguments of `rinha-bench processor` (each also an environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "PROCESSOR_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// Fee per transaction, as a decimal fraction of the amount (0.05 = 5 %).
    #[arg(long, env = "PROCESSOR_FEE", default_value = "0.05")]
    pub fee: Fee,
    /// Initial admin token (header X-Rinha-Token).
    #[arg(long, env = "PROCESSOR_TOKEN", default_value = "123")]
    pub token: String,
    /// Length of the service-health window, in seconds (one call per window).
    #[arg(long, env = "PROCESSOR_HEALTH_WINDOW", default_value = "5", value_parser = parse_seconds)]
    pub health_window: Duration,
    /// Chaos: after storing every Nth payment, close the connection instead of answering
    /// (the payment stays stored; 0 = off).
    #[arg(long, env = "PROCESSOR_CHAOS_DROP_EVERY", default_value_t = 0)]
    pub chaos_drop_every: u64,
    /// Chaos: reset (RST) the connection of every Nth POST /payments before reading or
    /// storing it (0 = off).
    #[arg(long, env = "PROCESSOR_CHAOS_RESET_EVERY", default_value_t = 0)]
    pub chaos_reset_every: u64,
    /// Requests to POST /payments processed at once.
    #[arg(long, env = "PROCESSOR_MAX_RUNNING", default_value_t = 800)]
    pub max_running: usize,
    /// Requests to POST /payments waiting for a slot before 429.
    #[arg(long, env = "PROCESSOR_MAX_QUEUED", default_value_t = 500)]
    pub max_queued: usize,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("not a number: {text:?}"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|window| !window.is_zero())
        .ok_or_else(|| format!("not a positive duration: {text:?}"))
}

impl From<Args> for Config {
    fn from(args: Args) -> Config {
        Config {
            listen: args.listen,
            fee: args.fee,
            token: args.token,
            health_window: args.health_window,
            chaos: Chaos {
                drop_every: args.chaos_drop_every,
                reset_every: args.chaos_reset_every,
            },
            limits: Limits {
                running: args.max_running,
                queued: args.max_queued,
            },
        }
    }
}

/// Runs `rinha-bench processor` until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::from(args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener =
            bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // The first line alone, so scripts can wait for it and read the address.
        tracing::info!("processor listening on {addr}");
        tracing::info!(
            fee = %config.fee,
            health_window = ?config.health_window,
            drop_every = config.chaos.drop_every,
            reset_every = config.chaos.reset_every,
            "processor settings"
        );
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot watch SIGTERM")?;
        rinha_emulator::serve(listener, &config, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await;
        tracing::info!("processor on {addr} stopped");
        Ok(ExitCode::SUCCESS)
    })
}
