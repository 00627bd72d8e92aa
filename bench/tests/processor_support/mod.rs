//! A raw HTTP/1.1 client for the processor's integration tests: it writes requests byte by
//! byte and parses responses with `httparse`, so the tests see exactly what goes on the wire.

#![allow(dead_code)] // each test crate uses a different part of this module

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TOKEN: (&str, &str) = ("X-Rinha-Token", "123");

/// One parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }
}

/// One keep-alive connection.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// The bytes of one request.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: processor\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        text.push_str("Content-Type: application/json\r\n");
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        self.send_raw(&request_bytes(method, path, headers, body))
            .await
            .expect("write request");
    }

    /// Reads one response; an error when the server closed or reset the connection first.
    pub async fn recv(&mut self) -> std::io::Result<Response> {
        loop {
            if let Some((response, used)) = parse(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(response);
            }
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        self.send(method, path, headers, body).await;
        self.recv().await.expect("response")
    }
}

fn parse(buffer: &[u8]) -> std::io::Result<Option<(Response, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    if buffer.len() < head + length {
        return Ok(None);
    }
    let response = Response {
        status: parsed.code.unwrap_or(0),
        headers,
        body: String::from_utf8_lossy(&buffer[head..head + length]).into_owned(),
    };
    Ok(Some((response, head + length)))
}

/// One request on a fresh connection.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    Client::connect(addr)
        .await
        .call(method, path, headers, body)
        .await
}

/// A `POST /payments` body.
pub fn payment(id: &str, amount: &str, requested_at: &str) -> String {
    format!(r#"{{"correlationId":"{id}","amount":{amount},"requestedAt":"{requested_at}"}}"#)
}

pub const AT: &str = "2025-07-15T12:34:56.000Z";

/// A fresh correlation id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `POST /payments` of `id` with amount 19.90 on a fresh connection.
pub async fn post_payment(addr: SocketAddr, id: &str) -> Response {
    post(addr, &payment(id, "19.90", AT)).await
}

/// `POST /payments` with `body` as it is.
pub async fn post(addr: SocketAddr, body: &str) -> Response {
    call(addr, "POST", "/payments", &[], body).await
}
