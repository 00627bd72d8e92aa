//! The idle keep-alive connections of one processor client on one core. Servers close a
//! connection idle past their keep-alive timeout (60-130 s for real ones); a call written on
//! such a connection is lost with an unknown outcome (a lookup, a pinned payment, a breaker
//! failure) although nothing was sent to the processor. So a connection is discarded before
//! reuse once its server's advertised `Keep-Alive: timeout=` is (nearly) up, and one idle for
//! [`CHECK_AFTER`] or more is first peeked at ([`rinha_sys::peek`]): one non-blocking syscall,
//! only for connections that sat idle, never under steady load.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rinha_sys::peek::{idle_state, Idle};

/// A connection idle this long is peeked at before reuse (a server's close within this
/// window is left to the call's own error path: no server times out that fast).
pub const CHECK_AFTER: Duration = Duration::from_millis(100);
/// How much earlier than an advertised keep-alive timeout a connection is given up: the
/// server's clock started when it sent its answer, and a request must arrive before it ends.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// One idle connection.
#[derive(Debug)]
struct Parked {
    stream: TcpStream,
    since: Instant,
    /// Idle this long, it is given up without a look.
    expires_after: Option<Duration>,
}

/// Idle connections, the most recently used first out.
#[derive(Debug)]
pub struct Pool {
    idle: RefCell<Vec<Parked>>,
    max: usize,
}

impl Pool {
    /// A pool keeping at most `max` idle connections.
    pub fn new(max: usize) -> Pool {
        Pool {
            idle: RefCell::new(Vec::new()),
            max,
        }
    }

    /// Keeps `stream` for reuse; `server_timeout` is what its last answer said of the
    /// server's keep-alive timeout.
    pub fn put(&self, stream: TcpStream, server_timeout: Option<Duration>, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max {
            idle.push(Parked {
                stream,
                since: now,
                expires_after: server_timeout.map(usable_for),
            });
        }
    }

    /// The most recently parked connection that is still open; closed, expired or out of step
    /// ones met on the way are dropped.
    pub fn take(&self, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        while let Some(parked) = idle.pop() {
            let idle_for = now.saturating_duration_since(parked.since);
            if parked.expires_after.is_some_and(|limit| idle_for >= limit) {
                continue;
            }
            if idle_for < CHECK_AFTER
                || matches!(idle_state(parked.stream.as_raw_fd()), Ok(Idle::Open))
            {
                return Some(parked.stream);
            }
            tracing::debug!(
                idle_ms = idle_for.as_millis() as u64,
                "pooled connection closed by the processor; dropped"
            );
        }
        None
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a connection may sit idle under an advertised keep-alive `timeout`.
fn usable_for(timeout: Duration) -> Duration {
    timeout.saturating_sub(TIMEOUT_MARGIN.min(timeout / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_timeout_leaves_a_margin() {
        assert_eq!(usable_for(Duration::from_secs(60)), Duration::from_secs(59));
        assert_eq!(
            usable_for(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    /// Three parked connections: one whose server closed it, one past its advertised
    /// timeout, one open: only the open one comes out, and the pool is then empty.
    fn only_open_connections_come_back(driver: &str) {
        let driver = crate::processor::test_driver(driver);
        driver
            .block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let pool = Pool::new(8);
                let t0 = Instant::now();
                let open = TcpStream::connect_addr(addr).await.unwrap();
                let (_kept, _) = listener.accept().unwrap();
                let open_port = open.local_addr().unwrap().port();
                pool.put(open, None, t0);
                let expired = TcpStream::connect_addr(addr).await.unwrap();
                let (_kept2, _) = listener.accept().unwrap();
                pool.put(expired, Some(Duration::from_secs(1)), t0);
                let closed = TcpStream::connect_addr(addr).await.unwrap();
                let (server_side, _) = listener.accept().unwrap();
                drop(server_side);
                pool.put(closed, None, t0);
                monoio::time::sleep(Duration::from_millis(20)).await;
                let later = t0 + Duration::from_secs(1);
                let got = pool.take(later).expect("the open one");
                assert_eq!(got.local_addr().unwrap().port(), open_port);
                assert!(pool.is_empty());
                assert!(pool.take(later).is_none());
            })
            .expect("runtime");
    }
    rinha_sys::both_drivers!(only_open_connections_come_back);
}
