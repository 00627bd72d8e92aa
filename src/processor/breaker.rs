//! A passive circuit breaker per processor per core, driven by the outcomes of real
//! payments (no health polling: the health endpoint's 5 s window is shared by every caller).
//!
//! Closed: every payment goes. After [`OPEN_AFTER`] consecutive failures it opens: then a
//! real queued payment is let through as a probe at most once per [`PROBE_INTERVAL`], with
//! at most [`MAX_PROBES`] probe in flight; the first success closes it. The interval keeps
//! a failing processor (and our CPU quota) from being hammered.
//!
//! It is also the core's gate to the processor: at most `cap` calls in flight (this core's
//! share of `MAX_IN_FLIGHT`, so both instances together stay under the processor's own
//! admission limit and never earn a 429), and it knows how long the oldest of them has been
//! out and how long the processor has been failing: what [`crate::route`] prices.
//!
//! Slow start: when the breaker closes after being open, the calls in flight on this core
//! are capped at [`RAMP_START`], and the cap doubles every [`RAMP_DOUBLING`] until it no
//! longer binds. Without it every sender of the core leaves at once on the backlog that
//! piled up during the outage: in the official test, 20 s of payments drained in under half a
//! second, and that burst of processor calls took the CPU the intake needed, so the second
//! the default processor recovered had the run's highest p99 (docs/benchmarks.md, "Findings
//! that shaped the design", the drain at second 40). The ramp spreads the same drain
//! over about two seconds, long before the test ends, and spares a processor that has just
//! recovered from the whole backlog at once.
//!
//! Why a single probe in flight, although several would see a recovery sooner when the
//! failing processor is also slow: a probe sent under a 2 s delay while failing is *stored*
//! if the failure is switched off before its delay ends (second 40 of the official test),
//! and the consistency check runs at that very moment. Every such probe in flight is a
//! payment whose storage instant may fall within a few milliseconds of the check, which no
//! summary rule can place on the right side reliably (many probes in flight cost an
//! inconsistency at 40 s in full runs). Seeing the recovery up to one delay later costs
//! nothing: the backlog still drains within seconds, long before the end of the test. Even
//! the single probe could land at the check (its chain is phased by the stage change at
//! 30 s); stamping it with when it will be stored (src/store/, docs/architecture.md) takes it
//! out of the checked window.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const OPEN_AFTER: u32 = 3;
/// At most one probe starts per interval while open.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(40);
/// At most this many probes in flight while open (see the module doc).
pub const MAX_PROBES: u32 = 1;
/// Calls in flight allowed on one core right after the breaker closes.
pub const RAMP_START: u32 = 8;
/// The slow-start cap doubles this often...
pub const RAMP_DOUBLING: Duration = Duration::from_millis(500);
/// ...until it reaches the breaker's cap, or this many times at most.
pub const RAMP_STEPS: u32 = 8;
/// At most one scout (a call to a processor the policy does not choose, to learn whether it
/// should) starts per interval, and only while no other call to it is in flight.
pub const SCOUT_INTERVAL: Duration = Duration::from_millis(200);
/// Parked wakers kept before they are all woken at once (see `park`).
const PARKED_MAX: usize = 8192;

/// Whether a call went as a probe of an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Probe,
}

/// The right to make one call; given back with [`Breaker::success`], [`Breaker::failure`]
/// or [`Breaker::cancel`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Permit {
    kind: Kind,
    /// Admission order, keys the call's start in [`Breaker::started`].
    serial: u64,
}

impl Permit {
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// One processor's breaker on one core.
#[derive(Debug)]
pub struct Breaker {
    failures: Cell<u32>,
    open: Cell<bool>,
    next_probe: Cell<Instant>,
    /// Calls in flight on a probe permit.
    probes: Cell<u32>,
    /// The most calls in flight on normal permits.
    cap: u32,
    /// When each call in flight (normal or probe) started, by permit serial: the calls on a
    /// normal permit are the others than `probes`.
    started: RefCell<BTreeMap<u64, Instant>>,
    next_serial: Cell<u64>,
    /// When the breaker last opened, while it is open.
    opened_at: Cell<Option<Instant>>,
    next_scout: Cell<Instant>,
    /// Senders waiting in [`Breaker::wait_for_room`].
    waiting: Cell<u32>,
    /// When the breaker last closed, while the slow start still binds.
    ramp_from: Cell<Option<Instant>>,
    /// Senders parked until a probe slot frees (woken by `release`, not by polling: with
    /// dozens of senders waiting, a timer loop would burn the CPU quota while the
    /// processors fail).
    parked: RefCell<Vec<Waker>>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::with_cap(u32::MAX)
    }
}

impl Breaker {
    /// A breaker with no cap on calls in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// A breaker that allows at most `cap` calls in flight.
    pub fn with_cap(cap: u32) -> Self {
        let now = Instant::now();
        Breaker {
            failures: Cell::new(0),
            open: Cell::new(false),
            next_probe: Cell::new(now),
            probes: Cell::new(0),
            cap: cap.max(1),
            started: RefCell::new(BTreeMap::new()),
            next_serial: Cell::new(0),
            opened_at: Cell::new(None),
            next_scout: Cell::new(now),
            waiting: Cell::new(0),
            ramp_from: Cell::new(None),
            parked: RefCell::new(Vec::new()),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.get()
    }

    /// How long it has been open at `now`, if it is.
    pub fn failing_for(&self, now: Instant) -> Option<Duration> {
        self.opened_at
            .get()
            .map(|t| now.saturating_duration_since(t))
    }

    /// Age of the oldest call in flight at `now`, if any.
    pub fn oldest_in_flight(&self, now: Instant) -> Option<Duration> {
        self.started
            .borrow()
            .first_key_value()
            .map(|(_, t)| now.saturating_duration_since(*t))
    }

    /// Calls in flight on normal permits, the most allowed, and senders waiting for room.
    pub fn load(&self) -> (u32, u32, u32) {
        (self.in_flight(), self.cap, self.waiting.get())
    }

    /// Calls in flight on normal permits.
    fn in_flight(&self) -> u32 {
        let calls = self.started.borrow().len() as u32;
        calls.saturating_sub(self.probes.get())
    }

    fn permit(&self, kind: Kind, now: Instant) -> Permit {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        self.started.borrow_mut().insert(serial, now);
        Permit { kind, serial }
    }

    /// The cap on calls in flight at `now`: the slow start's while it binds, else `cap`.
    fn cap_at(&self, now: Instant) -> u32 {
        let Some(from) = self.ramp_from.get() else {
            return self.cap;
        };
        let steps =
            (now.saturating_duration_since(from).as_millis() / RAMP_DOUBLING.as_millis()) as u32;
        let ramp = RAMP_START.checked_shl(steps.min(31)).unwrap_or(u32::MAX);
        if steps >= RAMP_STEPS || ramp >= self.cap {
            self.ramp_from.set(None);
            // Whoever still waits on the slow start goes now.
            self.wake_parked();
            return self.cap;
        }
        ramp
    }

    /// Whether no more calls are allowed at `now` while closed.
    fn at_cap(&self, now: Instant) -> bool {
        self.in_flight() >= self.cap_at(now)
    }

    /// Takes a permit now if one is available.
    pub fn try_admit(&self, now: Instant) -> Option<Permit> {
        if !self.open.get() {
            if self.at_cap(now) {
                return None;
            }
            let permit = self.permit(Kind::Normal, now);
            // Room left under a cap that grew since the others parked: pass it on.
            if self.ramp_from.get().is_some() && !self.at_cap(now) {
                self.wake_one();
            }
            return Some(permit);
        }
        if self.probes.get() < MAX_PROBES && now >= self.next_probe.get() {
            self.next_probe.set(now + PROBE_INTERVAL);
            self.probes.set(self.probes.get() + 1);
            return Some(self.permit(Kind::Probe, now));
        }
        None
    }

    /// A permit for a scout: a call to a processor the policy does not choose now, to learn
    /// whether it should (its delay may have fallen, its outage ended); at most once per
    /// [`SCOUT_INTERVAL`]. Open: a probe, as [`Breaker::try_admit`] gives. Closed: only
    /// while no call to it is in flight on this core (one in flight already tells its delay
    /// by its age).
    pub fn try_scout(&self, now: Instant) -> Option<Permit> {
        if now < self.next_scout.get() {
            return None;
        }
        if self.open.get() {
            let probe = self.try_admit(now)?;
            self.next_scout.set(now + SCOUT_INTERVAL);
            return Some(probe);
        }
        if !self.started.borrow().is_empty() {
            return None;
        }
        let permit = self.try_admit(now)?;
        self.next_scout.set(now + SCOUT_INTERVAL);
        Some(permit)
    }

    /// While open with no probe out, how long until the next probe may start.
    pub fn until_probe(&self, now: Instant) -> Option<Duration> {
        (self.open.get() && self.probes.get() < MAX_PROBES)
            .then(|| self.next_probe.get().saturating_duration_since(now))
    }

    /// Waits until a call ends or the breaker changes state, or at most `max`: the caller
    /// then decides again where its payment goes. Counted in [`Breaker::load`] meanwhile.
    pub async fn wait_for_room(&self, max: Duration) {
        self.waiting.set(self.waiting.get() + 1);
        let mut woken = false;
        let _ = monoio::time::timeout(
            max,
            poll_fn(|cx| {
                if woken {
                    return Poll::Ready(());
                }
                woken = true;
                self.park(cx.waker());
                Poll::Pending
            }),
        )
        .await;
        self.waiting.set(self.waiting.get().saturating_sub(1));
    }

    /// Waits for a permit.
    pub async fn admit(&self) -> Permit {
        loop {
            let now = Instant::now();
            if let Some(p) = self.try_admit(now) {
                return p;
            }
            if !self.open.get() {
                // Closed but at the cap: wait for a call to finish.
                self.park_until(|| self.open.get() || !self.at_cap(Instant::now()))
                    .await;
            } else if self.probes.get() >= MAX_PROBES {
                // Wait for the probe in flight to finish (it may close the breaker).
                self.park_until(|| !self.open.get() || self.probes.get() < MAX_PROBES)
                    .await;
            } else {
                let wake = self.next_probe.get().max(now + Duration::from_millis(1));
                monoio::time::sleep(wake - now).await;
            }
        }
    }

    /// Parks the calling sender until `ready()` holds when it is woken (by a release or a
    /// close, never by a timer).
    async fn park_until(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                self.park(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    fn park(&self, waker: &Waker) {
        let mut parked = self.parked.borrow_mut();
        // A waiter that timed out leaves its waker behind; wake them all rather than let
        // them pile up (a spurious wake only makes a sender decide again).
        if parked.len() >= PARKED_MAX {
            for w in parked.drain(..) {
                w.wake();
            }
        }
        parked.push(waker.clone());
    }

    /// The processor answered (any answer that proves it works: 2XX or 422).
    pub fn success(&self, permit: Permit) {
        self.release(permit);
        self.failures.set(0);
        if self.open.replace(false) {
            self.opened_at.set(None);
            tracing::info!("processor recovered: breaker closed, slow start");
            self.ramp_from.set(Some(Instant::now()));
            self.wake_parked();
        }
    }

    /// The processor failed (5XX, 429, connect error, timeout).
    pub fn failure(&self, permit: Permit) {
        self.release(permit);
        let n = self.failures.get().saturating_add(1);
        self.failures.set(n);
        if n >= OPEN_AFTER && !self.open.replace(true) {
            let now = Instant::now();
            self.next_probe.set(now + PROBE_INTERVAL);
            self.opened_at.set(Some(now));
            // Whoever waits for room decides again: the breaker's price changed.
            self.wake_parked();
            tracing::info!(failures = n, "processor failing: breaker open");
        }
    }

    /// The permit was not used (nothing was sent): neither a success nor a failure.
    pub fn cancel(&self, permit: Permit) {
        self.release(permit);
    }

    fn release(&self, permit: Permit) {
        self.started.borrow_mut().remove(&permit.serial);
        match permit.kind {
            Kind::Probe => {
                self.probes.set(self.probes.get().saturating_sub(1));
                self.wake_parked();
            }
            Kind::Normal => {
                // One slot freed: one sender parked on the cap may take it.
                self.wake_one();
            }
        }
    }

    fn wake_one(&self) {
        let next = self.parked.borrow_mut().pop();
        if let Some(w) = next {
            w.wake();
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

    fn kind(p: &Option<Permit>) -> Option<Kind> {
        p.as_ref().map(Permit::kind)
    }

    /// Fails `n` calls admitted at `now` (opening a closed breaker at `OPEN_AFTER`).
    fn fail(b: &Breaker, n: u32, now: Instant) {
        for _ in 0..n {
            let p = b.try_admit(now).expect("closed: admitted");
            b.failure(p);
        }
    }

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new();
        let t0 = Instant::now();
        fail(&b, OPEN_AFTER, t0);
        assert!(b.is_open());
        assert!(b.failing_for(Instant::now()).is_some());
        // No probe before the interval, one at it, not two in the same interval.
        assert_eq!(kind(&b.try_admit(Instant::now())), None);
        let t1 = Instant::now() + PROBE_INTERVAL;
        let probe = b.try_admit(t1);
        assert_eq!(kind(&probe), Some(Kind::Probe));
        assert_eq!(kind(&b.try_admit(t1)), None);
        b.failure(probe.unwrap());
        assert!(b.is_open());
        let t2 = t1 + PROBE_INTERVAL;
        let probe = b.try_admit(t2);
        assert_eq!(kind(&probe), Some(Kind::Probe));
        b.success(probe.unwrap());
        assert!(!b.is_open());
        assert_eq!(b.failing_for(t2), None);
        assert_eq!(kind(&b.try_admit(t2)), Some(Kind::Normal));
    }

    #[test]
    fn senders_parked_on_the_probe_cap_wake_when_it_frees() {
        let b = std::rc::Rc::new(Breaker::new());
        fail(&b, OPEN_AFTER, Instant::now());
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async move {
            let probe = b.admit().await;
            assert_eq!(probe.kind(), Kind::Probe);
            let b2 = b.clone();
            let waiter = monoio::spawn(async move { b2.admit().await });
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(b.parked.borrow().len(), 1);
            b.success(probe);
            assert_eq!(waiter.await.kind(), Kind::Normal);
        });
    }

    /// Opens `b` and closes it again with a successful probe: the slow start begins.
    fn recover(b: &Breaker) -> Instant {
        fail(b, OPEN_AFTER, Instant::now());
        let probe_at = Instant::now() + PROBE_INTERVAL;
        let probe = b.try_admit(probe_at).expect("a probe");
        assert_eq!(probe.kind(), Kind::Probe);
        b.success(probe);
        assert!(!b.is_open());
        b.ramp_from.get().expect("closing starts the slow start")
    }

    #[test]
    fn slow_start_caps_calls_in_flight_and_doubles_the_cap() {
        let b = Breaker::with_cap(200);
        // Never opened: only the breaker's own cap.
        let now = Instant::now();
        let permits: Vec<_> = (0..200).map(|_| b.try_admit(now).unwrap()).collect();
        assert_eq!(kind(&b.try_admit(now)), None, "at the breaker's cap");
        for p in permits {
            b.success(p);
        }
        let t0 = recover(&b);
        let mut held: Vec<_> = (0..RAMP_START).map(|_| b.try_admit(t0).unwrap()).collect();
        assert_eq!(kind(&b.try_admit(t0)), None, "at the slow start's cap");
        // A call that ends frees its slot, whatever its outcome.
        b.failure(held.pop().unwrap());
        held.push(b.try_admit(t0).unwrap());
        assert_eq!(kind(&b.try_admit(t0)), None);
        // One doubling later, as many again.
        let t1 = t0 + RAMP_DOUBLING;
        for _ in 0..RAMP_START {
            held.push(b.try_admit(t1).unwrap());
        }
        assert_eq!(kind(&b.try_admit(t1)), None);
        // Once the doubling reaches the breaker's cap, the ramp is over: 200 in all.
        let end = t0 + RAMP_DOUBLING * 5;
        while let Some(p) = b.try_admit(end) {
            held.push(p);
        }
        assert_eq!(held.len(), 200);
        assert!(b.ramp_from.get().is_none());
    }

    #[test]
    fn senders_parked_on_the_slow_start_go_as_calls_finish() {
        let b = std::rc::Rc::new(Breaker::new());
        recover(&b);
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async move {
            let mut permits = Vec::new();
            for _ in 0..RAMP_START {
                permits.push(b.admit().await);
            }
            let b2 = b.clone();
            let waiter = monoio::spawn(async move { b2.admit().await });
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(b.parked.borrow().len(), 1, "the ninth sender waits");
            b.success(permits.pop().unwrap());
            assert_eq!(waiter.await.kind(), Kind::Normal);
            assert_eq!(b.in_flight(), RAMP_START);
        });
    }

    #[test]
    fn the_wait_for_the_next_probe_is_known_while_open_with_no_probe_out() {
        let b = Breaker::new();
        let t0 = Instant::now();
        assert_eq!(b.until_probe(t0), None, "closed");
        fail(&b, OPEN_AFTER, t0);
        let opened = Instant::now();
        assert!(b.until_probe(opened).unwrap() <= PROBE_INTERVAL);
        let at = opened + PROBE_INTERVAL;
        assert_eq!(b.until_probe(at), Some(Duration::ZERO));
        let probe = b.try_admit(at).unwrap();
        assert_eq!(b.until_probe(at), None, "a probe is out");
        b.failure(probe);
        assert_eq!(b.until_probe(at), Some(PROBE_INTERVAL));
    }

    #[test]
    fn probes_in_flight_are_capped() {
        let b = Breaker::new();
        fail(&b, OPEN_AFTER, Instant::now());
        let mut t = Instant::now();
        let mut probes = Vec::new();
        for _ in 0..MAX_PROBES {
            t += PROBE_INTERVAL;
            let p = b.try_admit(t);
            assert_eq!(kind(&p), Some(Kind::Probe));
            probes.push(p);
        }
        t += PROBE_INTERVAL;
        assert_eq!(kind(&b.try_admit(t)), None);
    }

    #[test]
    fn the_oldest_call_in_flight_is_known_until_it_ends() {
        let b = Breaker::new();
        let t0 = Instant::now();
        assert_eq!(b.oldest_in_flight(t0), None);
        let first = b.try_admit(t0).unwrap();
        let second = b.try_admit(t0 + Duration::from_millis(300)).unwrap();
        let at = t0 + Duration::from_secs(1);
        assert_eq!(b.oldest_in_flight(at), Some(Duration::from_secs(1)));
        b.success(first);
        assert_eq!(b.oldest_in_flight(at), Some(Duration::from_millis(700)));
        b.cancel(second);
        assert_eq!(b.oldest_in_flight(at), None);
        assert_eq!(b.load().0, 0);
    }

    #[test]
    fn a_scout_goes_only_while_nothing_else_is_in_flight_and_once_per_interval() {
        let b = Breaker::new();
        let t0 = Instant::now() + SCOUT_INTERVAL;
        let scout = b.try_scout(t0).expect("nothing in flight: a scout");
        assert_eq!(
            kind(&b.try_scout(t0 + SCOUT_INTERVAL * 2)),
            None,
            "one in flight"
        );
        b.success(scout);
        assert_eq!(kind(&b.try_scout(t0)), None, "not twice per interval");
        assert!(b.try_scout(t0 + SCOUT_INTERVAL).is_some());
        // Open: a scout is a probe, also at most once per interval.
        let b = Breaker::new();
        fail(&b, OPEN_AFTER, Instant::now());
        let t1 = Instant::now() + SCOUT_INTERVAL;
        let probe = b.try_scout(t1);
        assert_eq!(kind(&probe), Some(Kind::Probe));
        b.failure(probe.unwrap());
        assert_eq!(kind(&b.try_scout(t1 + PROBE_INTERVAL)), None);
        assert!(b.try_scout(t1 + SCOUT_INTERVAL).is_some());
    }

    #[test]
    fn a_sender_waiting_for_room_is_counted_and_woken_by_a_call_that_ends() {
        let b = std::rc::Rc::new(Breaker::with_cap(1));
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async move {
            let p = b.try_admit(Instant::now()).unwrap();
            let b2 = b.clone();
            let waiter = monoio::spawn(async move {
                let t = Instant::now();
                b2.wait_for_room(Duration::from_secs(5)).await;
                t.elapsed()
            });
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(b.load(), (1, 1, 1));
            b.success(p);
            assert!(waiter.await < Duration::from_secs(1));
            assert_eq!(b.load(), (0, 1, 0));
            // With nothing to wake it, the wait ends at its bound.
            let t = Instant::now();
            b.wait_for_room(Duration::from_millis(30)).await;
            assert!(t.elapsed() >= Duration::from_millis(30));
        });
    }
}
