//! The HTTP surface of a real `rinha` process: statuses for every bad input (and no
//! summary change), keep-alive, pipelining, HTTP/1.0, and hostile bytes.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use uuid::Uuid;

fn status_of(inst: &Instance, raw: &[u8]) -> (u16, bool) {
    let mut s = UnixStream::connect(&inst.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let (status, _) = read_response(&mut s);
    // Whether the server closed the connection afterwards (an open one just times out).
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 1];
    let closed = matches!(s.read(&mut b), Ok(0));
    (status, closed)
}

fn bad_inputs(driver: &str) {
    let solo = Solo::start(driver, &[("PURGE_TOKEN", "s3cret")]);
    let (inst, procs) = (&solo.inst, &solo.procs);
    let id = Uuid::new_v4();
    let body = |b: &str| {
        format!(
            "POST /payments HTTP/1.1\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .into_bytes()
    };
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (body("{}"), 400),
        (body("not json"), 400),
        (body(r#"{"correlationId":"nope","amount":1}"#), 400),
        (
            body(&format!(r#"{{"correlationId":"{id}","amount":0}}"#)),
            400,
        ),
        (
            body(&format!(r#"{{"correlationId":"{id}","amount":-5}}"#)),
            400,
        ),
        (
            body(&format!(r#"{{"correlationId":"{id}","amount":"5"}}"#)),
            400,
        ),
        (
            body(&format!(r#"{{"correlationId":"{id}","amount":1e30}}"#)),
            400,
        ),
        (body(&format!(r#"{{"correlationId":"{id}"}}"#)), 400),
        (
            b"GET /payments-summary?from=yesterday&to=today HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"GET /payments HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"DELETE /payments-summary HTTP/1.1\r\n\r\n".to_vec(), 405),
        (
            b"POST /purge-payments HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            401,
        ),
        (
            b"POST /payments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            411,
        ),
        (
            b"POST /payments HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec(),
            413,
        ),
        (b"\x00\x01garbage\r\n\r\n".to_vec(), 400),
    ];
    for (raw, want) in &cases {
        let (got, _) = status_of(inst, raw);
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(raw));
    }
    let mut many = b"GET /payments-summary HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(status_of(inst, &many).0, 431);
    let mut huge = b"GET /payments-summary HTTP/1.1\r\nX: ".to_vec();
    huge.resize(20_000, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status_of(inst, &huge).0, 431);
    // Malformed requests close the connection.
    assert!(status_of(inst, b"BROKEN\r\n\r\n").1);
    // Nothing was queued by any of it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(inst.summary(""), ((0, 0), (0, 0)));
    assert_eq!(procs.counts(), (0, 0));
    // The token opens the purge.
    let (s, _) = request(
        &inst.socket,
        "POST /purge-payments HTTP/1.1\r\nX-Purge-Token: s3cret\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(s, 200);
    // Hostile bytes in many shapes never kill it.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200 {
        let mut junk = Vec::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        if let Ok(mut s) = UnixStream::connect(&inst.socket) {
            let _ = s.write_all(&junk);
        }
    }
    assert_eq!(inst.get("/payments-summary").0, 200);
}

both_drivers!(bad_inputs);

fn keep_alive_pipelining_and_http10(driver: &str) {
    for send in ["direct", "runtime"] {
        pipelining_with(driver, send);
    }
}

/// The rules of `keep_alive_pipelining_and_http10` with `RESPONSE_SEND=send`.
fn pipelining_with(driver: &str, send: &str) {
    let solo = Solo::start(driver, &[("RESPONSE_SEND", send)]);
    let (inst, procs) = (&solo.inst, &solo.procs);
    let mut s = UnixStream::connect(&inst.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Ten requests in one write, split across two writes mid-request: answered in order.
    let mut all = Vec::new();
    for i in 0..10 {
        if i == 5 {
            all.extend_from_slice(b"GET /nope HTTP/1.1\r\n\r\n");
        }
        let b = format!(r#"{{"correlationId":"{}","amount":1.005}}"#, Uuid::new_v4());
        all.extend_from_slice(
            format!(
                "POST /payments HTTP/1.1\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
            .as_bytes(),
        );
    }
    let (x, y) = all.split_at(all.len() / 2 + 3);
    s.write_all(x).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    s.write_all(y).unwrap();
    for i in 0..11 {
        let (status, _) = read_response(&mut s);
        assert_eq!(status, if i == 5 { 404 } else { 202 });
    }
    // Same connection still usable.
    s.write_all(b"GET /payments-summary HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut s = UnixStream::connect(&inst.socket).unwrap();
    s.write_all(b"GET /payments-summary HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.contains("Connection: close"));
    assert!(eventually(Duration::from_secs(5), || procs.counts() == (10, 0)));
    // 1.005 rounds half-to-even to 1.00.
    assert!(eventually(Duration::from_secs(2), || inst.summary("")
        == ((10, 1000), (0, 0))));
}

both_drivers!(keep_alive_pipelining_and_http10);

/// A client that pipelines far more answers than a socket buffer holds and reads them late
/// gets every one, whole and in order: what a direct send leaves is written by the runtime.
fn a_slow_reader_gets_every_answer_in_order(driver: &str) {
    const REQUESTS: usize = 5000;
    for send in ["direct", "runtime"] {
        let solo = Solo::start(driver, &[("RESPONSE_SEND", send)]);
        let inst = &solo.inst;
        let s = UnixStream::connect(&inst.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut writer = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..REQUESTS {
                let path = if i % 2 == 0 { "/nope" } else { "/also-nope" };
                writer
                    .write_all(format!("GET {path}?n={i} HTTP/1.1\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        // Let the answers pile up in the socket buffers before reading any.
        std::thread::sleep(Duration::from_millis(300));
        let mut reader = std::io::BufReader::new(s);
        for i in 0..REQUESTS {
            let (status, body) = read_response(&mut reader);
            assert_eq!((status, body.as_str()), (404, ""), "answer {i} ({send})");
        }
        sender.join().unwrap();
    }
}

both_drivers!(a_slow_reader_gets_every_answer_in_order);

#[test]
fn bad_configuration_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinha"))
        .env_clear()
        .env("WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WORKERS"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinha"))
        .env_clear()
        .env("PROCESSOR_DEFAULT_URL", "ftp://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
