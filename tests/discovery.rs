//! Replicas found through DNS (issue 25, items 1 and 3): three instances on TCP loopback
//! addresses (127.0.0.2-4, one port), two of them in this process finding the others through
//! `PEERS=dns:replicas.test:<port>` whose records the test sets (`Config::peer_lookup`: the
//! system's resolver cannot be told what to answer), the third a real process listing the
//! other two statically. A replica gone from the records and silent makes every summary a
//! 5XX until it is back (then exact again, its journal replayed) or forgotten.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use common::*;
use rinha::config::{Args, Config};
use rinha_sys::discovery::Lookup;
use uuid::Uuid;

/// This test's port, on every address (25000-25999 is this suite's range).
const PORT: u16 = 25101;
/// Long enough for the checks made while the third is gone (a failing summary takes
/// `PEER_TIMEOUT_MS`), short enough to wait out.
const FORGET_MS: u64 = 8000;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], PORT))
}

/// Where the instance on `127.0.0.<last>` answers its peers (`PEER_LISTEN`): the next port.
fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], PORT + 1))
}

fn tcp(to: SocketAddr, raw: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    Some(read_response(&mut s))
}

fn pay(to: SocketAddr, id: Uuid) -> u16 {
    let body = format!(r#"{{"correlationId":"{id}","amount":19.90}}"#);
    let raw = format!(
        "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp(to, &raw).map_or(0, |r| r.0)
}

/// (status, (default count, fallback count)) of a summary asked at `to`.
fn summary(to: SocketAddr) -> (u16, (u64, u64)) {
    let (status, body) =
        tcp(to, "GET /payments-summary HTTP/1.1\r\nHost: t\r\n\r\n").unwrap_or((0, String::new()));
    if status != 200 {
        return (status, (0, 0));
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("summary json");
    let n = |k: &str| v[k]["totalRequests"].as_u64().unwrap();
    (status, (n("default"), n("fallback")))
}

/// The third instance, a process listing the other two (no DNS), journaled in `dir`.
fn third(procs: &Processors, dir: &std::path::Path) -> Child {
    let log = std::fs::File::create(dir.join("c.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rinha"))
        .env_clear()
        .env("LISTEN", addr(4).to_string())
        .env("PEER_LISTEN", peer(4).to_string())
        .env("PEERS", format!("{},{}", peer(2), peer(3)))
        .env("PROCESSOR_DEFAULT_URL", procs.default.url())
        .env("PROCESSOR_FALLBACK_URL", procs.fallback.url())
        .env("WORKERS", "1")
        .env("DATA_DIR", dir.join("c"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn rinha");
    assert!(eventually(Duration::from_secs(10), || {
        TcpStream::connect(addr(4)).is_ok()
    }));
    child
}

#[test]
fn a_replica_gone_from_the_records_fails_every_summary_until_it_is_back_or_forgotten() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("c")).unwrap();
    let procs = Processors::start();
    let records = Arc::new(Mutex::new(vec![peer(2), peer(3), peer(4)]));
    let mut c = third(&procs, &dir.0);
    for me in [2, 3] {
        let mut config = Config::from_args(Args::parse_from([
            "rinha",
            "--listen",
            &addr(me).to_string(),
            "--peer-listen",
            &peer(me).to_string(),
            "--peers",
            &format!("dns:replicas.test:{}", PORT + 1),
            "--processor-default-url",
            &procs.default.url(),
            "--processor-fallback-url",
            &procs.fallback.url(),
            "--workers",
            "1",
            "--discovery-every-ms",
            "100",
            "--peer-forget-ms",
            &FORGET_MS.to_string(),
            "--peer-timeout-ms",
            "1200",
        ]))
        .unwrap();
        let r = records.clone();
        config.peer_lookup = Lookup::new(move |name| {
            assert_eq!((name.host.as_str(), name.port), ("replicas.test", PORT + 1));
            Ok(r.lock().unwrap().clone())
        });
        std::thread::spawn(move || rinha::runtime::run(config));
    }
    for me in [2, 3] {
        assert!(eventually(Duration::from_secs(10), || {
            TcpStream::connect(addr(me)).is_ok()
        }));
    }

    // Ten payments at each instance; every summary counts all thirty.
    for me in [2, 3, 4] {
        for _ in 0..10 {
            assert_eq!(pay(addr(me), Uuid::new_v4()), 202);
        }
    }
    let stored = |want: u64| {
        eventually(Duration::from_secs(20), || {
            let (d, f) = procs.counts();
            d + f == want
        })
    };
    assert!(stored(30));
    let whole = procs.counts();
    for me in [2, 3, 4] {
        assert_eq!(summary(addr(me)), (200, whole), "summary at .{me}");
    }

    // The third dies and leaves the records: never a number without it.
    let _ = c.kill();
    let _ = c.wait();
    records.lock().unwrap().retain(|a| *a != peer(4));
    for me in [2, 3] {
        let (status, _) = summary(addr(me));
        assert!(
            (500..600).contains(&status),
            "summary at .{me} while .4 is gone: {status}"
        );
    }

    // Back, with its journal: exact again everywhere.
    c = third(&procs, &dir.0);
    records.lock().unwrap().push(peer(4));
    for me in [2, 3, 4] {
        assert!(
            eventually(Duration::from_secs(10), || summary(addr(me))
                == (200, whole)),
            "summary at .{me} once .4 is back: {:?}",
            summary(addr(me))
        );
    }

    // Gone for longer than PEER_FORGET_MS: forgotten, the summary leaves its payments out.
    let _ = c.kill();
    let _ = c.wait();
    records.lock().unwrap().retain(|a| *a != peer(4));
    assert!((500..600).contains(&summary(addr(2)).0));
    std::thread::sleep(Duration::from_millis(FORGET_MS + 500));
    let (status, (d, f)) = summary(addr(2));
    assert_eq!((status, d + f), (200, 20), "forgotten: the other two's");
}
