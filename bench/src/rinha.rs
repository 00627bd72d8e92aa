//! `rinha-bench rinha`: the contest's test ([`crate::contest`]) from the command line: the
//! score sheet, the JSON and SVG files, and `--strict`'s exit code.

use std::process::ExitCode;

use anyhow::Context;

use crate::contest::{chart, run_test, Args};

/// Runs `rinha-bench rinha`: the test, the score sheet, the files, the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run_test(&args) => report,
            // Dropping the test future drops the stack, which kills every child.
            _ = crate::stack::shutdown_signal() => anyhow::bail!("interrupted"),
        }
    })?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json()?).with_context(|| format!("writing {path:?}"))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, chart::svg(&report)).with_context(|| format!("writing {path:?}"))?;
        println!("chart written to {}", path.display());
    }
    let failures = report.strict_failures();
    if args.strict && !failures.is_empty() {
        println!("strict: FAILED");
        for why in &failures {
            println!("  - {why}");
        }
        return Ok(ExitCode::from(1));
    }
    if args.strict {
        println!("strict: passed");
    }
    Ok(ExitCode::SUCCESS)
}
