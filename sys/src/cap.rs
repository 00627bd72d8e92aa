//! The connection cap of a whole process (`MAX_CONNECTIONS`), shared by every runtime.
//!
//! Why: each connection holds buffers and descriptors; without a cap a flood of idle
//! connections exhausts memory or the descriptor table, and then the next accept fails too.
//! At the cap a new connection is closed at once (the client sees a clean EOF), and the log
//! says so once per episode, not per connection. One atomic add per connection, none per
//! request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The open-connection count of all runtimes.
#[derive(Debug)]
pub struct ConnectionCap {
    open: AtomicUsize,
    max: usize,
    /// Set while the cap is reached and logged, so the log says it once per episode.
    saturated: AtomicBool,
}

impl ConnectionCap {
    /// A cap of `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionCap {
            open: AtomicUsize::new(0),
            max,
            saturated: AtomicBool::new(false),
        })
    }

    /// A place for one more connection, or `None` when the cap is reached (close it).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before < self.max {
            return Some(Slot { cap: self.clone() });
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        if !self.saturated.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                max_connections = self.max,
                "connection cap reached: new connections are closed at once until open ones \
                 finish (raise MAX_CONNECTIONS?)"
            );
        }
        None
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn release(&self) {
        let now_open = self.open.fetch_sub(1, Ordering::AcqRel) - 1;
        // Hysteresis: say "accepting again" only once well below the cap, not at every release.
        if now_open < self.max - self.max / 10 && self.saturated.swap(false, Ordering::AcqRel) {
            tracing::info!(open = now_open, "below the connection cap again");
        }
    }
}

/// The default cap: the connections that `budget` bytes (the share of the memory limit a
/// process gives its connections) hold at `bytes_each`, at least 1, at most `most`. Both
/// servers derive `MAX_CONNECTIONS` this way when it is not set, so a flood of held
/// connections is refused before it takes the container past its limit.
pub fn connections_for(budget: u64, bytes_each: u64, most: usize) -> usize {
    let n = budget / bytes_each.max(1);
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .clamp(1, most.max(1))
}

/// One open connection's place under the cap, given back on drop.
#[derive(Debug)]
pub struct Slot {
    cap: Arc<ConnectionCap>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.cap.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_cap_and_frees_on_drop() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_acquire().expect("first");
        let b = cap.try_acquire().expect("second");
        assert!(cap.try_acquire().is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert_eq!(cap.open(), 1);
        let c = cap.try_acquire().expect("a place again");
        drop((b, c));
        assert_eq!(cap.open(), 0);
    }

    #[test]
    fn memory_derived_caps_stay_within_their_bounds() {
        assert_eq!(connections_for(40 << 20, 40 << 10, 4096), 1024);
        assert_eq!(connections_for(1, 40 << 10, 4096), 1);
        assert_eq!(connections_for(1 << 40, 40 << 10, 4096), 4096);
        assert_eq!(connections_for(1 << 20, 0, 4096), 4096);
    }
}
