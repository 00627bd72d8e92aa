//! The backend set of one worker: round-robin over the backends, skipping the ones marked down.
//!
//! A backend whose connect fails (refused, missing socket, timeout) is marked down and not
//! tried again until its backoff runs out (100 ms, doubling per consecutive failure, at most
//! 2 s); the client that hit it is handed to the next backend. A successful connect clears
//! the mark. The set belongs to one worker runtime (`Cell`, no locks); each worker learns a
//! backend's failure on its own, which costs one refused connect per worker.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use monoio::net::{TcpStream, UnixStream};

use crate::config::BackendAddr;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A connected backend stream.
pub enum BackendStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Set while the backend is down: not tried before this instant.
    retry_at: Option<Instant>,
    /// Consecutive failed connects; sizes the next backoff.
    failures: u32,
}

struct Backend {
    addr: BackendAddr,
    health: Cell<Health>,
}

/// The backends one worker balances over.
pub struct BackendSet {
    backends: Vec<Backend>,
    next: Cell<usize>,
    connect_timeout: Duration,
}

/// Backoff after `failures` consecutive failed connects (`failures >= 1`).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

impl BackendSet {
    /// A set over `addrs`; `first` staggers the round-robin start between workers.
    pub fn new(addrs: &[BackendAddr], first: usize, connect_timeout: Duration) -> Self {
        let backends = addrs
            .iter()
            .map(|addr| Backend {
                addr: addr.clone(),
                health: Cell::new(Health::default()),
            })
            .collect::<Vec<_>>();
        let next = if backends.is_empty() {
            0
        } else {
            first % backends.len()
        };
        BackendSet {
            backends,
            next: Cell::new(next),
            connect_timeout,
        }
    }

    /// Index of the backend the next client starts at, advancing the round-robin.
    fn take_turn(&self) -> usize {
        let start = self.next.get();
        self.next.set((start + 1) % self.backends.len().max(1));
        start
    }

    /// Whether backend `index` may be tried at `now`.
    pub fn is_up(&self, index: usize, now: Instant) -> bool {
        match self.backends[index].health.get().retry_at {
            None => true,
            Some(retry_at) => now >= retry_at,
        }
    }

    fn mark_down(&self, index: usize, error: &io::Error) {
        let backend = &self.backends[index];
        let mut health = backend.health.get();
        let was_up = health.retry_at.is_none();
        health.failures = health.failures.saturating_add(1);
        let wait = backoff(health.failures);
        health.retry_at = Some(Instant::now() + wait);
        backend.health.set(health);
        if was_up {
            tracing::warn!(backend = %backend.addr, %error, retry_in_ms = wait.as_millis() as u64, "backend down");
        } else {
            tracing::debug!(backend = %backend.addr, %error, retry_in_ms = wait.as_millis() as u64, "backend still down");
        }
    }

    fn mark_up(&self, index: usize) {
        let backend = &self.backends[index];
        if backend.health.get().retry_at.is_some() {
            tracing::info!(backend = %backend.addr, "backend up again");
        }
        backend.health.set(Health::default());
    }

    /// Connects to the next backend in round-robin order, skipping down ones and marking the
    /// ones that fail. `None` when every backend is down or failed.
    pub async fn connect(&self) -> Option<BackendStream> {
        self.offer(|stream| std::future::ready(Ok(stream))).await
    }

    /// Like [`BackendSet::connect`], and each backend that connects is then given to `offer`:
    /// an error from it marks that backend down as a failed connect does, and the next one is
    /// tried (hand-over mode: a backend that refuses the client). `None` when every backend
    /// is down or failed.
    pub async fn offer<T, F, Fut>(&self, mut offer: F) -> Option<T>
    where
        F: FnMut(BackendStream) -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        let count = self.backends.len();
        let start = self.take_turn();
        let now = Instant::now();
        for step in 0..count {
            let index = (start + step) % count;
            if !self.is_up(index, now) {
                continue;
            }
            let offered = match self.connect_one(&self.backends[index].addr).await {
                Ok(stream) => offer(stream).await,
                Err(error) => Err(error),
            };
            match offered {
                Ok(taken) => {
                    self.mark_up(index);
                    return Some(taken);
                }
                Err(error) => self.mark_down(index, &error),
            }
        }
        None
    }

    /// How long a connect (and, in hand-over mode, the backend's answer) may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    async fn connect_one(&self, addr: &BackendAddr) -> io::Result<BackendStream> {
        let attempt = async {
            match addr {
                BackendAddr::Unix(path) => UnixStream::connect(path).await.map(BackendStream::Unix),
                BackendAddr::Tcp(addr) => {
                    let stream = TcpStream::connect_addr(*addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(BackendStream::Tcp(stream))
                }
            }
        };
        match monoio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend connect timed out",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn turns_rotate_from_the_worker_offset() {
        let addrs = vec![
            BackendAddr::Unix("/a".into()),
            BackendAddr::Unix("/b".into()),
            BackendAddr::Unix("/c".into()),
        ];
        let set = BackendSet::new(&addrs, 4, Duration::from_millis(10));
        let turns: Vec<usize> = (0..4).map(|_| set.take_turn()).collect();
        assert_eq!(turns, vec![1, 2, 0, 1]);
    }

    #[test]
    fn down_backend_waits_for_its_backoff() {
        let addrs = vec![BackendAddr::Unix("/a".into())];
        let set = BackendSet::new(&addrs, 0, Duration::from_millis(10));
        let now = Instant::now();
        assert!(set.is_up(0, now));
        set.mark_down(0, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!set.is_up(0, Instant::now()));
        assert!(set.is_up(0, Instant::now() + BACKOFF_FIRST));
        set.mark_up(0);
        assert!(set.is_up(0, Instant::now()));
    }

    #[test]
    fn refused_backend_is_skipped_for_the_next() {
        let dir = std::env::temp_dir().join(format!("rinha-lb-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("live.sock");
        let _ = std::fs::remove_file(&live);
        let listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let addrs = vec![
            BackendAddr::Unix(dir.join("missing.sock")),
            BackendAddr::Unix(live.clone()),
        ];
        let set = BackendSet::new(&addrs, 0, Duration::from_millis(200));
        let connected = rinha_sys::driver::Driver::Epoll
            .block_on(async { set.connect().await.is_some() })
            .unwrap();
        assert!(connected);
        assert!(listener.accept().is_ok());
        assert!(
            !set.is_up(0, Instant::now()),
            "the refusing backend is marked down"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
