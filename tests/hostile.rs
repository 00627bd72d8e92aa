//! A catalogue of hostile requests against a real `rinha` process (issue 7, "Bad input and
//! abuse"): each case gets its status or a clean close, the process stays healthy (a valid
//! payment right after is accepted and reaches a processor), and no summary changes (the
//! backend's `GET /payments-summary` and the processors' stored counts before and after).
//!
//! Also: slow-drip heads and bodies (408 after `HEADER_TIMEOUT_MS`), idle connections (closed
//! after `IDLE_TIMEOUT_MS`), the connection cap (`MAX_CONNECTIONS`: excess closed at once,
//! one log line), 10,000 idle connections held open while valid traffic is served, and the
//! purge token. Under both drivers.

#[path = "hostile/catalogue.rs"]
mod catalogue;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use catalogue::{catalogue, exchange, find, post, Want};
use common::*;
use uuid::Uuid;

/// The request deadline the catalogue runs with (short, so lying lengths end quickly).
const HEADER_TIMEOUT_MS: u64 = 800;

/// The summary and the processors' stored counts: what no hostile request may change.
fn state(inst: &Instance, procs: &Processors) -> State {
    (inst.summary(""), procs.counts())
}

type State = (((u64, u64), (u64, u64)), (u64, u64));

/// A valid payment right after the abuse is accepted, reaches a processor and is counted
/// once by the backend; returns the state after it.
fn healthy(inst: &Instance, procs: &Processors, before: State) -> State {
    assert_eq!(
        inst.pay(Uuid::new_v4(), "19.90"),
        202,
        "{}",
        inst.log_text()
    );
    let (((bd, _), (bf, _)), (pd, pf)) = before;
    assert!(
        eventually(Duration::from_secs(10), || {
            let (d, f) = procs.counts();
            d + f == pd + pf + 1
        }),
        "the valid payment was not processed: {:?}",
        procs.counts()
    );
    let after = state(inst, procs);
    let ((d, _), (f, _)) = after.0;
    assert_eq!(d + f, bd + bf + 1, "backend summary {:?}", after.0);
    after
}

fn catalogue_holds(driver: &str) {
    let timeout = HEADER_TIMEOUT_MS.to_string();
    let solo = Solo::start(driver, &[("HEADER_TIMEOUT_MS", &timeout)]);
    let (inst, procs) = (&solo.inst, &solo.procs);
    let before = state(inst, procs);
    let mut wrong = Vec::new();
    for (name, raw, shut, want) in catalogue() {
        let end = exchange(inst, &raw, shut);
        if !want.accepts(end) {
            wrong.push(format!("{name}: want {want:?}, got {end:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every case that keeps the connection, pipelined in one write: answered in order on
    // the same connection, which stays usable.
    let mut train = Vec::new();
    let mut statuses = Vec::new();
    for (_, raw, _, want) in catalogue() {
        if let Want::KeepWith(code) = want {
            train.extend_from_slice(&raw);
            statuses.push(code);
        }
    }
    train.extend_from_slice(b"GET /payments-summary HTTP/1.1\r\n\r\n");
    statuses.push(200);
    let mut s = UnixStream::connect(&inst.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&train).unwrap();
    let got: Vec<u16> = statuses.iter().map(|_| read_response(&mut s).0).collect();
    assert_eq!(got, statuses);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state(inst, procs),
        before,
        "a hostile request changed the totals"
    );
    healthy(inst, procs, before);
}

both_drivers!(catalogue_holds);

/// A head dripped one byte at a time gets 408 once `HEADER_TIMEOUT_MS` passes since its
/// first byte, though every byte arrives well within the timeout of the one before; a body
/// dripped the same way too; an idle connection is closed silently after `IDLE_TIMEOUT_MS`,
/// and one that sends nothing more after a complete request too.
fn drips_and_idles(driver: &str) {
    let solo = Solo::start(
        driver,
        &[("HEADER_TIMEOUT_MS", "600"), ("IDLE_TIMEOUT_MS", "1500")],
    );
    let (inst, procs) = (&solo.inst, &solo.procs);
    let before = state(inst, procs);
    let body = format!(r#"{{"correlationId":"{}","amount":1}}"#, Uuid::new_v4());
    let raw = post(body.as_bytes());
    let head_len = find(&raw, b"\r\n\r\n").unwrap() + 4;
    for (what, from) in [("head", 0), ("body", head_len)] {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.write_all(&raw[..from]).unwrap();
        let start = Instant::now();
        let mut sent = from;
        // 50 ms per byte: the whole request would take seconds.
        while sent < raw.len() - 1 && s.write_all(&raw[sent..sent + 1]).is_ok() {
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
            if start.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let waited = start.elapsed();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "slow {what}: {answer:?} after {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(550) && waited < Duration::from_millis(2500),
            "slow {what}: 408 after {waited:?}"
        );
    }
    // Idle: nothing sent, or one complete request and then nothing.
    for first in [None, Some("GET /payments-summary HTTP/1.1\r\n\r\n")] {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        let start = Instant::now();
        if let Some(req) = first {
            s.write_all(req.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(read_response(&mut s).0, 200);
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let waited = start.elapsed();
        assert!(rest.is_empty(), "an idle close says nothing: {rest:?}");
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_millis(4000),
            "idle close after {waited:?}"
        );
    }
    assert_eq!(state(inst, procs), before);
    healthy(inst, procs, before);
}

both_drivers!(drips_and_idles);

/// Writes pipelined `GET /` (404, keep-alive) without reading any answer until the server
/// stops taking them: its answers fill this side's receive buffer, its write waits, it stops
/// reading, and our writes find every buffer full for `STUCK` in a row (or the server has
/// closed the connection already).
fn pipeline_until_stuck(s: &mut UnixStream) {
    const STUCK: Duration = Duration::from_millis(300);
    let train = b"GET / HTTP/1.1\r\n\r\n".repeat(100);
    s.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    loop {
        match s.write(&train) {
            Ok(_) => blocked_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if blocked_since.get_or_insert_with(Instant::now).elapsed() >= STUCK {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server kept reading"
        );
    }
    s.set_nonblocking(false).unwrap();
}

/// A client that pipelines requests and never reads the answers is closed once an answer has
/// waited `WRITE_TIMEOUT_MS` for it to read: it gives its place under `MAX_CONNECTIONS` back
/// (here the only one), and what it is sent ends in a close. Before, it held both forever.
fn a_client_that_never_reads_is_closed(driver: &str) {
    let solo = Solo::start(
        driver,
        &[("MAX_CONNECTIONS", "1"), ("WRITE_TIMEOUT_MS", "1000")],
    );
    let inst = &solo.inst;
    let served = || {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n");
        let mut b = [0u8; 12];
        s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 200"
    };
    // Answered once, so it holds the slot (the start's probe connection may hold it a
    // moment longer: then this one is closed at once and tried again).
    let mut stuck = None;
    assert!(eventually(Duration::from_secs(5), || {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let mut b = [0u8; 12];
        let ok = s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 404";
        stuck = ok.then_some(s);
        ok
    }));
    let mut stuck = stuck.unwrap();
    pipeline_until_stuck(&mut stuck);
    let since = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), served),
        "the stuck client still holds the only connection slot"
    );
    let waited = since.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "slot back after {waited:?}"
    );
    // Closed: an end of file, or a reset (the server closed with our requests unread).
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let end = stuck.read_to_end(&mut Vec::new());
    assert!(
        end.as_ref().map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionReset,
            |_| true
        ),
        "not closed: {end:?}"
    );
    // Served again (with one slot, not `healthy`: each of its fresh connections could find
    // the one before it still counted).
    assert!(eventually(Duration::from_secs(5), served));
}

both_drivers!(a_client_that_never_reads_is_closed);

/// 10,000 idle connections (fewer only if the open-files limit forbids it: the count is
/// printed) are held open while valid payments and summaries go through; then they all go
/// and the process is as healthy as before. The child inherits the raised limit.
#[test]
fn ten_thousand_idle_connections() {
    let nofile = rinha_sys::fds::raise_limit().unwrap_or(1024);
    // This process holds the client ends, the child the server ends; keep 500 spare for both.
    let count = 10_000usize.min(nofile.saturating_sub(500) as usize);
    println!("open-files limit {nofile}: holding {count} idle connections");
    assert!(count >= 1000, "open-files limit {nofile} is far too low");
    let dir = TempDir::new();
    let procs = Processors::start();
    for driver in DRIVERS {
        let inst = Instance::start(
            &dir.0,
            driver,
            driver,
            &procs,
            &[],
            &[("MAX_CONNECTIONS", "12000")],
        );
        let before = state(&inst, &procs);
        let mut idle = Vec::with_capacity(count);
        for i in 0..count {
            match UnixStream::connect(&inst.socket) {
                Ok(s) => idle.push(s),
                Err(e) => panic!("connection {i} of {count}: {e}"),
            }
        }
        // Every one of them is really accepted and served: one of each hundred asks.
        for s in idle.iter_mut().step_by(100) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(s).0, 200);
        }
        let after = healthy(&inst, &procs, before);
        drop(idle);
        healthy(&inst, &procs, after);
    }
}

/// The descriptor table is grown to what `MAX_CONNECTIONS` and `SENDERS` need before any
/// thread starts: grown later, each doubling stalls every core (`rinha_sys::fds`).
#[test]
fn descriptor_table_is_grown_before_threads_start() {
    let solo = Solo::start("auto", &[("MAX_CONNECTIONS", "3000"), ("SENDERS", "16")]);
    let inst = &solo.inst;
    // 3,000 connections + 2 cores x 16 senders + 256 spare; the child raises its soft limit
    // to the hard one it shares with this process.
    let wanted = (3000 + 2 * 16 + 256).min(rinha_sys::fds::raise_limit().unwrap());
    let size = rinha_sys::fds::table_size(inst.pid()).unwrap();
    assert!(size >= wanted, "FDSize {size}, want at least {wanted}");
}

/// Above `MAX_CONNECTIONS`, new connections are closed at once and the log says so once;
/// when the held ones go, new connections are served again.
fn connection_cap(driver: &str) {
    let solo = Solo::start(driver, &[("MAX_CONNECTIONS", "16")]);
    let (inst, procs) = (&solo.inst, &solo.procs);
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Served, so the server has surely counted it before the next connects.
        s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut s).0, 200);
        held.push(s);
    }
    for _ in 0..5 {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n");
        let mut rest = Vec::new();
        let start = Instant::now();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "over the cap, got {rest:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "not closed at once"
        );
    }
    let log = inst.log_text();
    assert_eq!(
        log.matches("connection cap reached").count(),
        1,
        "one line per episode: {log}"
    );
    drop(held);
    assert!(eventually(Duration::from_secs(5), || {
        let mut s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n");
        let mut b = [0u8; 12];
        s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 200"
    }));
    healthy(inst, procs, state(inst, procs));
}

both_drivers!(connection_cap);

/// `PURGE_TOKEN` set, on a pair of peered instances: a purge without the header, or with a
/// wrong one, is 401 and purges nothing, on the public path and on the internal one (on the
/// peer socket, a second lock); the right one purges both instances (the token travels to
/// the peer). Unset: open (the contest's test purges without a token).
#[test]
fn purge_token() {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, "auto", &procs, &[("PURGE_TOKEN", "s3cret")]);
    assert_eq!(a.pay(Uuid::new_v4(), "1"), 202);
    assert_eq!(b.pay(Uuid::new_v4(), "2"), 202);
    let total = |inst: &Instance| {
        let ((d, _), (f, _)) = inst.summary("");
        d + f
    };
    assert!(eventually(Duration::from_secs(10), || total(&a) == 2));
    for path in ["/purge-payments", "/internal/purge-payments"] {
        for header in [
            "",
            "X-Purge-Token: wrong\r\n",
            "X-Purge-Token: s3cret2\r\n",
            "X-Purge-Token: S3CRET\r\n",
            "X-Purge-Token:\r\n",
        ] {
            // The internal path answers only on the peer socket (elsewhere 404).
            let socket = if path.starts_with("/internal/") {
                &b.peer_socket
            } else {
                &b.socket
            };
            let (status, _) = request(
                socket,
                &format!("POST {path} HTTP/1.1\r\n{header}Content-Length: 0\r\n\r\n"),
            );
            assert_eq!(status, 401, "{path} {header:?}");
            assert_eq!(total(&a), 2, "{path} {header:?} purged");
        }
    }
    let (status, _) = request(
        &a.socket,
        "POST /purge-payments HTTP/1.1\r\nx-purge-token: s3cret\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(total(&a), 0);
    assert_eq!(total(&b), 0);

    let open = Instance::start(&dir.0, "open", "auto", &procs, &[], &[]);
    assert_eq!(open.pay(Uuid::new_v4(), "1"), 202);
    assert!(eventually(Duration::from_secs(10), || total(&open) == 1));
    let (status, _) = request(
        &open.socket,
        "POST /purge-payments HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(total(&open), 0);
}
