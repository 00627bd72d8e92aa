//! HTTP/1.x request framing on top of `httparse`: one call looks at the start of the read
//! buffer and says Complete (with the request borrowed from the buffer and how many bytes
//! it used), Partial (read more) or Error (the status to answer before closing).
//!
//! Limits: header section 8 KiB and 32 headers (431), body 4 KiB (413), bodies only by
//! `Content-Length` (`Transfer-Encoding` -> 411). No allocation.
//!
//! Why httparse and not monoio-http's codec: monoio-http's `RequestHeadDecoder` builds an
//! `http::HeaderMap`, `Uri` and `Method` per request and took several times as long on the
//! exact request k6 sends (`cargo bench -p rinha --features bench-monoio-http --bench
//! http_parse`; figures: docs/benchmarks.md, "Micro-benchmarks"); it is also thinly
//! maintained. httparse stays.

/// Largest header section accepted.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 32;
/// Largest body accepted.
pub const MAX_BODY: usize = 4 * 1024;

/// The methods we route on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// A complete request, borrowed from the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'b> {
    pub method: Method,
    /// The path without the query.
    pub path: &'b [u8],
    /// The query string without `?` (empty if none).
    pub query: &'b [u8],
    pub body: &'b [u8],
    /// HTTP/1.0 (answers say so in their `Connection` header).
    pub http10: bool,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// The `X-Purge-Token` header, if any.
    pub purge_token: Option<&'b [u8]>,
}

/// A request that cannot be answered normally: answer this status and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400: not HTTP/1.x as we read it.
    BadRequest,
    /// 411: a `Transfer-Encoding` body.
    LengthRequired,
    /// 413: body larger than [`MAX_BODY`].
    PayloadTooLarge,
    /// 431: header section too large or too many headers.
    HeadersTooLarge,
}

/// What the start of the buffer holds.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A whole request that used this many bytes.
    Complete(Request<'b>, usize),
    /// Not a whole request yet.
    Partial,
    /// Answer this status and close.
    Error(Reject),
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEADER_BYTES => {
            return Parsed::Error(Reject::HeadersTooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEADER_BYTES => {
            return Parsed::Error(Reject::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(Reject::HeadersTooLarge),
        Err(_) => return Parsed::Error(Reject::BadRequest),
    };
    let http10 = req.version == Some(0);
    let mut keep_alive = !http10;
    let mut content_length: Option<usize> = None;
    let mut purge_token = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(h.value) else {
                return Parsed::Error(Reject::BadRequest);
            };
            if content_length.is_some_and(|c| c != n) {
                return Parsed::Error(Reject::BadRequest);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Error(Reject::LengthRequired);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"x-purge-token") {
            purge_token = Some(h.value);
        }
    }
    // An explicit `close` wins over `keep-alive` listed alongside it.
    if req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection") && contains_close(h.value))
    {
        keep_alive = false;
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Parsed::Error(Reject::PayloadTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Parsed::Partial;
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/").as_bytes();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &target[target.len()..]),
    };
    Parsed::Complete(
        Request {
            method,
            path,
            query,
            body: &buf[head_len..total],
            http10,
            keep_alive,
            purge_token,
        },
        total,
    )
}

fn contains_close(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

fn parse_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0usize, |a, &d| a * 10 + usize::from(d - b'0')),
    )
}

/// Finds `key` in a query string and returns its raw (still percent-encoded) value.
pub fn query_param<'q>(query: &'q [u8], key: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == key).then_some(v)
    })
}

/// Percent-decodes `raw` into `out`, returning the decoded slice, or `None` if it does not fit
/// or is malformed. `+` stays `+` (a query is not a form: `+00:00` must survive).
pub fn percent_decode<'o>(raw: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            i += 3;
            (hi * 16 + lo) as u8
        } else {
            i += 1;
            raw[i - 1]
        };
        *out.get_mut(n)? = b;
        n += 1;
    }
    Some(&out[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAY: &[u8] = b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70\r\n\r\n{\"correlationId\":\"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3\",\"amount\":19.9}";

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payment_request() {
        let (r, n) = complete(PAY);
        assert_eq!(n, PAY.len());
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, b"/payments");
        assert_eq!(r.body.len(), 70);
        assert!(r.keep_alive);
    }

    #[test]
    fn pipelined_and_partial() {
        let mut two = PAY.to_vec();
        two.extend_from_slice(b"GET /payments-summary?from=a&to=b HTTP/1.1\r\n\r\n");
        let (_, n) = complete(&two);
        let (r, m) = complete(&two[n..]);
        assert_eq!(n + m, two.len());
        assert_eq!(r.query, b"from=a&to=b");
        for cut in 0..PAY.len() {
            assert!(matches!(parse(&PAY[..cut]), Parsed::Partial), "cut {cut}");
        }
    }

    #[test]
    fn connection_semantics() {
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive && r.http10);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn rejects() {
        let e = |b: &[u8]| match parse(b) {
            Parsed::Error(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e(b"garbage\r\n\r\n"), Reject::BadRequest);
        assert_eq!(
            e(b"POST /payments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Reject::LengthRequired
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            Reject::PayloadTooLarge
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Reject::BadRequest
        );
        assert_eq!(
            e(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Reject::BadRequest
        );
        let many: Vec<u8> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"A: b\r\n"[..], 40))
            .chain(std::iter::once(&b"\r\n"[..]))
            .flatten()
            .copied()
            .collect();
        assert_eq!(e(&many), Reject::HeadersTooLarge);
        let mut big = b"GET / HTTP/1.1\r\nA: ".to_vec();
        big.resize(MAX_HEADER_BYTES + 10, b'a');
        assert_eq!(e(&big), Reject::HeadersTooLarge);
    }

    #[test]
    fn query_helpers() {
        let q = b"from=2025-07-15T12%3A34%3A56.000Z&to=x";
        let raw = query_param(q, b"from").unwrap();
        let mut out = [0u8; 64];
        assert_eq!(
            percent_decode(raw, &mut out).unwrap(),
            b"2025-07-15T12:34:56.000Z"
        );
        assert_eq!(query_param(q, b"to"), Some(&b"x"[..]));
        assert_eq!(query_param(q, b"nope"), None);
        assert!(percent_decode(b"%zz", &mut out).is_none());
        assert!(percent_decode(b"%2", &mut out).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&b);
        }

        #[test]
        fn split_reads_give_the_same_requests(cuts in proptest::collection::vec(0usize..300, 0..4)) {
            // Three pipelined requests fed in arbitrary pieces: the parser must find the same
            // three requests however the bytes arrive.
            let mut all = PAY.to_vec();
            all.extend_from_slice(b"GET /payments-summary HTTP/1.1\r\n\r\n");
            all.extend_from_slice(PAY);
            let mut buf = Vec::new();
            let mut fed = 0;
            let mut found = Vec::new();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            points.push(all.len());
            points.sort_unstable();
            for p in points {
                buf.extend_from_slice(&all[fed..p.max(fed)]);
                fed = p.max(fed);
                while let Parsed::Complete(r, n) = parse(&buf) {
                    found.push((r.path.to_vec(), r.body.len()));
                    buf.drain(..n);
                }
            }
            prop_assert_eq!(found.len(), 3);
            prop_assert_eq!(&found[1].0[..], b"/payments-summary");
            prop_assert!(buf.is_empty());
        }
    }
}
