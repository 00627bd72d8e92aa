//! Placeholder: owned by the issue that builds `rinha-bench floor`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench floor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench floor`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench floor is not built yet")
}
