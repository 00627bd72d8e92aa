//! The one configuration struct of `rinha`: every setting is an env var and a `--flag`
//! (names in docs/architecture.md), parsed and validated once at start. Nothing reads the
//! environment after this.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rinha_sys::driver::IoDriver;
use rinha_sys::uring::Taskrun;

use crate::cgroup::{available_cpus, memory_limit};
use crate::journal::SyncMode;
use crate::processor::resolve::Resolver;
use crate::route::Policy;

/// Where a server listens or a peer is reached: a unix socket path or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:/path.sock`
    Unix(PathBuf),
    /// `host:port`, kept as text: resolved when bound or connected.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:/path` or `host:port`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::Endpoint(text.to_owned()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(text.to_owned()))
            }
            _ => Err(ConfigError::Endpoint(text.to_owned())),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => f.write_str(a),
        }
    }
}

/// How answers are written on io_uring (on epoll the runtime's write is already a `send(2)`
/// made at once, so both modes are the same there).
///
/// `direct` is the default: through the runtime an answer waits in the submission queue until
/// every other ready task of the core has run (the senders' processor calls, in a backlog
/// drain), then costs a completion and a wakeup of its own. Sent at once, the io_uring
/// p99.9 came down to epoll's, with no more CPU per request (docs/benchmarks.md, "Findings
/// that shaped the design", answers sent at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResponseSend {
    /// One non-blocking `send(2)` as soon as a read's answers are ready; the runtime writes
    /// only what the socket did not take.
    Direct,
    /// Through the runtime: an io_uring write, submitted with the next batch.
    Runtime,
}

/// A processor's base URL, `http://host:port` (no TLS, no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorUrl {
    /// `host:port`, resolved at start and again after connect errors ([`Config::resolver`]).
    pub authority: String,
}

impl ProcessorUrl {
    /// Parses `http://host:port` (the port defaults to 80).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let rest = text
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| ConfigError::Url(text.to_owned()))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(ConfigError::Url(text.to_owned()));
        }
        let authority = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            rest.to_owned()
        } else {
            format!("{rest}:80")
        };
        Ok(ProcessorUrl { authority })
    }
}

impl std::fmt::Display for ProcessorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// A configuration value that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `unix:/path` nor `host:port`.
    #[error("bad endpoint {0:?}: expected unix:/path.sock or host:port")]
    Endpoint(String),
    /// Not `http://host[:port]`.
    #[error("bad processor URL {0:?}: expected http://host:port")]
    Url(String),
    /// A number out of its range.
    #[error("{0} must be {1}")]
    Range(&'static str, &'static str),
}

/// Command line and environment of `rinha`.
#[derive(Debug, Parser)]
#[command(
    name = "rinha",
    version,
    about = "Rinha de Backend 2025 payment intermediary"
)]
pub struct Args {
    /// `unix:/path.sock` or `host:port`.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Default processor base URL.
    #[arg(
        long,
        env = "PROCESSOR_DEFAULT_URL",
        default_value = "http://payment-processor-default:8080"
    )]
    pub processor_default_url: String,
    /// Fallback processor base URL.
    #[arg(
        long,
        env = "PROCESSOR_FALLBACK_URL",
        default_value = "http://payment-processor-fallback:8080"
    )]
    pub processor_fallback_url: String,
    /// Comma list of other instances whose shards join the summary.
    #[arg(long, env = "PEERS", default_value = "")]
    pub peers: String,
    /// Runtimes (threads), one per core; default: CPUs the process may use.
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
    /// io driver.
    #[arg(long, env = "IO_DRIVER", value_enum, default_value = "auto")]
    pub io_driver: IoDriver,
    /// io_uring task-work mode (ignored under epoll); falls back to `default` if refused.
    /// `defer`: in `default` the kernel interrupts a busy core to finish each receive at once,
    /// and that receive spins on the socket lock the client's CPU still holds, which made
    /// io_uring cost more than epoll per request at saturation (docs/benchmarks.md, "io_uring
    /// vs epoll").
    #[arg(long, env = "URING_TASKRUN", value_enum, default_value_t = Taskrun::Defer)]
    pub uring_taskrun: Taskrun,
    /// Send to the fallback a payment that has waited this long (when it is healthy); off if unset.
    #[arg(long, env = "FALLBACK_AFTER_MS")]
    pub fallback_after_ms: Option<u64>,
    /// Journal directory (issue 7); unset = memory only.
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `none` or `batch`.
    #[arg(long, env = "JOURNAL_SYNC", default_value = "none")]
    pub journal_sync: String,
    /// If set, `POST /purge-payments` needs header `X-Purge-Token` with this value.
    #[arg(long, env = "PURGE_TOKEN")]
    pub purge_token: Option<String>,
    /// Payments each core may hold queued before intake answers 503; default: what half of
    /// the memory limit holds ([`queue_capacity_for`]).
    #[arg(long, env = "QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// The memory this process may use, MiB; default: the container's limit (cgroup v2
    /// `memory.max`), else the machine's memory.
    #[arg(long, env = "MEMORY_LIMIT_MB")]
    pub memory_limit_mb: Option<u64>,
    /// Concurrent senders to the processors per core; default: enough to fill both
    /// processors' shares of `MAX_IN_FLIGHT` at once.
    #[arg(long, env = "SENDERS")]
    pub senders: Option<usize>,
    /// Calls in flight to one processor from the whole deployment (every core of this instance
    /// and of its peers); each core takes an equal share. The processor admits 800 at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 640)]
    pub max_in_flight: usize,
    /// Processor calls one core starts (connects and writes) at once, per processor; the rest
    /// wait their turn, so a herd of senders leaving together does not hold up the intake.
    #[arg(long, env = "CALL_STARTS", default_value_t = 8)]
    pub call_starts: usize,
    /// Routing: the chance per second of waiting that a payment not stored yet is never stored
    /// (the run ends, the instance dies); what a processor's slowness costs against its fee.
    #[arg(long, env = "ROUTE_RISK_PER_S", default_value_t = 0.02)]
    pub route_risk_per_s: f64,
    /// Routing: how much longer a failing processor is expected to keep failing, as a
    /// fraction of how long it has failed so far.
    #[arg(long, env = "ROUTE_OUTAGE_FACTOR", default_value_t = 0.4)]
    pub route_outage_factor: f64,
    /// The processors' admin token, to read their `feePerTransaction`.
    #[arg(long, env = "PROCESSOR_TOKEN", default_value = "123")]
    pub processor_token: String,
    /// How long one processor call may take before its outcome is called unknown.
    #[arg(long, env = "PROCESSOR_TIMEOUT_MS", default_value_t = 6000)]
    pub processor_timeout_ms: u64,
    /// How long a shutdown may spend draining the queue.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,
    /// How long a summary waits for a peer, asking again while it refuses (a restart): under
    /// the contest client's 1.5 s timeout, with room for the rest of the request.
    #[arg(long, env = "PEER_TIMEOUT_MS", default_value_t = 1200)]
    pub peer_timeout_ms: u64,
    /// Open client connections the whole process holds at most; more are closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this long.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// A request (head and body) begun but not complete within this long gets 408 and a close.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_timeout_ms: u64,
    /// Answers the client has not taken within this long close the connection (a client that
    /// pipelines and never reads).
    #[arg(long, env = "WRITE_TIMEOUT_MS", default_value_t = 5_000)]
    pub write_timeout_ms: u64,
    /// How answers are written on io_uring.
    #[arg(long, env = "RESPONSE_SEND", value_enum, default_value_t = ResponseSend::Direct)]
    pub response_send: ResponseSend,
    /// The scheduler slice of every thread, microseconds (Linux 6.12+, 100-100000; 0 keeps the
    /// kernel's, 1.4 ms on 2 CPUs): a thread woken by a request runs at once instead of waiting
    /// out the slice of a busy client's thread (`rinha_sys::sched`; figures: docs/benchmarks.md,
    /// "p99: how much of it is the client's").
    #[arg(long, env = "SCHED_SLICE_US", default_value_t = 100)]
    pub sched_slice_us: u64,
    /// `unix:/path.sock` where `rinha-lb` in hand-over mode passes client connections
    /// (`LB_MODE=handoff`); unset: no hand-over.
    #[arg(long, env = "HANDOFF_LISTEN")]
    pub handoff_listen: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Endpoint,
    pub default_url: ProcessorUrl,
    pub fallback_url: ProcessorUrl,
    pub peers: Vec<Endpoint>,
    pub workers: usize,
    pub io_driver: IoDriver,
    pub uring_taskrun: Taskrun,
    pub fallback_after: Option<Duration>,
    pub data_dir: Option<PathBuf>,
    /// Whether a journal commit waits for the disk (`JOURNAL_SYNC`).
    pub journal_sync: SyncMode,
    pub purge_token: Option<String>,
    /// Payments each core may hold queued (`QUEUE_CAPACITY`, else from the memory limit).
    pub queue_capacity: usize,
    /// Where `queue_capacity` came from, for the start log.
    pub queue_basis: String,
    /// Senders per core.
    pub senders: usize,
    /// Calls in flight to one processor from one core at most.
    pub lane_cap: u32,
    /// Calls to one processor one core starts at once (`CALL_STARTS`).
    pub call_starts: usize,
    pub policy: Policy,
    pub processor_token: String,
    pub processor_timeout: Duration,
    pub shutdown_grace: Duration,
    pub peer_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub response_send: ResponseSend,
    /// The threads' scheduler slice (`SCHED_SLICE_US`); `None` keeps the kernel's.
    pub sched_slice: Option<Duration>,
    /// How processor names are looked up: not a setting (always the system's resolver here);
    /// tests put a slow one in its place.
    pub resolver: Resolver,
    /// The hand-over socket (`HANDOFF_LISTEN`), if any.
    pub handoff_listen: Option<PathBuf>,
}

impl Config {
    /// Validates the parsed arguments.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let peers = args
            .peers
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let workers = match args.workers {
            Some(0) => return Err(ConfigError::Range("WORKERS", "at least 1")),
            Some(n) if n > 256 => return Err(ConfigError::Range("WORKERS", "at most 256")),
            Some(n) => n,
            None => available_cpus(),
        };
        if args.senders.is_some_and(|n| n == 0 || n > 4096) {
            return Err(ConfigError::Range("SENDERS", "between 1 and 4096"));
        }
        if args.max_in_flight == 0 {
            return Err(ConfigError::Range("MAX_IN_FLIGHT", "at least 1"));
        }
        if !(1..=4096).contains(&args.call_starts) {
            return Err(ConfigError::Range("CALL_STARTS", "between 1 and 4096"));
        }
        if !(args.route_risk_per_s > 0.0 && args.route_risk_per_s.is_finite()) {
            return Err(ConfigError::Range("ROUTE_RISK_PER_S", "a positive number"));
        }
        if !(args.route_outage_factor >= 0.0 && args.route_outage_factor.is_finite()) {
            return Err(ConfigError::Range("ROUTE_OUTAGE_FACTOR", "zero or more"));
        }
        if args.queue_capacity == Some(0) {
            return Err(ConfigError::Range("QUEUE_CAPACITY", "at least 1"));
        }
        if args.memory_limit_mb == Some(0) {
            return Err(ConfigError::Range("MEMORY_LIMIT_MB", "at least 1"));
        }
        if args.processor_timeout_ms < 10 {
            return Err(ConfigError::Range("PROCESSOR_TIMEOUT_MS", "at least 10"));
        }
        if args.peer_timeout_ms == 0 {
            return Err(ConfigError::Range("PEER_TIMEOUT_MS", "at least 1"));
        }
        if args.max_connections == 0 {
            return Err(ConfigError::Range("MAX_CONNECTIONS", "at least 1"));
        }
        if args.idle_timeout_ms == 0 {
            return Err(ConfigError::Range("IDLE_TIMEOUT_MS", "at least 1"));
        }
        if args.header_timeout_ms == 0 {
            return Err(ConfigError::Range("HEADER_TIMEOUT_MS", "at least 1"));
        }
        if args.write_timeout_ms == 0 {
            return Err(ConfigError::Range("WRITE_TIMEOUT_MS", "at least 1"));
        }
        // Every core of every instance takes an equal share of the processor's admission.
        let cores = workers * (1 + peers.len());
        let lane_cap = args.max_in_flight.div_ceil(cores).clamp(1, 2048) as u32;
        let senders = args.senders.unwrap_or((2 * lane_cap as usize).min(4096));
        let handoff_listen = match args.handoff_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match Endpoint::parse(text)? {
                Endpoint::Unix(path) => Some(path),
                Endpoint::Tcp(_) => {
                    return Err(ConfigError::Range("HANDOFF_LISTEN", "unix:/path.sock"))
                }
            },
        };
        let journal_sync: SyncMode = args
            .journal_sync
            .parse()
            .map_err(|_| ConfigError::Range("JOURNAL_SYNC", "none or batch"))?;
        let (queue_capacity, queue_basis) =
            match (args.queue_capacity, memory_limit(args.memory_limit_mb)) {
                (Some(n), _) => (n, "QUEUE_CAPACITY".to_owned()),
                (None, Some((bytes, source))) => (
                    queue_capacity_for(bytes, workers),
                    format!(
                        "half of {} MiB ({source}) at {QUEUED_BYTES} bytes each",
                        bytes >> 20
                    ),
                ),
                (None, None) => (1_000_000, "no memory limit found".to_owned()),
            };
        Ok(Config {
            listen: Endpoint::parse(&args.listen)?,
            default_url: ProcessorUrl::parse(&args.processor_default_url)?,
            fallback_url: ProcessorUrl::parse(&args.processor_fallback_url)?,
            peers,
            workers,
            io_driver: args.io_driver,
            uring_taskrun: args.uring_taskrun,
            fallback_after: args.fallback_after_ms.map(Duration::from_millis),
            data_dir: args.data_dir,
            journal_sync,
            purge_token: args.purge_token.filter(|t| !t.is_empty()),
            queue_capacity,
            queue_basis,
            senders,
            lane_cap,
            call_starts: args.call_starts,
            policy: Policy {
                risk_per_s: args.route_risk_per_s,
                outage_factor: args.route_outage_factor,
            },
            processor_token: args.processor_token,
            processor_timeout: Duration::from_millis(args.processor_timeout_ms),
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
            peer_timeout: Duration::from_millis(args.peer_timeout_ms),
            max_connections: args.max_connections,
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            resolver: Resolver::system(),
            response_send: args.response_send,
            sched_slice: (args.sched_slice_us > 0)
                .then(|| Duration::from_micros(args.sched_slice_us)),
            handoff_listen,
        })
    }
}

/// Memory one queued payment takes at most, a restart's replay of it included, with a
/// margin over what one pinned to a processor was measured to take (docs/reliability.md,
/// "Memory").
pub const QUEUED_BYTES: u64 = 400;

/// Payments each of `workers` cores may hold queued in `memory` bytes: half of it for the
/// queues (the rest for the process itself, its connections and the store), at
/// [`QUEUED_BYTES`] each.
pub fn queue_capacity_for(memory: u64, workers: usize) -> usize {
    let per_core = memory / 2 / QUEUED_BYTES / workers.max(1) as u64;
    usize::try_from(per_core).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:/tmp/a.sock").unwrap(),
            Endpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            Endpoint::parse("127.0.0.1:80").unwrap(),
            Endpoint::Tcp("127.0.0.1:80".into())
        );
        assert!(Endpoint::parse("nope").is_err());
        assert!(Endpoint::parse("unix:").is_err());
        assert!(Endpoint::parse("host:99999").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            ProcessorUrl::parse("http://a:8080").unwrap().authority,
            "a:8080"
        );
        assert_eq!(ProcessorUrl::parse("http://a/").unwrap().authority, "a:80");
        assert!(ProcessorUrl::parse("https://a:1").is_err());
        assert!(ProcessorUrl::parse("http://a:1/path").is_err());
    }

    #[test]
    fn memory_limits_and_the_queue_they_hold() {
        // The compose file's backend: 150 MB, one core: ~197,000 payments queued.
        assert_eq!(queue_capacity_for(150 << 20, 1), 196_608);
        assert_eq!(queue_capacity_for(150 << 20, 2), 98_304);
        assert_eq!(queue_capacity_for(1, 4), 1);
        let config = |flags: &[&str]| {
            let args = Args::parse_from(std::iter::once("rinha").chain(flags.iter().copied()));
            Config::from_args(args).unwrap()
        };
        let c = config(&["--workers", "2", "--memory-limit-mb", "150"]);
        assert_eq!(c.queue_capacity, 98_304);
        assert!(
            c.queue_basis.contains("MEMORY_LIMIT_MB"),
            "{}",
            c.queue_basis
        );
        let c = config(&[
            "--workers",
            "2",
            "--memory-limit-mb",
            "150",
            "--queue-capacity",
            "7",
        ]);
        assert_eq!(
            (c.queue_capacity, c.queue_basis.as_str()),
            (7, "QUEUE_CAPACITY")
        );
    }

    #[test]
    fn validation() {
        let args = Args::parse_from(["rinha", "--workers", "0"]);
        assert!(Config::from_args(args).is_err());
        let args = Args::parse_from(["rinha", "--peers", "unix:/a, 127.0.0.1:1"]);
        assert_eq!(Config::from_args(args).unwrap().peers.len(), 2);
        let args = Args::parse_from(["rinha", "--route-risk-per-s", "0"]);
        assert!(Config::from_args(args).is_err());
        let args = Args::parse_from(["rinha", "--call-starts", "0"]);
        assert!(Config::from_args(args).is_err());
        let args = Args::parse_from(["rinha", "--call-starts", "3"]);
        assert_eq!(Config::from_args(args).unwrap().call_starts, 3);
    }

    #[test]
    fn each_core_of_each_instance_takes_a_share_of_the_processors_admission() {
        let config = |flags: &[&str]| {
            let args = Args::parse_from(std::iter::once("rinha").chain(flags.iter().copied()));
            Config::from_args(args).unwrap()
        };
        // Two instances of two cores: a quarter each; senders fill both processors' shares.
        let c = config(&["--workers", "2", "--peers", "unix:/other.sock"]);
        assert_eq!((c.lane_cap, c.senders), (160, 320));
        // One instance of one core takes it all; SENDERS still wins when set.
        let c = config(&["--workers", "1", "--senders", "7"]);
        assert_eq!((c.lane_cap, c.senders), (640, 7));
    }

    #[test]
    fn the_handoff_socket_is_a_unix_one_or_none() {
        let handoff = |flags: &[&str]| {
            let args = Args::parse_from(std::iter::once("rinha").chain(flags.iter().copied()));
            Config::from_args(args).map(|c| c.handoff_listen)
        };
        assert_eq!(handoff(&[]).unwrap(), None);
        assert_eq!(
            handoff(&["--handoff-listen", "unix:/s/b1.handoff.sock"]).unwrap(),
            Some(PathBuf::from("/s/b1.handoff.sock"))
        );
        assert!(handoff(&["--handoff-listen", "127.0.0.1:9"]).is_err());
    }

    #[test]
    fn sched_slice_is_100_us_unless_set_and_0_keeps_the_kernels() {
        let slice = |flags: &[&str]| {
            let args = Args::parse_from(std::iter::once("rinha").chain(flags.iter().copied()));
            Config::from_args(args).unwrap().sched_slice
        };
        assert_eq!(slice(&[]), Some(Duration::from_micros(100)));
        assert_eq!(slice(&["--sched-slice-us", "0"]), None);
        assert_eq!(
            slice(&["--sched-slice-us", "300"]),
            Some(Duration::from_micros(300))
        );
    }

    #[test]
    fn taskrun_mode_defaults_to_defer_and_is_chosen_by_name() {
        let config = |flags: &[&str]| {
            let args = Args::parse_from(std::iter::once("rinha").chain(flags.iter().copied()));
            Config::from_args(args).unwrap().uring_taskrun
        };
        assert_eq!(config(&[]), Taskrun::Defer);
        assert_eq!(config(&["--uring-taskrun", "default"]), Taskrun::Default);
        assert_eq!(config(&["--uring-taskrun", "coop"]), Taskrun::Coop);
        assert_eq!(config(&["--uring-taskrun", "defer"]), Taskrun::Defer);
        assert!(Args::try_parse_from(["rinha", "--uring-taskrun", "often"]).is_err());
    }
}
