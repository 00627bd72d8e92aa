//! Test harness: small echo backends on temp unix sockets and the real `rinha-lb` process.
//!
//! A test backend greets every connection with its one-byte id, echoes every byte it reads,
//! and answers the client's FIN with `EOF` before closing, so a test can tell which backend
//! served it, check relayed bytes exactly, and see a half-close reach the backend. A frozen
//! one still accepts (as a `SIGSTOP`ped process's kernel does) and writes nothing until thawed.

#![allow(dead_code)] // each test file uses part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs each scenario, `fn name(driver: &str)`, once per io driver: the tests `name::uring`
/// and `name::epoll` (the backend's tests use the same macro).
pub use rinha_sys::both_drivers;

/// What a test backend sends when the client half-closes.
pub const EOF_MARK: &[u8] = b"EOF";

/// A private temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rinha-lb-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct BackendState {
    stopping: AtomicBool,
    frozen: AtomicBool,
    next_conn: AtomicU64,
    /// Clones of the open connections, so `kill` can cut them.
    open: Mutex<HashMap<u64, UnixStream>>,
}

/// An echo backend on a unix socket (one thread per connection, small stacks).
pub struct TestBackend {
    pub id: u8,
    pub path: PathBuf,
    state: Arc<BackendState>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestBackend {
    pub fn start(path: &Path, id: u8) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind test backend");
        let state = Arc::new(BackendState {
            stopping: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let shared = state.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, id, shared));
        TestBackend {
            id,
            path: path.to_owned(),
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Stops accepting, removes the socket file and cuts every open connection.
    pub fn kill(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and drops the listener.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("acceptor thread");
        }
        let _ = std::fs::remove_file(&self.path);
        let open = std::mem::take(&mut *self.state.open.lock().unwrap());
        for stream in open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// From now on nothing is written (no greeting, no echo) until [`TestBackend::thaw`].
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    /// Writes again, what was held first.
    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
    }

    /// Connections open on this backend now.
    pub fn open_connections(&self) -> usize {
        self.state.open.lock().unwrap().len()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.kill();
        }
    }
}

fn accept_loop(listener: UnixListener, id: u8, state: Arc<BackendState>) {
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let key = state.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            state.open.lock().unwrap().insert(key, clone);
        }
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                serve_echo(stream, id, &state);
                state.open.lock().unwrap().remove(&key);
            });
        assert!(spawned.is_ok(), "spawn backend connection thread");
    }
}

fn serve_echo(mut stream: UnixStream, id: u8, state: &BackendState) {
    let thawed = || {
        while state.frozen.load(Ordering::SeqCst) && !state.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    thawed();
    if stream.write_all(&[id]).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                thawed();
                let _ = stream.write_all(EOF_MARK);
                return;
            }
            Ok(n) => {
                thawed();
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// The real `rinha-lb` process, killed on drop.
pub struct Lb {
    pub child: Child,
    pub addr: SocketAddr,
    pub start_line: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Lb {
    /// Starts `rinha-lb` on `127.0.0.1:0` with `driver` and the given backend sockets.
    pub fn start(driver: &str, backends: &[&Path], extra_env: &[(&str, &str)]) -> Lb {
        let list: Vec<String> = backends
            .iter()
            .map(|path| format!("unix:{}", path.display()))
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_rinha-lb"));
        command
            .env_clear()
            .env("LISTEN", "127.0.0.1:0")
            .env("BACKENDS", list.join(","))
            .env("IO_DRIVER", driver)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn rinha-lb");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("rinha-lb started") {
                    let _ = started_tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let start_line = match started_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("rinha-lb did not start: {:?}", log.lock().unwrap());
            }
        };
        let addr = field(&start_line, "listen=")
            .parse()
            .expect("listen address in the start line");
        Lb {
            child,
            addr,
            start_line,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open descriptors of the lb process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The lb's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        wait_until(within, || {
            self.log().iter().any(|line| line.contains(needle))
        })
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Waits for the process to exit, asserting (`why`) that it does within `within` of `since`.
    pub fn exit_status_within(
        &mut self,
        since: Instant,
        within: Duration,
        why: &str,
    ) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(since.elapsed() < within, "{why}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: i32) {
        let sent = rinha_sys::signals::send(self.pid(), signal);
        assert!(sent.is_ok(), "kill rinha-lb");
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key` (e.g. `listen=`) in a `key=value` log line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .map(|at| at + key.len())
        .unwrap_or(line.len());
    line[start..].split_whitespace().next().unwrap_or("")
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to rinha-lb");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads the backend's one-byte greeting: which backend serves this connection.
pub fn greeting(stream: &mut TcpStream) -> u8 {
    let mut id = [0u8; 1];
    stream.read_exact(&mut id).expect("backend greeting");
    id[0]
}

/// Sends `data` and reads its echo back.
pub fn echo(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("read echo");
    back
}

/// `count` clients of `lb`, each with the id of the backend that greeted it.
pub fn greeted_clients(lb: &Lb, count: usize) -> Vec<(u8, TcpStream)> {
    (0..count)
        .map(|_| {
            let mut client = lb.connect();
            (greeting(&mut client), client)
        })
        .collect()
}

/// Once backend `killed` is gone: each of its clients is closed, every other one still served.
pub fn assert_only_its_clients_closed(clients: &mut [(u8, TcpStream)], killed: u8) {
    for (id, client) in clients {
        if *id == killed {
            assert!(
                is_closed(client),
                "a client of the killed backend stayed open"
            );
        } else {
            assert_eq!(echo(client, b"still here"), b"still here");
        }
    }
}

/// Opens `per_thread` connections to `addr` from each of `threads` threads, one after the
/// other, and runs `client(connection, n, thread)` on the n-th; returns when all are done.
pub fn churn(
    addr: SocketAddr,
    threads: usize,
    per_thread: usize,
    client: fn(&mut TcpStream, usize, usize),
) {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                for n in 0..per_thread {
                    client(&mut connect(addr), n, t);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// Asserts that the lb's descriptors come back to `baseline` within 5 s after `what`.
pub fn assert_fds_back(lb: &Lb, baseline: usize, what: &str) {
    let settled = wait_until(Duration::from_secs(5), || lb.fd_count() <= baseline);
    assert!(
        settled,
        "fds after {what}: {} (baseline {baseline})",
        lb.fd_count()
    );
}

/// True when the peer has closed: EOF or a reset.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic pseudo-random bytes (xorshift), so large payloads are not all one value.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
