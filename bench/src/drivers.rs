//! Placeholder: owned by the issue that builds `rinha-bench drivers`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench drivers`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench drivers`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench drivers is not built yet")
}
