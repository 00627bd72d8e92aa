//! Tiny backends (tokio + hyper) for the load test's own tests: one correct, three with a flaw
//! the test must catch. Each forwards payments to real emulated processors.
//!
//! The correct one answers `POST /payments` with 202 at once, sends the payment to the default
//! processor right away (a fresh `requestedAt` on every attempt, until a 200 or 422) and
//! records it when the processor answered. After a failure it opens a circuit: one payment at
//! a time probes the processor until it answers again, as a real entry keeps few requests
//! in flight towards a failing processor. That keeps it clear of the one race the official
//! checker has with any backend: an attempt sent into a 2 s delay that succeeds exactly as a
//! check runs is counted by the processor a moment before the backend hears of it.

#![allow(dead_code)] // each test crate uses a different part of this module

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rinha_bench::contest::client::{Connection, Endpoint};
use rinha_bench::contest::{run_test, Args, Report};
use rinha_emulator::Config;

/// Starts two emulated processors charging `fees` (percent, default then fallback) and a tiny
/// backend in `mode` before them, runs the test with `flags` besides the three targets and
/// `--quiet` (bounded at 40 s), prints its score sheet and returns its report.
pub async fn run_tiny(mode: Mode, fees: (u32, u32), flags: &[&str]) -> Report {
    let default = rinha_emulator::spawn(Config::for_tests(fees.0)).expect("default processor");
    let fallback = rinha_emulator::spawn(Config::for_tests(fees.1)).expect("fallback processor");
    let backend = TinyBackend::start(mode, &default.url(), &fallback.url()).await;
    let targets = [
        "--target".to_owned(),
        backend.url(),
        "--default".to_owned(),
        default.url(),
        "--fallback".to_owned(),
        fallback.url(),
        "--quiet".to_owned(),
    ];
    let all = flags.iter().map(|flag| flag.to_string()).chain(targets);
    let args = Args::from_flags(all).expect("flags");
    let report = tokio::time::timeout(Duration::from_secs(40), run_test(&args))
        .await
        .expect("the run is bounded")
        .expect("the run completes");
    eprintln!("{mode:?}:{}", report.table());
    report
}

/// How a tiny backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Default processor only, retries until stored, records after the 200.
    Correct,
    /// Tries the default once, then the fallback once, each with a 500 ms client timeout (as the
    /// project's seed did); when both fail, forgets the payment.
    ForgetsWhenBothFail,
    /// Records the payment as soon as it arrives, before any processor answered.
    RecordsBeforeAnswer,
    /// Sends every payment to both processors and records it on both sides.
    CountsOnBoth,
    /// Processes like [`Mode::Correct`] but answers summaries after 1.6 s, past the client
    /// timeout: the official script then counts that summary as all zeros.
    SlowSummaries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Default,
    Fallback,
}

#[derive(Debug)]
struct Record {
    at_micros: i64,
    cents: i64,
    side: Side,
}

/// The client timeout of [`Mode::ForgetsWhenBothFail`].
const FORGETFUL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a retry waits after a failed delivery.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

struct State {
    mode: Mode,
    default: Endpoint,
    fallback: Endpoint,
    records: Mutex<Vec<Record>>,
    /// The circuit of [`Mode::Correct`]: open after a failure, closed after a success.
    open: AtomicBool,
    /// Held by the one payment that probes while the circuit is open.
    probe: tokio::sync::Mutex<()>,
}

/// A running tiny backend; dropping it stops accepting (tasks in flight end with the runtime).
pub struct TinyBackend {
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TinyBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TinyBackend {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(mode: Mode, default_url: &str, fallback_url: &str) -> TinyBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            mode,
            default: Endpoint::parse(default_url).expect("default url"),
            fallback: Endpoint::parse(fallback_url).expect("fallback url"),
            records: Mutex::new(Vec::new()),
            open: AtomicBool::new(false),
            probe: tokio::sync::Mutex::new(()),
        });
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TinyBackend { addr, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(match (method, path.as_str()) {
        (Method::POST, "/payments") => accept_payment(&state, &body),
        (Method::GET, "/payments-summary") => {
            if state.mode == Mode::SlowSummaries {
                tokio::time::sleep(Duration::from_millis(1600)).await;
            }
            summary(&state, &query)
        }
        (Method::POST, "/purge-payments") => {
            state.records.lock().unwrap().clear();
            reply(StatusCode::OK, "")
        }
        _ => reply(StatusCode::NOT_FOUND, ""),
    })
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn iso(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn accept_payment(state: &Arc<State>, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return reply(StatusCode::BAD_REQUEST, "");
    };
    let (Some(id), Some(amount)) = (value["correlationId"].as_str(), value["amount"].as_f64())
    else {
        return reply(StatusCode::BAD_REQUEST, "");
    };
    let cents = (amount * 100.0).round() as i64;
    let correlation = id.to_string();
    // Milliseconds, as the processor stores them: the backend must count the same instant.
    let at = now_ms();
    if state.mode == Mode::RecordsBeforeAnswer {
        record(state, at, cents, Side::Default);
    }
    let state = state.clone();
    tokio::spawn(async move { deliver(state, correlation, cents, at).await });
    reply(StatusCode::ACCEPTED, "")
}

fn record(state: &State, at_micros: i64, cents: i64, side: Side) {
    state.records.lock().unwrap().push(Record {
        at_micros,
        cents,
        side,
    });
}

/// One attempt: true when the processor holds the payment (200, or 422 = already stored).
async fn attempt(endpoint: &Endpoint, id: &str, cents: i64, at: i64) -> bool {
    let body = format!(
        r#"{{"correlationId":"{id}","amount":{}.{:02},"requestedAt":"{}"}}"#,
        cents / 100,
        cents % 100,
        iso(at)
    );
    let Ok(mut conn) = Connection::open(endpoint).await else {
        return false;
    };
    match conn
        .exchange(Method::POST, "/payments", &[], Some(Bytes::from(body)))
        .await
    {
        Ok(answer) => {
            answer.status.is_success() || answer.status == StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(_) => false,
    }
}

fn now_ms() -> i64 {
    now_micros() / 1000 * 1000
}

/// Delivers until stored, each retry with a fresh `requestedAt`; returns the stored one.
async fn deliver_until_stored(endpoint: &Endpoint, id: &str, cents: i64, first_at: i64) -> i64 {
    let mut at = first_at;
    loop {
        if attempt(endpoint, id, cents, at).await {
            return at;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        at = now_ms();
    }
}

/// [`Mode::Correct`]: like [`deliver_until_stored`] on the default, behind the circuit.
async fn deliver_correct(state: &State, id: &str, cents: i64) -> i64 {
    loop {
        let probe = if state.open.load(Ordering::Acquire) {
            let guard = state.probe.lock().await;
            if !state.open.load(Ordering::Acquire) {
                continue; // closed while we waited: go at full concurrency
            }
            Some(guard)
        } else {
            None
        };
        let at = now_ms();
        if attempt(&state.default, id, cents, at).await {
            state.open.store(false, Ordering::Release);
            return at;
        }
        state.open.store(true, Ordering::Release);
        // Keep holding the probe (if any) through the pause: probes are spaced.
        tokio::time::sleep(RETRY_PAUSE).await;
        drop(probe);
    }
}

async fn deliver(state: Arc<State>, id: String, cents: i64, at: i64) {
    match state.mode {
        Mode::Correct | Mode::SlowSummaries => {
            let stored_at = deliver_correct(&state, &id, cents).await;
            record(&state, stored_at, cents, Side::Default);
        }
        Mode::RecordsBeforeAnswer => {
            // Already recorded at `at`; the processor gets the same instant, eventually.
            while !attempt(&state.default, &id, cents, at).await {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Mode::ForgetsWhenBothFail => {
            let once = |endpoint, at| {
                tokio::time::timeout(FORGETFUL_TIMEOUT, attempt(endpoint, &id, cents, at))
            };
            if once(&state.default, at).await.unwrap_or(false) {
                record(&state, at, cents, Side::Default);
            } else {
                let at = now_ms();
                if once(&state.fallback, at).await.unwrap_or(false) {
                    record(&state, at, cents, Side::Fallback);
                }
                // Both failed: the payment is gone.
            }
        }
        Mode::CountsOnBoth => {
            let (d, f) = tokio::join!(
                deliver_until_stored(&state.default, &id, cents, at),
                deliver_until_stored(&state.fallback, &id, cents, at),
            );
            record(&state, d, cents, Side::Default);
            record(&state, f, cents, Side::Fallback);
        }
    }
}

fn parse_bound(query: &str, name: &str) -> Option<i64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.timestamp_micros())
}

fn summary(state: &State, query: &str) -> Response<Full<Bytes>> {
    let from = parse_bound(query, "from").unwrap_or(i64::MIN);
    let to = parse_bound(query, "to").unwrap_or(i64::MAX);
    let (mut dn, mut dc, mut fnn, mut fc) = (0u64, 0i64, 0u64, 0i64);
    for r in state.records.lock().unwrap().iter() {
        if r.at_micros >= from && r.at_micros <= to {
            match r.side {
                Side::Default => {
                    dn += 1;
                    dc += r.cents;
                }
                Side::Fallback => {
                    fnn += 1;
                    fc += r.cents;
                }
            }
        }
    }
    let money = |c: i64| format!("{}.{:02}", c / 100, c % 100);
    let body = format!(
        r#"{{"default":{{"totalRequests":{dn},"totalAmount":{}}},"fallback":{{"totalRequests":{fnn},"totalAmount":{}}}}}"#,
        money(dc),
        money(fc)
    );
    reply(StatusCode::OK, body)
}
