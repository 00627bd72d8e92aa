//! A processor name that resolves slowly never holds up intake (issue 16, item 7): the core
//! that looks it up keeps answering `POST /payments` while the lookup runs elsewhere, lookups
//! are throttled, and the answer is used once it comes.
//!
//! In-process: `rinha::runtime::run` on a thread of this test, with a resolver injected
//! through `Config::resolver` (the system's cannot be made slow on purpose), in front of the
//! emulated processors. The server is never stopped: it goes with the test process.

mod common;

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use rinha::config::{Args, Config};
use rinha::processor::resolve::Resolver;
use uuid::Uuid;

/// How long the slow name takes to resolve, every time after its first.
const SLOW: Duration = Duration::from_millis(1200);

/// The default processor is `slow-dns.test`: its first lookup (at start) answers at once
/// with an address where nothing listens, every later one takes [`SLOW`] and answers the
/// real processor (a container restarted elsewhere, behind a slow DNS). Payments are posted
/// every 20 ms for 4 s on one connection: each is answered well under the lookup's time,
/// while under a blocking lookup the core stalls for all of it. Then every accepted payment
/// reaches a processor, the default among them (the lookup's answer was used), after at most
/// one lookup per second.
fn a_slow_resolver_never_blocks_intake(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let live = procs.default.addr;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = lookups.clone();
    let resolver = Resolver::new(move |authority| -> io::Result<SocketAddr> {
        if !authority.starts_with("slow-dns.test:") {
            return Resolver::system().resolve(authority);
        }
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(dead);
        }
        std::thread::sleep(SLOW);
        Ok(live)
    });
    let socket = dir.0.join("rinha.sock");
    let mut config = Config::from_args(Args::parse_from([
        "rinha",
        "--listen",
        &format!("unix:{}", socket.display()),
        "--processor-default-url",
        "http://slow-dns.test:8080",
        "--processor-fallback-url",
        &procs.fallback.url(),
        "--workers",
        "1",
        "--io-driver",
        driver,
    ]))
    .unwrap();
    config.resolver = resolver;
    std::thread::spawn(move || rinha::runtime::run(config));
    assert!(eventually(Duration::from_secs(10), || UnixStream::connect(
        &socket
    )
    .is_ok()));

    let started = Instant::now();
    let mut conn = UnixStream::connect(&socket).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut sent, mut slowest) = (0u64, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(4) {
        let body = format!(r#"{{"correlationId":"{}","amount":19.90}}"#, Uuid::new_v4());
        let raw = format!(
            "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let asked = Instant::now();
        std::io::Write::write_all(&mut conn, raw.as_bytes()).unwrap();
        let (status, _) = read_response(&mut conn);
        slowest = slowest.max(asked.elapsed());
        assert_eq!(status, 202);
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        slowest < SLOW / 3,
        "a POST took {slowest:?} behind a {SLOW:?} lookup"
    );
    assert!(
        eventually(Duration::from_secs(15), || {
            let (d, f) = procs.counts();
            d + f == sent
        }),
        "sent {sent}, processors hold {:?}",
        procs.counts()
    );
    let (default, _) = procs.counts();
    assert!(default > 0, "the slow lookup's answer was never used");
    let n = lookups.load(Ordering::SeqCst);
    let bound = 2 + started.elapsed().as_secs() as usize;
    assert!(n <= bound, "{n} lookups in {:?}", started.elapsed());
}

both_drivers!(a_slow_resolver_never_blocks_intake);
