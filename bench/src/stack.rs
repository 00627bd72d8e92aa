//! Placeholder: owned by the issue that builds `rinha-bench stack`.

use std::process::ExitCode;

/// Command-line arguments of `rinha-bench stack`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rinha-bench stack`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rinha-bench stack is not built yet")
}
