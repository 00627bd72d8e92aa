//! What the tests that start the real stack share: the binaries, built when missing, and free
//! ports.

use std::path::{Path, PathBuf};

/// The directory holding `rinha-bench` (and `rinha`, `rinha-lb` of the same profile).
fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rinha-bench"))
        .parent()
        .expect("a directory")
        .to_path_buf()
}

/// `rinha` and `rinha-lb`, built first (same profile) with cargo when missing.
pub fn stack_bins() -> (PathBuf, PathBuf) {
    let dir = profile_dir();
    let (rinha, lb) = (dir.join("rinha"), dir.join("rinha-lb"));
    if !(rinha.is_file() && lb.is_file()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "-p", "rinha", "-p", "rinha-lb"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo runs").success(), "{build:?}");
    }
    (rinha, lb)
}

/// A port that was free a moment ago (bound on port 0, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The flags that run the stack from `rinha`, `lb` and this `rinha-bench` at free ports,
/// without building: `--no-build`, the lb's and both processors' ports, `--rinha-bin`,
/// `--lb-bin`, `--bench-bin`; and the lb's port.
pub fn stack_flags(rinha: &Path, lb: &Path) -> (Vec<String>, u16) {
    let lb_port = free_port();
    let path = |bin: &Path| bin.to_str().expect("utf-8 path").to_owned();
    let flags = [
        "--no-build".to_owned(),
        "--lb-port".to_owned(),
        lb_port.to_string(),
        "--default-port".to_owned(),
        free_port().to_string(),
        "--fallback-port".to_owned(),
        free_port().to_string(),
        "--rinha-bin".to_owned(),
        path(rinha),
        "--lb-bin".to_owned(),
        path(lb),
        "--bench-bin".to_owned(),
        env!("CARGO_BIN_EXE_rinha-bench").to_owned(),
    ];
    (flags.to_vec(), lb_port)
}
