//! Hand-over (`HANDOFF_LISTEN`): real `rinha` processes adopting client connections passed
//! over their hand-over socket, under both drivers. The test plays the load balancer (it
//! accepts a TCP client and passes the socket), then talks to the backend as that client;
//! it also plays a hostile peer of the hand-over socket. The last test runs the real
//! `rinha-lb` in hand-over mode in front of two journaled backends and kills one mid-run.

mod common;
mod faults_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use faults_support::{
    assert_lost_only_to_the_dead, every_ok_stored_once, kill, load, Fleet, Killed, Lb, CENTS,
};
use rinha_sys::handoff::{send_fd, send_with, ACCEPTED, REFUSED, TAG};

/// Connections handed over in the descriptor test, per driver, unless
/// `HANDOFF_FD_TEST_CONNECTIONS` says otherwise (20,000 take ~5 s a driver here).
const FD_TEST_CONNECTIONS: usize = 20_000;

fn fd_test_connections() -> usize {
    std::env::var("HANDOFF_FD_TEST_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(FD_TEST_CONNECTIONS)
}

both_drivers!(handed_over_connections_are_served_like_accepted_ones);
both_drivers!(the_connection_cap_refuses_hand_overs);
both_drivers!(hostile_hand_overs_are_refused_without_harm);
both_drivers!(descriptors_return_to_baseline_after_many_hand_overs);

/// A backend with a hand-over socket, no peer, its own processors.
struct Backend {
    inst: Instance,
    handoff: PathBuf,
    _procs: Processors,
    _dir: TempDir,
}

impl Backend {
    fn start(driver: &str, extra: &[(&str, &str)]) -> Backend {
        let dir = TempDir::new();
        let handoff = dir.0.join("solo.handoff.sock");
        let listen = format!("unix:{}", handoff.display());
        let mut env = vec![("HANDOFF_LISTEN", listen.as_str())];
        env.extend_from_slice(extra);
        let procs = Processors::start();
        let inst = Instance::start(&dir.0, "solo", driver, &procs, &[], &env);
        Backend {
            inst,
            handoff,
            _procs: procs,
            _dir: dir,
        }
    }

    fn fd_count(&self) -> usize {
        fd_count(self.inst.pid())
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The test's stand-in for the lb: accepts TCP clients and hands them over.
struct FakeLb {
    listener: TcpListener,
}

impl FakeLb {
    fn new() -> FakeLb {
        FakeLb {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Connects a client, hands its accepted socket to `handoff`, and returns the client and
    /// the backend's answer byte (`None`: closed without one). The lb's copy is closed.
    fn client(&self, handoff: &Path) -> (TcpStream, Option<u8>) {
        let client = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (accepted, _) = self.listener.accept().unwrap();
        let answer = hand_over(handoff, &accepted);
        (client, answer)
    }
}

/// One hand-over of `socket` to `handoff`; the answer byte, `None` when closed without one.
fn hand_over(handoff: &Path, socket: &impl AsRawFd) -> Option<u8> {
    let mut channel = UnixStream::connect(handoff).expect("connect hand-over socket");
    channel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    send_fd(channel.as_raw_fd(), socket.as_raw_fd()).expect("send descriptor");
    read_answer(&mut channel)
}

fn read_answer(channel: &mut UnixStream) -> Option<u8> {
    let mut byte = [0u8; 1];
    match channel.read(&mut byte) {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

fn post_payment() -> String {
    let body = format!(
        r#"{{"correlationId":"{}","amount":19.90}}"#,
        uuid::Uuid::new_v4()
    );
    format!(
        "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn handed_over_connections_are_served_like_accepted_ones(driver: &str) {
    let backend = Backend::start(driver, &[("IDLE_TIMEOUT_MS", "400")]);
    assert!(eventually(Duration::from_secs(5), || backend
        .inst
        .log_text()
        .contains("rinha started")));
    let log = backend.inst.log_text();
    let start = log.lines().find(|l| l.contains("rinha started")).unwrap();
    assert!(
        start.contains(&format!("handoff=unix:{}", backend.handoff.display())),
        "{start}"
    );
    let lb = FakeLb::new();
    // Four clients over the two cores, each with two payments and a summary pipelined in one
    // write, answered in order.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut client, answer) = lb.client(&backend.handoff);
        assert_eq!(answer, Some(ACCEPTED));
        let pipelined = format!(
            "{}{}GET /payments-summary HTTP/1.1\r\nHost: t\r\n\r\n",
            post_payment(),
            post_payment()
        );
        client.write_all(pipelined.as_bytes()).unwrap();
        for expected in [202, 202, 200] {
            let (status, body) = read_response(&mut client);
            assert_eq!(status, expected, "{body}");
        }
        clients.push(client);
    }
    // Keep-alive holds, then the idle timeout closes them as it closes accepted ones.
    clients[0].write_all(post_payment().as_bytes()).unwrap();
    assert_eq!(read_response(&mut clients[0]).0, 202);
    let started = Instant::now();
    for client in &mut clients {
        assert!(closed_within(client, Duration::from_secs(3)));
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(eventually(Duration::from_secs(5), || {
        backend.inst.summary("").0 .0 == 9
    }));
}

fn the_connection_cap_refuses_hand_overs(driver: &str) {
    let backend = Backend::start(driver, &[("MAX_CONNECTIONS", "2")]);
    let lb = FakeLb::new();
    // Start-up's readiness probe (a connection to the public socket, closed at once) holds a
    // place until the backend reads its close; a hand-over refused meanwhile is tried again.
    let accepted = || {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (client, answer) = lb.client(&backend.handoff);
            if answer == Some(ACCEPTED) {
                return client;
            }
            assert!(
                Instant::now() < deadline,
                "refused below the cap: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut first = accepted();
    let _second = accepted();
    // At the cap: refused, and the backend closed its copy (the lb would offer it elsewhere).
    let (mut third, c) = lb.client(&backend.handoff);
    assert_eq!(c, Some(REFUSED));
    assert!(closed_within(&mut third, Duration::from_secs(2)));
    // A place again once a client leaves.
    first.write_all(post_payment().as_bytes()).unwrap();
    assert_eq!(read_response(&mut first).0, 202);
    drop(first);
    assert!(eventually(Duration::from_secs(3), || {
        let (mut client, answer) = lb.client(&backend.handoff);
        answer == Some(ACCEPTED) && {
            client.write_all(post_payment().as_bytes()).unwrap();
            read_response(&mut client).0 == 202
        }
    }));
}

fn hostile_hand_overs_are_refused_without_harm(driver: &str) {
    let backend = Backend::start(driver, &[]);
    let lb = FakeLb::new();
    // Warm: one legitimate hand-over, closed again.
    let (client, answer) = lb.client(&backend.handoff);
    assert_eq!(answer, Some(ACCEPTED));
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = backend.fd_count();

    let connect = || UnixStream::connect(&backend.handoff).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let cases: Vec<(&str, &[u8], Vec<i32>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n", vec![]),
        ("garbage with a descriptor", b"garbage", vec![a.as_raw_fd()]),
        ("the tag without a descriptor", TAG, vec![]),
        ("two descriptors", TAG, vec![a.as_raw_fd(), b.as_raw_fd()]),
        ("a file", TAG, vec![file.as_raw_fd()]),
        ("a datagram socket", TAG, vec![datagram.as_raw_fd()]),
        ("a listening socket", TAG, vec![listening.as_raw_fd()]),
    ];
    for (name, bytes, fds) in &cases {
        let mut channel = connect();
        channel
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send_with(channel.as_raw_fd(), bytes, fds).unwrap();
        assert_eq!(read_answer(&mut channel), Some(REFUSED), "{name}");
    }
    // A peer that connects and says nothing is closed after the receive timeout.
    let mut silent = connect();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_answer(&mut silent), None);
    assert!(started.elapsed() >= Duration::from_millis(800));
    // One that connects and leaves at once costs nothing either.
    drop(connect());
    // The backend still takes and serves a real client.
    let (mut client, answer) = lb.client(&backend.handoff);
    assert_eq!(answer, Some(ACCEPTED));
    client.write_all(post_payment().as_bytes()).unwrap();
    assert_eq!(read_response(&mut client).0, 202);
    drop(client);
    drop((file, datagram, listening, a, b));
    assert!(
        eventually(Duration::from_secs(3), || backend.fd_count() <= baseline),
        "backend fds {} (baseline {baseline})",
        backend.fd_count()
    );
}

fn descriptors_return_to_baseline_after_many_hand_overs(driver: &str) {
    let backend = Backend::start(driver, &[]);
    let lb = FakeLb::new();
    let (client, _) = lb.client(&backend.handoff);
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = backend.fd_count();
    let started = Instant::now();
    let request = b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n";
    let count = fd_test_connections();
    for n in 0..count {
        let (mut client, answer) = lb.client(&backend.handoff);
        assert_eq!(answer, Some(ACCEPTED));
        match n % 3 {
            // A request answered, then the client closes.
            0 => {
                client.write_all(request).unwrap();
                assert_eq!(read_response(&mut client).0, 404);
            }
            // Half a request, then gone.
            1 => client.write_all(b"POST /payments HTTP/1.1\r\n").unwrap(),
            // Gone before a word.
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    assert!(
        eventually(Duration::from_secs(5), || backend.fd_count() <= baseline),
        "backend fds after {count} hand-overs: {} (baseline {baseline})",
        backend.fd_count()
    );
    println!("{count} hand-overs in {elapsed:?}; fds back to {baseline}");
}

/// The real lb in hand-over mode in front of two journaled backends; b1 is killed (-9) in the
/// middle of the load and restarted a second later. Its clients lose the request each had in
/// flight (at most one per connection, and only b1's connections); every 2XX is stored by
/// exactly one processor, and the summary equals the processors'.
#[test]
fn a_killed_backend_loses_only_its_connections_never_an_acknowledged_payment() {
    const CONNS: usize = 8;
    let procs = Processors::start();
    procs.default.set_delay(40);
    let dir = TempDir::new();
    let start_backend = |name: &str| {
        let other = if name == "b1" { "b2" } else { "b1" };
        let peer = dir.0.join(format!("{other}.sock"));
        let data = Fleet::data_dir_of(&dir.0, name).display().to_string();
        let handoff = format!(
            "unix:{}",
            dir.0.join(format!("{name}.handoff.sock")).display()
        );
        let env = [
            ("DATA_DIR", data.as_str()),
            ("HANDOFF_LISTEN", handoff.as_str()),
            ("SENDERS", "2"),
        ];
        Instance::start(&dir.0, name, "auto", &procs, &[&peer], &env)
    };
    let mut b1 = start_backend("b1");
    let b2 = start_backend("b2");
    // HANDOFF_BACKENDS unset: derived from BACKENDS (b1.sock -> b1.handoff.sock).
    let lb = Lb::start_with(
        &dir.0,
        "127.0.0.1:0",
        &[&b1.socket, &b2.socket],
        &[("LB_MODE", "handoff")],
    );
    let addr = lb.addr;
    let lb_fds_before = fd_count(lb.pid());
    let loader = std::thread::spawn(move || {
        load(
            addr,
            CONNS,
            Duration::from_millis(25),
            Duration::from_secs(5),
        )
    });
    std::thread::sleep(Duration::from_millis(2000));
    // The lb holds no client: each backend holds its own (round-robin: half each). A client
    // whose hand-over is still in the lb is in neither, so sample until every one is seen.
    let held = || {
        (
            client_sockets(b1.pid(), addr.port()),
            client_sockets(b2.pid(), addr.port()),
        )
    };
    let (mut held_b1, mut held_b2) = held();
    let deadline = Instant::now() + Duration::from_millis(500);
    while held_b1.len() + held_b2.len() < CONNS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        (held_b1, held_b2) = held();
    }
    let (on_b1, on_b2) = (held_b1.len(), held_b2.len());
    let both = held_b1.intersection(&held_b2).count();
    let killed_at = Instant::now();
    kill(b1.pid(), libc::SIGKILL);
    let b1_handoff = dir.0.join("b1.handoff.sock");
    let killed = Killed::refused_after(killed_at, || UnixStream::connect(&b1_handoff).is_ok());
    std::thread::sleep(Duration::from_millis(1000));
    b1 = start_backend("b1");
    let outcome = loader.join().expect("load");
    println!(
        "hand-over, kill -9 b1: clients on b1 {on_b1}, on b2 {on_b2}, on both {both}; 2XX {}, lost {}, refused {}",
        outcome.ok.len(),
        outcome.lost.len(),
        outcome.refused.len()
    );
    // Every client is held by a backend. More sockets than clients were seen once in a full
    // suite run on a loaded machine (11 for 8, not reproduced since; `both` says whether a
    // socket was in both backends): a client that reconnected can leave its old socket
    // established for a moment, so the bound is from below.
    assert!(on_b1 + on_b2 >= CONNS, "{on_b1} + {on_b2} (both {both})");
    assert!(on_b1 > 0 && on_b2 > 0, "round-robin: {on_b1} / {on_b2}");
    assert!(outcome.refused.is_empty(), "{:?}", &outcome.refused[..1]);
    // Lost: a request on each connection b1 held, and requests handed to b1's socket in the
    // moment it still accepted after the kill; none once it refused.
    let held = outcome.lost.iter().filter(|l| l.opened < killed.at).count();
    assert!(
        held <= on_b1,
        "{held} requests lost on connections open at the kill, more than the {on_b1} b1 held: {:#?}",
        outcome.lost
    );
    assert_lost_only_to_the_dead(&outcome, CONNS, killed, &lb.log_text());
    assert!(
        outcome.ok.len() > 300,
        "too little load: {}",
        outcome.ok.len()
    );
    // Bounded, as the lb's own tests settle: the last clients' sockets close a moment after
    // their answers (one was still open when read at once, in a `scripts/test` run).
    assert!(
        eventually(Duration::from_secs(5), || fd_count(lb.pid())
            <= lb_fds_before),
        "the lb keeps descriptors: {} (before the load {lb_fds_before})",
        fd_count(lb.pid())
    );

    let settled = eventually(Duration::from_secs(40), || {
        procs.default.stored() + procs.fallback.stored() >= outcome.ok.len()
            && b1.summary("") == procs.window(None, None)
    });
    let (ours, theirs) = (b1.summary(""), procs.window(None, None));
    assert!(settled, "not drained: ours {ours:?}, processors {theirs:?}");
    every_ok_stored_once(&procs, &outcome);
    assert_eq!(ours, theirs);
    assert_eq!(ours.0 .1 + ours.1 .1, (ours.0 .0 + ours.1 .0) * CENTS);
    drop(b2);
}

/// Client connections process `pid` holds: sockets in its descriptor table that
/// /proc/net/tcp lists as established on local port `port` (the lb's, for a handed-over one).
fn client_sockets(pid: u32, port: u16) -> std::collections::HashSet<String> {
    let local = format!(":{port:04X}");
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|t| {
                    let t = t.display().to_string();
                    t.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // Field 1 is the local address, 3 the state (01 = ESTABLISHED), 9 the inode.
                    let ours = f.get(1)?.ends_with(&local) && f.get(3) == Some(&"01");
                    ours.then(|| f.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .filter(|inode| inodes.contains(inode))
        .collect()
}
