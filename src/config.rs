//! The one configuration struct of `rinha`: every setting is an env var and a `--flag`
//! (names in docs/architecture.md), parsed and validated once at start. Nothing reads the
//! environment after this.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rinha_sys::discovery::{DnsName, Lookup};
use rinha_sys::driver::IoDriver;
use rinha_sys::uring::Taskrun;

use crate::cgroup::{available_cpus, memory_limit};
use crate::fees::Fees;
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
    /// `{hostname}` used, but the host's name cannot be read.
    #[error("{{hostname}} in {0}: cannot read the host name: {1}")]
    Hostname(&'static str, String),
}

/// `text` with every `{hostname}` replaced by this host's name (its UTS namespace's: each
/// container of a scaled service has its own), so replicas sharing a socket directory name
/// their sockets apart (`HANDOFF_LISTEN=unix:/sockets/{hostname}.handoff.sock`).
pub fn with_hostname(text: &str, var: &'static str) -> Result<String, ConfigError> {
    if !text.contains("{hostname}") {
        return Ok(text.to_owned());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| ConfigError::Hostname(var, e.to_string()))?;
    Ok(text.replace("{hostname}", name.trim()))
}

/// Command line and environment of `rinha`.
#[derive(Debug, Parser)]
#[command(
    name = "rinha",
    version,
    about = "Rinha de Backend 2025 payment intermediary"
)]
pub struct Args {
    /// `unix:/path.sock` or `host:port`; `{hostname}` stands for the host's name.
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
    /// Comma list of other instances whose shards join the summary: `unix:/p.sock`,
    /// `host:port`, or `dns:name:port` for every A/AAAA record of `name` (this instance
    /// skips itself).
    #[arg(long, env = "PEERS", default_value = "")]
    pub peers: String,
    /// How often `dns:` peers are resolved again (also at once after a failed peer call).
    #[arg(long, env = "DISCOVERY_EVERY_MS", default_value_t = 2000)]
    pub discovery_every_ms: u64,
    /// A `dns:` peer once seen is still asked by every summary (which fails while it does
    /// not answer) until its name has left the records for this long.
    #[arg(long, env = "PEER_FORGET_MS", default_value_t = 300_000)]
    pub peer_forget_ms: u64,
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
    /// The processors' fees, default then fallback (`0.05,0.15`): when set, they are not read.
    #[arg(long, env = "PROCESSOR_FEES")]
    pub processor_fees: Option<Fees>,
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
    /// Default: what a quarter of the memory limit holds ([`max_connections_for`]).
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
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
    /// How much nicer than the cores the summary aggregator's thread (`rinha-router`) runs
    /// (added to the process's nice value, within the kernel's -20..=19; below 0 needs
    /// CAP_SYS_NICE): under a storm of summaries it takes the CPUs after the cores, so the
    /// POSTs' latency does not pay for the summaries' (figures: docs/benchmarks.md, "A storm
    /// of summaries"); 0 runs it as the cores run.
    #[arg(long, env = "ROUTER_NICE", default_value_t = 10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub router_nice: i32,
    /// Public summaries this instance lets through a second, after a burst of a tenth of
    /// that; the rest wait for their turn, at most 500 ms (figures: docs/benchmarks.md, "A
    /// storm of summaries"). 0: unbounded.
    #[arg(long, env = "SUMMARY_RATE", default_value_t = 1000)]
    pub summary_rate: u32,
    /// `unix:/path.sock` where `rinha-lb` in hand-over mode passes client connections
    /// (`LB_MODE=handoff`); unset: no hand-over. `{hostname}` stands for the host's name.
    #[arg(long, env = "HANDOFF_LISTEN")]
    pub handoff_listen: Option<String>,
    /// `host:port` or `unix:/path.sock` answering `GET /metrics` (Prometheus text), apart
    /// from the public `LISTEN`; unset: no metrics.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// `unix:/path.sock` or `host:port` where the peers ask for this instance's part of a
    /// summary or purge (`/internal/*`, answered nowhere else); required with `PEERS`.
    #[arg(long, env = "PEER_LISTEN")]
    pub peer_listen: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Endpoint,
    pub default_url: ProcessorUrl,
    pub fallback_url: ProcessorUrl,
    pub peers: Vec<Endpoint>,
    /// The `dns:` entries of `PEERS`, found by [`rinha_sys::discovery`].
    pub peer_names: Vec<DnsName>,
    pub discovery_every: Duration,
    pub peer_forget: Duration,
    /// How `dns:` peers are looked up: not a setting (the system's); tests put their own.
    pub peer_lookup: Lookup,
    /// `MAX_IN_FLIGHT`, shared by every core of the instances present ([`lane_cap_for`]).
    pub max_in_flight: usize,
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
    /// `PROCESSOR_FEES`: fees set by the operator (never read from the processors).
    pub processor_fees: Option<Fees>,
    pub processor_timeout: Duration,
    pub shutdown_grace: Duration,
    pub peer_timeout: Duration,
    /// Open client connections at most (`MAX_CONNECTIONS`, else from the memory limit).
    pub max_connections: usize,
    /// Where `max_connections` came from, for the start log.
    pub connections_basis: String,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub response_send: ResponseSend,
    /// The threads' scheduler slice (`SCHED_SLICE_US`); `None` keeps the kernel's.
    pub sched_slice: Option<Duration>,
    /// How much nicer than the cores the summary aggregator runs (`ROUTER_NICE`).
    pub router_nice: i32,
    /// Public summaries answered a second at most (`SUMMARY_RATE`); 0: unbounded.
    pub summary_rate: u32,
    /// How processor names are looked up: not a setting (always the system's resolver here);
    /// tests put a slow one in its place.
    pub resolver: Resolver,
    /// The hand-over socket (`HANDOFF_LISTEN`), if any.
    pub handoff_listen: Option<PathBuf>,
    /// Where scrapes are answered (`METRICS_LISTEN`), if anywhere.
    pub metrics_listen: Option<Endpoint>,
    /// The peer socket (`PEER_LISTEN`), if any.
    pub peer_listen: Option<Endpoint>,
}

impl Config {
    /// Validates the parsed arguments.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let (mut peers, mut peer_names) = (Vec::new(), Vec::new());
        for entry in args.peers.split(',').filter(|p| !p.trim().is_empty()) {
            match DnsName::parse(entry) {
                Some(name) => peer_names
                    .push(name.map_err(|_| ConfigError::Endpoint(entry.trim().to_owned()))?),
                None => peers.push(Endpoint::parse(entry)?),
            }
        }
        if args.discovery_every_ms == 0 {
            return Err(ConfigError::Range("DISCOVERY_EVERY_MS", "at least 1"));
        }
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
        if args.max_connections == Some(0) {
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
        // Until discovery answers, the instances present are this one and the listed ones.
        let lane_cap = lane_cap_for(args.max_in_flight, workers, 1 + peers.len());
        let senders = args.senders.unwrap_or((2 * lane_cap as usize).min(4096));
        let handoff_listen = match args.handoff_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match Endpoint::parse(&with_hostname(text, "HANDOFF_LISTEN")?)? {
                Endpoint::Unix(path) => Some(path),
                Endpoint::Tcp(_) => {
                    return Err(ConfigError::Range("HANDOFF_LISTEN", "unix:/path.sock"))
                }
            },
        };
        let peer_listen = match args.peer_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(Endpoint::parse(text)?),
        };
        // Peers ask each other: an instance that asks but cannot be asked fails their summaries.
        if !peers.is_empty() && peer_listen.is_none() {
            return Err(ConfigError::Range("PEER_LISTEN", "set when PEERS is"));
        }
        let journal_sync: SyncMode = args
            .journal_sync
            .parse()
            .map_err(|_| ConfigError::Range("JOURNAL_SYNC", "none or batch"))?;
        let memory = memory_limit(args.memory_limit_mb);
        let (queue_capacity, queue_basis) = match (args.queue_capacity, memory) {
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
        let (max_connections, connections_basis) = match (args.max_connections, memory) {
            (Some(n), _) => (n, "MAX_CONNECTIONS".to_owned()),
            (None, Some((bytes, source))) => (
                max_connections_for(bytes),
                format!(
                    "a quarter of {} MiB ({source}) at {CONNECTION_BYTES} bytes each, at most {MAX_CONNECTIONS}",
                    bytes >> 20
                ),
            ),
            (None, None) => (MAX_CONNECTIONS, "no memory limit found".to_owned()),
        };
        Ok(Config {
            listen: Endpoint::parse(&with_hostname(&args.listen, "LISTEN")?)?,
            default_url: ProcessorUrl::parse(&args.processor_default_url)?,
            fallback_url: ProcessorUrl::parse(&args.processor_fallback_url)?,
            peers,
            peer_names,
            discovery_every: Duration::from_millis(args.discovery_every_ms),
            peer_forget: Duration::from_millis(args.peer_forget_ms),
            peer_lookup: Lookup::system(),
            max_in_flight: args.max_in_flight,
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
            processor_fees: args.processor_fees,
            processor_timeout: Duration::from_millis(args.processor_timeout_ms),
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
            peer_timeout: Duration::from_millis(args.peer_timeout_ms),
            max_connections,
            connections_basis,
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            resolver: Resolver::system(),
            response_send: args.response_send,
            sched_slice: (args.sched_slice_us > 0)
                .then(|| Duration::from_micros(args.sched_slice_us)),
            router_nice: args.router_nice,
            summary_rate: args.summary_rate,
            handoff_listen,
            metrics_listen: match args.metrics_listen.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => Some(Endpoint::parse(text)?),
            },
            peer_listen,
        })
    }
}

/// One core's share of `MAX_IN_FLIGHT` when `instances` run `workers` cores each: every
/// core of every instance present takes an equal share, rounded down so that together they
/// never pass it (at least 1 each).
pub fn lane_cap_for(max_in_flight: usize, workers: usize, instances: usize) -> u32 {
    (max_in_flight / (workers * instances).max(1)).clamp(1, 2048) as u32
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

/// Memory one client connection takes at most: its read buffer full (a whole largest
/// request, 13 KiB), its answer buffer (4 KiB), its task and timer, and the allocator's
/// rounding, with a margin over what one holding a half-sent request was measured to take
/// (docs/reliability.md, "Memory").
pub const CONNECTION_BYTES: u64 = 24 << 10;
/// The most connections a process holds by default, whatever its memory.
pub const MAX_CONNECTIONS: usize = 8192;

/// Client connections a process may hold in `memory` bytes: a quarter of it (the queues
/// take half, the process and the store the rest), at [`CONNECTION_BYTES`] each, at most
/// [`MAX_CONNECTIONS`].
pub fn max_connections_for(memory: u64) -> usize {
    rinha_sys::cap::connections_for(memory / 4, CONNECTION_BYTES, MAX_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rinha` with these flags.
    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("rinha").chain(flags.iter().copied()))
    }

    /// The valid configuration of `rinha` with these flags.
    fn config(flags: &[&str]) -> Config {
        Config::from_args(parse(flags).unwrap()).unwrap()
    }

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

    /// The connection cap comes from the memory limit as the queue does (issue 24, item 8):
    /// 8192 connections of up to ~18 KiB each would take 150 MB alone.
    #[test]
    fn memory_limits_and_the_connections_they_hold() {
        // The compose file's backend: 150 MB, 1600 connections, 37.5 MiB at most.
        assert_eq!(max_connections_for(150 << 20), 1600);
        assert_eq!(max_connections_for(64 << 20), 682);
        assert_eq!(max_connections_for(1), 1);
        assert_eq!(max_connections_for(1 << 40), MAX_CONNECTIONS);
        let c = config(&["--memory-limit-mb", "150"]);
        assert_eq!(c.max_connections, 1600);
        assert!(c.connections_basis.contains("MEMORY_LIMIT_MB"));
        let c = config(&["--memory-limit-mb", "150", "--max-connections", "9000"]);
        assert_eq!(
            (c.max_connections, c.connections_basis.as_str()),
            (9000, "MAX_CONNECTIONS")
        );
        let args = Args::parse_from(["rinha", "--max-connections", "0"]);
        assert!(Config::from_args(args).is_err());
    }

    #[test]
    fn validation() {
        let args = Args::parse_from(["rinha", "--workers", "0"]);
        assert!(Config::from_args(args).is_err());
        let args = Args::parse_from([
            "rinha",
            "--peers",
            "unix:/a, 127.0.0.1:1",
            "--peer-listen",
            "unix:/p",
        ]);
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
        // Two instances of two cores: a quarter each; senders fill both processors' shares.
        let c = config(&[
            "--workers",
            "2",
            "--peers",
            "unix:/other.sock",
            "--peer-listen",
            "unix:/p",
        ]);
        assert_eq!((c.lane_cap, c.senders), (160, 320));
        // One instance of one core takes it all; SENDERS still wins when set.
        let c = config(&["--workers", "1", "--senders", "7"]);
        assert_eq!((c.lane_cap, c.senders), (640, 7));
    }

    #[test]
    fn replicas_present_never_pass_max_in_flight_together() {
        for instances in 1..=8 {
            for workers in 1..=4 {
                let share = lane_cap_for(640, workers, instances) as usize;
                assert!(
                    share * workers * instances <= 640,
                    "{instances} x {workers}"
                );
                assert!(share * workers * instances > 640 - workers * instances);
            }
        }
        let args = Args::parse_from([
            "rinha",
            "--peers",
            "dns:backend:9998, unix:/b.sock",
            "--peer-listen",
            "unix:/p",
        ]);
        let c = Config::from_args(args).unwrap();
        assert_eq!(
            (c.peers.len(), c.peer_names[0].to_string()),
            (1, "dns:backend:9998".into())
        );
        assert!(Config::from_args(Args::parse_from(["rinha", "--peers", "dns:backend"])).is_err());
    }

    #[test]
    fn the_hostname_names_sockets_apart() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let args = Args::parse_from([
            "rinha",
            "--listen",
            "unix:/s/{hostname}.sock",
            "--handoff-listen",
            "unix:/s/{hostname}.handoff.sock",
        ]);
        let c = Config::from_args(args).unwrap();
        assert_eq!(
            c.listen.to_string(),
            format!("unix:/s/{}.sock", host.trim())
        );
        let handoff = c.handoff_listen.unwrap();
        assert_eq!(
            handoff,
            PathBuf::from(format!("/s/{}.handoff.sock", host.trim()))
        );
    }

    #[test]
    fn the_handoff_socket_is_a_unix_one_or_none() {
        let handoff = |flags: &[&str]| {
            let args = parse(flags).unwrap();
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
    fn the_router_is_nice_10_unless_set_within_the_kernels_range() {
        let nice = |flags: &[&str]| {
            let args = parse(flags)?;
            Ok::<_, clap::Error>(Config::from_args(args).unwrap().router_nice)
        };
        assert_eq!(nice(&[]).unwrap(), 10);
        assert_eq!(nice(&["--router-nice", "0"]).unwrap(), 0);
        assert_eq!(nice(&["--router-nice", "-5"]).unwrap(), -5);
        assert!(nice(&["--router-nice", "20"]).is_err());
        assert!(nice(&["--router-nice", "-21"]).is_err());
    }

    #[test]
    fn summaries_are_paced_at_1000_a_second_unless_set_and_0_is_unbounded() {
        let rate = |flags: &[&str]| {
            let args = parse(flags)?;
            Ok::<_, clap::Error>(Config::from_args(args).unwrap().summary_rate)
        };
        assert_eq!(rate(&[]).unwrap(), 1000);
        assert_eq!(rate(&["--summary-rate", "0"]).unwrap(), 0);
        assert_eq!(rate(&["--summary-rate", "250"]).unwrap(), 250);
        assert!(rate(&["--summary-rate", "-1"]).is_err());
    }

    #[test]
    fn sched_slice_is_100_us_unless_set_and_0_keeps_the_kernels() {
        let slice = |flags: &[&str]| {
            let args = parse(flags).unwrap();
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
            let args = parse(flags).unwrap();
            Config::from_args(args).unwrap().uring_taskrun
        };
        assert_eq!(config(&[]), Taskrun::Defer);
        assert_eq!(config(&["--uring-taskrun", "default"]), Taskrun::Default);
        assert_eq!(config(&["--uring-taskrun", "coop"]), Taskrun::Coop);
        assert_eq!(config(&["--uring-taskrun", "defer"]), Taskrun::Defer);
        assert!(Args::try_parse_from(["rinha", "--uring-taskrun", "often"]).is_err());
    }
}
