//! Memory under a flood of held connections (issue 24, item 8, the lb's side): `rinha-lb` in
//! a memory cgroup of its own, thousands of clients each holding a connection at its
//! costliest, and the cgroup's peak usage stays well under the limit while the lb keeps
//! serving new clients or closes them cleanly. In relay mode the costliest connection has
//! both relay buffers full (the client sent a buffer's worth and never reads the echo); in
//! hand-over mode it waits for a backend that never answers. Each test also prints what one
//! held connection took. Needs a writable cgroup v1 memory hierarchy (root); skipped with a
//! printed reason otherwise.

// The harness's `both_drivers!` is for the other test files: these run on the default driver.
#[allow(unused_imports)]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rinha_sys::cgroup::MemoryCgroup;
use support::{field, wait_until, TempDir, TestBackend};

/// The lb's limit in the contest's compose file.
const LIMIT: u64 = 50 << 20;
/// Clients in the relay flood: well past what the old fixed cap (4096) let a 50 MiB lb hold
/// at ~40 KiB each, and past what the derived cap allows.
const RELAY_CLIENTS: usize = 3000;
/// Clients in the hand-over flood: past the most the lb holds by default (4096).
const HANDOFF_CLIENTS: usize = 5000;

/// `rinha-lb` started inside a cgroup, killed on drop.
struct CgroupLb {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl CgroupLb {
    /// Starts the lb inside `cg` (it joins before `exec`, so it reads the cgroup's limit at
    /// start and every byte it takes is charged there).
    fn start(cg: &MemoryCgroup, backends: &[&Path], env: &[(&str, &str)]) -> CgroupLb {
        let list: Vec<String> = backends
            .iter()
            .map(|p| format!("unix:{}", p.display()))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rinha-lb"));
        cmd.env_clear()
            .env("LISTEN", "127.0.0.1:0")
            .env("BACKENDS", list.join(","))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cg.run_inside(&mut cmd);
        let mut child = cmd.spawn().expect("spawn rinha-lb");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let started = || {
            log.lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("rinha-lb started"))
                .cloned()
        };
        assert!(
            wait_until(Duration::from_secs(10), || started().is_some()),
            "rinha-lb did not start: {:?}",
            log.lock().unwrap()
        );
        let addr = field(&started().unwrap(), "listen=").parse().unwrap();
        CgroupLb { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for CgroupLb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raise_fd_limit(to: u64) {
    // SAFETY: getrlimit/setrlimit fill and read the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(to);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// A new client is served (`served` reads its first byte) or closed cleanly (EOF or reset)
/// within 5 s, never left hanging.
fn new_client_is_served_or_closed(addr: SocketAddr) -> bool {
    let Ok(mut client) = TcpStream::connect(addr) else {
        return false;
    };
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        // A greeting byte (served) or EOF (closed at the cap).
        Ok(n) => n <= 1,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// Floods `lb` with `clients` clients that each send `request` (may be empty) and hold;
/// returns the held connections.
fn flood(addr: SocketAddr, clients: usize, request: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(clients);
    for _ in 0..clients {
        // Past the cap the lb closes a connection at once: a write may then fail, which is
        // the point.
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        s.set_nonblocking(true).unwrap();
        let _ = s.write(request);
        held.push(s);
    }
    held
}

/// What the flood left: whether the lb lived, the cgroup's peak, and the usage each held
/// connection added (measured against the usage before the flood).
fn report(what: &str, cg: &MemoryCgroup, before: u64, held: usize) -> u64 {
    let peak = cg.read("memory.max_usage_in_bytes");
    let now = cg.read("memory.usage_in_bytes");
    let each = now.saturating_sub(before) / held.max(1) as u64;
    println!(
        "{what}: peak {} KiB of {} MiB; {held} held connections, {} bytes each above the \
         {} KiB before the flood",
        peak >> 10,
        LIMIT >> 20,
        each,
        before >> 10
    );
    peak
}

/// Relay mode, every held connection at its costliest: the client sent a whole buffer
/// (16 KiB, `BUFFER_SIZE`) that the echo backend sends back, and never reads the echo, so
/// both relay buffers are full. Before the fix the fixed cap of 4096 let ~40 KiB each grow
/// past the 50 MiB limit and the kernel killed the lb.
#[test]
fn a_relay_flood_stays_well_under_the_memory_limit() {
    let cg = match MemoryCgroup::create(&format!("rinha-lb-relay-{}", std::process::id()), LIMIT) {
        Ok(cg) => cg,
        Err(why) => {
            println!("skipped: cannot make a memory cgroup here ({why})");
            return;
        }
    };
    raise_fd_limit(4 * RELAY_CLIENTS as u64 + 1024);
    let dir = TempDir::new("mem-relay");
    let backend = TestBackend::start(&dir.path("b.sock"), 1);
    // Held connections stay open for the whole test, not closed as idle or slow.
    let env = [
        ("IDLE_TIMEOUT_MS", "120000"),
        ("WRITE_TIMEOUT_MS", "120000"),
    ];
    let lb = CgroupLb::start(&cg, &[&backend.path], &env);
    let before = cg.read("memory.usage_in_bytes");
    let held = flood(lb.addr, RELAY_CLIENTS, &[b'x'; 16 << 10]);
    // Let the lb relay what was sent (a settling pause, not a measure of speed).
    std::thread::sleep(Duration::from_secs(3));
    let alive = lb_alive(&lb);
    let backends = backend.open_connections();
    let peak = report("relay", &cg, before, backends);
    let refused_or_served = new_client_is_served_or_closed(lb.addr);
    drop(held);
    let served_again = wait_until(Duration::from_secs(5), || {
        let Ok(mut client) = TcpStream::connect(lb.addr) else {
            return false;
        };
        client
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut id = [0u8; 1];
        client.read_exact(&mut id).is_ok() && id[0] == 1
    });
    let log = lb.log();
    assert_held_under_the_limit(alive, &log, peak);
    assert!(refused_or_served, "a client past the cap hangs");
    assert!(served_again, "clients are served again once the flood ends");
}

/// What every flood must leave: the lb alive, its connection cap taken from the cgroup's
/// limit, and its peak well under that limit.
fn assert_held_under_the_limit(alive: bool, log: &str, peak: u64) {
    assert!(alive, "rinha-lb died (out of memory?): {log}");
    assert!(
        log.contains("connection cap") && log.contains("cgroup v1"),
        "the cap comes from the cgroup's limit: {log}"
    );
    assert!(
        peak < LIMIT * 3 / 4,
        "peak {} MiB of the {} MiB limit",
        peak >> 20,
        LIMIT >> 20
    );
}

fn lb_alive(lb: &CgroupLb) -> bool {
    // `try_wait` needs `&mut`; /proc tells the same without it.
    std::fs::read_to_string(format!("/proc/{}/stat", lb.child.id()))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Hand-over mode: every client is passed to a backend that keeps the hand-over connection
/// and never answers, so the lb holds each client until `CONNECT_TIMEOUT_MS` (raised here
/// past the test) lets it go.
#[test]
fn a_handoff_flood_stays_well_under_the_memory_limit() {
    let cg = match MemoryCgroup::create(&format!("rinha-lb-handoff-{}", std::process::id()), LIMIT)
    {
        Ok(cg) => cg,
        Err(why) => {
            println!("skipped: cannot make a memory cgroup here ({why})");
            return;
        }
    };
    raise_fd_limit(3 * HANDOFF_CLIENTS as u64 + 1024);
    let dir = TempDir::new("mem-handoff");
    let path = dir.path("b.sock");
    let listener = UnixListener::bind(dir.path("b.handoff.sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let channels: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    let kept = channels.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let acceptor = std::thread::spawn(move || {
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => kept.lock().unwrap().push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    let env = [("LB_MODE", "handoff"), ("CONNECT_TIMEOUT_MS", "120000")];
    let lb = CgroupLb::start(&cg, &[&path], &env);
    let before = cg.read("memory.usage_in_bytes");
    let held = flood(lb.addr, HANDOFF_CLIENTS, b"");
    // Let the lb offer every client (a settling pause, not a measure of speed).
    std::thread::sleep(Duration::from_secs(3));
    let alive = lb_alive(&lb);
    let waiting = channels.lock().unwrap().len();
    let peak = report("handoff", &cg, before, waiting);
    let refused_or_served = new_client_is_served_or_closed(lb.addr);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    acceptor.join().unwrap();
    drop(held);
    let log = lb.log();
    assert_held_under_the_limit(alive, &log, peak);
    assert!(refused_or_served, "a client past the cap hangs");
}
