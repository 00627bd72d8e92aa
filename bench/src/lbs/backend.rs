//! The fixed-response HTTP/1.1 backend the load balancers are compared in front of.
//!
//! It answers every request the way the backend's `POST /payments` does (`202`, empty body),
//! keep-alive and pipelining included, on a unix socket. It runs as threads of the bench
//! process (an acceptor plus one thread per connection): only the load balancer's process is
//! measured, and its cost must not depend on how fast the backend parses.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What every request gets.
pub const RESPONSE: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_HEADERS: usize = 32;

/// A running fixed-response backend; stopped (socket file removed) on drop.
pub struct FixedBackend {
    pub path: PathBuf,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FixedBackend {
    pub fn start(path: &Path) -> io::Result<FixedBackend> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let acceptor = std::thread::Builder::new()
            .name("fixed-backend".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // A failed spawn drops (closes) the connection; the bench counts the error.
                    let _ = std::thread::Builder::new()
                        .stack_size(128 * 1024)
                        .spawn(move || serve(stream));
                }
            })?;
        Ok(FixedBackend {
            path: path.to_owned(),
            stopping,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for FixedBackend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the blocking accept
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers every complete request in the buffer, then writes all the answers at once.
fn serve(mut stream: UnixStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        let mut close = false;
        loop {
            match next_request(&buf[consumed..]) {
                Ok(Some(len)) => {
                    consumed += len;
                    out.extend_from_slice(RESPONSE);
                }
                Ok(None) => break,
                Err(()) => {
                    out.extend_from_slice(BAD_REQUEST);
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
    }
}

/// Length of the first complete request in `bytes` (head and `Content-Length` body), `None`
/// when more bytes are needed, `Err` when it is malformed.
fn next_request(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head = match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut body = 0usize;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(())?;
        }
    }
    Ok((bytes.len() >= head + body).then_some(head + body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pipelined_requests_in_one_write() {
        let dir = std::env::temp_dir().join(format!("fixed-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let backend = FixedBackend::start(&dir.join("b.sock")).unwrap();
        let mut client = UnixStream::connect(&backend.path).unwrap();
        let request = crate::load::post_payment_request("t");
        let mut three = request.repeat(3);
        // Split the third request across two writes.
        let tail = three.split_off(three.len() - 10);
        client.write_all(&three).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        client.write_all(&tail).unwrap();
        let mut back = vec![0u8; RESPONSE.len() * 3];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, RESPONSE.repeat(3));
        drop(backend);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn request_lengths() {
        assert_eq!(next_request(b"GET / HTTP/1.1\r\n\r\n"), Ok(Some(18)));
        assert_eq!(next_request(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(
            next_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Ok(None)
        );
        assert!(next_request(b"\x00\x01 nonsense\r\n\r\n").is_err());
    }
}
