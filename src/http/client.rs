//! The client side of HTTP/1.1, just enough for the processors and the peers: write one
//! request, read one response (`Content-Length`, chunked, or until close). Interim answers
//! (`1XX`, e.g. `100 Continue`) are skipped: the final one follows on the same connection,
//! and read as the answer it would become the next request's.
//!
//! Allocates per call (this is the path behind the queue, at most a few hundred calls a
//! second per core, not the intake path).

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Largest response accepted (the processors' and peers' answers are under 300 bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// A response read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// How long the server keeps the connection open while idle (`Keep-Alive: timeout=`).
    pub idle_timeout: Option<Duration>,
}

/// The exchange failed after the connection was open: whether the request took effect is
/// unknown.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed before a whole response")]
    Closed,
    #[error("malformed response")]
    Malformed,
}

/// Writes `request` and reads the response.
pub async fn exchange<S>(stream: &mut S, request: Vec<u8>) -> Result<Response, ExchangeError>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let (res, _) = stream.write_all(request).await;
    res?;
    read_response(stream).await
}

/// Reads one response.
pub async fn read_response<S: AsyncReadRent>(stream: &mut S) -> Result<Response, ExchangeError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if let Some(resp) = try_parse(&buf, false)? {
            return Ok(resp);
        }
        if buf.len() >= MAX_RESPONSE {
            return Err(ExchangeError::Malformed);
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(buf.capacity());
        }
        // Read into the free tail: monoio's `Vec` buffer would otherwise be filled from 0.
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, b) = stream.read(buf.slice_mut(len..cap)).await;
        buf = b.into_inner();
        if res? == 0 {
            // EOF: complete only if the body was delimited by the close.
            return try_parse(&buf, true)?.ok_or(ExchangeError::Closed);
        }
    }
}

/// Parses a whole final response from `buf`, past any interim ones, `Ok(None)` if more bytes
/// are needed.
fn try_parse(mut buf: &[u8], at_eof: bool) -> Result<Option<Response>, ExchangeError> {
    loop {
        match try_parse_one(buf, at_eof)? {
            Parsed::Interim(head) => buf = &buf[head..],
            Parsed::Final(resp) => return Ok(Some(resp)),
            Parsed::Partial => return Ok(None),
        }
    }
}

enum Parsed {
    /// A `1XX` head of this many bytes (no body).
    Interim(usize),
    Final(Response),
    Partial,
}

/// Parses the first response in `buf`.
fn try_parse_one(buf: &[u8], at_eof: bool) -> Result<Parsed, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(ExchangeError::Malformed),
    };
    let status = resp.code.ok_or(ExchangeError::Malformed)?;
    let mut keep_alive = resp.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut idle_timeout = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| ExchangeError::Malformed)?;
            length = Some(text.trim().parse().map_err(|_| ExchangeError::Malformed)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("keep-alive") {
            idle_timeout = keep_alive_timeout(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                keep_alive = false;
            } else if h
                .value
                .windows(10)
                .any(|w| w.eq_ignore_ascii_case(b"keep-alive"))
            {
                keep_alive = true;
            }
        }
    }
    // 101 (Switching Protocols) is final: the connection is not HTTP any more.
    if (100..200).contains(&status) && status != 101 {
        return Ok(Parsed::Interim(head));
    }
    let rest = &buf[head..];
    let done = |body: Vec<u8>, keep_alive: bool| {
        Parsed::Final(Response {
            status,
            body,
            keep_alive,
            idle_timeout,
        })
    };
    if status == 204 || status == 304 || status == 101 {
        return Ok(done(Vec::new(), keep_alive));
    }
    if chunked {
        return Ok(decode_chunked(rest)?.map_or(Parsed::Partial, |body| done(body, keep_alive)));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(done(rest[..n].to_vec(), keep_alive)),
        Some(_) => Ok(Parsed::Partial),
        None if at_eof => Ok(done(rest.to_vec(), false)),
        None => Ok(Parsed::Partial),
    }
}

/// `timeout=<seconds>` of a `Keep-Alive` header.
fn keep_alive_timeout(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?;
    text.split(',').find_map(|param| {
        let (key, secs) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| secs.trim().parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// Decodes a chunked body, `Ok(None)` if incomplete.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, ExchangeError> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = data[..eol].split(|&b| b == b';').next().unwrap_or(&[]);
        let size_text = std::str::from_utf8(size_text).map_err(|_| ExchangeError::Malformed)?;
        let size =
            usize::from_str_radix(size_text.trim(), 16).map_err(|_| ExchangeError::Malformed)?;
        if size > MAX_RESPONSE {
            return Err(ExchangeError::Malformed);
        }
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return Ok(data.windows(2).any(|w| w == b"\r\n").then_some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings() {
        let r = try_parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"ok"[..], true)
        );
        assert!(
            try_parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", false)
                .unwrap()
                .is_none()
        );
        let c = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let r = try_parse(c, false).unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"abc"[..]));
        assert!(try_parse(&c[..c.len() - 2], false).unwrap().is_none());
        let r = try_parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nxyz", true)
            .unwrap()
            .unwrap();
        assert_eq!((&r.body[..], r.keep_alive), (&b"xyz"[..], false));
        assert!(try_parse(b"nonsense\r\n\r\n", false).is_err());
    }

    #[test]
    fn interim_answers_are_skipped() {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert!(try_parse(cont, false).unwrap().is_none());
        let mut both = cont.to_vec();
        both.extend_from_slice(b"HTTP/1.1 102 Processing\r\n\r\n");
        assert!(try_parse(&both, false).unwrap().is_none());
        both.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let r = try_parse(&both, false).unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        assert!(try_parse(cont, true).unwrap().is_none());
    }

    #[test]
    fn keep_alive_timeouts() {
        let r = try_parse(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: max=100, timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            keep_alive_timeout(b"timeout = 60"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(keep_alive_timeout(b"max=5"), None);
        assert_eq!(keep_alive_timeout(b"timeout=soon"), None);
    }
}
