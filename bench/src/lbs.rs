//! Placeholder: owned by the issue that builds `rinha-bench lbs`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench lbs`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench lbs`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench lbs is not built yet")
}
