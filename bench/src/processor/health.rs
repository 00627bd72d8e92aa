//! The fixed-window rate limit on `GET /payments/service-health` (ASP.NET's
//! `FixedWindowRateLimiter` with one permit per window and a queue of two).
//!
//! Windows are fixed slots of `window` length counted from the limiter's start. Each window
//! answers one caller; a caller that finds the current window used takes the next free one
//! and waits for it, as long as at most `queue` callers are already waiting; everyone else
//! gets 429. Like the .NET limiter, one window serves one queued caller, so the second one
//! in line is answered a window after the first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many callers may wait for a later window.
pub const QUEUE: u64 = 2;

/// When a health call may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The current window was free: answer now.
    Now,
    /// Wait until this instant (the start of the window this caller now owns), then answer.
    At(Instant),
    /// The line is full: 429.
    Rejected,
}

/// One processor's health-call windows.
#[derive(Debug)]
pub struct HealthWindow {
    start: Instant,
    window: Duration,
    /// Index of the first window nobody has claimed yet.
    next_free: Mutex<u64>,
}

impl HealthWindow {
    pub fn new(window: Duration, start: Instant) -> HealthWindow {
        HealthWindow {
            start,
            // A zero window would divide by zero; one nanosecond means "no limit" in practice.
            window: window.max(Duration::from_nanos(1)),
            next_free: Mutex::new(0),
        }
    }

    /// The window length (what `Retry-After` reports, in whole seconds).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Claims a window for a call arriving at `now`.
    pub fn claim(&self, now: Instant) -> Claim {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let current = u64::try_from(elapsed / self.window.as_nanos()).unwrap_or(u64::MAX);
        let mut next_free = match self.next_free.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *next_free <= current {
            *next_free = current + 1;
            return Claim::Now;
        }
        let waiting = *next_free - current - 1;
        if waiting >= QUEUE {
            return Claim::Rejected;
        }
        let at = self.window_start(*next_free);
        *next_free += 1;
        Claim::At(at)
    }

    fn window_start(&self, index: u64) -> Instant {
        let nanos = self.window.as_nanos().saturating_mul(u128::from(index));
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.start + Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_per_window_two_waiting_then_rejected() {
        let start = Instant::now();
        let limiter = HealthWindow::new(Duration::from_secs(5), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(limiter.claim(at(100)), Claim::Now);
        assert_eq!(limiter.claim(at(200)), Claim::At(at(5_000)));
        assert_eq!(limiter.claim(at(300)), Claim::At(at(10_000)));
        assert_eq!(limiter.claim(at(400)), Claim::Rejected);
        // In window 1 the first waiter was answered; one is still in line, so one more fits.
        assert_eq!(limiter.claim(at(5_100)), Claim::At(at(15_000)));
        assert_eq!(limiter.claim(at(5_200)), Claim::Rejected);
        // Much later every window is free again.
        assert_eq!(limiter.claim(at(60_000)), Claim::Now);
        assert_eq!(limiter.claim(at(64_999)), Claim::At(at(65_000)));
        assert_eq!(limiter.claim(at(70_001)), Claim::Now);
    }
}
