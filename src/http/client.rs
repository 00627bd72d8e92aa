//! The client side of HTTP/1.1, just enough for the processors and the peers: write one
//! request, read one response (`Content-Length`, chunked, or until close).
//!
//! Allocates per call (this is the path behind the queue, at most a few hundred calls a
//! second per core, not the intake path).

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

/// Parses a whole response from `buf`, `Ok(None)` if more bytes are needed.
fn try_parse(buf: &[u8], at_eof: bool) -> Result<Option<Response>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Malformed),
    };
    let status = resp.code.ok_or(ExchangeError::Malformed)?;
    let mut keep_alive = resp.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| ExchangeError::Malformed)?;
            length = Some(text.trim().parse().map_err(|_| ExchangeError::Malformed)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
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
    let rest = &buf[head..];
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(Response {
            status,
            body: Vec::new(),
            keep_alive,
        }));
    }
    if chunked {
        return Ok(decode_chunked(rest)?.map(|body| Response {
            status,
            body,
            keep_alive,
        }));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response {
            status,
            body: rest[..n].to_vec(),
            keep_alive,
        })),
        Some(_) => Ok(None),
        None if at_eof => Ok(Some(Response {
            status,
            body: rest.to_vec(),
            keep_alive: false,
        })),
        None => Ok(None),
    }
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
}
