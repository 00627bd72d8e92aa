//! `rinha-bench stack`: the local stack ([`super::Stack`]) in the foreground until Ctrl-C,
//! SIGTERM or a part dying.

use std::process::ExitCode;

use super::{shutdown_signal, Stack, StackOpts};

/// Command-line arguments of `rinha-bench stack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub opts: StackOpts,
}

/// Runs `rinha-bench stack`: starts everything, waits for Ctrl-C/SIGTERM or a part dying.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stack = Stack::start(&args.opts).await?;
        print!("{}", stack.describe());
        println!("stack up; Ctrl-C stops it");
        let code = tokio::select! {
            _ = shutdown_signal() => ExitCode::SUCCESS,
            died = stack.watch() => {
                eprintln!("{died}");
                ExitCode::from(1)
            }
        };
        stack.stop().await;
        println!("stack stopped");
        Ok(code)
    })
}
