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
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
