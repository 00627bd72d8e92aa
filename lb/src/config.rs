//! The load balancer's configuration: one struct read from flags or env vars, validated once.
//!
//! Names follow `docs/architecture.md` (`LISTEN`, `BACKENDS`, `WORKERS`, `IO_DRIVER`); the
//! extra knobs have defaults that suit the contest and are documented on each field.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use rinha_sys::driver::IoDriver;
use rinha_sys::uring::Taskrun;

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// A unix stream socket (`unix:/path.sock`).
    Unix(PathBuf),
    /// A TCP address (`host:port`), resolved once at start.
    Tcp(SocketAddr),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            BackendAddr::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Why a `BACKENDS` entry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("empty backend entry")]
    Empty,
    #[error("`unix:` needs a socket path")]
    EmptyUnixPath,
    #[error("`{0}` is neither `unix:/path.sock` nor `host:port`")]
    Unparsable(String),
    #[error("`{0}` does not resolve to any address")]
    Unresolved(String),
    #[error("hand-over goes over unix sockets only, not `{0}`")]
    NotUnix(String),
}

impl std::str::FromStr for BackendAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddrError::Empty);
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddrError::EmptyUnixPath);
            }
            return Ok(BackendAddr::Unix(PathBuf::from(path)));
        }
        Ok(BackendAddr::Tcp(resolve(text)?))
    }
}

/// Resolves `host:port` once (a blocking lookup, so never on the request path).
fn resolve(text: &str) -> Result<SocketAddr, AddrError> {
    if !text.contains(':') {
        return Err(AddrError::Unparsable(text.to_owned()));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|_| AddrError::Unparsable(text.to_owned()))?;
    addrs
        .next()
        .ok_or_else(|| AddrError::Unresolved(text.to_owned()))
}

fn parse_listen(text: &str) -> Result<SocketAddr, AddrError> {
    resolve(text.trim())
}

/// How a client reaches its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Connect to the backend and copy bytes both ways for the life of the connection.
    Relay,
    /// Pass the client's socket to the backend (`SCM_RIGHTS`) and step out (`handoff.rs`).
    Handoff,
}

/// Everything `rinha-lb` is told at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "rinha-lb", version, about)]
pub struct Config {
    /// Address to accept clients on (`host:port`).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:9999", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Comma list of backends: `unix:/path.sock` or `host:port`.
    #[arg(long, env = "BACKENDS", required = true, value_delimiter = ',', num_args = 1..)]
    pub backends: Vec<BackendAddr>,

    /// Worker runtimes (threads), each with its own `SO_REUSEPORT` listener.
    #[arg(long, env = "WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,

    /// I/O driver: `uring`, `epoll` or `auto`.
    #[arg(long, env = "IO_DRIVER", value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,

    /// io_uring task-work mode (ignored under epoll); falls back to `default` if refused.
    #[arg(long, env = "URING_TASKRUN", value_enum, default_value_t = Taskrun::Defer)]
    pub uring_taskrun: Taskrun,

    /// Open client connections allowed at once (all workers together); past it, new clients
    /// are closed at once. Each connection holds two descriptors.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// After SIGTERM/SIGINT, how long open connections may take to finish (milliseconds).
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,

    /// How long a backend connect may take before the backend counts as down (milliseconds).
    #[arg(long, env = "CONNECT_TIMEOUT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,

    /// How long a relayed chunk may wait for the receiving side to take it before both
    /// connections are closed (milliseconds).
    #[arg(long, env = "WRITE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_ms: u64,

    /// How long a connection may stay silent both ways before both sides are closed
    /// (milliseconds; closed within a quarter more).
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(4..))]
    pub idle_timeout_ms: u64,

    /// How relayed chunks are written: `runtime` (ring/epoll write) or `direct` (a non-blocking
    /// `send(2)` first; measured slower on io_uring, see relay.rs).
    #[arg(long, env = "RELAY_SEND", value_enum, default_value_t = crate::relay::SendMode::Runtime)]
    pub relay_send: crate::relay::SendMode,

    /// Relay buffer per direction and connection (bytes).
    #[arg(long, env = "BUFFER_SIZE", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(512..=(1 << 24)))]
    pub buffer_size: u32,

    /// `relay` (copy every byte both ways) or `handoff` (pass each client's socket to a
    /// backend and step out; the backends must listen on `HANDOFF_LISTEN`).
    #[arg(long, env = "LB_MODE", value_enum, default_value_t = Mode::Relay)]
    pub lb_mode: Mode,

    /// The backends' hand-over sockets (`unix:` only), in the order of `BACKENDS`; default:
    /// each `BACKENDS` socket with `.sock` replaced by `.handoff.sock`.
    #[arg(long, env = "HANDOFF_BACKENDS", value_delimiter = ',')]
    pub handoff_backends: Vec<BackendAddr>,
}

impl Config {
    /// The shutdown grace as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The backend connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The relay's write and idle timeouts.
    pub fn relay_timeouts(&self) -> crate::relay::Timeouts {
        crate::relay::Timeouts {
            write: Duration::from_millis(self.write_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    /// The backends as one comma list, as the start log shows them.
    pub fn backends_display(&self) -> String {
        let list: Vec<String> = self.backends.iter().map(ToString::to_string).collect();
        list.join(",")
    }

    /// Where clients are sent: the backends themselves (relay), or their hand-over sockets
    /// (`HANDOFF_BACKENDS`, else derived from `BACKENDS`). Errors on a TCP hand-over address.
    pub fn targets(&self) -> Result<Vec<BackendAddr>, AddrError> {
        match self.lb_mode {
            Mode::Relay => Ok(self.backends.clone()),
            Mode::Handoff if !self.handoff_backends.is_empty() => self
                .handoff_backends
                .iter()
                .map(|addr| match addr {
                    BackendAddr::Unix(_) => Ok(addr.clone()),
                    BackendAddr::Tcp(_) => Err(AddrError::NotUnix(addr.to_string())),
                })
                .collect(),
            Mode::Handoff => self.backends.iter().map(handoff_socket_of).collect(),
        }
    }
}

/// The hand-over socket a backend listening on `addr` is expected to have: `x.sock` ->
/// `x.handoff.sock`, any other name gets `.handoff` appended.
fn handoff_socket_of(addr: &BackendAddr) -> Result<BackendAddr, AddrError> {
    let BackendAddr::Unix(path) = addr else {
        return Err(AddrError::NotUnix(addr.to_string()));
    };
    let text = path.display().to_string();
    let derived = match text.strip_suffix(".sock") {
        Some(stem) => format!("{stem}.handoff.sock"),
        None => format!("{text}.handoff"),
    };
    Ok(BackendAddr::Unix(PathBuf::from(derived)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_unix_and_tcp_backends() {
        let addr: BackendAddr = "unix:/tmp/b1.sock".parse().unwrap();
        assert_eq!(addr, BackendAddr::Unix("/tmp/b1.sock".into()));
        let addr: BackendAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(addr, BackendAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn rejects_bad_backends() {
        assert!(matches!("".parse::<BackendAddr>(), Err(AddrError::Empty)));
        assert!(matches!(
            "unix:".parse::<BackendAddr>(),
            Err(AddrError::EmptyUnixPath)
        ));
        assert!(matches!(
            "nonsense".parse::<BackendAddr>(),
            Err(AddrError::Unparsable(_))
        ));
        assert!(matches!(
            "127.0.0.1:notaport".parse::<BackendAddr>(),
            Err(AddrError::Unparsable(_))
        ));
    }

    #[test]
    fn reads_a_comma_list() {
        let cfg = Config::try_parse_from([
            "rinha-lb",
            "--backends",
            "unix:/a.sock,unix:/b.sock",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cfg.backends.len(), 2);
        assert_eq!(cfg.backends_display(), "unix:/a.sock,unix:/b.sock");
        assert_eq!(cfg.workers, 1);
        assert_eq!(cfg.io_driver, IoDriver::Auto);
    }

    #[test]
    fn handoff_targets_are_given_or_derived_and_unix_only() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["rinha-lb", "--backends", "unix:/s/b1.sock,unix:/s/b2"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap()
        };
        let relay = parse(&[]);
        assert_eq!(relay.lb_mode, Mode::Relay);
        assert_eq!(relay.targets().unwrap(), relay.backends);
        let derived = parse(&["--lb-mode", "handoff"]).targets().unwrap();
        assert_eq!(
            derived,
            vec![
                BackendAddr::Unix("/s/b1.handoff.sock".into()),
                BackendAddr::Unix("/s/b2.handoff".into())
            ]
        );
        let given = parse(&[
            "--lb-mode",
            "handoff",
            "--handoff-backends",
            "unix:/h/1,unix:/h/2",
        ]);
        assert_eq!(
            given.targets().unwrap()[1],
            BackendAddr::Unix("/h/2".into())
        );
        let tcp = parse(&["--lb-mode", "handoff", "--handoff-backends", "127.0.0.1:9"]);
        assert!(matches!(tcp.targets(), Err(AddrError::NotUnix(_))));
        let tcp_backends = Config::try_parse_from([
            "rinha-lb",
            "--backends",
            "127.0.0.1:8080",
            "--lb-mode",
            "handoff",
        ])
        .unwrap();
        assert!(matches!(tcp_backends.targets(), Err(AddrError::NotUnix(_))));
    }

    #[test]
    fn backends_are_required() {
        // The env var must not leak into this test from the caller's shell.
        if std::env::var_os("BACKENDS").is_none() {
            assert!(Config::try_parse_from(["rinha-lb"]).is_err());
        }
        assert!(Config::try_parse_from(["rinha-lb", "--backends", "x"]).is_err());
        assert!(
            Config::try_parse_from(["rinha-lb", "--backends", "unix:/a", "--workers", "0"])
                .is_err()
        );
    }
}
