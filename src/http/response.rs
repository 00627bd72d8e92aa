//! Answers written straight into the connection's output buffer: fixed status lines, a
//! `Date` header formatted once per second per thread, `Content-Length` always (so
//! pipelining and keep-alive work), `Connection` only when it differs from the default.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Status lines we answer with.
pub mod status {
    pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\n";
    pub const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\n";
    pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";
    pub const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\n";
    pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\n";
    pub const METHOD_NOT_ALLOWED: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\n";
    pub const CONFLICT: &[u8] = b"HTTP/1.1 409 Conflict\r\n";
    pub const LENGTH_REQUIRED: &[u8] = b"HTTP/1.1 411 Length Required\r\n";
    pub const PAYLOAD_TOO_LARGE: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\n";
    pub const HEADERS_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
    pub const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n";
    pub const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\n";
    pub const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n";
}

thread_local! {
    /// (unix second, "Date: ...\r\n") of this thread, refreshed when the second changes.
    static DATE: RefCell<(u64, [u8; 37])> = const { RefCell::new((0, [0; 37])) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            let mut line = [0u8; 37];
            line[..6].copy_from_slice(b"Date: ");
            let n = text.len().min(29);
            line[6..6 + n].copy_from_slice(&text.as_bytes()[..n]);
            line[35..].copy_from_slice(b"\r\n");
            *cached = (secs, line);
        }
        out.extend_from_slice(&cached.1);
    });
}

/// How the connection continues after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub keep_alive: bool,
    pub http10: bool,
}

fn head(out: &mut Vec<u8>, status: &[u8], conn: Connection, len: usize, json: bool) {
    out.extend_from_slice(status);
    push_date(out);
    if !conn.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if conn.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if json {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = len;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// An answer without a body.
pub fn empty(out: &mut Vec<u8>, status: &[u8], conn: Connection) {
    head(out, status, conn, 0, false);
    out.extend_from_slice(b"\r\n");
}

/// A JSON answer.
pub fn json(out: &mut Vec<u8>, status: &[u8], conn: Connection, body: &[u8]) {
    head(out, status, conn, body.len(), true);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// A 405 naming the allowed method.
pub fn method_not_allowed(out: &mut Vec<u8>, conn: Connection, allow: &[u8]) {
    head(out, status::METHOD_NOT_ALLOWED, conn, 0, false);
    out.extend_from_slice(b"Allow: ");
    out.extend_from_slice(allow);
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut out = Vec::new();
        let ka = Connection {
            keep_alive: true,
            http10: false,
        };
        empty(&mut out, status::ACCEPTED, ka);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 202 Accepted\r\nDate: "));
        assert!(
            text.ends_with(" GMT\r\nContent-Length: 0\r\n\r\n"),
            "{text}"
        );
        out.clear();
        json(
            &mut out,
            status::BAD_REQUEST,
            Connection {
                keep_alive: false,
                http10: true,
            },
            b"{}",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
