//! A keep-alive HTTP/1.1 client for one processor on one core: `POST /payments` and
//! `GET /payments/{id}` over monoio TCP, with a small pool of idle connections.
//!
//! Calls start in turns: at most `CALL_STARTS` of them are connecting or writing their request
//! at once, and the rest wait for a turn (fairly, in order). When every sender of a core leaves
//! at once (a routing change onto a processor whose answers now take a second, so each call
//! needs a connection of its own), the core would otherwise open hundreds of connections in one
//! turn of its event loop, tens of milliseconds in which no client is answered
//! (docs/benchmarks.md, "p99: how much of it is the client's"). Waiting for a turn counts
//! against the call's timeout, and a call that times out there was never sent
//! ([`CallError::Connect`]).
//!
//! Idle connections wait in a [`Pool`], which gives up those the processor closed meanwhile.
//!
//! The processor's name is resolved at start and looked up again after a connect error, off
//! the event loop ([`Address`]): a connect never waits for a lookup. Errors say whether the
//! request may have reached the processor: [`CallError::Connect`] means it did not,
//! [`CallError::Unknown`] means it may have been stored.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use local_sync::semaphore::{Semaphore, SemaphorePermit};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use uuid::Uuid;

use crate::config::ProcessorUrl;
use crate::http::client::{read_response, ExchangeError, Response};
use crate::payment::{decimal_to_cents, write_amount};
use crate::processor::pool::Pool;
use crate::processor::resolve::{Address, Resolver};
use crate::time::{format_iso_ms, parse_iso};

/// Idle connections kept per processor per core.
const MAX_IDLE: usize = 256;

/// A call that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection: the request was never sent.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// Sent (maybe partly) but no usable response: the outcome is unknown.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// What `GET /payments/{id}` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The processor holds it, stamped with this `requestedAt` (µs, whole milliseconds), for
    /// this amount (cents) when the answer says.
    Found {
        requested_at_us: i64,
        cents: Option<u64>,
    },
    NotFound,
    /// A `200` whose `requestedAt` cannot be read: it holds the id, with a stamp we cannot
    /// compare with ours.
    Unreadable,
    /// Any other status (should not happen: the endpoint ignores delay and failure).
    Other(u16),
}

/// What the admin summary said of the processor's fee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeeRead {
    /// `feePerTransaction`, a fraction in [0, 1).
    Fee(f64),
    /// Another status than 200 (401: a wrong token).
    Status(u16),
    /// A 200 without a readable `feePerTransaction`.
    Unreadable,
}

/// One processor as seen from one core.
#[derive(Debug)]
pub struct ProcessorClient {
    url: ProcessorUrl,
    address: Address,
    idle: Pool,
    /// Turns to start a call (module doc).
    starts: Semaphore,
}

impl ProcessorClient {
    /// `addr` is the start-time resolution (`None` if it failed: looked up again on use);
    /// `starts` calls may be starting at once.
    pub fn new(
        url: ProcessorUrl,
        addr: Option<SocketAddr>,
        resolver: Resolver,
        starts: usize,
    ) -> Self {
        ProcessorClient {
            address: Address::new(url.authority.clone(), resolver, addr),
            url,
            idle: Pool::new(MAX_IDLE),
            starts: Semaphore::new(starts),
        }
    }

    /// Sends a payment stamped `requested_at_us`; returns the status.
    pub async fn post_payment(
        &self,
        id: &Uuid,
        cents: u64,
        requested_at_us: i64,
        timeout: Duration,
    ) -> Result<u16, CallError> {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(b"{\"correlationId\":\"");
        body.extend_from_slice(
            id.hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        body.extend_from_slice(b"\",\"amount\":");
        write_amount(&mut body, u128::from(cents));
        body.extend_from_slice(b",\"requestedAt\":\"");
        body.extend_from_slice(&format_iso_ms(requested_at_us));
        body.extend_from_slice(b"\"}");
        let mut req = Vec::with_capacity(256);
        req.extend_from_slice(b"POST /payments HTTP/1.1\r\nHost: ");
        req.extend_from_slice(self.url.authority.as_bytes());
        req.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        req.extend_from_slice(body.len().to_string().as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(&body);
        Ok(self.call(req, timeout).await?.status)
    }

    /// Looks a payment up.
    pub async fn get_payment(&self, id: &Uuid, timeout: Duration) -> Result<Lookup, CallError> {
        let mut req = Vec::with_capacity(128);
        req.extend_from_slice(b"GET /payments/");
        req.extend_from_slice(
            id.hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(self.url.authority.as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        let resp = self.call(req, timeout).await?;
        match resp.status {
            200 => Ok(stored_payment(&resp.body).unwrap_or(Lookup::Unreadable)),
            404 => Ok(Lookup::NotFound),
            s => Ok(Lookup::Other(s)),
        }
    }

    /// Reads the processor's `feePerTransaction` from its admin summary (`token` is the
    /// admin token).
    pub async fn fee(&self, token: &str, timeout: Duration) -> Result<FeeRead, CallError> {
        let mut req = Vec::with_capacity(128);
        req.extend_from_slice(b"GET /admin/payments-summary HTTP/1.1\r\nHost: ");
        req.extend_from_slice(self.url.authority.as_bytes());
        req.extend_from_slice(b"\r\nX-Rinha-Token: ");
        req.extend_from_slice(token.as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        let resp = self.call(req, timeout).await?;
        Ok(match resp.status {
            200 => fee_per_transaction(&resp.body).map_or(FeeRead::Unreadable, FeeRead::Fee),
            status => FeeRead::Status(status),
        })
    }

    /// One timer covers the whole call, its turn and connect included; where it fires tells
    /// whether the request may have gone out.
    async fn call(&self, request: Vec<u8>, timeout: Duration) -> Result<Response, CallError> {
        let writing = Cell::new(false);
        let attempt = async {
            let (turn, mut stream) = self.open(timeout).await.map_err(CallError::Connect)?;
            writing.set(true);
            let (written, _) = stream.write_all(request).await;
            drop(turn);
            let resp = match written {
                Ok(_) => read_response(&mut stream).await,
                Err(e) => Err(ExchangeError::Io(e)),
            }
            .map_err(|e| CallError::Unknown(e.to_string()))?;
            if resp.keep_alive {
                self.idle.put(stream, resp.idle_timeout, Instant::now());
            }
            Ok(resp)
        };
        match monoio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) if writing.get() => {
                Err(CallError::Unknown(format!("no answer within {timeout:?}")))
            }
            // Nothing has been sent while waiting for a turn or a connection.
            Err(_) => Err(CallError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))),
        }
    }

    /// Waits for a turn to start a call, then takes an idle connection or opens one.
    async fn open(&self, timeout: Duration) -> io::Result<(SemaphorePermit<'_>, TcpStream)> {
        let turn = self
            .starts
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let pooled = self.idle.take(Instant::now());
        let stream = match pooled {
            Some(s) => s,
            None => self.connect(timeout).await?,
        };
        Ok((turn, stream))
    }

    async fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let addr = self.address.current()?;
        let res = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        match res {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Err(e) => {
                // The name may point elsewhere now (a restarted container).
                self.address.connect_failed();
                Err(e)
            }
        }
    }
}

/// Reads a payment lookup body: `requestedAt` (required) and `amount` (if readable), names
/// in any case as ASP.NET matches them.
fn stored_payment(body: &[u8]) -> Option<Lookup> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    let field = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let requested_at_us = requested_at(field("requestedAt")?)?;
    let cents = field("amount").and_then(|v| match v {
        serde_json::Value::Number(n) => decimal_to_cents(n.to_string().as_bytes()).ok(),
        serde_json::Value::String(s) => decimal_to_cents(s.as_bytes()).ok(),
        _ => None,
    });
    Some(Lookup::Found {
        requested_at_us,
        cents,
    })
}

/// A lookup's `requestedAt`, in µs truncated to the millisecond (what we stamp): ISO-8601 in
/// any form [`parse_iso`] reads (0-9 fraction digits, `Z`, an offset or no zone), or a number
/// since the epoch (as JSON or as text) in seconds, milliseconds or microseconds, told apart
/// by size (any of them is decades away from the others for a date this century).
fn requested_at(value: &serde_json::Value) -> Option<i64> {
    let number = match value {
        serde_json::Value::String(text) => match parse_iso(text.as_bytes()) {
            Ok(us) => return Some(us - us.rem_euclid(1000)),
            Err(_) => text.trim().parse::<f64>().ok()?,
        },
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !number.is_finite() || number <= 0.0 {
        return None;
    }
    let us = if number < 1e11 {
        number * 1e6
    } else if number < 1e14 {
        number * 1e3
    } else if number < 1e17 {
        number
    } else {
        return None;
    };
    let us = us.round() as i64;
    Some(us - us.rem_euclid(1000))
}

/// Finds `feePerTransaction` (any case) in an admin summary body: a fraction in [0, 1).
fn fee_per_transaction(body: &[u8]) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let fee = value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("feePerTransaction"))?
        .1
        .as_f64()?;
    (0.0..1.0).contains(&fee).then_some(fee)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::rc::Rc;

    /// A listener whose accept queue is full, so that a connect to it stays pending (the
    /// kernel drops its SYN), and the connections that filled it.
    fn full_listener() -> (socket2::Socket, SocketAddr, Vec<std::net::TcpStream>) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut filling = Vec::new();
        while let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            filling.push(c);
            assert!(filling.len() < 64, "the accept queue never fills");
        }
        (socket, addr, filling)
    }

    /// Sockets of this machine still connecting (`SYN_SENT`) to `addr`.
    fn connecting_to(addr: SocketAddr) -> usize {
        let SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        let remote = format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        );
        std::fs::read_to_string("/proc/net/tcp")
            .expect("/proc/net/tcp")
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")
            })
            .count()
    }

    /// Six calls at once to a processor whose connects hang: only `starts` of them connect,
    /// the rest wait for a turn without opening a socket, and all fail as never sent.
    fn calls_start_in_turns(driver: &str) {
        let driver = crate::processor::test_driver(driver);
        let (_listener, addr, _filling) = full_listener();
        for starts in [2, 6] {
            let url = ProcessorUrl::parse(&format!("http://{addr}")).unwrap();
            let client = Rc::new(ProcessorClient::new(
                url,
                Some(addr),
                Resolver::system(),
                starts,
            ));
            let connecting = driver
                .block_on(async move {
                    let calls: Vec<_> = (0..6)
                        .map(|_| {
                            let client = client.clone();
                            monoio::spawn(async move {
                                let id = Uuid::new_v4();
                                client
                                    .post_payment(&id, 1990, 0, Duration::from_secs(1))
                                    .await
                            })
                        })
                        .collect();
                    monoio::time::sleep(Duration::from_millis(300)).await;
                    let connecting = connecting_to(addr);
                    for call in calls {
                        // Every one fails unsent: in its connect or waiting for a turn.
                        assert!(matches!(call.await, Err(CallError::Connect(_))));
                    }
                    connecting
                })
                .expect("runtime");
            assert_eq!(connecting, starts, "connects under way with {starts} turns");
        }
    }
    rinha_sys::both_drivers!(calls_start_in_turns);

    #[test]
    fn admin_summary_body() {
        let b = br#"{"totalRequests":0,"totalAmount":0,"totalFee":0,"feePerTransaction":0.07}"#;
        assert_eq!(fee_per_transaction(b), Some(0.07));
        assert_eq!(
            fee_per_transaction(br#"{"FeePerTransaction":0.1}"#),
            Some(0.1)
        );
        assert_eq!(fee_per_transaction(br#"{"feePerTransaction":"x"}"#), None);
        assert_eq!(fee_per_transaction(br#"{"feePerTransaction":1.5}"#), None);
        assert_eq!(fee_per_transaction(b"{}"), None);
    }

    fn found(requested_at_us: i64, cents: Option<u64>) -> Option<Lookup> {
        Some(Lookup::Found {
            requested_at_us,
            cents,
        })
    }

    #[test]
    fn every_plausible_timestamp_form_is_read() {
        let at = 1_752_582_896_789_000; // 2025-07-15T12:34:56.789Z
        let body = |v: &str| format!(r#"{{"requestedAt":{v}}}"#);
        for v in [
            r#""2025-07-15T12:34:56.789Z""#,
            r#""2025-07-15T12:34:56.789""#,
            r#""2025-07-15T12:34:56.7890000""#,
            r#""2025-07-15T12:34:56.7891234Z""#,
            r#""2025-07-15T12:34:56.789+00:00""#,
            r#""2025-07-15T15:34:56.789+03:00""#,
            r#""2025-07-15 12:34:56.789""#,
            // Numbers: seconds, milliseconds, microseconds since the epoch.
            "1752582896.789",
            "1752582896789",
            "1752582896789000",
        ] {
            assert_eq!(stored_payment(body(v).as_bytes()), found(at, None), "{v}");
        }
        let whole = 1_752_582_896_000_000;
        assert_eq!(
            stored_payment(body(r#""2025-07-15T12:34:56""#).as_bytes()),
            found(whole, None)
        );
        assert_eq!(
            stored_payment(body("1752582896").as_bytes()),
            found(whole, None)
        );
        for bad in [r#""yesterday""#, "true", "-5", "[1]"] {
            assert_eq!(stored_payment(body(bad).as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn lookup_body() {
        let b = br#"{"correlationId":"x","amount":19.9,"requestedAt":"2025-07-15T12:34:56.789Z"}"#;
        assert_eq!(stored_payment(b), found(1_752_582_896_789_000, Some(1990)));
        let b = br#"{"RequestedAt":"2025-07-15T12:34:56.789123+00:00","Amount":"0.125"}"#;
        assert_eq!(stored_payment(b), found(1_752_582_896_789_000, Some(12)));
        let b = br#"{"requestedAt":"2025-07-15T12:34:56.789Z","amount":null}"#;
        assert_eq!(stored_payment(b), found(1_752_582_896_789_000, None));
        assert_eq!(stored_payment(b"{}"), None);
        assert_eq!(stored_payment(b"nope"), None);
    }
}
