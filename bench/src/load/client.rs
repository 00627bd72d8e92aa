//! The client side of one load connection: a keep-alive stream (TCP or unix) and one
//! request/response exchange, reading exactly one response (head and `Content-Length` body).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::Target;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Header slots for parsing a response head.
const MAX_HEADERS: usize = 32;

pub(super) enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connection {
    pub(super) fn open(target: &Target) -> io::Result<Connection> {
        match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                Ok(Connection::Tcp(stream))
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                Ok(Connection::Unix(stream))
            }
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(stream) => stream.read(buf),
            Connection::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(stream) => stream.write(buf),
            Connection::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) struct Exchange {
    pub(super) status: u16,
    pub(super) keep_alive: bool,
}

/// Sends `request` and reads one whole response (head and `Content-Length` body).
pub(super) fn exchange(
    stream: &mut Connection,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<Exchange> {
    stream.write_all(request)?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(invalid("response head too large")),
            Err(_) => return Err(invalid("malformed response")),
        };
        let status = response.code.unwrap_or(0);
        let mut body_len = 0usize;
        let mut keep_alive = response.version == Some(1);
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                body_len = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| invalid("bad Content-Length"))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked responses are not supported"));
            } else if header.name.eq_ignore_ascii_case("connection") {
                keep_alive = !header.value.eq_ignore_ascii_case(b"close");
            }
        }
        let mut have = buf.len() - head_len;
        while have < body_len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
        }
        return Ok(Exchange { status, keep_alive });
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
