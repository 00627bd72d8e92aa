//! The load balancer's configuration: one struct read from flags or env vars, validated once.
//!
//! Names follow `docs/architecture.md` (`LISTEN`, `BACKENDS`, `WORKERS`, `IO_DRIVER`); the
//! extra knobs have defaults that suit the contest and are documented on each field.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use rinha_sys::cap::connections_for;
use rinha_sys::discovery::{DnsName, Lookup, Own, Sources};
use rinha_sys::driver::IoDriver;
use rinha_sys::uring::Taskrun;

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// A unix stream socket (`unix:/path.sock`).
    Unix(PathBuf),
    /// A TCP address (`host:port`), resolved once at start.
    Tcp(SocketAddr),
    /// `dns:name:port`: every A/AAAA record of `name`, resolved again in the background
    /// (`rinha_sys::discovery`); relay mode only.
    Dns(DnsName),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            BackendAddr::Tcp(addr) => write!(f, "{addr}"),
            BackendAddr::Dns(name) => write!(f, "{name}"),
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
        if let Some(name) = DnsName::parse(text) {
            return name
                .map(BackendAddr::Dns)
                .map_err(|_| AddrError::Unparsable(text.to_owned()));
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

    /// Comma list of backends: `unix:/path.sock`, `host:port`, or `dns:name:port` (every
    /// A/AAAA record of `name`, looked up again in the background). Not needed in hand-over
    /// mode with `HANDOFF_DIR`.
    #[arg(long, env = "BACKENDS", required_unless_present = "handoff_dir", value_delimiter = ',', num_args = 1..)]
    pub backends: Vec<BackendAddr>,

    /// How often `dns:` backends are resolved again and `HANDOFF_DIR` read again
    /// (milliseconds; also at once after a failed connect).
    #[arg(long, env = "DISCOVERY_EVERY_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub discovery_every_ms: u64,

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
    /// are closed at once. Each connection holds two descriptors. Default: what half of the
    /// memory limit holds ([`Config::connection_cap`]).
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// The memory this process may use, MiB; default: the container's limit (cgroup v2
    /// `memory.max`, else cgroup v1 `memory.limit_in_bytes`), else the machine's memory.
    #[arg(long, env = "MEMORY_LIMIT_MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_limit_mb: Option<u64>,

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

    /// Relay mode: a backend with bytes sent to it and none back from it on any connection for
    /// this long is stalled (frozen, yet its kernel still accepts): new clients go to the
    /// others until a byte comes back (milliseconds; seen within a quarter more). Nothing is
    /// retried elsewhere.
    #[arg(long, env = "STALL_MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(4..))]
    pub stall_ms: u64,

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

    /// Hand-over mode: a directory shared with the backends, whose every `*.handoff.sock` is
    /// a backend's hand-over socket (replicas of one service on one host, each naming its
    /// own); read again in the background. Replaces the sockets derived from `BACKENDS`.
    #[arg(long, env = "HANDOFF_DIR")]
    pub handoff_dir: Option<PathBuf>,
}

/// The most connections the lb holds by default, whatever its memory (its fixed default
/// before the cap was derived from memory).
pub const MAX_CONNECTIONS: usize = 4096;
/// What a relayed connection takes besides its two buffers: its task, timers, the kernel's
/// two sockets and the allocator's rounding. A held connection with both 16 KiB buffers full
/// was measured at 44,339 bytes in all (docs/reliability.md, "Memory"): 32 KiB + 12 KiB
/// covers it.
pub const RELAY_OVERHEAD: u64 = 12 << 10;
/// What a connection waiting to be handed over takes: no buffer, but its task, the client's
/// socket, the hand-over connection (a unix socket pair in the kernel) and the message in
/// flight with the descriptor; measured at 15,593 bytes.
pub const HANDOFF_BYTES: u64 = 16 << 10;

impl Config {
    /// Memory one open connection may take at most in this mode: in relay mode both
    /// directions' buffers full plus [`RELAY_OVERHEAD`], in hand-over mode [`HANDOFF_BYTES`]
    /// (held only until handed over).
    pub fn connection_bytes(&self) -> u64 {
        match self.lb_mode {
            Mode::Relay => 2 * u64::from(self.buffer_size) + RELAY_OVERHEAD,
            Mode::Handoff => HANDOFF_BYTES,
        }
    }

    /// The connection cap and where it came from, for the start log: `MAX_CONNECTIONS`, else
    /// what half of the memory limit holds at [`Config::connection_bytes`] each, at most
    /// [`MAX_CONNECTIONS`]. Half, not the backend's quarter: the lb holds nothing else, and a
    /// quarter of its 50 MB would cap relay mode below the contest's 550 clients. Reads the
    /// cgroup files: call it once, at start.
    pub fn connection_cap(&self) -> (usize, String) {
        if let Some(n) = self.max_connections {
            return (n as usize, "MAX_CONNECTIONS".to_owned());
        }
        match rinha_sys::cgroup::memory_limit(self.memory_limit_mb) {
            Some((bytes, source)) => (
                connections_for(bytes / 2, self.connection_bytes(), MAX_CONNECTIONS),
                format!(
                    "half of {} MiB ({source}) at {} bytes each, at most {MAX_CONNECTIONS}",
                    bytes >> 20,
                    self.connection_bytes()
                ),
            ),
            None => (MAX_CONNECTIONS, "no memory limit found".to_owned()),
        }
    }

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

    /// How long a backend may leave relayed bytes unanswered before it counts as stalled.
    pub fn stall(&self) -> Duration {
        Duration::from_millis(self.stall_ms)
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
            Mode::Handoff if self.handoff_dir.is_some() || !self.handoff_backends.is_empty() => {
                self.handoff_backends
                    .iter()
                    .map(|addr| match addr {
                        BackendAddr::Unix(_) => Ok(addr.clone()),
                        _ => Err(AddrError::NotUnix(addr.to_string())),
                    })
                    .collect()
            }
            Mode::Handoff => self.backends.iter().map(handoff_socket_of).collect(),
        }
    }

    /// What the backend set learns in the background, if anything: the `dns:` backends
    /// (relay), `HANDOFF_DIR` (hand-over).
    pub fn sources(&self) -> Option<Sources> {
        let sources = match self.lb_mode {
            Mode::Relay => Sources::names(
                self.backends
                    .iter()
                    .filter_map(|b| match b {
                        BackendAddr::Dns(name) => Some(name.clone()),
                        _ => None,
                    })
                    .collect(),
                Lookup::system(),
                Own::Nobody,
            ),
            Mode::Handoff => match &self.handoff_dir {
                Some(dir) => Sources::dir(dir.clone()),
                None => return None,
            },
        };
        (!sources.names.is_empty() || sources.dir.is_some()).then_some(sources)
    }

    /// How often the sources are looked at again.
    pub fn discovery_every(&self) -> Duration {
        Duration::from_millis(self.discovery_every_ms)
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
    fn the_connection_cap_follows_the_memory_limit_and_the_mode() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["rinha-lb", "--backends", "unix:/s/b1.sock"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap()
        };
        // 50 MiB in relay mode: 25 MiB at 2 x 16 KiB + 12 KiB each, above the contest's
        // 550 clients.
        let relay = parse(&["--memory-limit-mb", "50"]);
        assert_eq!(relay.connection_bytes(), 44 << 10);
        assert_eq!(relay.connection_cap().0, 581);
        let small_buffers = parse(&["--memory-limit-mb", "50", "--buffer-size", "4096"]);
        assert_eq!(small_buffers.connection_cap().0, 1280);
        let handoff = parse(&["--memory-limit-mb", "50", "--lb-mode", "handoff"]);
        assert_eq!(handoff.connection_cap().0, 1600);
        let big = parse(&["--memory-limit-mb", "4096", "--lb-mode", "handoff"]);
        assert_eq!(big.connection_cap().0, MAX_CONNECTIONS);
        let tiny = parse(&["--memory-limit-mb", "1"]);
        assert_eq!(tiny.connection_cap().0, 11);
        let explicit = parse(&["--memory-limit-mb", "50", "--max-connections", "9000"]);
        assert_eq!(
            explicit.connection_cap(),
            (9000, "MAX_CONNECTIONS".to_owned())
        );
        assert!(Config::try_parse_from([
            "rinha-lb",
            "--backends",
            "unix:/a",
            "--memory-limit-mb",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn dns_backends_and_a_handoff_directory() {
        let relay =
            Config::try_parse_from(["rinha-lb", "--backends", "dns:backend:9998,unix:/a"]).unwrap();
        assert_eq!(relay.backends_display(), "dns:backend:9998,unix:/a");
        let sources = relay.sources().unwrap();
        assert_eq!(sources.names[0].to_string(), "dns:backend:9998");
        let dir =
            Config::try_parse_from(["rinha-lb", "--lb-mode", "handoff", "--handoff-dir", "/s"])
                .unwrap();
        assert_eq!(dir.targets().unwrap(), []);
        assert_eq!(dir.sources().unwrap().dir, Some(PathBuf::from("/s")));
        let dns_handoff =
            Config::try_parse_from(["rinha-lb", "--backends", "dns:b:1", "--lb-mode", "handoff"])
                .unwrap();
        assert!(matches!(dns_handoff.targets(), Err(AddrError::NotUnix(_))));
        let plain = Config::try_parse_from(["rinha-lb", "--backends", "unix:/a"]).unwrap();
        assert!(plain.sources().is_none());
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
