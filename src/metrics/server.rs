//! The metrics listener (`METRICS_LISTEN`, TCP or a unix socket): `GET /metrics` answered
//! with the scrape's text, anything else 404, one request per connection. It runs on the
//! summary aggregator's thread, never on a core: a scrape asks every core for its sample
//! over the channel summaries already use, so the cores pay one message each per scrape and
//! nothing per request. Bound on the main thread (a bad address fails the start), served
//! from the aggregator's runtime.

use std::cell::Cell;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, UnixListener};
use rinha_sys::cap::ConnectionCap;

use crate::config::Endpoint;
use crate::http::request::{self, Method, Parsed};

use super::{text, Source};

/// A scrape's request must arrive whole, and its answer be taken, within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrape connections served at once; more are closed unanswered (a scraper makes one).
const MAX_OPEN: usize = 16;
/// The largest request read (a scrape's is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// The metrics socket, bound on the main thread.
#[derive(Debug)]
pub enum MetricsSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl MetricsSocket {
    /// Binds `endpoint` (a unix socket replaces a stale file). No `SO_REUSEPORT`: a second
    /// instance given the same address fails to start instead of splitting the scrapes.
    pub fn bind(endpoint: &Endpoint) -> io::Result<Self> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let l = std::net::TcpListener::bind(addr.as_str())?;
                l.set_nonblocking(true)?;
                Ok(MetricsSocket::Tcp(l))
            }
            Endpoint::Unix(path) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                let l = std::os::unix::net::UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(MetricsSocket::Unix(l, path.clone()))
            }
        }
    }

    /// For the start log line: the bound address (the real port when 0 was asked for).
    pub fn describe(&self) -> String {
        match self {
            MetricsSocket::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
            MetricsSocket::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// The metrics socket and the connection cap whose open count it reports.
pub type Listening = (MetricsSocket, Arc<ConnectionCap>);

/// Answers scrapes from `source` until the runtime stops; `cap` tells the open connections.
pub async fn serve<S: Source + 'static>(
    socket: MetricsSocket,
    source: Rc<S>,
    cap: Arc<ConnectionCap>,
) {
    let open = Rc::new(Cell::new(0usize));
    macro_rules! accept_loop {
        ($listener:expr) => {
            loop {
                let Ok((stream, _)) = $listener.accept().await else {
                    // EMFILE and kin: back off instead of spinning.
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if open.get() >= MAX_OPEN {
                    continue;
                }
                open.set(open.get() + 1);
                let (source, cap, open) = (source.clone(), cap.clone(), open.clone());
                monoio::spawn(async move {
                    let _ =
                        monoio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &*source, &cap)).await;
                    open.set(open.get() - 1);
                });
            }
        };
    }
    let failed = match socket {
        MetricsSocket::Tcp(l) => match TcpListener::from_std(l) {
            Ok(l) => accept_loop!(l),
            Err(e) => e,
        },
        MetricsSocket::Unix(l, _) => match UnixListener::from_std(l) {
            Ok(l) => accept_loop!(l),
            Err(e) => e,
        },
    };
    tracing::error!(error = %failed, "metrics listener failed; no metrics");
}

/// Reads one request and answers it.
async fn answer<S, T>(mut stream: T, source: &S, cap: &ConnectionCap)
where
    S: Source,
    T: AsyncReadRent + AsyncWriteRent,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let (status, body) = loop {
        if buf.len() >= MAX_REQUEST {
            break ("431 Request Header Fields Too Large", String::new());
        }
        buf.reserve(1024);
        // Into the free tail: monoio fills a whole `Vec` from its start.
        let (len, room) = (buf.len(), buf.capacity());
        let (res, b) = stream.read(buf.slice_mut(len..room)).await;
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match request::parse(&buf) {
            Parsed::Partial => continue,
            Parsed::Error(_) => break ("400 Bad Request", String::new()),
            Parsed::Complete(req, _) => {
                if req.path != b"/metrics" {
                    break ("404 Not Found", String::new());
                }
                if req.method != Method::Get {
                    break ("405 Method Not Allowed", String::new());
                }
                match source.scrape().await {
                    Some(mut scrape) => {
                        scrape.connections_open = cap.open() as u64;
                        break ("200 OK", text::write(&scrape));
                    }
                    None => break ("503 Service Unavailable", String::new()),
                }
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text::CONTENT_TYPE,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    let _ = stream.write_all(out).await;
    let _ = stream.shutdown().await;
}
