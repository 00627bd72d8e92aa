//! The other instances, reached over HTTP at `/internal/...` (which touch only the peer's
//! own shards): their summary of a window at a given moment, and their purge. One fresh
//! connection per call (summaries are rare: no pool), each bounded in time.

use std::io;
use std::time::{Duration, Instant};

use crate::config::Endpoint;
use crate::http::client::{exchange, ExchangeError, Response};
use crate::time::format_iso_ms;

use super::codec::parse_summary;
use super::window::{AsOf, Totals, Window};

/// Pause before asking a peer for its summary again after it refused or dropped the call.
pub const PEER_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a peer did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Connect(io::Error),
    #[error("resolves to nothing")]
    Unresolved,
    #[error("{0}")]
    Exchange(#[from] ExchangeError),
    #[error("status {0}")]
    Status(u16),
    #[error("malformed summary")]
    Malformed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Asked again until the budget was spent; `last` is the last failure.
    #[error("{last} ({tries} tries in {budget:?})")]
    GaveUp {
        last: Box<PeerError>,
        tries: u32,
        budget: Duration,
    },
}

/// `POST /internal/purge-payments`, with the purge token when one is set: the peers check
/// the same token on their internal purge (it is reachable through the layer-4 load
/// balancer like any other path), so it travels with the request.
pub fn purge_request(purge_token: Option<&str>) -> Vec<u8> {
    let token_header = purge_token.map_or(String::new(), |t| format!("X-Purge-Token: {t}\r\n"));
    format!(
        "POST /internal/purge-payments HTTP/1.1\r\nHost: peer\r\n{token_header}\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The peer's query: the window, and the moment it is taken at as wall-clock µs (`asof`).
pub fn summary_path(window: Window, as_of: AsOf) -> String {
    let mut path = format!("/internal/payments-summary?asof={}&", as_of.to_wall_us());
    if let Some(f) = window.from_us {
        path.push_str("from=");
        path.push_str(std::str::from_utf8(&format_iso_ms(f)).unwrap_or_default());
        path.push('&');
    }
    if let Some(t) = window.to_us {
        path.push_str("to=");
        path.push_str(std::str::from_utf8(&format_iso_ms(t)).unwrap_or_default());
    }
    path
}

/// A peer's summary at `path` ([`summary_path`]), asked again every [`PEER_RETRY_PAUSE`]
/// while it fails (refused: a peer restarting; dropped or malformed: a peer dying), until
/// `budget` is spent. Asking again is safe: the call reads, and `path` fixes the moment it
/// is taken at.
pub async fn summary(peer: &Endpoint, path: &str, budget: Duration) -> Result<Totals, PeerError> {
    let deadline = Instant::now() + budget;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match get(peer, path, left).await {
            Ok(body) => match parse_summary(&body) {
                Some(t) => return Ok(t),
                None => PeerError::Malformed,
            },
            Err(e) => e,
        };
        if deadline.saturating_duration_since(Instant::now()) <= PEER_RETRY_PAUSE {
            return Err(PeerError::GaveUp {
                last: Box::new(error),
                tries,
                budget,
            });
        }
        tracing::debug!(%peer, %error, "peer summary failed; asking again");
        monoio::time::sleep(PEER_RETRY_PAUSE).await;
    }
}

async fn get(peer: &Endpoint, path: &str, timeout: Duration) -> Result<Vec<u8>, PeerError> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n");
    call(peer, req.into_bytes(), timeout).await
}

/// One request to a peer on a fresh connection, bounded by `timeout`; the body of its 200.
pub async fn call(peer: &Endpoint, req: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, PeerError> {
    let call = async {
        match peer {
            Endpoint::Unix(path) => {
                let mut s = monoio::net::UnixStream::connect(path)
                    .await
                    .map_err(PeerError::Connect)?;
                ok_body(exchange(&mut s, req).await)
            }
            Endpoint::Tcp(addr) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
                    .map_err(PeerError::Connect)?
                    .next()
                    .ok_or(PeerError::Unresolved)?;
                let mut s = monoio::net::TcpStream::connect_addr(addr)
                    .await
                    .map_err(PeerError::Connect)?;
                ok_body(exchange(&mut s, req).await)
            }
        }
    };
    match monoio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Timeout(timeout)),
    }
}

fn ok_body(r: Result<Response, ExchangeError>) -> Result<Vec<u8>, PeerError> {
    let resp = r?;
    if resp.status != 200 {
        return Err(PeerError::Status(resp.status));
    }
    Ok(resp.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_paths() {
        let w = Window {
            from_us: Some(0),
            to_us: Some(1_000),
        };
        let as_of = AsOf::now();
        let wall = as_of.to_wall_us();
        let path = summary_path(w, as_of);
        let (asof, rest) = path
            .strip_prefix("/internal/payments-summary?asof=")
            .and_then(|p| p.split_once('&'))
            .expect("asof first");
        assert!((asof.parse::<i64>().unwrap() - wall).abs() < 5_000);
        assert_eq!(
            rest,
            "from=1970-01-01T00:00:00.000Z&to=1970-01-01T00:00:00.001Z"
        );
        let path = summary_path(Window::default(), as_of);
        assert!(path.ends_with('&') && !path.contains("from="));
    }
}
