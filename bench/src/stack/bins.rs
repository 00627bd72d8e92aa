//! Finding the binaries of the stack: `rinha` and `rinha-lb` next to the running executable
//! (the same `target/<profile>/`), built first with the same profile when we run under cargo
//! (`CARGO` is set), unless flags name them.

use std::path::{Path, PathBuf};

use super::{StackError, StackOpts};

/// The three programs the stack runs.
#[derive(Debug)]
pub struct Bins {
    pub bench: PathBuf,
    pub rinha: PathBuf,
    pub lb: PathBuf,
}

/// The directory of the running executable; a test binary lives in `target/<profile>/deps`,
/// whose parent holds the binaries.
fn profile_dir() -> Result<PathBuf, StackError> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        _ => dir,
    })
}

/// Runs `$CARGO build [--release] -p rinha -p rinha-lb` in the workspace.
fn build(cargo: &str) -> Result<(), StackError> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "-p", "rinha", "-p", "rinha-lb"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!("building rinha and rinha-lb: {command:?}");
    let status = command
        .status()
        .map_err(|e| StackError::Build(format!("cannot run {cargo}: {e}")))?;
    if !status.success() {
        return Err(StackError::Build(format!(
            "{command:?} exited with {status}"
        )));
    }
    Ok(())
}

/// Resolves (and under cargo, builds) the binaries.
pub fn resolve(opts: &StackOpts) -> Result<Bins, StackError> {
    let dir = profile_dir()?;
    let needs_build = opts.rinha_bin.is_none() || opts.lb_bin.is_none();
    if needs_build && !opts.no_build {
        // Under `cargo run` the binaries next to us may be stale or missing: cargo knows.
        if let Ok(cargo) = std::env::var("CARGO") {
            build(&cargo)?;
        }
    }
    let bench = match &opts.bench_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let bins = Bins {
        bench,
        rinha: opts.rinha_bin.clone().unwrap_or_else(|| dir.join("rinha")),
        lb: opts.lb_bin.clone().unwrap_or_else(|| dir.join("rinha-lb")),
    };
    for (name, path, flag) in [
        ("rinha-bench", &bins.bench, "bench-bin"),
        ("rinha", &bins.rinha, "rinha-bin"),
        ("rinha-lb", &bins.lb, "lb-bin"),
    ] {
        if !path.is_file() {
            return Err(StackError::Missing {
                name,
                path: path.clone(),
                flag,
            });
        }
    }
    Ok(bins)
}
