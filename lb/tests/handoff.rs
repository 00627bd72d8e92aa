//! Hand-over mode (`LB_MODE=handoff`) of the real `rinha-lb` binary against test backends
//! that receive clients on their hand-over sockets, under both drivers.
//!
//! A test backend takes, refuses or ignores each hand-over as its policy says; one that takes
//! a client greets it with its one-byte id and echoes what it reads, so a test can tell who
//! serves each client, with the lb out of the path.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rinha_sys::handoff::{recv_fd, Received, ACCEPTED, REFUSED};
use support::*;

/// Connections handed over in the descriptor test, per driver, unless
/// `HANDOFF_FD_TEST_CONNECTIONS` says otherwise. The 100,000 took 27 s for both
/// drivers in parallel on the 2-core dev machine (debug build), both cores busy all along;
/// 20,000 take ~5 s.
const HANDOVER_FD_TEST_CONNECTIONS: usize = 20_000;

fn fd_test_connections() -> usize {
    std::env::var("HANDOFF_FD_TEST_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(HANDOVER_FD_TEST_CONNECTIONS)
}

both_drivers!(
    start_line_names_the_mode,
    clients_alternate_and_the_lb_keeps_nothing,
    a_refusing_or_missing_backend_gets_no_client,
    every_backend_refusing_closes_the_client,
    a_killed_backend_takes_only_its_own_connections,
    handed_over_clients_outlive_the_lb,
    an_unanswered_hand_over_is_let_go_never_offered_twice,
    a_backend_that_leaves_hand_overs_unanswered_gets_few_clients_until_it_answers,
    descriptors_return_to_baseline_after_many_hand_overs,
);

/// What a test backend does with a hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Policy {
    /// Answer `+`, greet with the id, echo.
    Take = 0,
    /// Answer `+` and close the client at once.
    TakeAndClose = 1,
    /// Answer `-`.
    Refuse = 2,
    /// Keep the client and never answer.
    Silent = 3,
}

struct State {
    id: u8,
    policy: AtomicU8,
    stopping: AtomicBool,
    next: AtomicU64,
    /// Clones of the clients served now, so `kill` can cut them.
    open: Mutex<HashMap<u64, TcpStream>>,
    /// Clients taken (answered `+`) so far.
    taken: AtomicU64,
    /// What `Silent` holds.
    held: Mutex<Vec<(UnixStream, std::os::fd::OwnedFd)>>,
}

/// A backend that receives clients on `<name>.handoff.sock` (the lb's derived default).
struct HandoffBackend {
    path: PathBuf,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl HandoffBackend {
    /// `backend` is the `BACKENDS` path; the hand-over socket is derived from it.
    fn start(backend: &Path, id: u8, policy: Policy) -> HandoffBackend {
        let path = handoff_path(backend);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind hand-over socket");
        let state = Arc::new(State {
            id,
            policy: AtomicU8::new(policy as u8),
            stopping: AtomicBool::new(false),
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            taken: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let acceptor = std::thread::spawn(move || {
            for channel in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(channel) = channel else { continue };
                receive(channel, &shared);
            }
        });
        HandoffBackend {
            path,
            state,
            acceptor: Some(acceptor),
        }
    }

    fn taken(&self) -> u64 {
        self.state.taken.load(Ordering::SeqCst)
    }

    fn open_connections(&self) -> usize {
        self.state.open.lock().unwrap().len()
    }

    /// Stops accepting, removes the socket, cuts every client it serves: a backend dying.
    fn kill(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the blocking accept
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("acceptor");
        }
        let _ = std::fs::remove_file(&self.path);
        for client in std::mem::take(&mut *self.state.open.lock().unwrap()).values() {
            let _ = client.shutdown(Shutdown::Both);
        }
        self.state.held.lock().unwrap().clear();
    }
}

impl Drop for HandoffBackend {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.kill();
        }
    }
}

fn handoff_path(backend: &Path) -> PathBuf {
    let text = backend.display().to_string();
    PathBuf::from(format!(
        "{}.handoff.sock",
        text.strip_suffix(".sock").unwrap_or(&text)
    ))
}

/// Receives one hand-over (the test's own stand-in for a backend's receiving side).
fn receive(channel: UnixStream, state: &Arc<State>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let fd = loop {
        match recv_fd(channel.as_raw_fd()) {
            Ok(Received::Descriptor(fd)) => break fd,
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => return,
        }
    };
    let answer = |byte: u8| {
        let _ = (&channel).write_all(&[byte]);
    };
    match state.policy.load(Ordering::SeqCst) {
        0 => {
            answer(ACCEPTED);
            state.taken.fetch_add(1, Ordering::SeqCst);
            let client = TcpStream::from(fd);
            client.set_nonblocking(false).unwrap();
            let key = state.next.fetch_add(1, Ordering::SeqCst);
            if let Ok(clone) = client.try_clone() {
                state.open.lock().unwrap().insert(key, clone);
            }
            let state = state.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    serve_echo(client, state.id);
                    state.open.lock().unwrap().remove(&key);
                })
                .expect("spawn");
        }
        1 => {
            answer(ACCEPTED);
            state.taken.fetch_add(1, Ordering::SeqCst);
        }
        2 => answer(REFUSED),
        _ => state.held.lock().unwrap().push((channel, fd)),
    }
}

fn serve_echo(mut client: TcpStream, id: u8) {
    if client.write_all(&[id]).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if client.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Two `BACKENDS` paths (never bound: hand-over mode reaches only the derived sockets).
fn backend_paths(dir: &TempDir) -> [PathBuf; 2] {
    [dir.path("b1.sock"), dir.path("b2.sock")]
}

fn handoff_lb(driver: &str, paths: &[PathBuf; 2], extra: &[(&str, &str)]) -> Lb {
    let mut env = vec![("LB_MODE", "handoff")];
    env.extend_from_slice(extra);
    Lb::start(driver, &[&paths[0], &paths[1]], &env)
}

fn start_line_names_the_mode(driver: &str) {
    let dir = TempDir::new("ho-start");
    let paths = backend_paths(&dir);
    let lb = handoff_lb(driver, &paths, &[]);
    let expected = format!(
        "handoff:unix:{},unix:{}",
        handoff_path(&paths[0]).display(),
        handoff_path(&paths[1]).display()
    );
    assert_eq!(field(&lb.start_line, "mode="), expected);
}

fn clients_alternate_and_the_lb_keeps_nothing(driver: &str) {
    let dir = TempDir::new("ho-rr");
    let paths = backend_paths(&dir);
    let (b1, b2) = (
        HandoffBackend::start(&paths[0], 1, Policy::Take),
        HandoffBackend::start(&paths[1], 2, Policy::Take),
    );
    let lb = handoff_lb(driver, &paths, &[]);
    let mut warm = lb.connect();
    greeting(&mut warm);
    drop(warm);
    let baseline = lb.fd_count();
    let mut clients = Vec::new();
    let mut previous = 0;
    for n in 0..40u64 {
        let mut client = lb.connect();
        let id = greeting(&mut client);
        assert_ne!(id, previous, "round-robin alternates between two backends");
        previous = id;
        let payload = noise(3000, n);
        assert_eq!(echo(&mut client, &payload), payload);
        clients.push(client);
    }
    assert_eq!((b1.taken(), b2.taken()), (21, 20));
    // Forty clients are connected and served, and the lb holds none of them.
    assert!(
        wait_until(Duration::from_secs(2), || lb.fd_count() <= baseline),
        "lb fds {} with the clients open (baseline {baseline})",
        lb.fd_count()
    );
    // Pipelined bytes and a half-close reach the backend without the lb.
    let client = &mut clients[0];
    client.write_all(b"one").unwrap();
    client.write_all(b"two").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"onetwo");
}

fn a_refusing_or_missing_backend_gets_no_client(driver: &str) {
    let dir = TempDir::new("ho-refuse");
    let paths = backend_paths(&dir);
    let b1 = HandoffBackend::start(&paths[0], 1, Policy::Refuse);
    let b2 = HandoffBackend::start(&paths[1], 2, Policy::Take);
    let lb = handoff_lb(driver, &paths, &[]);
    for _ in 0..10 {
        let mut client = lb.connect();
        assert_eq!(
            greeting(&mut client),
            2,
            "the refusing backend got a client"
        );
    }
    assert_eq!(b1.taken(), 0);
    assert!(lb.wait_for_log("backend down", Duration::from_secs(2)));
    // Gone altogether (no socket): the same.
    drop(b1);
    for _ in 0..10 {
        let mut client = lb.connect();
        assert_eq!(greeting(&mut client), 2);
    }
    assert_eq!(b2.taken(), 20);
}

fn every_backend_refusing_closes_the_client(driver: &str) {
    let dir = TempDir::new("ho-none");
    let paths = backend_paths(&dir);
    let _b1 = HandoffBackend::start(&paths[0], 1, Policy::Refuse);
    let _b2 = HandoffBackend::start(&paths[1], 2, Policy::Refuse);
    let lb = handoff_lb(driver, &paths, &[]);
    let started = Instant::now();
    let mut client = lb.connect();
    assert!(is_closed(&mut client));
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn a_killed_backend_takes_only_its_own_connections(driver: &str) {
    let dir = TempDir::new("ho-kill");
    let paths = backend_paths(&dir);
    let mut b1 = HandoffBackend::start(&paths[0], 1, Policy::Take);
    let b2 = HandoffBackend::start(&paths[1], 2, Policy::Take);
    let lb = handoff_lb(driver, &paths, &[]);
    let mut clients = greeted_clients(&lb, 10);
    assert!(wait_until(Duration::from_secs(2), || b1.open_connections() == 5));
    b1.kill();
    assert_only_its_clients_closed(&mut clients, 1);
    // Clients reconnect, and every new one goes to the survivor.
    for _ in 0..6 {
        let mut client = lb.connect();
        assert_eq!(greeting(&mut client), 2);
    }
    assert_eq!(b2.taken(), 11);
}

fn handed_over_clients_outlive_the_lb(driver: &str) {
    let dir = TempDir::new("ho-lb-dies");
    let paths = backend_paths(&dir);
    let _b1 = HandoffBackend::start(&paths[0], 1, Policy::Take);
    let _b2 = HandoffBackend::start(&paths[1], 2, Policy::Take);
    let mut lb = handoff_lb(driver, &paths, &[]);
    let mut clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut client = lb.connect();
            greeting(&mut client);
            client
        })
        .collect();
    lb.signal(libc::SIGKILL);
    let _ = lb.child.wait();
    for client in &mut clients {
        assert_eq!(echo(client, b"after the lb"), b"after the lb");
    }
}

/// Two backends that take hand-overs behind an lb waiting 200 ms for an answer, one client
/// served by each (so the runtime is up and the next turn is backend 1's), then backend 1
/// falls silent: it keeps what it is handed and answers nothing.
fn backend_one_falls_silent(
    driver: &str,
    name: &str,
) -> (TempDir, HandoffBackend, HandoffBackend, Lb) {
    let dir = TempDir::new(name);
    let paths = backend_paths(&dir);
    let b1 = HandoffBackend::start(&paths[0], 1, Policy::Take);
    let b2 = HandoffBackend::start(&paths[1], 2, Policy::Take);
    let lb = handoff_lb(driver, &paths, &[("CONNECT_TIMEOUT_MS", "200")]);
    for id in [1, 2] {
        assert_eq!(greeting(&mut lb.connect()), id);
    }
    b1.state
        .policy
        .store(Policy::Silent as u8, Ordering::SeqCst);
    (dir, b1, b2, lb)
}

fn an_unanswered_hand_over_is_let_go_never_offered_twice(driver: &str) {
    let (_dir, b1, b2, lb) = backend_one_falls_silent(driver, "ho-silent");
    let baseline = lb.fd_count();
    let mut client = lb.connect();
    client
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = client.read(&mut byte);
    assert!(
        read.is_err(),
        "no backend may serve it but the silent one: {read:?}"
    );
    assert_eq!(b2.taken(), 1, "offered to a second backend");
    assert_eq!(b1.state.held.lock().unwrap().len(), 1);
    assert!(lb.wait_for_log("did not answer in time", Duration::from_secs(2)));
    assert!(
        wait_until(Duration::from_secs(2), || lb.fd_count() <= baseline),
        "lb fds {} (baseline {baseline}): {:?}",
        lb.fd_count(),
        std::fs::read_dir(format!("/proc/{}/fd", lb.pid()))
            .unwrap()
            .map(|e| std::fs::read_link(e.unwrap().path()))
            .collect::<Vec<_>>()
    );
}

/// A backend that leaves a hand-over unanswered (frozen: its kernel still queues the
/// connection and the descriptor) is stalled: the next clients go to the other until its
/// backoff runs out and one client probes it, so only the probes wait on it. Once it answers
/// again it gets its turn again. Before, it got every other client.
fn a_backend_that_leaves_hand_overs_unanswered_gets_few_clients_until_it_answers(driver: &str) {
    let (_dir, b1, b2, lb) = backend_one_falls_silent(driver, "ho-stall");
    let mut served = 0;
    let mut held = 0;
    for _ in 0..20 {
        let mut client = lb.connect();
        client
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut id = [0u8; 1];
        match client.read_exact(&mut id) {
            Ok(()) => {
                assert_eq!(id[0], 2);
                served += 1;
            }
            Err(_) => held += 1,
        }
    }
    let probes = b1.state.held.lock().unwrap().len();
    assert_eq!(held, probes, "a client not served by the one that kept it");
    // One probe per backoff (100 ms, doubling); each held client costs this loop 700 ms, so
    // about four. Round-robin alone gave it ten.
    assert!(
        probes <= 6,
        "{probes} of 20 clients waited on the stalled backend"
    );
    assert_eq!(served + held, 20);
    assert_eq!(b2.taken(), 1 + served as u64);
    assert!(lb.wait_for_log("backend stalled", Duration::from_secs(1)));
    // Answering again: the next probe is taken and the turns alternate again.
    b1.state.policy.store(Policy::Take as u8, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || {
        greeting(&mut lb.connect()) == 1
    }));
    let ids: Vec<u8> = (0..10).map(|_| greeting(&mut lb.connect())).collect();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 5, "{ids:?}");
}

fn descriptors_return_to_baseline_after_many_hand_overs(driver: &str) {
    let dir = TempDir::new("ho-fds");
    let paths = backend_paths(&dir);
    let b1 = HandoffBackend::start(&paths[0], 1, Policy::TakeAndClose);
    let b2 = HandoffBackend::start(&paths[1], 2, Policy::TakeAndClose);
    let lb = handoff_lb(driver, &paths, &[]);
    let mut warm = lb.connect();
    assert!(is_closed(&mut warm));
    let baseline = lb.fd_count();
    let threads = 4;
    let count = fd_test_connections() / threads * threads;
    let started = Instant::now();
    // The backend took each and closed it: EOF, never a hang.
    churn(lb.addr, threads, count / threads, |client, _, _| {
        assert!(is_closed(client));
    });
    let elapsed = started.elapsed();
    assert_eq!(b1.taken() + b2.taken(), count as u64 + 1);
    assert_fds_back(&lb, baseline, &format!("{count} hand-overs"));
    eprintln!("{count} hand-overs in {elapsed:?}; fds back to {baseline}");
}
