//! A reusable HTTP/1.1 load generator: one keep-alive connection per OS thread, closed-loop
//! or open-loop, latencies in an HDR histogram at microsecond resolution.
//!
//! - Closed loop ([`Pace::Closed`]): every connection sends its next request as soon as the
//!   previous response is in; latency is send -> response. It finds the throughput ceiling.
//! - Open loop ([`Pace::Open`]): requests are due at a fixed rate, `start + i / rate`, taken
//!   in order by whichever connection is free; latency runs from the *intended* send time, so
//!   a stall that delays later sends is counted in full (no coordinated omission, as in wrk2).
//!
//! Why blocking threads and not tokio: a thread sleeps to within a few microseconds of a
//! due time (timer slack set to 1 ns), where tokio's timer wheel ticks in milliseconds and
//! would add up to 1 ms to every open-loop sample; and the generator shares no runtime with
//! anything it measures. A few hundred connections are a few hundred threads, which is fine.
//!
//! ```no_run
//! use std::time::Duration;
//! use rinha_bench::load::{self, LoadSpec, Pace, Target};
//! let spec = LoadSpec {
//!     target: "127.0.0.1:9999".parse().unwrap(),
//!     request: load::post_payment_request("localhost").into(),
//!     pace: Pace::Open { rate_per_sec: 2000.0, connections: 64 },
//!     duration: Duration::from_secs(10),
//!     requests: None,
//! };
//! let report = load::run(&spec).unwrap();
//! println!("p99 = {} us", report.quantile_us(0.99));
//! ```

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use client::{exchange, Connection, Exchange};

mod client;
pub mod payments;

/// Highest latency the histograms hold (larger samples are clamped to it): 60 s in us.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Pause before reconnecting after a failed connect, so a dead target is not a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(1);

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = LoadError;

    /// `unix:/path.sock` or `host:port`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        text.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(Target::Tcp)
            .ok_or_else(|| LoadError::BadTarget(text.to_owned()))
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// `connections` connections, each sending again as soon as it has its response.
    Closed { connections: usize },
    /// `rate_per_sec` requests due per second, spread over `connections` connections.
    Open {
        rate_per_sec: f64,
        connections: usize,
    },
}

impl Pace {
    pub fn connections(&self) -> usize {
        match *self {
            Pace::Closed { connections } | Pace::Open { connections, .. } => connections,
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: Target,
    /// The exact bytes of one request, sent as-is on every turn (keep-alive).
    pub request: Arc<[u8]>,
    pub pace: Pace,
    /// The run ends when this has passed, or when `requests` have been made.
    pub duration: Duration,
    /// At most this many requests in all, failed ones included (`None`: as many as
    /// `duration` allows). A closed loop with a budget does a fixed amount of work however
    /// fast the target is, so what the target keeps (records, queues, memory) is the same
    /// for every contender.
    pub requests: Option<u64>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("`{0}` is neither `unix:/path.sock` nor `host:port`")]
    BadTarget(String),
    #[error("a load run needs at least one connection")]
    NoConnections,
    #[error("open-loop rate must be a positive number of requests per second, got {0}")]
    BadRate(f64),
    #[error("could not start a load thread: {0}")]
    Spawn(io::Error),
    #[error("could not create a histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
}

/// What one run (or several merged) measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Latencies of successful (2xx) responses, microseconds.
    pub latency_us: Histogram<u64>,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with another status.
    pub non_2xx: u64,
    /// Requests lost to connect, I/O or protocol errors (each one also reconnects).
    pub errors: u64,
    /// Wall time of the run(s).
    pub elapsed: Duration,
}

impl Report {
    /// An empty report to merge runs into.
    pub fn empty() -> Result<Report, LoadError> {
        Ok(Report {
            latency_us: new_histogram()?,
            ok: 0,
            non_2xx: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        })
    }

    /// Adds `other` (another run, or another thread of this one).
    pub fn merge(&mut self, other: &Report) {
        // Same bounds on both sides, so adding cannot fail; a clamp is the worst case.
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    /// Latency at quantile `q` (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }

    /// Responses of any status.
    pub fn responses(&self) -> u64 {
        self.ok + self.non_2xx
    }

    /// Responses per second over the elapsed time.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.responses() as f64 / secs
        } else {
            0.0
        }
    }
}

fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

/// A `POST /payments` request as the contest sends it (fixed body, keep-alive).
pub fn post_payment_request(host: &str) -> Vec<u8> {
    let body = r#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.9}"#;
    format!(
        "POST /payments HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes the bytes of one request into an empty buffer: for loads whose every request must
/// differ (a fresh `correlationId` per payment), where `spec.request` would repeat itself.
pub type RequestWriter = dyn Fn(&mut Vec<u8>) + Send + Sync;

/// Runs one load and returns what it measured. Blocks for `spec.duration` (plus the time the
/// last responses take).
pub fn run(spec: &LoadSpec) -> Result<Report, LoadError> {
    run_inner(spec, None)
}

/// Like [`run`], but each request is written by `writer` (`spec.request` is not sent).
pub fn run_with(spec: &LoadSpec, writer: Arc<RequestWriter>) -> Result<Report, LoadError> {
    run_inner(spec, Some(writer))
}

fn run_inner(spec: &LoadSpec, writer: Option<Arc<RequestWriter>>) -> Result<Report, LoadError> {
    let connections = spec.pace.connections();
    if connections == 0 {
        return Err(LoadError::NoConnections);
    }
    let interval = match spec.pace {
        Pace::Open { rate_per_sec, .. } if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) => {
            return Err(LoadError::BadRate(rate_per_sec))
        }
        Pace::Open { rate_per_sec, .. } => Some(Duration::from_secs_f64(1.0 / rate_per_sec)),
        Pace::Closed { .. } => None,
    };
    let start = Instant::now() + Duration::from_millis(5);
    let schedule = Arc::new(Schedule {
        start,
        end: start + spec.duration,
        interval,
        budget: spec.requests.unwrap_or(u64::MAX),
        next: AtomicU64::new(0),
    });
    let mut threads = Vec::with_capacity(connections);
    for n in 0..connections {
        let (schedule, spec, writer) = (schedule.clone(), spec.clone(), writer.clone());
        let thread = std::thread::Builder::new()
            .name(format!("load-{n}"))
            .stack_size(256 * 1024)
            .spawn(move || drive_connection(&spec, writer.as_deref(), &schedule))
            .map_err(LoadError::Spawn)?;
        threads.push(thread);
    }
    let mut report = Report::empty()?;
    for thread in threads {
        // A panicking load thread is a bug in this module; its samples are lost, not invented.
        if let Ok(Ok(part)) = thread.join() {
            report.merge(&part);
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// When requests are due, shared by the connection threads of one run.
struct Schedule {
    start: Instant,
    end: Instant,
    /// `Some` in open loop: request `i` is due at `start + i * interval`.
    interval: Option<Duration>,
    /// Requests allowed in all.
    budget: u64,
    /// Requests claimed so far (the index of the next one).
    next: AtomicU64,
}

impl Schedule {
    /// Claims the next request and returns when it is due (sleeping until then in open
    /// loop), or `None` once the run is over: its time is up or its budget spent.
    fn claim(&self) -> Option<Instant> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let due = match self.interval {
            Some(interval) => self.start + interval.mul_f64(index as f64),
            None => Instant::now(),
        };
        if index >= self.budget || due >= self.end {
            return None;
        }
        if self.interval.is_some() {
            sleep_until(due);
        }
        Some(due)
    }
}

fn drive_connection(
    spec: &LoadSpec,
    writer: Option<&RequestWriter>,
    schedule: &Schedule,
) -> Result<Report, LoadError> {
    precise_sleeps();
    let mut report = Report::empty()?;
    let mut connection: Option<Connection> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut fresh = Vec::with_capacity(256);
    sleep_until(schedule.start);
    while let Some(due) = schedule.claim() {
        let stream = match connection.as_mut() {
            Some(stream) => stream,
            None => match Connection::open(&spec.target) {
                Ok(stream) => connection.insert(stream),
                Err(_) => {
                    report.errors += 1;
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            },
        };
        let request: &[u8] = match writer {
            Some(write) => {
                fresh.clear();
                write(&mut fresh);
                &fresh
            }
            None => &spec.request,
        };
        match exchange(stream, request, &mut buf) {
            Ok(Exchange { status, keep_alive }) => {
                let micros = due.elapsed().as_micros() as u64;
                if (200..300).contains(&status) {
                    report.ok += 1;
                    report.latency_us.saturating_record(micros.max(1));
                } else {
                    report.non_2xx += 1;
                }
                if !keep_alive {
                    connection = None;
                }
            }
            Err(_) => {
                report.errors += 1;
                connection = None;
            }
        }
    }
    Ok(report)
}

/// Sleeps until `when` (at once if it has passed).
fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

/// Lowers this thread's timer slack from the default 50 us, so open-loop sends leave on time.
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A fixed-response server on a random port; answers every request with `response`.
    fn fixed_server(response: &'static [u8], delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        std::thread::sleep(delay);
                        if stream.write_all(response).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";

    /// A run of the contest's POST against `addr`, with no request budget.
    fn spec(addr: SocketAddr, pace: Pace, duration: Duration) -> LoadSpec {
        LoadSpec {
            target: Target::Tcp(addr),
            request: post_payment_request("t").into(),
            pace,
            duration,
            requests: None,
        }
    }

    #[test]
    fn closed_loop_counts_and_times_responses() {
        let addr = fixed_server(ACCEPTED, Duration::ZERO);
        let closed = Pace::Closed { connections: 2 };
        let report = run(&spec(addr, closed, Duration::from_millis(200))).unwrap();
        assert!(report.ok > 10, "{report:?}");
        assert_eq!(report.errors + report.non_2xx, 0);
        assert_eq!(report.latency_us.len(), report.ok);
    }

    #[test]
    fn a_budget_ends_the_run_after_that_many_requests() {
        let addr = fixed_server(ACCEPTED, Duration::ZERO);
        let closed = LoadSpec {
            requests: Some(500),
            ..spec(
                addr,
                Pace::Closed { connections: 3 },
                Duration::from_secs(60),
            )
        };
        let report = run(&closed).unwrap();
        assert_eq!((report.ok, report.non_2xx, report.errors), (500, 0, 0));
        assert!(report.elapsed < Duration::from_secs(30), "{report:?}");

        // Open loop: 1000/s for 60 s would be 60,000; the budget stops it at 50.
        let open = LoadSpec {
            pace: Pace::Open {
                rate_per_sec: 1000.0,
                connections: 2,
            },
            ..closed
        };
        let report = run(&LoadSpec {
            requests: Some(50),
            ..open
        })
        .unwrap();
        assert_eq!(report.ok, 50, "{report:?}");
        assert!(report.elapsed < Duration::from_secs(30), "{report:?}");
    }

    #[test]
    fn open_loop_keeps_the_rate_and_counts_queueing() {
        // 2 ms per response on one connection caps it near 500/s; at 1000/s due, requests
        // queue, and latency from the intended time must grow well past the 2 ms service time.
        let addr = fixed_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Duration::from_millis(2),
        );
        let open = Pace::Open {
            rate_per_sec: 1000.0,
            connections: 1,
        };
        let report = run(&spec(addr, open, Duration::from_millis(300))).unwrap();
        assert_eq!(report.ok, 300, "every due request is sent: {report:?}");
        assert!(
            report.quantile_us(0.99) > 50_000,
            "p99 {}",
            report.quantile_us(0.99)
        );
        assert!(report.quantile_us(0.0) >= 2_000);
    }

    #[test]
    fn non_2xx_and_dead_targets_are_counted() {
        let addr = fixed_server(
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
            Duration::ZERO,
        );
        let open = Pace::Open {
            rate_per_sec: 200.0,
            connections: 1,
        };
        let busy = spec(addr, open, Duration::from_millis(100));
        let report = run(&busy).unwrap();
        assert_eq!((report.ok, report.non_2xx), (0, 20));
        let dead = LoadSpec {
            target: "unix:/nonexistent/rinha.sock".parse().unwrap(),
            ..busy
        };
        let report = run(&dead).unwrap();
        assert_eq!(report.ok, 0);
        assert!(report.errors >= 10);
    }
}
