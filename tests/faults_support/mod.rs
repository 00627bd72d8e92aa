//! Harness of the fault tests: a journaled fleet (two `rinha` with `DATA_DIR`, peering each
//! other, behind a real `rinha-lb` on a TCP port), a paced load that remembers which
//! payment ids got a 2XX, and the end-of-run checks against the processors.
//!
//! The load is written here rather than taken from `rinha_bench::load`: that generator
//! counts statuses but not which `correlationId` got which, and the checks need the ids.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::common::{eventually, Instance, Processors, TempDir};

/// Every payment of the load is this amount (cents checks are then counts x 1990).
pub const AMOUNT: &str = "19.90";
pub const CENTS: u64 = 1990;

/// A running `rinha-lb` on a TCP port of loopback.
pub struct Lb {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// The `rinha-lb` binary next to `rinha` in the same target dir, (re)built once per test
/// run with the same profile: a binary merely present may be stale.
fn lb_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let rinha = PathBuf::from(env!("CARGO_BIN_EXE_rinha"));
    let lb = rinha.with_file_name("rinha-lb");
    BUILD.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "rinha-lb"]);
        if rinha.parent().is_some_and(|d| d.ends_with("release")) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build -p rinha-lb");
        assert!(status.success(), "cannot build rinha-lb");
    });
    lb
}

impl Lb {
    /// Starts the lb on `listen` (`127.0.0.1:0` for a fresh port) in front of `backends`.
    pub fn start(dir: &Path, listen: &str, backends: &[&Path]) -> Lb {
        Self::start_with(dir, listen, backends, &[])
    }

    /// [`Lb::start`] with more environment (`LB_MODE=handoff`, for one).
    pub fn start_with(dir: &Path, listen: &str, backends: &[&Path], env: &[(&str, &str)]) -> Lb {
        // A log per start: a restarted lb's must not hide what the killed one said.
        let log = (0..)
            .map(|n| lb_log(dir, n))
            .find(|path| !path.exists())
            .expect("a free name");
        let backends: Vec<String> = backends
            .iter()
            .map(|p| format!("unix:{}", p.display()))
            .collect();
        let child = Command::new(lb_binary())
            .env_clear()
            .env("LISTEN", listen)
            .env("BACKENDS", backends.join(","))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("lb log"))
            .spawn()
            .expect("spawn rinha-lb");
        let mut addr = None;
        let found = eventually(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            addr = text
                .lines()
                .find(|l| l.contains("rinha-lb started"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")))
                .and_then(|a| a.parse().ok());
            addr.is_some()
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(found, "rinha-lb did not start: {text}");
        Lb {
            child: Some(child),
            addr: addr.expect("found"),
            log,
        }
    }

    /// What this lb has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the lb with SIGKILL and waits until its port refuses connections; when that was.
    ///
    /// Reaping the process is not enough: with the io_uring driver the listener outlives the
    /// process by the ring's teardown (14-21 ms measured on an idle machine, longer under
    /// load), held by the pending accept. Connections made then complete their handshake and
    /// are reset when the ring goes: they are in flight to the dead lb as much as those it
    /// held.
    pub fn kill9(&mut self) -> Killed {
        let at = Instant::now();
        self.kill_and_reap();
        Killed::refused_after(at, || {
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
        })
    }
}

impl Lb {
    /// SIGKILL, then waits for the process (not for its port: [`Lb::kill9`]).
    fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// The log of the lb started `n`-th in `dir` (from 0).
fn lb_log(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("lb-{n}.log"))
}

pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child of this process.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Two journaled backends behind an lb.
pub struct Fleet {
    pub dir: TempDir,
    pub b1: Instance,
    pub b2: Instance,
    pub lb: Lb,
    extra: Vec<(String, String)>,
}

impl Fleet {
    /// `extra` env applies to both backends (on top of `DATA_DIR`, one per backend).
    pub fn start(procs: &Processors, extra: &[(&str, &str)]) -> Fleet {
        let dir = TempDir::new();
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let b1 = Self::backend(&dir.0, "b1", procs, &extra);
        let b2 = Self::backend(&dir.0, "b2", procs, &extra);
        let lb = Lb::start(&dir.0, "127.0.0.1:0", &[&b1.socket, &b2.socket]);
        Fleet {
            dir,
            b1,
            b2,
            lb,
            extra,
        }
    }

    /// Starts backend `name` (again) with its own data dir; it peers the other one.
    pub fn backend(
        dir: &Path,
        name: &str,
        procs: &Processors,
        extra: &[(String, String)],
    ) -> Instance {
        let other = if name == "b1" { "b2" } else { "b1" };
        let peer = dir.join(format!("{other}.sock"));
        let data = Self::data_dir_of(dir, name);
        let data = data.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("DATA_DIR", &data)];
        env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Instance::start(dir, name, "auto", procs, &[&peer], &env)
    }

    pub fn data_dir_of(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}-data"))
    }

    pub fn restart_b1(&mut self, procs: &Processors) {
        self.b1 = Self::backend(&self.dir.0, "b1", procs, &self.extra);
    }

    pub fn restart_lb(&mut self) {
        let listen = self.lb.addr.to_string();
        self.lb.kill9();
        let (s1, s2) = (self.b1.socket.clone(), self.b2.socket.clone());
        self.lb = Lb::start(&self.dir.0, &listen, &[&s1, &s2]);
    }

    /// Every lb log of this fleet's life, oldest first, each under its name.
    pub fn lb_logs(&self) -> String {
        (0..)
            .map(|n| lb_log(&self.dir.0, n))
            .take_while(|path| path.exists())
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                format!("--- {}\n{}", path.display(), tail(&text))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (bounded) until the processors hold every payment the load got a 2XX for and
    /// the fleet's summary equals the processors', then checks both in detail.
    pub fn drained_and_exact(&self, procs: &Processors, load: &Outcome, within: Duration) {
        let settled = eventually(within, || {
            let stored = procs.default.stored() + procs.fallback.stored();
            stored >= load.ok.len() && self.b1.summary("") == procs.window(None, None)
        });
        let ours = self.b1.summary("");
        let theirs = procs.window(None, None);
        assert!(
            settled,
            "not drained within {within:?}: ours {ours:?}, processors {theirs:?}, 2XX {}\nb1: {}\nb2: {}",
            load.ok.len(),
            tail(&self.b1.log_text()),
            tail(&self.b2.log_text()),
        );
        every_ok_stored_once(procs, load);
        // Our summary counts what the processors hold: nothing lost, nothing double-counted
        // (the processors refuse a duplicate id, so their totals are a set).
        assert_eq!(ours, theirs);
        assert_eq!(ours.0 .1 + ours.1 .1, (ours.0 .0 + ours.1 .0) * CENTS);
    }
}

/// A part killed mid-load: when, and when its socket stopped accepting connections.
#[derive(Debug, Clone, Copy)]
pub struct Killed {
    pub at: Instant,
    pub refused_from: Instant,
}

impl Killed {
    /// A part killed `at`: waits until `accepts` says its socket refuses. The process gone is
    /// not enough, as [`Lb::kill9`] says.
    pub fn refused_after(at: Instant, accepts: impl Fn() -> bool) -> Killed {
        let deadline = at + Duration::from_secs(10);
        while accepts() {
            assert!(
                Instant::now() < deadline,
                "still accepted 10 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Killed {
            at,
            refused_from: Instant::now(),
        }
    }
}

/// What a kill may cost the load's `connections`: each lost at most one request on the TCP
/// connection it had open at the kill (sent before the kill, or after it while the dying
/// process still held the connection); the others lost were sent on connections opened while
/// the dead part's socket still accepted, and nothing on a connection opened once it refused
/// was lost. `context` (logs) goes with a failure.
pub fn assert_lost_only_to_the_dead(
    load: &Outcome,
    connections: usize,
    kill: Killed,
    context: &str,
) {
    let since_kill = |t: Instant| match t.checked_duration_since(kill.at) {
        Some(after) => format!("+{after:?}"),
        None => format!("-{:?}", kill.at - t),
    };
    let told = || {
        let lost: Vec<String> = load
            .lost
            .iter()
            .map(|l| {
                format!(
                    "connection {} opened at kill {}, sent at kill {}: {}",
                    l.connection,
                    since_kill(l.opened),
                    since_kill(l.sent),
                    l.how
                )
            })
            .collect();
        let refused = since_kill(kill.refused_from);
        format!("{lost:#?}\nrefused from kill {refused}\n{context}")
    };
    for connection in 0..connections {
        let open_at_kill = load
            .lost
            .iter()
            .filter(|l| l.connection == connection && l.opened < kill.at)
            .count();
        assert!(
            open_at_kill <= 1,
            "connection {connection} lost {open_at_kill} requests on connections open at the kill: {}",
            told()
        );
    }
    assert!(
        load.lost.iter().all(|l| l.opened < kill.refused_from),
        "a request on a connection opened once the dead part refused was lost: {}",
        told()
    );
}

/// Each id that got a 2XX is stored by exactly one processor.
pub fn every_ok_stored_once(procs: &Processors, load: &Outcome) {
    let mut missing = Vec::new();
    for id in &load.ok {
        let d = procs.default.payment(*id).is_some();
        let f = procs.fallback.payment(*id).is_some();
        assert!(!(d && f), "{id} stored by both processors");
        if !d && !f {
            missing.push(*id);
        }
    }
    assert!(
        missing.is_empty(),
        "{} payments answered 2XX were never processed, e.g. {}",
        missing.len(),
        missing[0]
    );
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids answered 2XX.
    pub ok: Vec<Uuid>,
    /// (id, status) answered otherwise.
    pub refused: Vec<(Uuid, u16)>,
    /// Requests whose answer never came (connection lost): each may or may not be accepted.
    pub lost: Vec<Lost>,
    /// Connects that failed (nothing sent).
    pub connect_failures: u64,
}

/// A request whose answer never came, with what a failing test needs to say why.
#[derive(Debug)]
pub struct Lost {
    pub id: Uuid,
    /// Which of the load's connections sent it (each reconnects after a loss).
    pub connection: usize,
    /// When the TCP connection it was sent on was opened.
    pub opened: Instant,
    /// When it was sent.
    pub sent: Instant,
    /// How the exchange failed (the write, or the read's error or early end).
    pub how: String,
}

/// A paced load: `connections` keep-alive connections to `addr`, each sending one fresh
/// payment every `every` until `duration` has passed (or `stop` is set), reconnecting
/// whenever its connection fails.
pub fn load(addr: SocketAddr, connections: usize, every: Duration, duration: Duration) -> Outcome {
    let out = Arc::new(Mutex::new(Outcome::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + duration;
    let threads: Vec<_> = (0..connections)
        .map(|connection| {
            let (out, stop) = (out.clone(), stop.clone());
            std::thread::spawn(move || drive(addr, connection, every, end, &stop, &out))
        })
        .collect();
    for t in threads {
        t.join().expect("load thread");
    }
    Arc::try_unwrap(out)
        .expect("threads joined")
        .into_inner()
        .expect("lock")
}

/// One connection of [`load`], numbered `connection`.
fn drive(
    addr: SocketAddr,
    connection: usize,
    every: Duration,
    end: Instant,
    stop: &AtomicBool,
    out: &Mutex<Outcome>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut opened = Instant::now();
    let mut next = Instant::now();
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => {
                    opened = Instant::now();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    conn.insert(s)
                }
                Err(_) => {
                    out.lock().unwrap().connect_failures += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let id = Uuid::new_v4();
        let body = format!(r#"{{"correlationId":"{id}","amount":{AMOUNT}}}"#);
        let req = format!(
            "POST /payments HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        let answer = match s.write_all(req.as_bytes()) {
            Ok(()) => read_status(s),
            Err(error) => Err(format!("write: {error}")),
        };
        let mut o = out.lock().unwrap();
        match answer {
            Ok(200..=299) => o.ok.push(id),
            Ok(status) => o.refused.push((id, status)),
            Err(how) => {
                // The stream may have been reset before or after the server read it.
                o.lost.push(Lost {
                    id,
                    connection,
                    opened,
                    sent,
                    how,
                });
                conn = None;
            }
        }
        drop(o);
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Reads one response (head and Content-Length body); its status, or how the connection
/// failed.
fn read_status(s: &mut TcpStream) -> Result<u16, String> {
    let read = |s: &mut TcpStream, chunk: &mut [u8]| match s.read(chunk) {
        Ok(0) => Err("read: closed before the answer".to_string()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("read: {error}")),
    };
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = read(s, &mut chunk)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            // One request in flight per connection: nothing may follow this response.
            return head
                .get(9..12)
                .and_then(|status| status.parse().ok())
                .ok_or_else(|| format!("not an HTTP status line: {head:?}"));
        }
        let n = read(s, &mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The number after `key=` in the last log line containing `needle`.
pub fn logged_number(log: &str, needle: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find(|l| l.contains(needle))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}
