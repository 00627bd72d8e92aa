//! What every connection of one processor shares: its settings (fee, token, delay,
//! failure), the store, the limiters and the chaos counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::chaos::{ChaosCounters, Switches};
use super::health::HealthWindow;
use super::limiter::Limiter;
use super::money::Fee;
use super::store::Store;
use super::Config;

/// One processor's state.
#[derive(Debug)]
pub struct Shared {
    pub fee: Fee,
    token: Mutex<String>,
    delay_ms: AtomicU64,
    failing: AtomicBool,
    store: Mutex<Store>,
    pub limiter: Limiter,
    pub health: HealthWindow,
    pub chaos: ChaosCounters,
    pub switches: Switches,
    pub traffic: Traffic,
}

/// What `POST /payments` has seen, for tests of a caller's behaviour (how many it sent,
/// whether it earned a 429, whether it kept sending to a failing processor).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests that arrived.
    pub received: AtomicU64,
    /// Refused by the limiter (429).
    pub rejected: AtomicU64,
    /// Answered 500 (failure switched on).
    pub failed: AtomicU64,
    /// Answered the status a test forced ([`Switches`]), nothing stored.
    pub forced: AtomicU64,
    /// `GET /payments/{id}` asked (a caller resolving an unknown outcome).
    pub lookups: AtomicU64,
    /// Keep-alive connections closed for being idle ([`Switches::set_close_idle`]).
    pub idle_closed: AtomicU64,
}

/// A copy of what `POST /payments` has seen (`Traffic`) at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    pub received: u64,
    pub rejected: u64,
    pub failed: u64,
    pub forced: u64,
    pub lookups: u64,
    pub idle_closed: u64,
}

impl Traffic {
    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            received: self.received.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Acquire),
            failed: self.failed.load(Ordering::Acquire),
            forced: self.forced.load(Ordering::Acquire),
            lookups: self.lookups.load(Ordering::Acquire),
            idle_closed: self.idle_closed.load(Ordering::Acquire),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// Locks `mutex`, ignoring poisoning: every critical section leaves its data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Shared {
    pub fn new(config: &Config) -> Shared {
        Shared {
            fee: config.fee,
            token: Mutex::new(config.token.clone()),
            delay_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            store: Mutex::new(Store::default()),
            limiter: Limiter::new(config.limits),
            health: HealthWindow::new(config.health_window, Instant::now()),
            chaos: ChaosCounters::new(config.chaos),
            switches: Switches::default(),
            traffic: Traffic::default(),
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn token_matches(&self, presented: &[u8]) -> bool {
        lock(&self.token).as_bytes() == presented
    }

    pub fn set_token(&self, token: String) {
        *lock(&self.token) = token;
    }

    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::Acquire)
    }

    /// Sets the delay, returning the old one.
    pub fn set_delay_ms(&self, ms: u64) -> u64 {
        self.delay_ms.swap(ms, Ordering::AcqRel)
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Sets the failure flag, returning the old one.
    pub fn set_failing(&self, failing: bool) -> bool {
        self.failing.swap(failing, Ordering::AcqRel)
    }
}
