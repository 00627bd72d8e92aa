//! Placeholder: owned by the issue that builds `rinha-bench rinha`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench rinha`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench rinha`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench rinha is not built yet")
}
