//! One client connection: read once, answer every whole request in the buffer in order
//! (pipelining), write the answers once, repeat. Keep-alive by default on HTTP/1.1,
//! close on HTTP/1.0 unless asked, close after a malformed request (400/411/413/431).
//!
//! Two timeouts, one per read, never both:
//! - nothing buffered (between requests): the connection is closed silently after
//!   `IDLE_TIMEOUT_MS`;
//! - part of a request buffered: the rest must arrive within `HEADER_TIMEOUT_MS` of the
//!   moment the first part was seen, else 408 and close (a slow-drip head or body holds a
//!   connection and a 13 KiB buffer for as long as the client likes otherwise).
//!
//! And one per write: answers the client does not take within `WRITE_TIMEOUT_MS` close the
//! connection (one that pipelines and never reads would otherwise hold it forever, since
//! nothing is read while a write waits).
//!
//! The clock is read only when a read leaves a partial request behind, which the fast path
//! (whole requests per read) never does; the timer itself is monoio's wheel, no syscall.
//! The two buffers live as long as the connection: steady-state requests allocate nothing.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use rinha_sys::cap::Slot;
use rinha_sys::send::send_now;

use crate::config::ResponseSend;
use crate::core_state::CoreState;
use crate::http::request::{self, Parsed, Reject, MAX_BODY, MAX_HEADER_BYTES};
use crate::http::response::{self, status, Connection};
use crate::origin::Origin;
use crate::service;

/// Read buffer size: one whole largest request fits.
const BUF: usize = MAX_HEADER_BYTES + MAX_BODY + 1024;
/// Answers that end a connection say so.
const CLOSING: Connection = Connection {
    keep_alive: false,
    http10: false,
};

/// Serves a connection until the peer closes it, it errs, times out, or the core stops.
/// `origin` says what it may ask for; `_slot` is its place under the connection cap, given
/// back when this returns.
pub async fn serve<S>(mut stream: S, origin: Origin, core: Rc<CoreState>, _slot: Slot)
where
    S: AsyncReadRent + AsyncWriteRent + AsRawFd,
{
    let (idle_timeout, header_timeout) = (core.config.idle_timeout, core.config.header_timeout);
    let write_timeout = core.config.write_timeout;
    // On epoll the runtime's write is already a send(2) made at once.
    let direct = core.config.response_send == ResponseSend::Direct && !monoio::utils::is_legacy();
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // When the first byte of the request now partly buffered was seen.
    let mut partial_since: Option<Instant> = None;
    loop {
        let (used, close) = answer_buffered(&buf, origin, &core, &mut out).await;
        if used > 0 {
            buf.copy_within(used.., 0);
            buf.truncate(buf.len() - used);
            // The request that was partial (if any) is complete: a new one starts its clock.
            partial_since = None;
        }
        if !out.is_empty() {
            match write_answers(&mut stream, out, direct, write_timeout).await {
                Some(emptied) => out = emptied,
                None => return,
            }
        }
        if close || core.shutting_down() {
            return;
        }
        let wait = if buf.is_empty() {
            partial_since = None;
            idle_timeout
        } else {
            let since = *partial_since.get_or_insert_with(Instant::now);
            header_timeout.saturating_sub(since.elapsed())
        };
        if wait == Duration::ZERO {
            request_timeout(&mut stream, out, write_timeout).await;
            return;
        }
        // The parser refuses anything larger than BUF before it fills, so this never grows.
        if buf.capacity() == buf.len() {
            buf.reserve(BUF);
        }
        // Read into the free tail: monoio's `Vec` buffer would otherwise be filled from 0.
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, b) = match monoio::time::timeout(wait, stream.read(buf.slice_mut(len..cap))).await
        {
            Ok(r) => r,
            // Idle between requests: close without a word. Mid-request: 408.
            Err(_) if partial_since.is_none() => return,
            Err(_) => {
                request_timeout(&mut stream, out, write_timeout).await;
                return;
            }
        };
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Answers every whole request at the start of `buf` into `out`, in order; returns the bytes
/// they took and whether the connection closes after them (`Connection: close`, or a
/// malformed request, answered and last).
async fn answer_buffered(
    buf: &[u8],
    origin: Origin,
    core: &CoreState,
    out: &mut Vec<u8>,
) -> (usize, bool) {
    let mut used = 0;
    loop {
        match request::parse(&buf[used..]) {
            Parsed::Complete(req, n) => {
                used += n;
                service::handle(core, origin, &req, out).await;
                if !req.keep_alive {
                    return (used, true);
                }
            }
            Parsed::Partial => return (used, false),
            Parsed::Error(reject) => {
                let code = match reject {
                    Reject::BadRequest => status::BAD_REQUEST,
                    Reject::LengthRequired => status::LENGTH_REQUIRED,
                    Reject::PayloadTooLarge => status::PAYLOAD_TOO_LARGE,
                    Reject::HeadersTooLarge => status::HEADERS_TOO_LARGE,
                };
                response::empty(out, code, CLOSING);
                return (used, true);
            }
        }
    }
}

/// Writes the answers in `out` (`direct`: a non-blocking `send(2)` first, the runtime's
/// write for the rest), within `within`; the emptied buffer back, or `None` when the
/// connection must close (a send error, or the client did not take them in time).
async fn write_answers<S>(
    stream: &mut S,
    mut out: Vec<u8>,
    direct: bool,
    within: Duration,
) -> Option<Vec<u8>>
where
    S: AsyncWriteRent + AsRawFd,
{
    let sent = if direct {
        send_now(stream.as_raw_fd(), &out).ok()?
    } else {
        0
    };
    if sent < out.len() {
        let write = stream.write_all(out.slice(sent..));
        let (res, o) = monoio::time::timeout(within, write).await.ok()?;
        out = o.into_inner();
        res.ok()?;
    }
    out.clear();
    Some(out)
}

/// Answers 408 to a request that did not arrive whole in time (the connection closes next).
async fn request_timeout<S: AsyncWriteRent>(stream: &mut S, mut out: Vec<u8>, within: Duration) {
    out.clear();
    response::empty(&mut out, status::REQUEST_TIMEOUT, CLOSING);
    let _ = monoio::time::timeout(within, stream.write_all(out)).await;
}
