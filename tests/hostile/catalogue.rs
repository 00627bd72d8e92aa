//! The catalogue of hostile requests for `tests/hostile.rs`: each case's bytes and what it
//! must end with (a status, kept or closed, or a silent close), and the raw exchange that
//! sends one case on a fresh unix-socket connection and reads how it ended.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use uuid::Uuid;

use crate::common::Instance;

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A response with this status; `closed` says whether the server closed afterwards.
    Status { code: u16, closed: bool },
    /// The server closed without answering.
    Closed,
}

/// What a case may end with.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// This status, then the server closes the connection.
    CloseWith(u16),
    /// This status, and the connection stays usable.
    KeepWith(u16),
    /// One of these statuses (the first response); what follows does not matter.
    AnyOf(&'static [u16]),
    /// No answer, a clean close (the request never completed).
    SilentClose,
}

impl Want {
    pub fn accepts(self, end: End) -> bool {
        match (self, end) {
            (Want::CloseWith(w), End::Status { code, closed }) => code == w && closed,
            (Want::KeepWith(w), End::Status { code, closed }) => code == w && !closed,
            (Want::AnyOf(ws), End::Status { code, .. }) => ws.contains(&code),
            (Want::SilentClose, End::Closed) => true,
            _ => false,
        }
    }
}

/// Sends `raw` on a fresh connection (half-closing the write side if `shut`), reads the first
/// response if any, then whether the server closed the connection.
pub fn exchange(inst: &Instance, raw: &[u8], shut: bool) -> End {
    let mut s = UnixStream::connect(&inst.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A server that answers and closes early may reset the rest of a large write: fine.
    let _ = s.write_all(raw);
    if shut {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            break end + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) if got.is_empty() => return End::Closed,
            Ok(0) => panic!("closed mid-response: {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let code: u16 = head[9..12].parse().expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    while got.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
            other => panic!("body cut short: {other:?}"),
        }
    }
    // Closed: EOF (or a reset) once the rest of the input was discarded. Open: a read that
    // times out.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(_) => continue, // further answers to the bytes after the first request
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    End::Status { code, closed }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `POST /payments` with `body` and a correct `Content-Length`.
pub fn post(body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /payments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `POST /payments` with `body` and the given header lines (CRLF-terminated) instead of a
/// correct length.
pub fn post_with(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST /payments HTTP/1.1\r\nHost: t\r\n{headers}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// The catalogue: (name, bytes, half-close after sending, what must happen).
pub fn catalogue() -> Vec<(&'static str, Vec<u8>, bool, Want)> {
    let id = Uuid::new_v4();
    let good = format!(r#"{{"correlationId":"{id}","amount":19.90}}"#).into_bytes();
    let with_amount = |a: &str| format!(r#"{{"correlationId":"{id}","amount":{a}}}"#).into_bytes();
    let with_id = |i: &str| format!(r#"{{"correlationId":{i},"amount":1}}"#).into_bytes();
    let bad = |body: Vec<u8>| post(&body);
    let mut huge_head = b"GET /payments-summary HTTP/1.1\r\nX-Big: ".to_vec();
    huge_head.resize(16 * 1024, b'a');
    huge_head.extend_from_slice(b"\r\n\r\n");
    let mut many_headers = b"GET /payments-summary HTTP/1.1\r\n".to_vec();
    for i in 0..64 {
        many_headers.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"\r\n");
    let mut big_body = br#"{"correlationId":""#.to_vec();
    big_body.resize(5000, b'a');
    let mut bad_utf8 = format!(r#"{{"correlationId":"{id}","amount":1,"x":""#).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}");
    let mut bad_utf8_id = br#"{"correlationId":""#.to_vec();
    bad_utf8_id.extend_from_slice(b"\xc3\x28");
    bad_utf8_id.extend_from_slice(&id.to_string().as_bytes()[2..]);
    bad_utf8_id.extend_from_slice(br#"","amount":1}"#);
    // Within the 4 KiB body limit, far past serde_json's recursion limit (128).
    let deep = format!("{}{}", "[".repeat(2_000), "]".repeat(2_000)).into_bytes();
    use Want::*;
    vec![
        // Truncated: the head never ends, or the body never arrives, and the client leaves.
        ("truncated head", b"POST /paym".to_vec(), true, SilentClose),
        (
            "truncated body",
            post_with("Content-Length: 60\r\n", &good[..20]),
            true,
            SilentClose,
        ),
        ("empty then close", Vec::new(), true, SilentClose),
        // Oversized.
        ("head over 8 KiB", huge_head, false, CloseWith(431)),
        ("64 headers", many_headers, false, CloseWith(431)),
        (
            "declared body over 4 KiB",
            post_with("Content-Length: 100000\r\n", b""),
            false,
            CloseWith(413),
        ),
        ("sent body over 4 KiB", bad(big_body), false, CloseWith(413)),
        // Content-Length lies.
        (
            "length shorter than body",
            post_with("Content-Length: 10\r\n", &good),
            false,
            AnyOf(&[400]),
        ),
        (
            "length longer than body",
            post_with("Content-Length: 200\r\n", &good),
            false,
            CloseWith(408),
        ),
        (
            "negative length",
            post_with("Content-Length: -5\r\n", &good),
            false,
            CloseWith(400),
        ),
        (
            "two different lengths",
            post_with(
                &format!("Content-Length: {}\r\nContent-Length: 3\r\n", good.len()),
                &good,
            ),
            false,
            CloseWith(400),
        ),
        (
            "non-numeric length",
            post_with("Content-Length: 4x\r\n", &good),
            false,
            CloseWith(400),
        ),
        (
            "length 2^64",
            post_with("Content-Length: 18446744073709551616\r\n", &good),
            false,
            CloseWith(400),
        ),
        (
            "chunked",
            post_with("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            false,
            CloseWith(411),
        ),
        // Bytes that are not HTTP, or not UTF-8.
        (
            "binary garbage",
            b"\x00\x01\x02\r\n\r\n".to_vec(),
            false,
            CloseWith(400),
        ),
        (
            "bad UTF-8 in path",
            b"GET /payments-summ\xffary HTTP/1.1\r\n\r\n".to_vec(),
            false,
            AnyOf(&[400, 404]),
        ),
        (
            "bad UTF-8 in a header",
            b"GET /payments-summary HTTP/1.1\r\nX: \xff\xfe\r\n\r\n".to_vec(),
            false,
            AnyOf(&[200, 400]),
        ),
        ("bad UTF-8 in body", bad(bad_utf8), false, KeepWith(400)),
        (
            "bad UTF-8 in the id",
            bad(bad_utf8_id),
            false,
            KeepWith(400),
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            false,
            AnyOf(&[400, 404, 405]),
        ),
        (
            "HTTP/9",
            b"GET / HTTP/9.9\r\n\r\n".to_vec(),
            false,
            CloseWith(400),
        ),
        // Bad JSON and wrong shapes.
        ("empty body", bad(Vec::new()), false, KeepWith(400)),
        (
            "cut JSON",
            bad(good[..good.len() - 3].to_vec()),
            false,
            KeepWith(400),
        ),
        ("not JSON", bad(b"hello".to_vec()), false, KeepWith(400)),
        ("JSON array", bad(b"[]".to_vec()), false, KeepWith(400)),
        ("JSON null", bad(b"null".to_vec()), false, KeepWith(400)),
        ("2,000 nested arrays", bad(deep), false, KeepWith(400)),
        (
            "trailing garbage",
            bad([&good[..], b"}}"].concat()),
            false,
            KeepWith(400),
        ),
        (
            "amount as string",
            bad(with_amount(r#""19.90""#)),
            false,
            KeepWith(400),
        ),
        (
            "amount true",
            bad(with_amount("true")),
            false,
            KeepWith(400),
        ),
        (
            "amount null",
            bad(with_amount("null")),
            false,
            KeepWith(400),
        ),
        (
            "amount object",
            bad(with_amount("{}")),
            false,
            KeepWith(400),
        ),
        ("id as number", bad(with_id("123")), false, KeepWith(400)),
        ("id as array", bad(with_id("[]")), false, KeepWith(400)),
        // Numbers.
        (
            "amount 1e30",
            bad(with_amount("1e30")),
            false,
            KeepWith(400),
        ),
        (
            "amount 400 digits",
            bad(with_amount(&"9".repeat(400))),
            false,
            KeepWith(400),
        ),
        (
            "amount 1e999999999",
            bad(with_amount("1e999999999")),
            false,
            KeepWith(400),
        ),
        ("amount NaN", bad(with_amount("NaN")), false, KeepWith(400)),
        (
            "amount Infinity",
            bad(with_amount("Infinity")),
            false,
            KeepWith(400),
        ),
        (
            "amount -Infinity",
            bad(with_amount("-Infinity")),
            false,
            KeepWith(400),
        ),
        (
            "amount negative",
            bad(with_amount("-5")),
            false,
            KeepWith(400),
        ),
        ("amount zero", bad(with_amount("0")), false, KeepWith(400)),
        ("amount -0", bad(with_amount("-0.0")), false, KeepWith(400)),
        (
            "amount rounds to zero",
            bad(with_amount("0.004")),
            false,
            KeepWith(400),
        ),
        ("amount hex", bad(with_amount("0x10")), false, KeepWith(400)),
        (
            "amount leading +",
            bad(with_amount("+1")),
            false,
            KeepWith(400),
        ),
        // Keys.
        (
            "duplicate amount",
            bad(format!(r#"{{"correlationId":"{id}","amount":1,"amount":2}}"#).into_bytes()),
            false,
            KeepWith(400),
        ),
        (
            "duplicate id",
            bad(format!(
                r#"{{"correlationId":"{id}","correlationId":"{}","amount":1}}"#,
                Uuid::new_v4()
            )
            .into_bytes()),
            false,
            KeepWith(400),
        ),
        (
            "missing amount",
            bad(format!(r#"{{"correlationId":"{id}"}}"#).into_bytes()),
            false,
            KeepWith(400),
        ),
        (
            "missing id",
            bad(br#"{"amount":1}"#.to_vec()),
            false,
            KeepWith(400),
        ),
        ("empty object", bad(b"{}".to_vec()), false, KeepWith(400)),
        // Ids that are not UUIDs.
        ("id empty", bad(with_id(r#""""#)), false, KeepWith(400)),
        ("id word", bad(with_id(r#""nope""#)), false, KeepWith(400)),
        (
            "id 36 non-hex",
            bad(with_id(r#""zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz""#)),
            false,
            KeepWith(400),
        ),
        (
            "id too long",
            bad(with_id(&format!(r#""{id}0""#))),
            false,
            KeepWith(400),
        ),
    ]
}
