//! The HTTP surface: dispatch by path and method (unknown path 404, wrong method 405), the
//! public payment endpoints.
//!
//! `POST /payments` runs as the official one does: the concurrency limiter admits it, its
//! body is read, then (in a task of its own, so a caller that hangs up cancels nothing) the
//! delay read at arrival, then the failure flag, then the insert.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use uuid::Uuid;

use super::admin;
use super::body::JsonObject;
use super::health::Claim;
use super::money::{self, Cents};
use super::reply::{empty, json, message, read_body, HttpResponse};
use super::state::Shared;
use super::state::Traffic;
use super::store::Payment;
use super::timestamp;

/// Ends the connection without an answer (hyper closes it when the service fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Abort {
    /// Chaos: the payment was stored, the response is lost.
    #[error("chaos: response dropped after the insert")]
    Dropped,
    /// Chaos: the connection is reset before anything is processed.
    #[error("chaos: connection reset")]
    Reset,
    /// The payment task ended without an answer (the runtime is shutting down).
    #[error("payment task did not finish")]
    Cancelled,
}

/// Per-connection context the handlers may need.
#[derive(Debug)]
pub struct Connection {
    /// A duplicate of the socket, kept only when a fault needs to write or reset it.
    pub socket: Option<OwnedFd>,
    /// Requests being handled, and when the last one ended (idle connections are closed
    /// only when a test asks, [`super::chaos::Switches::set_close_idle`]).
    busy: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Connection {
    pub fn new(socket: Option<OwnedFd>) -> Connection {
        Connection {
            socket,
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Marks a request under way until the guard drops.
    pub fn active(self: &Arc<Self>) -> Active {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// How long the connection has had no request under way (`None`: one is).
    pub fn idle_for(&self) -> Option<Duration> {
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        (self.busy.load(Ordering::Acquire) == 0).then(|| since.elapsed())
    }
}

/// A request under way on a [`Connection`].
pub struct Active(Arc<Connection>);

impl Drop for Active {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Abort> {
    let path = request.uri().path();
    let method = request.method();
    let response = match path {
        "/payments" => match *method {
            Method::POST => return post_payment(shared, &connection, request).await,
            _ => not_allowed("POST"),
        },
        "/payments/service-health" => match *method {
            Method::GET => service_health(&shared).await,
            _ => not_allowed("GET"),
        },
        "/admin/payments-summary" => match *method {
            Method::GET => admin::summary(&shared, &request),
            _ => not_allowed("GET"),
        },
        "/admin/configurations/token"
        | "/admin/configurations/delay"
        | "/admin/configurations/failure"
        | "/admin/configurations/answer" => match *method {
            Method::PUT => admin::configure(&shared, request).await,
            _ => not_allowed("PUT"),
        },
        "/admin/purge-payments" => match *method {
            Method::POST => admin::purge(&shared, &request),
            _ => not_allowed("POST"),
        },
        _ => match path.strip_prefix("/payments/") {
            Some(id) if !id.is_empty() && !id.contains('/') => match *method {
                Method::GET => get_payment(&shared, id),
                _ => not_allowed("GET"),
            },
            _ => empty(StatusCode::NOT_FOUND),
        },
    };
    Ok(response)
}

async fn post_payment(
    shared: Arc<Shared>,
    connection: &Connection,
    request: Request<Incoming>,
) -> Result<HttpResponse, Abort> {
    if shared.chaos.reset_this_post() {
        if let Some(socket) = &connection.socket {
            if let Err(err) = super::chaos::arm_reset(socket) {
                tracing::warn!("chaos: cannot arm a reset: {err}");
            }
        }
        return Err(Abort::Reset);
    }
    Traffic::count(&shared.traffic.received);
    if let Some(status) = shared.switches.answer() {
        Traffic::count(&shared.traffic.forced);
        return Ok(empty(
            StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND),
        ));
    }
    if shared.switches.continue_first() {
        if let Some(socket) = &connection.socket {
            if let Err(err) = super::chaos::write_raw(socket, super::chaos::CONTINUE) {
                tracing::warn!("chaos: cannot write 100 Continue: {err}");
            }
        }
    }
    let arrived_delay = Duration::from_millis(shared.delay_ms());
    // Waiting in line is cancelled if the caller goes away, as ASP.NET's limiter does.
    let permit = match shared.limiter.admit().await {
        Ok(permit) => permit,
        Err(_) => {
            Traffic::count(&shared.traffic.rejected);
            return Ok(empty(StatusCode::TOO_MANY_REQUESTS));
        }
    };
    let Some(body) = read_body(request).await else {
        return Ok(message(StatusCode::BAD_REQUEST, "unreadable body"));
    };
    let payment = match parse_payment(&body) {
        Ok(payment) => payment,
        Err(reason) => return Ok(message(StatusCode::BAD_REQUEST, reason)),
    };
    // From here on the work happens whether or not the caller is still connected.
    let task = tokio::spawn(async move {
        let _permit = permit;
        if !arrived_delay.is_zero() {
            tokio::time::sleep(arrived_delay).await;
        }
        if shared.failing() {
            Traffic::count(&shared.traffic.failed);
            return Ok(message(StatusCode::INTERNAL_SERVER_ERROR, "payment failed"));
        }
        let inserted = shared.store().insert(payment);
        match inserted {
            Err(_) => Ok(message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "correlationId already exists",
            )),
            Ok(()) if shared.chaos.drop_after_store() => Err(Abort::Dropped),
            Ok(()) => Ok(message(StatusCode::OK, "payment processed successfully")),
        }
    });
    task.await.unwrap_or(Err(Abort::Cancelled))
}

/// Reads a `POST /payments` body into a payment, or says why it is refused (400).
pub fn parse_payment(body: &[u8]) -> Result<Payment, String> {
    let object = JsonObject::parse(body).map_err(|e| e.to_string())?;
    let id = object.string("correlationId").map_err(|e| e.to_string())?;
    let correlation_id = Uuid::parse_str(&id).map_err(|_| "correlationId is not a UUID")?;
    let amount = object.number_text("amount").map_err(|e| e.to_string())?;
    let cents = money::parse_cents(&amount).map_err(|e| format!("amount: {e}"))?;
    let requested_at = object.string("requestedAt").map_err(|e| e.to_string())?;
    let requested_at_micros = timestamp::parse_micros(&requested_at).map_err(|e| e.to_string())?;
    Ok(Payment {
        correlation_id,
        cents,
        requested_at_micros,
    })
}

fn get_payment(shared: &Shared, id: &str) -> HttpResponse {
    Traffic::count(&shared.traffic.lookups);
    let Ok(id) = Uuid::parse_str(id) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let found = shared.store().get(&id);
    match found {
        Some(payment) => json(
            StatusCode::OK,
            format!(
                r#"{{"correlationId":"{}","amount":{},"requestedAt":"{}"}}"#,
                payment.correlation_id,
                Cents(payment.cents),
                timestamp::format_micros(payment.requested_at_micros)
            ),
        ),
        None => empty(StatusCode::NOT_FOUND),
    }
}

async fn service_health(shared: &Shared) -> HttpResponse {
    match shared.health.claim(Instant::now()) {
        Claim::Now => {}
        Claim::Wait(mut granted) => loop {
            // Every waiter wakes at each window start and hands out that window's permit,
            // so no timer task is needed; the oldest waiter still in line gets it.
            let next = shared.health.next_start(Instant::now());
            tokio::select! {
                _ = &mut granted => break,
                () = tokio::time::sleep_until(next.into()) => shared.health.tick(Instant::now()),
            }
        },
        Claim::Rejected => {
            let seconds = shared.health.window().as_secs_f64().ceil().max(1.0) as u64;
            let mut response = empty(StatusCode::TOO_MANY_REQUESTS);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
    }
    json(
        StatusCode::OK,
        format!(
            r#"{{"failing":{},"minResponseTime":{}}}"#,
            shared.failing(),
            shared.delay_ms()
        ),
    )
}

fn not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}
