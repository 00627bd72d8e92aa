//! Replicas on one host sharing one environment (issue 25, item 2: `docker compose up
//! --scale`): every backend is started with the same `LISTEN=unix:<dir>/{hostname}.sock` and
//! `HANDOFF_LISTEN=unix:<dir>/{hostname}.handoff.sock`, each in a UTS namespace of its own
//! with its own host name (`unshare --uts`, as root; else the names are given explicitly),
//! and `rinha-lb` in hand-over mode finds every hand-over socket in `HANDOFF_DIR`, a
//! replica that arrives later included, without a list.

mod common;
mod faults_support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use faults_support::{kill, Lb};
use uuid::Uuid;

/// Whether this test may give processes a host name of their own.
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--uts", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A backend named `name` in `dir`: with `{hostname}` in its own UTS namespace when it can,
/// else with the name written out.
fn replica(dir: &Path, name: &str, procs: &Processors) -> Child {
    let unshare = can_unshare();
    let host = if unshare { "{hostname}" } else { name };
    let mut cmd = if unshare {
        let mut c = Command::new("unshare");
        c.args(["--uts", "sh", "-c", r#"hostname "$1" && exec "$2""#, "sh"])
            .arg(name)
            .arg(env!("CARGO_BIN_EXE_rinha"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_rinha"))
    };
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN", format!("unix:{}/{host}.sock", dir.display()))
        .env(
            "HANDOFF_LISTEN",
            format!("unix:{}/{host}.handoff.sock", dir.display()),
        )
        .env("PROCESSOR_DEFAULT_URL", procs.default.url())
        .env("PROCESSOR_FALLBACK_URL", procs.fallback.url())
        .env("WORKERS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd.spawn().expect("spawn rinha");
    let handoff = dir.join(format!("{name}.handoff.sock"));
    assert!(
        eventually(Duration::from_secs(10), || handoff.exists()),
        "{} not there: {}",
        handoff.display(),
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    );
    child
}

/// One payment through the lb on a fresh connection.
fn pay(lb: &Lb) -> u16 {
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = format!(r#"{{"correlationId":"{}","amount":1.00}}"#, Uuid::new_v4());
    write!(
        s,
        "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut s).0
}

/// Payments a replica has had stored (its own summary: it has no peers here).
fn stored_by(dir: &Path, name: &str) -> u64 {
    let socket = dir.join(format!("{name}.sock"));
    let (status, body) = request(&socket, "GET /payments-summary HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["default"]["totalRequests"].as_u64().unwrap()
        + v["fallback"]["totalRequests"].as_u64().unwrap()
}

#[test]
fn replicas_name_their_sockets_apart_and_the_lb_finds_every_one_in_the_directory() {
    let dir = TempDir::new();
    let procs = Processors::start();
    let mut replicas = vec![
        replica(&dir.0, "alpha", &procs),
        replica(&dir.0, "beta", &procs),
    ];
    let unused = dir.0.join("unused.sock");
    let lb = Lb::start_with(
        &dir.0,
        "127.0.0.1:0",
        &[&unused],
        &[
            ("LB_MODE", "handoff"),
            ("HANDOFF_DIR", &dir.0.display().to_string()),
            ("DISCOVERY_EVERY_MS", "100"),
        ],
    );
    for _ in 0..20 {
        assert_eq!(pay(&lb), 202);
    }
    let settled = |want: u64| {
        eventually(Duration::from_secs(20), || {
            let (d, f) = procs.counts();
            d + f == want
        })
    };
    assert!(settled(20));
    let (a, b) = (stored_by(&dir.0, "alpha"), stored_by(&dir.0, "beta"));
    assert_eq!((a, b), (10, 10), "round-robin over both replicas");

    // A third replica arrives: found in the directory, no list changed.
    replicas.push(replica(&dir.0, "gamma", &procs));
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&lb.log).is_ok_and(|l| l.contains("gamma.handoff.sock"))
    }));
    for _ in 0..30 {
        assert_eq!(pay(&lb), 202);
    }
    assert!(settled(50));
    assert_eq!(stored_by(&dir.0, "gamma"), 10);

    // It dies leaving its socket file: the lb skips it, every payment still lands.
    let mut gamma = replicas.pop().unwrap();
    kill(gamma.id(), libc::SIGKILL);
    let _ = gamma.wait();
    for _ in 0..20 {
        assert_eq!(pay(&lb), 202);
    }
    assert!(settled(70));
    assert_eq!(stored_by(&dir.0, "alpha") + stored_by(&dir.0, "beta"), 60);
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
}
