//! A passive circuit breaker per processor per core, driven by the outcomes of real
//! payments (no health polling: the health endpoint's 5 s window is shared by every caller).
//!
//! Closed: every payment goes. After [`OPEN_AFTER`] consecutive failures it opens: then a
//! real queued payment is let through as a probe at most once per [`PROBE_INTERVAL`], with
//! at most [`MAX_PROBES`] probe in flight; the first success closes it. The interval keeps
//! a failing processor (and our CPU quota) from being hammered.
//!
//! Why a single probe in flight, although several would see a recovery sooner when the
//! failing processor is also slow: a probe sent under a 2 s delay while failing is *stored*
//! if the failure is switched off before its delay ends (second 40 of the official test),
//! and the consistency check runs at that very moment. Every such probe in flight is a
//! payment whose storage instant may fall within a few milliseconds of the check, which no
//! summary rule can place on the right side reliably (measured: with 50 probes in flight,
//! one inconsistency at 40 s in a full run). Seeing the recovery up to one delay later costs
//! nothing: the backlog still drains within seconds, long before the end of the test. Even
//! the single probe could land at the check (its chain is phased by the stage change at
//! 30 s); store.rs, "Stamped when it will be stored", takes it out of the checked window.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const OPEN_AFTER: u32 = 3;
/// At most one probe starts per interval while open.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(40);
/// At most this many probes in flight while open (see the module doc).
pub const MAX_PROBES: u32 = 1;

/// Whether a call went as a probe of an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    Probe,
}

/// One processor's breaker on one core.
#[derive(Debug)]
pub struct Breaker {
    failures: Cell<u32>,
    open: Cell<bool>,
    next_probe: Cell<Instant>,
    probes: Cell<u32>,
    /// Senders parked until a probe slot frees (woken by `release`, not by polling: with
    /// dozens of senders waiting, a timer loop would burn the CPU quota while the
    /// processors fail).
    parked: RefCell<Vec<Waker>>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: Cell::new(0),
            open: Cell::new(false),
            next_probe: Cell::new(Instant::now()),
            probes: Cell::new(0),
            parked: RefCell::new(Vec::new()),
        }
    }
}

impl Breaker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Takes a permit now if one is available.
    pub fn try_admit(&self, now: Instant) -> Option<Permit> {
        if !self.open.get() {
            return Some(Permit::Normal);
        }
        if self.probes.get() < MAX_PROBES && now >= self.next_probe.get() {
            self.next_probe.set(now + PROBE_INTERVAL);
            self.probes.set(self.probes.get() + 1);
            return Some(Permit::Probe);
        }
        None
    }

    /// Waits for a permit.
    pub async fn admit(&self) -> Permit {
        loop {
            let now = Instant::now();
            if let Some(p) = self.try_admit(now) {
                return p;
            }
            if self.probes.get() >= MAX_PROBES {
                // Wait for the probe in flight to finish (it may close the breaker).
                poll_fn(|cx| {
                    if !self.open.get() || self.probes.get() < MAX_PROBES {
                        Poll::Ready(())
                    } else {
                        self.parked.borrow_mut().push(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
            } else {
                let wake = self.next_probe.get().max(now + Duration::from_millis(1));
                monoio::time::sleep(wake - now).await;
            }
        }
    }

    /// The processor answered (any answer that proves it works: 2XX or 422).
    pub fn success(&self, permit: Permit) {
        self.release(permit);
        self.failures.set(0);
        if self.open.replace(false) {
            tracing::info!("processor recovered: breaker closed");
            self.wake_parked();
        }
    }

    /// The processor failed (5XX, 429, connect error, timeout).
    pub fn failure(&self, permit: Permit) {
        self.release(permit);
        let n = self.failures.get().saturating_add(1);
        self.failures.set(n);
        if n >= OPEN_AFTER && !self.open.replace(true) {
            self.next_probe.set(Instant::now() + PROBE_INTERVAL);
            tracing::info!(failures = n, "processor failing: breaker open");
        }
    }

    /// The permit was not used (nothing was sent): neither a success nor a failure.
    pub fn cancel(&self, permit: Permit) {
        self.release(permit);
    }

    fn release(&self, permit: Permit) {
        if permit == Permit::Probe {
            self.probes.set(self.probes.get().saturating_sub(1));
            self.wake_parked();
        }
    }

    fn wake_parked(&self) {
        let parked = std::mem::take(&mut *self.parked.borrow_mut());
        for w in parked {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new();
        let t0 = Instant::now();
        for _ in 0..OPEN_AFTER {
            assert_eq!(b.try_admit(t0), Some(Permit::Normal));
            b.failure(Permit::Normal);
        }
        assert!(b.is_open());
        // No probe before the interval, one at it, not two in the same interval.
        assert_eq!(b.try_admit(Instant::now()), None);
        let t1 = Instant::now() + PROBE_INTERVAL;
        assert_eq!(b.try_admit(t1), Some(Permit::Probe));
        assert_eq!(b.try_admit(t1), None);
        b.failure(Permit::Probe);
        assert!(b.is_open());
        let t2 = t1 + PROBE_INTERVAL;
        assert_eq!(b.try_admit(t2), Some(Permit::Probe));
        b.success(Permit::Probe);
        assert!(!b.is_open());
        assert_eq!(b.try_admit(t2), Some(Permit::Normal));
    }

    #[test]
    fn senders_parked_on_the_probe_cap_wake_when_it_frees() {
        let b = std::rc::Rc::new(Breaker::new());
        for _ in 0..OPEN_AFTER {
            b.failure(Permit::Normal);
        }
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async move {
            let probe = b.admit().await;
            assert_eq!(probe, Permit::Probe);
            let b2 = b.clone();
            let waiter = monoio::spawn(async move { b2.admit().await });
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(b.parked.borrow().len(), 1);
            b.success(probe);
            assert_eq!(waiter.await, Permit::Normal);
        });
    }

    #[test]
    fn probes_in_flight_are_capped() {
        let b = Breaker::new();
        for _ in 0..OPEN_AFTER {
            b.failure(Permit::Normal);
        }
        let mut t = Instant::now();
        for _ in 0..MAX_PROBES {
            t += PROBE_INTERVAL;
            assert_eq!(b.try_admit(t), Some(Permit::Probe));
        }
        t += PROBE_INTERVAL;
        assert_eq!(b.try_admit(t), None);
    }
}
