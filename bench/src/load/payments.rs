//! Fresh `POST /payments` requests for the load generator: every request carries a new
//! `correlationId`, as the contest's users send, so the backend and the processors do their
//! full work for each one (a repeated id would only earn a 422 from the processor).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use crate::load::RequestWriter;

/// The amount of every payment (the contest's).
const AMOUNT: &str = "19.90";

/// Length of the body: a hyphenated UUID is always 36 characters.
const BODY_LEN: usize = r#"{"correlationId":"","amount":}"#.len() + 36 + AMOUNT.len();

/// Writes `POST /payments` requests with unique ids: a random v4 UUID per writer, XORed with a
/// counter in its random low bits, so ids never repeat within a writer and versions stay valid.
pub fn writer(host: &str) -> Arc<RequestWriter> {
    let base = Uuid::new_v4().as_u128();
    let next = AtomicU64::new(0);
    let head = format!(
        "POST /payments HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {BODY_LEN}\r\n\r\n"
    );
    Arc::new(move |out: &mut Vec<u8>| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        // The low 48 bits of a v4 UUID are random; the version and variant bits stay untouched.
        let id = Uuid::from_u128(base ^ u128::from(n & 0xffff_ffff_ffff));
        let mut text = Uuid::encode_buffer();
        let id = id.hyphenated().encode_lower(&mut text);
        out.extend_from_slice(head.as_bytes());
        // Writing into a Vec cannot fail.
        let _ = write!(out, r#"{{"correlationId":"{id}","amount":{AMOUNT}}}"#);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_request_is_a_valid_payment_with_a_new_id() {
        let write = writer("localhost");
        let mut ids = HashSet::new();
        for _ in 0..1000 {
            let mut out = Vec::new();
            write(&mut out);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut request = httparse::Request::new(&mut headers);
            let head = match request.parse(&out).expect("parses") {
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial => panic!("partial"),
            };
            assert_eq!(request.method, Some("POST"));
            assert_eq!(request.path, Some("/payments"));
            let body = &out[head..];
            let declared: usize = request
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("content-length");
            assert_eq!(declared, body.len());
            let json: serde_json::Value = serde_json::from_slice(body).expect("json");
            let id = json["correlationId"].as_str().expect("id");
            let uuid = Uuid::parse_str(id).expect("a uuid");
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(json["amount"].as_f64(), Some(19.9));
            assert!(ids.insert(id.to_owned()), "id {id} repeated");
        }
    }
}
