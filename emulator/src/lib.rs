//! A faithful emulator of the contest's payment processor (RINHA-2025.md section 3), on
//! tokio + hyper, one current-thread runtime: what the backend's tests, the instrument's local
//! stack and `rinha-bench processor` run.
//!
//! Layout:
//! - this file: [`Config`], [`spawn`] / [`Running`] (a processor on its own thread, for tests),
//!   [`bind`] and [`serve`] (on the caller's runtime, for `rinha-bench processor`);
//! - `server`: the accept loop; `routes`: dispatch and the payment endpoints; `admin`: the
//!   token-protected endpoints; `reply`: the responses both build; `state`: what connections
//!   share;
//! - `store`: payments in memory; `limiter`: 800 running / 500 queued; `health`: the
//!   fixed-window health limit; `chaos`: injected faults;
//! - `money`, `timestamp`, `body`: exact amounts, ISO-8601 times, case-insensitive JSON.
//!
//! Behaviour worth knowing (the tests in `bench/tests/processor*.rs` pin each one):
//! - `POST /payments`: the limiter admits it (800 running, 500 waiting, else 429; waiting
//!   ends if the caller hangs up), the body is read, then in a task of its own the delay
//!   (read on arrival), the failure flag (500, nothing stored), the insert (422 for a stored
//!   `correlationId`). A caller that hangs up during the delay does not cancel the insert.
//! - `GET /payments/service-health`: one answer per window; two callers may wait, each later
//!   window answering the oldest one; the rest get 429 with `Retry-After: <window seconds>`.
//! - Switches a test flips while it runs (`Running::set_answer`, `set_continue_first`,
//!   `set_close_idle`; `PUT /admin/configurations/answer {"answer":404}`, 0 to clear): another
//!   status for every payment, `100 Continue` before the real answer, idle connections closed.
//! - Chaos: dropping every Nth connection (`--chaos-drop-every N`) happens only *after* the
//!   insert (a lost response always means a stored payment); resetting every Nth
//!   (`--chaos-reset-every N`) before anything is read or stored.
//!
//! Deviations from the official processor, on purpose: a body that does not parse, or lacks
//! `correlationId`, `amount` or `requestedAt`, gets 400 (the official answers 400 for an
//! unparsable body; what it does with a missing property is not documented); negative
//! amounts are refused with 400;
//! `GET /payments/{id}` with an id that is not a UUID is 404. Amounts may be JSON numbers in
//! any form (`1.99e1`) or strings holding one, as ASP.NET's web defaults allow.
//!
//! CPU (release, this 2-core machine): ~10 ms per 1,000 payments flat out, ~36 ms per 1,000
//! at 550 payments/s; `cargo test --release -p rinha-bench --test processor_cpu -- --ignored
//! --nocapture` measures it.

mod admin;
mod body;
mod chaos;
mod health;
mod limiter;
pub mod money;
mod reply;
mod routes;
mod server;
mod state;
mod store;
pub mod timestamp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use admin::TOKEN_HEADER;
pub use chaos::Chaos;
pub use limiter::Limits;
pub use money::Fee;
pub use store::{Payment, Summary};

use state::Shared;
pub use state::TrafficCounts;

/// Everything one processor needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub fee: Fee,
    pub token: String,
    pub health_window: Duration,
    pub chaos: Chaos,
    pub limits: Limits,
}

impl Config {
    /// `127.0.0.1:0`, token `123`, a 5 s health window, no chaos, the official limits.
    pub fn for_tests(fee_percent: u32) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fee: Fee::from_percent(fee_percent),
            token: String::from("123"),
            health_window: Duration::from_secs(5),
            chaos: Chaos::none(),
            limits: Limits::default(),
        }
    }
}

/// A processor serving on its own thread and runtime; dropping it stops the server and
/// joins the thread.
///
/// The helpers (`set_delay`, `summary`, ...) touch the processor's state directly, without
/// HTTP, so tests of other parts stay fast; the HTTP admin endpoints are tested on their own.
pub struct Running {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish()
    }
}

impl Running {
    /// `http://ADDR`, the base URL to reach this processor.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the delay of `POST /payments`, in milliseconds; returns the previous one.
    pub fn set_delay(&self, ms: u64) -> u64 {
        self.shared.set_delay_ms(ms)
    }

    /// Makes `POST /payments` fail (500) or not; returns the previous setting.
    pub fn set_failure(&self, failing: bool) -> bool {
        self.shared.set_failing(failing)
    }

    /// Makes every `POST /payments` answer `status` at once, nothing stored (`None`: process
    /// payments again); returns the previous setting.
    pub fn set_answer(&self, status: Option<u16>) -> Option<u16> {
        self.shared.switches.set_answer(status)
    }

    /// Makes `POST /payments` write `100 Continue` on arrival, before its real answer, on
    /// connections accepted from now on.
    pub fn set_continue_first(&self, on: bool) {
        self.shared.switches.set_continue_first(on);
    }

    /// Closes connections accepted from now on once idle for `idle` (`None`: never), with a
    /// `Keep-Alive: timeout=<s>` header on their answers when `advertise`.
    pub fn set_close_idle(&self, idle: Option<Duration>, advertise: bool) {
        self.shared.switches.set_close_idle(idle, advertise);
    }

    /// Replaces the admin token.
    pub fn set_token(&self, token: &str) {
        self.shared.set_token(token.to_owned());
    }

    /// The admin summary for `[from, to]` (inclusive; everything if either is `None`).
    pub fn summary(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Summary {
        self.summary_micros(
            from.map(|at| at.timestamp_micros()),
            to.map(|at| at.timestamp_micros()),
        )
    }

    /// [`Running::summary`] with bounds in microseconds since the epoch.
    pub fn summary_micros(&self, from: Option<i64>, to: Option<i64>) -> Summary {
        self.shared.store().summary(from, to, self.shared.fee)
    }

    /// The payment stored under `id`.
    pub fn payment(&self, id: Uuid) -> Option<Payment> {
        self.shared.store().get(&id)
    }

    /// How many payments are stored.
    pub fn stored(&self) -> usize {
        self.shared.store().count()
    }

    /// What `POST /payments` has seen so far.
    pub fn traffic(&self) -> TrafficCounts {
        self.shared.traffic.counts()
    }

    /// Removes every payment.
    pub fn purge(&self) {
        self.shared.store().purge();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Binds a processor's listener (inside a tokio runtime) with a deep backlog: bursts of new connections (the 800 + 500 limiter test, a
/// ramp of users) must not overflow the SYN queue and stall in retransmits.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Starts a processor on its own thread with its own current-thread runtime, on a real TCP
/// listener; returns once it is accepting connections.
pub fn spawn(config: Config) -> std::io::Result<Running> {
    let runtime = runtime()?;
    let listener = {
        let _entered = runtime.enter();
        bind(config.listen)?
    };
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(&config));
    let (shutdown, stop) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("processor-{}", addr.port()))
        .spawn({
            let shared = shared.clone();
            move || {
                tracing::info!("processor listening on {addr}");
                runtime.block_on(server::serve(listener, shared, async {
                    let _ = stop.await;
                }));
            }
        })?;
    Ok(Running {
        addr,
        shared,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

/// Serves `listener` (from [`bind`]) on the current tokio runtime until `shutdown` resolves.
pub async fn serve(listener: TcpListener, config: &Config, shutdown: impl Future<Output = ()>) {
    server::serve(listener, Arc::new(Shared::new(config)), shutdown).await;
}
