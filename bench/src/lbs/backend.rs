//! The fixed-response HTTP/1.1 backend the load balancers are compared in front of.
//!
//! It answers every request the way the backend's `POST /payments` does (`202`, empty body),
//! keep-alive and pipelining included, on a unix socket. It runs as threads of the bench
//! process (an acceptor plus one thread per connection): only the load balancer's process is
//! measured, and its cost must not depend on how fast the backend parses. It also takes
//! clients handed over by `rinha-lb` in hand-over mode, on `<name>.handoff.sock` beside its
//! socket (the name the lb derives), and serves them the same way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rinha_sys::handoff::{recv_fd, Received, ACCEPTED};

/// What every request gets.
pub const RESPONSE: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_HEADERS: usize = 32;

/// A running fixed-response backend; stopped (socket files removed) on drop.
pub struct FixedBackend {
    pub path: PathBuf,
    /// Where it takes handed-over clients.
    pub handoff_path: PathBuf,
    stopping: Arc<AtomicBool>,
    acceptors: Vec<JoinHandle<()>>,
}

/// The hand-over socket beside `path`, as `rinha-lb` derives it: `x.sock` -> `x.handoff.sock`.
pub fn handoff_path(path: &Path) -> PathBuf {
    let text = path.display().to_string();
    PathBuf::from(match text.strip_suffix(".sock") {
        Some(stem) => format!("{stem}.handoff.sock"),
        None => format!("{text}.handoff"),
    })
}

impl FixedBackend {
    pub fn start(path: &Path) -> io::Result<FixedBackend> {
        let handoff = handoff_path(path);
        for p in [path, handoff.as_path()] {
            let _ = std::fs::remove_file(p);
        }
        let listener = UnixListener::bind(path)?;
        let handoff_listener = UnixListener::bind(&handoff)?;
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
        let flag = stopping.clone();
        let handoff_acceptor = std::thread::Builder::new()
            .name("fixed-backend-handoff".into())
            .spawn(move || {
                for channel in handoff_listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(channel) = channel else { continue };
                    let Some(client) = take_handed_over(&channel) else {
                        continue;
                    };
                    let _ = std::thread::Builder::new()
                        .stack_size(128 * 1024)
                        .spawn(move || serve(client));
                }
            })?;
        Ok(FixedBackend {
            path: path.to_owned(),
            handoff_path: handoff,
            stopping,
            acceptors: vec![acceptor, handoff_acceptor],
        })
    }
}

/// Receives one client from a hand-over connection and answers that it is taken.
fn take_handed_over(channel: &UnixStream) -> Option<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let fd = loop {
        match recv_fd(channel.as_raw_fd()) {
            Ok(Received::Descriptor(fd)) => break fd,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            _ => return None,
        }
    };
    let client = TcpStream::from(fd);
    // The lb's copy was non-blocking, and the flag belongs to the socket, not the descriptor.
    client.set_nonblocking(false).ok()?;
    let _ = client.set_nodelay(true);
    (&*channel).write_all(&[ACCEPTED]).ok()?;
    Some(client)
}

impl Drop for FixedBackend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accepts.
        let _ = UnixStream::connect(&self.path);
        let _ = UnixStream::connect(&self.handoff_path);
        for acceptor in self.acceptors.drain(..) {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.handoff_path);
    }
}

/// Answers every complete request in the buffer, then writes all the answers at once.
fn serve<S: Read + Write>(mut stream: S) {
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
    fn serves_a_handed_over_client() {
        let dir = std::env::temp_dir().join(format!("fixed-backend-ho-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let backend = FixedBackend::start(&dir.join("b.sock")).unwrap();
        assert_eq!(backend.handoff_path, dir.join("b.handoff.sock"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut channel = UnixStream::connect(&backend.handoff_path).unwrap();
        rinha_sys::handoff::send_fd(channel.as_raw_fd(), accepted.as_raw_fd()).unwrap();
        let mut answer = [0u8; 1];
        channel.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], ACCEPTED);
        drop(accepted);
        client
            .write_all(&crate::load::post_payment_request("t"))
            .unwrap();
        let mut back = vec![0u8; RESPONSE.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, RESPONSE);
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
