//! `rinha-bench rinha`: the contest's test ([`crate::contest`]) from the command line: the
//! score sheet, the JSON and SVG files, and `--strict`'s exit code.

use std::process::ExitCode;

use anyhow::Context;

use crate::contest::{chart, run_test, Args};
use crate::stack::run_until_interrupted;

/// Runs `rinha-bench rinha`: the test, the score sheet, the files, the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = run_until_interrupted(args.workers.max(1), run_test(&args))?;
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
