//! Internal endpoints stay internal: `/internal/*` (a peer's part of a summary, the purge
//! fanned out to the peers) answers only on the peer socket (`PEER_LISTEN`). Through the real
//! `rinha-lb`, relaying or handing over, a client gets 404 for them and purges nothing, while
//! the peers still ask each other and the summary across both instances stays exact.

mod common;
mod faults_support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use faults_support::Lb;
use uuid::Uuid;

/// One request through the lb on a fresh TCP connection; returns (status, body).
fn through(lb: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(lb).expect("connect to the lb");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).expect("write");
    read_response(&mut s)
}

fn internal_is_not_public(mode: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let extra: Vec<(&str, String)> = ["b1", "b2"]
        .iter()
        .map(|n| {
            let handoff = dir.0.join(format!("{n}.handoff.sock"));
            ("HANDOFF_LISTEN", format!("unix:{}", handoff.display()))
        })
        .collect();
    let (s1, s2) = (dir.0.join("b1.sock"), dir.0.join("b2.sock"));
    let a = Instance::start(
        &dir.0,
        "b1",
        "auto",
        &procs,
        &[&s2],
        &[("HANDOFF_LISTEN", &extra[0].1)],
    );
    let b = Instance::start(
        &dir.0,
        "b2",
        "auto",
        &procs,
        &[&s1],
        &[("HANDOFF_LISTEN", &extra[1].1)],
    );
    let lb = Lb::start_with(
        &dir.0,
        "127.0.0.1:0",
        &[&a.socket, &b.socket],
        &[("LB_MODE", mode)],
    );
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        let body = format!(r#"{{"correlationId":"{id}","amount":19.90}}"#);
        let raw = format!(
            "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(through(lb.addr, &raw).0, 202, "{mode}: POST /payments");
    }
    // Twice each, so that round-robin brings both backends in.
    for _ in 0..2 {
        for raw in [
            "GET /internal/payments-summary HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET /internal/payments-summary?asof=0 HTTP/1.1\r\nHost: t\r\n\r\n",
            "POST /internal/purge-payments HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            "PUT /internal/purge-payments HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            "GET /internal/anything HTTP/1.1\r\nHost: t\r\n\r\n",
        ] {
            let (status, body) = through(lb.addr, raw);
            assert_eq!(status, 404, "{mode}: {raw:?} answered {body}");
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || a.summary("")
            == procs.window(None, None)
            && procs.counts().0 + procs.counts().1 == 6),
        "{mode}: not settled: {:?} / {:?}",
        a.summary(""),
        procs.window(None, None)
    );
    // Nothing purged, and the peers still ask each other: every instance's summary (its own
    // shards plus the other's, over the peer socket) equals the processors'.
    let theirs = procs.window(None, None);
    assert_eq!(theirs.0 .0 + theirs.1 .0, 6, "{mode}: purged");
    assert_eq!(a.summary(""), theirs, "{mode}: b1");
    assert_eq!(b.summary(""), theirs, "{mode}: b2");
    let (status, _) = through(lb.addr, "GET /payments-summary HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200, "{mode}: public summary through the lb");
    // On the peer socket the internal summary still answers: one instance's own part.
    let (status, body) = a.get_as_peer("/internal/payments-summary");
    assert_eq!(status, 200, "{mode}: {body}");
    // The client socket answers like the lb does (what the lb relays to, in relay mode).
    assert_eq!(a.get("/internal/payments-summary").0, 404, "{mode}: LISTEN");
}

#[test]
fn internal_endpoints_answer_404_through_the_relaying_lb() {
    internal_is_not_public("relay");
}

#[test]
fn internal_endpoints_answer_404_through_the_handing_over_lb() {
    internal_is_not_public("handoff");
}

/// An instance with peers must have a peer socket: otherwise they cannot ask it, and every
/// summary of theirs would fail later; it refuses to start, saying why.
#[test]
fn peers_without_a_peer_socket_refuse_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinha"))
        .env_clear()
        .env("LISTEN", "127.0.0.1:0")
        .env("PEERS", "unix:/nonexistent/peer.sock")
        .output()
        .expect("run rinha");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PEER_LISTEN"), "{err}");
}
