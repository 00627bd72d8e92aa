//! The summary router: one thread of its own that answers summaries and purges across
//! this instance's shards (one per core, reached by flume channels) and the peers
//! (reached over HTTP at `/internal/...`, which touch only the peer's own shards).
//!
//! A summary is all or nothing: a shard or a peer that does not answer within the bound
//! makes it fail with a 5XX, never answer half the data. Each shard applies the in-flight
//! rule of `store.rs` before answering (it may wait up to [`SHARD_WAIT`]), so the bound on
//! a peer ([`crate::config::Config::peer_timeout`]) is longer than that wait. Within that
//! bound a peer that refuses or drops the call is asked again every [`PEER_RETRY_PAUSE`]: a
//! restart shorter than the bound costs a slower summary, not a failed one.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rinha_sys::driver::Driver;

use crate::config::Endpoint;
use crate::core::Core;
use crate::http::client::{exchange, ExchangeError};
use crate::payment::write_amount;
use crate::store::{AsOf, Totals, Window};
use crate::time::format_iso_ms;

/// The longest a shard waits for in-flight payments before answering.
pub const SHARD_WAIT: Duration = Duration::from_millis(500);
/// Pause before asking a peer for its summary again after it refused or dropped the call.
pub const PEER_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A request from a core to the router.
#[derive(Debug)]
pub enum RouterCmd {
    Summary {
        window: Window,
        as_of: AsOf,
        include_peers: bool,
        reply: flume::Sender<Result<Totals, SummaryError>>,
    },
    Purge {
        include_peers: bool,
        reply: flume::Sender<Result<(), SummaryError>>,
    },
}

/// A request from the router to one core's shard.
#[derive(Debug)]
pub enum ShardCmd {
    Summary {
        window: Window,
        as_of: AsOf,
        reply: flume::Sender<Totals>,
    },
    Purge {
        reply: flume::Sender<()>,
    },
}

/// Why a summary or purge could not be answered whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SummaryError {
    #[error("peer {0}: {1}")]
    Peer(String, String),
    #[error("a shard did not answer")]
    Shard,
    #[error("router is gone")]
    Router,
}

/// A core's handle on the router.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    tx: flume::Sender<RouterCmd>,
}

impl RouterHandle {
    /// A handle whose router is gone: for tests of one core alone.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        RouterHandle {
            tx: flume::unbounded().0,
        }
    }

    /// The summary of `window` as of the moment the request reached this instance.
    pub async fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        include_peers: bool,
    ) -> Result<Totals, SummaryError> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send(RouterCmd::Summary {
                window,
                as_of,
                include_peers,
                reply,
            })
            .map_err(|_| SummaryError::Router)?;
        rx.recv_async().await.map_err(|_| SummaryError::Router)?
    }

    pub async fn purge(&self, include_peers: bool) -> Result<(), SummaryError> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send(RouterCmd::Purge {
                include_peers,
                reply,
            })
            .map_err(|_| SummaryError::Router)?;
        rx.recv_async().await.map_err(|_| SummaryError::Router)?
    }
}

/// Starts the router thread; returns the handle cores clone.
pub fn spawn(
    shards: Vec<flume::Sender<ShardCmd>>,
    peers: Vec<Endpoint>,
    peer_timeout: Duration,
    driver: Driver,
    purge_token: Option<String>,
) -> std::io::Result<RouterHandle> {
    // The peers check the same token on their internal purge (it is reachable through the
    // layer-4 load balancer like any other path), so it travels with the request.
    let token_header = purge_token.map_or(String::new(), |t| format!("X-Purge-Token: {t}\r\n"));
    let purge_request = format!(
        "POST /internal/purge-payments HTTP/1.1\r\nHost: peer\r\n{token_header}\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let (tx, rx) = flume::unbounded::<RouterCmd>();
    std::thread::Builder::new()
        .name("rinha-router".into())
        .spawn(move || {
            let ctx = Rc::new(Router {
                shards,
                peers,
                peer_timeout,
                purge_request,
            });
            let run = async move {
                while let Ok(cmd) = rx.recv_async().await {
                    let ctx = ctx.clone();
                    monoio::spawn(async move { ctx.handle(cmd).await });
                }
            };
            if let Err(e) = driver.block_on(run) {
                tracing::error!(error = %e, "router runtime failed");
            }
        })?;
    Ok(RouterHandle { tx })
}

struct Router {
    shards: Vec<flume::Sender<ShardCmd>>,
    peers: Vec<Endpoint>,
    peer_timeout: Duration,
    /// `POST /internal/purge-payments`, with the purge token when one is set.
    purge_request: Vec<u8>,
}

impl Router {
    async fn handle(&self, cmd: RouterCmd) {
        match cmd {
            RouterCmd::Summary {
                window,
                as_of,
                include_peers,
                reply,
            } => {
                let _ = reply.send(self.summary(window, as_of, include_peers).await);
            }
            RouterCmd::Purge {
                include_peers,
                reply,
            } => {
                let _ = reply.send(self.purge(include_peers).await);
            }
        }
    }

    async fn summary(
        &self,
        window: Window,
        as_of: AsOf,
        include_peers: bool,
    ) -> Result<Totals, SummaryError> {
        // Ask everyone first, then collect: the shards' waits and the peers' run together.
        let mut waits = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, rx) = flume::bounded(1);
            shard
                .send(ShardCmd::Summary {
                    window,
                    as_of,
                    reply,
                })
                .map_err(|_| SummaryError::Shard)?;
            waits.push(rx);
        }
        let mut peer_calls = Vec::new();
        if include_peers {
            let path = summary_path(window, as_of);
            for peer in &self.peers {
                let peer = peer.clone();
                let path = path.clone();
                let timeout = self.peer_timeout;
                peer_calls.push(monoio::spawn(async move {
                    let answer = peer_summary(&peer, &path, timeout).await;
                    (peer, answer)
                }));
            }
        }
        let mut totals = Totals::default();
        let bound = self
            .peer_timeout
            .max(SHARD_WAIT + Duration::from_millis(200));
        for rx in waits {
            match monoio::time::timeout(bound, rx.recv_async()).await {
                Ok(Ok(t)) => totals.add(&t),
                _ => return Err(SummaryError::Shard),
            }
        }
        for call in peer_calls {
            let (peer, answer) = call.await;
            let t = answer.map_err(|e| SummaryError::Peer(peer.to_string(), e))?;
            totals.add(&t);
        }
        Ok(totals)
    }

    async fn purge(&self, include_peers: bool) -> Result<(), SummaryError> {
        for shard in &self.shards {
            let (reply, rx) = flume::bounded(1);
            shard
                .send(ShardCmd::Purge { reply })
                .map_err(|_| SummaryError::Shard)?;
            match monoio::time::timeout(self.peer_timeout, rx.recv_async()).await {
                Ok(Ok(())) => {}
                _ => return Err(SummaryError::Shard),
            }
        }
        if include_peers {
            for peer in &self.peers {
                peer_call(peer, self.purge_request.clone(), self.peer_timeout)
                    .await
                    .map_err(|e| SummaryError::Peer(peer.to_string(), e))?;
            }
        }
        Ok(())
    }
}

/// Serves the router's requests to one core's shard (runs on that core).
pub async fn serve_shard(core: Rc<Core>, rx: flume::Receiver<ShardCmd>) {
    while let Ok(cmd) = rx.recv_async().await {
        match cmd {
            ShardCmd::Summary {
                window,
                as_of,
                reply,
            } => {
                let core = core.clone();
                monoio::spawn(async move {
                    let totals = core.shard.summary(window, as_of, SHARD_WAIT).await;
                    let _ = reply.send(totals);
                });
            }
            ShardCmd::Purge { reply } => {
                // Not acknowledged when the journal cannot record it: what is on file would
                // come back at the next start (the router then answers 503).
                if core.purge().await {
                    let _ = reply.send(());
                }
            }
        }
    }
}

/// The peer's query: the window, and the moment it is taken at as wall-clock µs (`asof`).
fn summary_path(window: Window, as_of: AsOf) -> String {
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

/// A peer's summary, asked again every [`PEER_RETRY_PAUSE`] while it fails (refused: a peer
/// restarting; dropped or malformed: a peer dying), until `budget` is spent. Asking again is
/// safe: the call reads, and `path` fixes the moment it is taken at.
async fn peer_summary(peer: &Endpoint, path: &str, budget: Duration) -> Result<Totals, String> {
    let deadline = Instant::now() + budget;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match peer_get(peer, path, left).await {
            Ok(body) => match parse_summary(&body) {
                Some(t) => return Ok(t),
                None => "malformed summary".to_owned(),
            },
            Err(e) => e,
        };
        if deadline.saturating_duration_since(Instant::now()) <= PEER_RETRY_PAUSE {
            return Err(format!("{error} ({tries} tries in {budget:?})"));
        }
        tracing::debug!(%peer, %error, "peer summary failed; asking again");
        monoio::time::sleep(PEER_RETRY_PAUSE).await;
    }
}

async fn peer_get(peer: &Endpoint, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n");
    peer_call(peer, req.into_bytes(), timeout).await
}

/// One request to a peer on a fresh connection (summaries are rare: no pool), bounded.
async fn peer_call(peer: &Endpoint, req: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
    let call = async {
        match peer {
            Endpoint::Unix(path) => {
                let mut s = monoio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| e.to_string())?;
                ok_body(exchange(&mut s, req).await)
            }
            Endpoint::Tcp(addr) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
                    .map_err(|e| e.to_string())?
                    .next()
                    .ok_or("resolves to nothing")?;
                let mut s = monoio::net::TcpStream::connect_addr(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                ok_body(exchange(&mut s, req).await)
            }
        }
    };
    match monoio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn ok_body(r: Result<crate::http::client::Response, ExchangeError>) -> Result<Vec<u8>, String> {
    let resp = r.map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("status {}", resp.status));
    }
    Ok(resp.body)
}

/// Writes the summary JSON of RINHA-2025.md section 2.
pub fn write_summary(out: &mut Vec<u8>, t: &Totals) {
    out.extend_from_slice(b"{\"default\":{\"totalRequests\":");
    out.extend_from_slice(t.requests[0].to_string().as_bytes());
    out.extend_from_slice(b",\"totalAmount\":");
    write_amount(out, t.cents[0]);
    out.extend_from_slice(b"},\"fallback\":{\"totalRequests\":");
    out.extend_from_slice(t.requests[1].to_string().as_bytes());
    out.extend_from_slice(b",\"totalAmount\":");
    write_amount(out, t.cents[1]);
    out.extend_from_slice(b"}}");
}

/// Reads a peer's summary back into exact cents.
pub fn parse_summary(body: &[u8]) -> Option<Totals> {
    #[derive(serde::Deserialize)]
    struct Side<'a> {
        #[serde(rename = "totalRequests")]
        requests: u64,
        #[serde(rename = "totalAmount", borrow)]
        amount: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Summary<'a> {
        #[serde(borrow)]
        default: Side<'a>,
        #[serde(borrow)]
        fallback: Side<'a>,
    }
    let s: Summary<'_> = serde_json::from_slice(body).ok()?;
    Some(Totals {
        requests: [s.default.requests, s.fallback.requests],
        cents: [
            fixed_cents(s.default.amount.get())?,
            fixed_cents(s.fallback.amount.get())?,
        ],
    })
}

/// `123`, `123.4` or `123.45` -> cents, exactly.
fn fixed_cents(text: &str) -> Option<u128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()? * if frac.len() == 1 { 10 } else { 1 }
    };
    int.checked_mul(100)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_round_trip() {
        let t = Totals {
            requests: [3, 1],
            cents: [5970, 1990],
        };
        let mut out = Vec::new();
        write_summary(&mut out, &t);
        assert_eq!(
            out,
            br#"{"default":{"totalRequests":3,"totalAmount":59.70},"fallback":{"totalRequests":1,"totalAmount":19.90}}"#
        );
        assert_eq!(parse_summary(&out), Some(t));
        assert_eq!(fixed_cents("0"), Some(0));
        assert_eq!(fixed_cents("1.5"), Some(150));
        assert_eq!(fixed_cents("1.555"), None);
        assert_eq!(parse_summary(b"{}"), None);
    }

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
