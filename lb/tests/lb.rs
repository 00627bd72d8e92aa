//! The real `rinha-lb` binary against echo backends on temp unix sockets, under both drivers.
//!
//! Every scenario runs once with `IO_DRIVER=uring` and once with `IO_DRIVER=epoll`.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use support::*;

both_drivers!(
    start_line_names_the_driver,
    round_robin_spreads_connections,
    killed_backend_clients_move_and_restart_is_used,
    large_and_pipelined_bytes_are_exact,
    large_and_pipelined_bytes_are_exact_with_direct_sends,
    half_close_reaches_the_backend_and_the_reply_returns,
    thousand_concurrent_connections,
    fds_return_to_baseline,
    all_backends_down_closes_quickly,
    connection_cap_closes_extra_clients,
    sigterm_lets_open_connections_finish,
    sigterm_grace_is_bounded,
    two_workers_serve_both_backends,
    a_client_that_never_reads_is_closed,
    silent_connections_are_closed_after_the_idle_timeout,
    a_stalled_backend_gets_no_new_clients_until_it_answers,
    every_backend_stalled_still_takes_clients,
);

fn two_backends(dir: &TempDir) -> (TestBackend, TestBackend) {
    (
        TestBackend::start(&dir.path("b1.sock"), 1),
        TestBackend::start(&dir.path("b2.sock"), 2),
    )
}

fn start_line_names_the_driver(driver: &str) {
    let dir = TempDir::new("start");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let expected = if driver == "uring" {
        "io_uring"
    } else {
        "epoll"
    };
    assert_eq!(field(&lb.start_line, "driver="), expected);
    assert_eq!(field(&lb.start_line, "workers="), "1");
    assert!(field(&lb.start_line, "version=").starts_with("0."));
    assert_eq!(
        field(&lb.start_line, "backends="),
        format!("unix:{},unix:{}", b1.path.display(), b2.path.display())
    );
}

fn round_robin_spreads_connections(driver: &str) {
    let dir = TempDir::new("rr");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let mut served = [0usize; 3];
    let mut previous = 0;
    for _ in 0..200 {
        let mut client = lb.connect();
        let id = greeting(&mut client);
        assert_ne!(id, previous, "round-robin alternates between two backends");
        previous = id;
        served[id as usize] += 1;
    }
    assert_eq!(served[1], 100);
    assert_eq!(served[2], 100);
}

fn killed_backend_clients_move_and_restart_is_used(driver: &str) {
    let dir = TempDir::new("kill");
    let (mut b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let mut clients = greeted_clients(&lb, 10);
    assert_eq!(clients.iter().filter(|(id, _)| *id == 1).count(), 5);

    b1.kill();
    assert_only_its_clients_closed(&mut clients, 1);
    // The clients reconnect: every one is served by the surviving backend.
    for _ in 0..20 {
        let mut client = lb.connect();
        assert_eq!(greeting(&mut client), 2);
        assert_eq!(echo(&mut client, b"moved"), b"moved");
    }
    assert!(lb.wait_for_log("backend down", Duration::from_secs(2)));

    let b1 = TestBackend::start(&b1.path.clone(), 1);
    // Used again once its backoff (at most 2 s) runs out.
    let back = wait_until(Duration::from_secs(5), || {
        let mut client = lb.connect();
        greeting(&mut client) == 1
    });
    assert!(back, "the restarted backend is used again");
    let ids: Vec<u8> = (0..10).map(|_| greeting(&mut lb.connect())).collect();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 5, "{ids:?}");
    assert!(lb.wait_for_log("backend up again", Duration::from_secs(2)));
    drop((b1, b2));
}

fn large_and_pipelined_bytes_are_exact(driver: &str) {
    bytes_are_exact(driver, &[]);
}

/// The same with a direct `send(2)` tried before every runtime write.
fn large_and_pipelined_bytes_are_exact_with_direct_sends(driver: &str) {
    bytes_are_exact(driver, &[("RELAY_SEND", "direct")]);
}

fn bytes_are_exact(driver: &str, env: &[(&str, &str)]) {
    let dir = TempDir::new("bytes");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], env);

    // 8 MiB one way while the echo streams back: far larger than every buffer on the path.
    let payload = noise(8 << 20, 7);
    let mut client = lb.connect();
    let id = greeting(&mut client);
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        for chunk in sent.chunks(100_003) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    assert!(matches!(id, 1 | 2));
    assert_eq!(back.len(), payload.len() + EOF_MARK.len());
    assert!(
        back[..payload.len()] == payload[..],
        "large payload relayed byte-exact"
    );
    assert_eq!(&back[payload.len()..], EOF_MARK);

    // Fifty pipelined HTTP requests in one write come back exactly, in order.
    let mut pipelined = Vec::new();
    for n in 0..50 {
        let body = format!("{{\"correlationId\":\"{n:08}\",\"amount\":19.90}}");
        pipelined.extend_from_slice(
            format!(
                "POST /payments HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let mut client = lb.connect();
    greeting(&mut client);
    assert_eq!(echo(&mut client, &pipelined), pipelined);
}

fn half_close_reaches_the_backend_and_the_reply_returns(driver: &str) {
    let dir = TempDir::new("half");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    for _ in 0..4 {
        let mut client = lb.connect();
        client.write_all(b"last words").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert!(matches!(back[0], 1 | 2));
        assert_eq!(&back[1..], b"last wordsEOF");
    }
    // Both sides were closed together: nothing stays open on the backends.
    assert!(wait_until(Duration::from_secs(2), || {
        b1.open_connections() + b2.open_connections() == 0
    }));
}

fn thousand_concurrent_connections(driver: &str) {
    let dir = TempDir::new("thousand");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let mut clients: Vec<_> = (0..1000).map(|_| lb.connect()).collect();
    let mut served = [0usize; 3];
    for (n, client) in clients.iter_mut().enumerate() {
        served[greeting(client) as usize] += 1;
        client.write_all(format!("{n:06}").as_bytes()).unwrap();
    }
    assert_eq!(b1.open_connections() + b2.open_connections(), 1000);
    for (n, client) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 6];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, *format!("{n:06}").as_bytes());
    }
    assert_eq!((served[1], served[2]), (500, 500));
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || {
        b1.open_connections() + b2.open_connections() == 0
    }));
}

/// Connections per fd test: the full 100,000 (about 40 s in a debug build with both drivers'
/// runs in parallel on 2 cores; four client threads, a quarter of them reset or half-closed).
const FD_TEST_CONNECTIONS: usize = 100_000;

fn fds_return_to_baseline(driver: &str) {
    let dir = TempDir::new("fds");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let mut warm = lb.connect();
    greeting(&mut warm);
    drop(warm);
    assert!(wait_until(Duration::from_secs(2), || b1.open_connections()
        + b2.open_connections()
        == 0));
    let baseline = lb.fd_count();

    let threads = 4;
    let started = Instant::now();
    churn(
        lb.addr,
        threads,
        FD_TEST_CONNECTIONS / threads,
        |client, n, t| {
            match (n + t) % 4 {
                // A full exchange, then close.
                0 | 1 => {
                    greeting(client);
                    assert_eq!(echo(client, b"x"), b"x");
                }
                // Half-close and read to the end.
                2 => {
                    client.shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    client.read_to_end(&mut rest).unwrap();
                }
                // Gone before reading anything (the lb sees a reset or EOF).
                _ => client.write_all(b"bye").unwrap(),
            }
        },
    );
    let elapsed = started.elapsed();
    assert_fds_back(&lb, baseline, &format!("{FD_TEST_CONNECTIONS} connections"));
    eprintln!("{FD_TEST_CONNECTIONS} connections in {elapsed:?}; fds back to {baseline}");
}

fn all_backends_down_closes_quickly(driver: &str) {
    let dir = TempDir::new("down");
    let b1_path = dir.path("b1.sock");
    let b2_path = dir.path("b2.sock");
    let lb = Lb::start(driver, &[&b1_path, &b2_path], &[]);
    for _ in 0..5 {
        let started = Instant::now();
        let mut client = lb.connect();
        let _ = client.write_all(b"anyone?");
        assert!(is_closed(&mut client), "no backend: the client is closed");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "closed quickly, never a hang"
        );
    }
    // A backend that appears later is used.
    let b2 = TestBackend::start(&b2_path, 2);
    let served = wait_until(Duration::from_secs(5), || {
        let mut client = lb.connect();
        let mut id = [0u8; 1];
        client.read_exact(&mut id).is_ok() && id[0] == 2
    });
    assert!(served);
    drop(b2);
}

fn connection_cap_closes_extra_clients(driver: &str) {
    let dir = TempDir::new("cap");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[("MAX_CONNECTIONS", "5")]);
    let mut held: Vec<_> = (0..5).map(|_| lb.connect()).collect();
    for client in &mut held {
        greeting(client);
    }
    let mut extra = lb.connect();
    assert!(is_closed(&mut extra), "the sixth client is closed at once");
    assert!(lb.wait_for_log("connection cap reached", Duration::from_secs(2)));
    drop(held);
    assert!(wait_until(Duration::from_secs(2), || {
        let mut client = lb.connect();
        let mut id = [0u8; 1];
        client.read_exact(&mut id).is_ok()
    }));
}

fn sigterm_lets_open_connections_finish(driver: &str) {
    let dir = TempDir::new("term");
    let (b1, b2) = two_backends(&dir);
    let mut lb = Lb::start(driver, &[&b1.path, &b2.path], &[]);
    let mut open = lb.connect();
    greeting(&mut open);
    lb.signal(libc::SIGTERM);
    assert!(lb.wait_for_log("rinha-lb stopping", Duration::from_secs(2)));
    // No new clients once the listener is closed...
    assert!(wait_until(Duration::from_secs(2), || {
        std::net::TcpStream::connect(lb.addr).is_err()
    }));
    // ...while the open one is still served.
    assert_eq!(echo(&mut open, b"finishing"), b"finishing");
    let closed_at = Instant::now();
    drop(open);
    let status = lb.exit_status_within(closed_at, Duration::from_secs(3), "exits once drained");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(lb.wait_for_log("rinha-lb stopped", Duration::from_secs(1)));
}

fn sigterm_grace_is_bounded(driver: &str) {
    let dir = TempDir::new("grace");
    let (b1, b2) = two_backends(&dir);
    let mut lb = Lb::start(
        driver,
        &[&b1.path, &b2.path],
        &[("SHUTDOWN_GRACE_MS", "300")],
    );
    let mut idle = lb.connect();
    greeting(&mut idle);
    let signalled = Instant::now();
    lb.signal(libc::SIGTERM);
    let status = lb.exit_status_within(signalled, Duration::from_secs(3), "the grace is a bound");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(300));
    assert!(
        is_closed(&mut idle),
        "the idle client is closed when the grace runs out"
    );
    assert!(lb.wait_for_log(
        "still open after the shutdown grace",
        Duration::from_secs(1)
    ));
}

fn two_workers_serve_both_backends(driver: &str) {
    let dir = TempDir::new("workers");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[("WORKERS", "2")]);
    assert_eq!(field(&lb.start_line, "workers="), "2");
    let mut served = [0usize; 3];
    for _ in 0..100 {
        let mut client = lb.connect();
        served[greeting(&mut client) as usize] += 1;
        assert_eq!(echo(&mut client, b"ok"), b"ok");
    }
    // Each worker alternates on its own; the kernel spreads clients over the workers.
    assert!(served[1] >= 25 && served[2] >= 25, "{served:?}");
}

/// A client that sends and never reads what comes back is closed once a relayed chunk has
/// waited `WRITE_TIMEOUT_MS` for it (here long before the idle timeout): its place under
/// `MAX_CONNECTIONS` (the only one) is free again and its backend connection is closed.
/// Before, every buffer on the way filled and both connections stayed open forever.
fn a_client_that_never_reads_is_closed(driver: &str) {
    let dir = TempDir::new("never-reads");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(
        driver,
        &[&b1.path, &b2.path],
        &[("MAX_CONNECTIONS", "1"), ("WRITE_TIMEOUT_MS", "1000")],
    );
    let mut stuck = lb.connect();
    greeting(&mut stuck);
    // Write without reading until every buffer on the way is full for 300 ms in a row (or the
    // lb has given up on us already).
    stuck.set_nonblocking(true).unwrap();
    let chunk = noise(64 * 1024, 3);
    let started = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    loop {
        match stuck.write(&chunk) {
            Ok(_) => blocked_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never stuck");
    }
    stuck.set_nonblocking(false).unwrap();
    let since = Instant::now();
    let served = wait_until(Duration::from_secs(5), || {
        let mut client = lb.connect();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut id = [0u8; 1];
        client.read_exact(&mut id).is_ok()
    });
    assert!(served, "the stuck client still holds the only slot");
    assert!(
        since.elapsed() < Duration::from_secs(3),
        "{:?}",
        since.elapsed()
    );
    assert!(
        is_closed_after_draining(&mut stuck),
        "the stuck client is closed"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        b1.open_connections() + b2.open_connections() == 0
    }));
}

/// A connection silent both ways for `IDLE_TIMEOUT_MS` is closed, client and backend side
/// (within a quarter more: the check runs four times per timeout); one that keeps talking
/// stays open however long it lives.
fn silent_connections_are_closed_after_the_idle_timeout(driver: &str) {
    let dir = TempDir::new("idle");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[("IDLE_TIMEOUT_MS", "600")]);
    let mut talker = lb.connect();
    greeting(&mut talker);
    let mut silent = lb.connect();
    greeting(&mut silent);
    let since = Instant::now();
    let watcher = std::thread::spawn(move || (is_closed(&mut silent), since.elapsed()));
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(echo(&mut talker, b"still here"), b"still here");
    }
    let (closed, closed_after) = watcher.join().unwrap();
    assert!(closed, "the silent client is closed");
    assert!(
        closed_after >= Duration::from_millis(600) && closed_after < Duration::from_millis(1500),
        "closed after {closed_after:?}"
    );
    // The talker outlived two timeouts; silent now, it goes too.
    let since = Instant::now();
    assert!(is_closed(&mut talker));
    let closed_after = since.elapsed();
    assert!(
        closed_after >= Duration::from_millis(550) && closed_after < Duration::from_secs(2),
        "closed after {closed_after:?}"
    );
    assert!(wait_until(Duration::from_secs(2), || {
        b1.open_connections() + b2.open_connections() == 0
    }));
}

/// Reads whatever is still buffered; true once the lb has closed (end of file or a reset).
fn is_closed_after_draining(stream: &mut std::net::TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The descriptor table is grown to what `MAX_CONNECTIONS` needs (two per connection) before
/// the workers start: grown later, each doubling stalls every worker (`rinha_sys::fds`).
#[test]
fn descriptor_table_is_grown_before_workers_start() {
    let dir = TempDir::new("fdsize");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(
        "auto",
        &[&b1.path, &b2.path],
        &[("MAX_CONNECTIONS", "2000")],
    );
    // The child raises its soft limit to the hard one it shares with this process.
    let wanted = (2000 * 2 + 64).min(rinha_sys::fds::raise_limit().unwrap());
    let size = rinha_sys::fds::table_size(lb.pid()).unwrap();
    assert!(size >= wanted, "FDSize {size}, want at least {wanted}");
}

#[test]
fn missing_or_bad_backends_exit_2() {
    for backends in [None, Some("nonsense"), Some("unix:")] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rinha-lb"));
        command.env_clear().env("LISTEN", "127.0.0.1:0");
        if let Some(value) = backends {
            command.env("BACKENDS", value);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "BACKENDS={backends:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--backends"), "{stderr}");
    }
}

/// Reads the greeting within `within`: `None` if nothing came (a stalled backend holds it).
fn greeting_within(client: &mut std::net::TcpStream, within: Duration) -> Option<u8> {
    client.set_read_timeout(Some(within)).unwrap();
    let mut id = [0u8; 1];
    let read = client.read_exact(&mut id).ok().map(|()| id[0]);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    read
}

/// `n` clients of `lb`, each having sent `ping`.
fn clients_that_sent_ping(lb: &Lb, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let mut client = lb.connect();
            client.write_all(b"ping").unwrap();
            client
        })
        .collect()
}

/// A backend that accepts and answers nothing (frozen: its kernel still completes the
/// connect) is left out of the round-robin once relayed bytes have waited `STALL_MS` for it:
/// every new client goes to the one that answers, and the bytes it holds are never sent
/// anywhere else. Its first byte back brings it into the round-robin again. Before, it kept
/// every other new client, each hanging until the backend woke.
fn a_stalled_backend_gets_no_new_clients_until_it_answers(driver: &str) {
    let dir = TempDir::new("stall");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[("STALL_MS", "200")]);
    b1.freeze();
    // Two clients that send: round-robin gives one of them to the frozen backend.
    let mut first = clients_that_sent_ping(&lb, 2);
    let ids: Vec<_> = first
        .iter_mut()
        .map(|c| greeting_within(c, Duration::from_millis(300)))
        .collect();
    assert!(ids.contains(&Some(2)) && ids.contains(&None), "{ids:?}");
    // Noticed within 1.25 x STALL_MS of the send; three times that is ample.
    std::thread::sleep(Duration::from_millis(600));
    for n in 0..10 {
        let mut client = lb.connect();
        let id = greeting_within(&mut client, Duration::from_secs(2));
        assert_eq!(id, Some(2), "client {n} after the stall");
        assert_eq!(echo(&mut client, b"fine"), b"fine");
    }
    assert!(lb.wait_for_log("backend stalled", Duration::from_secs(1)));
    // Thawed: the held client is served where it was sent, its bytes once.
    b1.thaw();
    let held = ids.iter().position(Option::is_none).unwrap();
    let held = &mut first[held];
    assert_eq!(greeting(held), 1);
    let mut ping = [0u8; 4];
    held.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"ping");
    assert!(lb.wait_for_log("answers again", Duration::from_secs(2)));
    let ids: Vec<u8> = (0..10).map(|_| greeting(&mut lb.connect())).collect();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 5, "{ids:?}");
}

/// With every backend stalled a new client is still relayed to one (never closed for a
/// stall), and served once it answers.
fn every_backend_stalled_still_takes_clients(driver: &str) {
    let dir = TempDir::new("stall-all");
    let (b1, b2) = two_backends(&dir);
    let lb = Lb::start(driver, &[&b1.path, &b2.path], &[("STALL_MS", "100")]);
    b1.freeze();
    b2.freeze();
    let mut waiting = clients_that_sent_ping(&lb, 2);
    assert!(lb.wait_for_log("backend stalled", Duration::from_secs(2)));
    assert!(wait_until(Duration::from_secs(2), || {
        lb.log()
            .iter()
            .filter(|l| l.contains("backend stalled"))
            .count()
            == 2
    }));
    let mut late = lb.connect();
    late.write_all(b"late").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    b1.thaw();
    b2.thaw();
    waiting.push(late);
    for client in &mut waiting {
        assert!(matches!(greeting(client), 1 | 2));
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert!(&back == b"ping" || &back == b"late", "{back:?}");
    }
}
