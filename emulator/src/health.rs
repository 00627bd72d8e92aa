//! The fixed-window rate limit on `GET /payments/service-health` (ASP.NET's
//! `FixedWindowRateLimiter`: one permit per window, a queue of two, oldest first).
//!
//! Windows are fixed slots of `window` length counted from the limiter's start. The first
//! caller of a window is answered at once; later callers wait in line (at most two) and each
//! new window hands its one permit to the oldest caller still waiting, so the second in line
//! is answered a window after the first. A caller that hangs up leaves the line. Everyone
//! beyond the line gets 429.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How many callers may wait for a later window.
pub const QUEUE: usize = 2;

/// When a health call may be answered.
#[derive(Debug)]
pub enum Claim {
    /// The current window's permit was free: answer now.
    Now,
    /// In line: answer when this resolves (a later window granted the permit).
    Wait(oneshot::Receiver<()>),
    /// The line is full: 429.
    Rejected,
}

#[derive(Debug)]
struct State {
    /// The window `permit` belongs to.
    window: u64,
    /// Whether that window's permit is still unused.
    permit: bool,
    line: VecDeque<oneshot::Sender<()>>,
}

/// One processor's health-call windows.
#[derive(Debug)]
pub struct HealthWindow {
    start: Instant,
    window: Duration,
    state: Mutex<State>,
}

impl HealthWindow {
    pub fn new(window: Duration, start: Instant) -> HealthWindow {
        HealthWindow {
            start,
            // A zero window would divide by zero; one nanosecond means "no limit" in practice.
            window: window.max(Duration::from_nanos(1)),
            state: Mutex::new(State {
                window: 0,
                permit: true,
                line: VecDeque::new(),
            }),
        }
    }

    /// The window length (what `Retry-After` reports, in whole seconds).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Asks for the permit on behalf of a call arriving at `now`.
    pub fn claim(&self, now: Instant) -> Claim {
        let mut state = self.advance(now);
        state.line.retain(|waiter| !waiter.is_closed());
        if state.permit && state.line.is_empty() {
            state.permit = false;
            return Claim::Now;
        }
        if state.line.len() >= QUEUE {
            return Claim::Rejected;
        }
        let (grant, granted) = oneshot::channel();
        state.line.push_back(grant);
        Claim::Wait(granted)
    }

    /// Replenishes the permit of every window that began by `now`, each going to the oldest
    /// caller still in line. Waiters call it at each window start (see [`Self::next_start`]).
    pub fn tick(&self, now: Instant) {
        drop(self.advance(now));
    }

    /// Start of the window after the one `now` falls in.
    pub fn next_start(&self, now: Instant) -> Instant {
        self.window_start(self.index(now) + 1)
    }

    fn advance(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current = self.index(now);
        // Each new window brings one permit; at most `QUEUE` of them can find a taker, so
        // a long idle gap costs at most that many rounds.
        let new_windows = current.saturating_sub(state.window);
        for _ in 0..new_windows.min(QUEUE as u64 + 1) {
            state.permit = true;
            while let Some(waiter) = state.line.pop_front() {
                if waiter.send(()).is_ok() {
                    state.permit = false;
                    break;
                }
            }
        }
        state.window = state.window.max(current);
        state
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(elapsed / self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    fn window_start(&self, index: u64) -> Instant {
        let nanos = self.window.as_nanos().saturating_mul(u128::from(index));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(claim: Claim) -> oneshot::Receiver<()> {
        match claim {
            Claim::Wait(granted) => granted,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    #[test]
    fn one_call_per_window_two_waiting_then_rejected() {
        let start = Instant::now();
        let limiter = HealthWindow::new(Duration::from_secs(5), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(matches!(limiter.claim(at(100)), Claim::Now));
        let mut first = waiting(limiter.claim(at(200)));
        let mut second = waiting(limiter.claim(at(300)));
        assert!(matches!(limiter.claim(at(400)), Claim::Rejected));
        assert_eq!(limiter.next_start(at(400)), at(5_000));

        limiter.tick(at(5_000));
        assert_eq!(first.try_recv(), Ok(()));
        assert!(second.try_recv().is_err());
        // One is still in line, so one more fits; the window's permit is used.
        let mut third = waiting(limiter.claim(at(5_100)));
        assert!(matches!(limiter.claim(at(5_200)), Claim::Rejected));

        limiter.tick(at(10_000));
        assert_eq!(second.try_recv(), Ok(()));
        limiter.tick(at(15_000));
        assert_eq!(third.try_recv(), Ok(()));
        // The permit of window 4 is free again.
        assert!(matches!(limiter.claim(at(20_000)), Claim::Now));
        assert!(matches!(limiter.claim(at(20_001)), Claim::Wait(_)));
    }

    #[test]
    fn a_caller_that_leaves_the_line_frees_its_place_and_its_window() {
        let start = Instant::now();
        let limiter = HealthWindow::new(Duration::from_secs(5), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(matches!(limiter.claim(at(0)), Claim::Now));
        let gone = waiting(limiter.claim(at(1)));
        let mut stays = waiting(limiter.claim(at(2)));
        drop(gone);
        // The place of the caller that left is free again.
        let mut late = waiting(limiter.claim(at(3)));
        limiter.tick(at(5_000));
        assert_eq!(stays.try_recv(), Ok(()));
        assert!(late.try_recv().is_err());
        limiter.tick(at(10_000));
        assert_eq!(late.try_recv(), Ok(()));
    }

    #[test]
    fn after_an_idle_gap_the_window_is_free() {
        let start = Instant::now();
        let limiter = HealthWindow::new(Duration::from_secs(5), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(matches!(limiter.claim(at(0)), Claim::Now));
        assert!(matches!(limiter.claim(at(60_000)), Claim::Now));
        assert!(matches!(limiter.claim(at(64_999)), Claim::Wait(_)));
    }
}
