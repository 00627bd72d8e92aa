//! One child process of the stack: spawned with its output in a log file, waited for until it
//! accepts connections (or dies), stopped with SIGTERM then SIGKILL.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::StackError;

/// How long a part gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Where a part listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A port of 127.0.0.1.
    Tcp(u16),
    /// Another loopback address (`--instances`).
    At(SocketAddrV4),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(port) => write!(f, "127.0.0.1:{port}"),
            Addr::At(a) => write!(f, "{a}"),
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A running child.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub addr: Addr,
    pub log: PathBuf,
    child: Child,
}

impl Part {
    /// Spawns `program args` with `env` added, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        addr: Addr,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Part, StackError> {
        let spawn_err = |source| StackError::Spawn {
            part: name.to_string(),
            program: program.to_path_buf(),
            source,
        };
        let out = std::fs::File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // ETXTBSY: a freshly written executable is still open for writing in a process another
        // thread is forking (the fd lives until that child execs). It passes within moments.
        let mut attempts = 0;
        let child = loop {
            match command.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(spawn_err)?,
            }
        };
        Ok(Part {
            name: name.to_string(),
            addr,
            log,
            child,
        })
    }

    /// The process id (None once reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the part accepts a connection, failing if it exits or `deadline` passes.
    pub async fn wait_up(&mut self, deadline: Instant) -> Result<(), StackError> {
        loop {
            let connected = match &self.addr {
                Addr::Tcp(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_ok(),
                Addr::At(a) => tokio::net::TcpStream::connect(*a).await.is_ok(),
                Addr::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            };
            if connected {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StackError::Exited {
                    part: self.name.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: tail(&self.log),
                });
            }
            if Instant::now() >= deadline {
                return Err(StackError::NotUp {
                    part: self.name.clone(),
                    addr: self.addr.to_string(),
                    log: self.log.clone(),
                    tail: tail(&self.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// SIGTERM, then SIGKILL after `STOP_GRACE`.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain syscall on the pid of our own, not yet reaped, child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(STOP_GRACE, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Like [`ensure_free`], but gives a port that is busy up to `within` to become free: the
/// comparisons start a stack on the same ports right after stopping the previous one, whose
/// sockets can hold a port for a moment after its processes are gone.
pub async fn wait_free(name: &str, port: u16, within: Duration) -> Result<(), StackError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match ensure_free(name, port) {
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// Fails when something already listens on `port` (a child would fail to bind, and the
/// readiness probe would then talk to a stranger).
pub fn ensure_free(name: &str, port: u16) -> Result<(), StackError> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|source| StackError::PortBusy {
            part: name.to_string(),
            port,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_freed_within_the_grace_is_taken_and_a_busy_one_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(taken);
        });
        wait_free("lb", port, Duration::from_secs(5))
            .await
            .expect("free once released");
        release.await.expect("released");

        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let began = Instant::now();
        let err = wait_free("lb", port, Duration::from_millis(300))
            .await
            .expect_err("still held");
        assert!(matches!(err, StackError::PortBusy { .. }), "{err}");
        assert!(began.elapsed() >= Duration::from_millis(300));
    }
}
