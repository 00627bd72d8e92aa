//! Test harness: emulated processors (in-process, from `rinha-bench`), real `rinha`
//! processes on temp unix sockets peering each other, and a small blocking HTTP client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rinha_emulator::{self as processor, Chaos, Config, Limits, Running};

/// Runs a scenario, `fn name(driver: &str)`, once per io driver: the tests `name::uring`
/// and `name::epoll` (the lb's tests use the same macro).
#[allow(unused_imports)]
pub(crate) use rinha_sys::both_drivers;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("rinha-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One instance with no peer and its own processors, in a fresh directory: what a test of
/// one rule needs. Fields drop in order: the instance stops before its processors go.
pub struct Solo {
    pub inst: Instance,
    pub procs: Processors,
    _dir: TempDir,
}

impl Solo {
    pub fn start(driver: &str, extra: &[(&str, &str)]) -> Solo {
        Self::with(driver, Processors::start(), extra)
    }

    /// One instance in front of `procs`.
    pub fn with(driver: &str, procs: Processors, extra: &[(&str, &str)]) -> Solo {
        let dir = TempDir::new();
        let inst = Instance::start(&dir.0, "solo", driver, &procs, &[], extra);
        Solo {
            inst,
            procs,
            _dir: dir,
        }
    }
}

/// The two emulated processors (default fee 5 %, fallback 15 %).
pub struct Processors {
    pub default: Running,
    pub fallback: Running,
}

impl Processors {
    pub fn start() -> Processors {
        Self::with_chaos(Chaos::none())
    }

    /// Processors with these fees (percent) and the default's limiter sizes.
    pub fn with_fees(default_fee: u32, fallback_fee: u32, limits: Limits) -> Processors {
        let mut d = Config::for_tests(default_fee);
        d.limits = limits;
        Processors {
            default: processor::spawn(d).expect("default processor"),
            fallback: processor::spawn(Config::for_tests(fallback_fee))
                .expect("fallback processor"),
        }
    }

    pub fn with_chaos(chaos: Chaos) -> Processors {
        let mut d = Config::for_tests(5);
        d.chaos = chaos;
        let mut f = Config::for_tests(15);
        f.chaos = chaos;
        Processors {
            default: processor::spawn(d).expect("default processor"),
            fallback: processor::spawn(f).expect("fallback processor"),
        }
    }

    /// (default, fallback) request counts over everything.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.default.summary_micros(None, None).total_requests,
            self.fallback.summary_micros(None, None).total_requests,
        )
    }

    pub fn window(&self, from: Option<i64>, to: Option<i64>) -> ((u64, u64), (u64, u64)) {
        let d = self.default.summary_micros(from, to);
        let f = self.fallback.summary_micros(from, to);
        (
            (d.total_requests, d.total_cents),
            (f.total_requests, f.total_cents),
        )
    }
}

/// A running `rinha`.
pub struct Instance {
    /// Its client socket (`LISTEN`).
    pub socket: PathBuf,
    /// Its peer socket (`PEER_LISTEN`), the only one that answers `/internal/*`.
    pub peer_socket: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Instance {
    pub fn start(
        dir: &Path,
        name: &str,
        driver: &str,
        procs: &Processors,
        peers: &[&Path],
        extra: &[(&str, &str)],
    ) -> Instance {
        let socket = dir.join(format!("{name}.sock"));
        let peer_socket = peer_socket_of(&socket);
        let log = dir.join(format!("{name}.log"));
        // Callers name a peer by its client socket; it is asked on its peer socket.
        let peers: Vec<String> = peers
            .iter()
            .map(|p| format!("unix:{}", peer_socket_of(p).display()))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rinha"));
        cmd.env_clear()
            .env("LISTEN", format!("unix:{}", socket.display()))
            .env("PROCESSOR_DEFAULT_URL", procs.default.url())
            .env("PROCESSOR_FALLBACK_URL", procs.fallback.url())
            .env("PEERS", peers.join(","))
            .env("PEER_LISTEN", format!("unix:{}", peer_socket.display()))
            .env("WORKERS", "2")
            .env("IO_DRIVER", driver)
            .env("RUST_LOG", "info")
            // The shared test machine can be loaded far beyond its 2 cores: a summary must
            // not fail on a slow schedule here (the 5XX path has its own test).
            .env("PEER_TIMEOUT_MS", "3000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rinha");
        let inst = Instance {
            socket,
            peer_socket,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&inst.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "rinha did not start: {}",
                inst.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        inst
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// CPU seconds used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rinha did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        request(
            &self.socket,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    }

    /// A GET on the peer socket, as another instance asks.
    pub fn get_as_peer(&self, path: &str) -> (u16, String) {
        request(
            &self.peer_socket,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        request(
            &self.socket,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    pub fn pay(&self, id: uuid::Uuid, amount: &str) -> u16 {
        self.post(
            "/payments",
            &format!(r#"{{"correlationId":"{id}","amount":{amount}}}"#),
        )
        .0
    }

    /// The summary as ((default count, cents), (fallback count, cents)).
    pub fn summary(&self, query: &str) -> ((u64, u64), (u64, u64)) {
        let (status, body) = self.get(&format!("/payments-summary{query}"));
        assert_eq!(status, 200, "summary: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("summary json");
        let side = |k: &str| {
            let s = &v[k];
            let amount = s["totalAmount"].to_string();
            let (i, f) = amount.split_once('.').unwrap_or((&amount, "0"));
            let f = format!("{f:0<2}");
            (
                s["totalRequests"].as_u64().unwrap(),
                i.parse::<u64>().unwrap() * 100 + f[..2].parse::<u64>().unwrap(),
            )
        };
        (side("default"), side("fallback"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The peer socket (`PEER_LISTEN`) of the instance whose client socket is `socket`:
/// `b1.sock` -> `b1.peer.sock`.
pub fn peer_socket_of(socket: &Path) -> PathBuf {
    socket.with_extension("peer.sock")
}

/// Two instances peering each other.
pub fn pair(
    dir: &Path,
    driver: &str,
    procs: &Processors,
    extra: &[(&str, &str)],
) -> (Instance, Instance) {
    let s1 = dir.join("b1.sock");
    let s2 = dir.join("b2.sock");
    let a = Instance::start(dir, "b1", driver, procs, &[&s2], extra);
    let b = Instance::start(dir, "b2", driver, procs, &[&s1], extra);
    (a, b)
}

/// One request on a fresh connection; returns (status, body).
pub fn request(socket: &Path, raw: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).expect("write");
    read_response(&mut s)
}

/// Reads exactly one response with a Content-Length body (byte by byte, so pipelined
/// responses after it stay in the socket).
pub fn read_response(s: &mut impl Read) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        // `read_exact` retries a read a signal interrupted: with a read timeout set, even a
        // stop and continue of the process interrupts one (signal(7)); one did in a
        // `scripts/test` run (`a_slow_reader_gets_every_answer_in_order::epoll`).
        match s.read_exact(&mut byte) {
            Ok(()) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => panic!(
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!("read: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (
        head[9..12].parse().unwrap(),
        String::from_utf8_lossy(&body).to_string(),
    )
}

/// Polls `f` until it returns true or `within` passes; returns whether it did.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub const DRIVERS: [&str; 2] = ["uring", "epoll"];

/// CPU seconds (user + system) used so far by process `pid`, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}
