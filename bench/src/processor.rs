//! Placeholder: owned by the issue that builds `rinha-bench processor`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench processor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench processor`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench processor is not built yet")
}
