//! One client connection: read once, answer every whole request in the buffer in order
//! (pipelining), write the answers once, repeat. Keep-alive by default on HTTP/1.1,
//! close on HTTP/1.0 unless asked, close after a malformed request (400/411/413/431), and
//! close an idle connection after [`IDLE_TIMEOUT`].
//!
//! The two buffers live as long as the connection: steady-state requests allocate nothing.

use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::core::Core;
use crate::http::request::{self, Parsed, Reject, MAX_BODY, MAX_HEADER_BYTES};
use crate::http::response::{self, status, Connection};
use crate::service;

/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer size: one whole largest request fits.
const BUF: usize = MAX_HEADER_BYTES + MAX_BODY + 1024;

/// Serves a connection until the peer closes it, it errs, idles out, or the core stops.
pub async fn serve<S: AsyncReadRent + AsyncWriteRent>(mut stream: S, core: Rc<Core>) {
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let mut used = 0;
        let mut close = false;
        loop {
            match request::parse(&buf[used..]) {
                Parsed::Complete(req, n) => {
                    used += n;
                    service::handle(&core, &req, &mut out).await;
                    if !req.keep_alive {
                        close = true;
                        break;
                    }
                }
                Parsed::Partial => break,
                Parsed::Error(reject) => {
                    let code = match reject {
                        Reject::BadRequest => status::BAD_REQUEST,
                        Reject::LengthRequired => status::LENGTH_REQUIRED,
                        Reject::PayloadTooLarge => status::PAYLOAD_TOO_LARGE,
                        Reject::HeadersTooLarge => status::HEADERS_TOO_LARGE,
                    };
                    let conn = Connection {
                        keep_alive: false,
                        http10: false,
                    };
                    response::empty(&mut out, code, conn);
                    close = true;
                    break;
                }
            }
        }
        if used > 0 {
            buf.copy_within(used.., 0);
            buf.truncate(buf.len() - used);
        }
        if !out.is_empty() {
            let (res, o) = stream.write_all(out).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
        if close || core.shutting_down() {
            return;
        }
        // The parser refuses anything larger than BUF before it fills, so this never grows.
        if buf.capacity() == buf.len() {
            buf.reserve(BUF);
        }
        // Read into the free tail: monoio's `Vec` buffer would otherwise be filled from 0.
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, b) =
            match monoio::time::timeout(IDLE_TIMEOUT, stream.read(buf.slice_mut(len..cap))).await {
                Ok(r) => r,
                Err(_) => return,
            };
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
