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
    /// A lookup of an unknown outcome while open, in a lane of its own
    /// ([`Breaker::try_lookup`]).
    Lookup,
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
    /// The processor's name, for the log lines of state changes.
    name: &'static str,
    failures: Cell<u32>,
    open: Cell<bool>,
    next_probe: Cell<Instant>,
    /// Calls in flight on a probe permit.
    probes: Cell<u32>,
    /// Whether a lookup is in flight on a [`Kind::Lookup`] permit, and when the next may go.
    lookup_out: Cell<bool>,
    next_lookup: Cell<Instant>,
    /// The most calls in flight on normal permits (changes as replicas come and go).
    cap: Cell<u32>,
    /// When each call in flight (normal or probe) started, by permit serial: the calls on a
    /// normal permit are the others than `probes`.
    started: RefCell<BTreeMap<u64, Instant>>,
    next_serial: Cell<u64>,
    /// When the breaker last opened, while it is open.
    opened_at: Cell<Option<Instant>>,
    next_scout: Cell<Instant>,
    /// Senders waiting in [`Breaker::wait_for_room`].
    waiting: Cell<u32>,
    /// The waiter for room whose timer the others rely on (its number among the timers
    /// armed, and when it ends), while one is armed; the timers armed so far.
    watch: Cell<Option<(u64, Instant)>>,
    watches: Cell<u64>,
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
            name: "",
            failures: Cell::new(0),
            open: Cell::new(false),
            next_probe: Cell::new(now),
            probes: Cell::new(0),
            lookup_out: Cell::new(false),
            next_lookup: Cell::new(now),
            cap: Cell::new(cap.max(1)),
            started: RefCell::new(BTreeMap::new()),
            next_serial: Cell::new(0),
            opened_at: Cell::new(None),
            next_scout: Cell::new(now),
            waiting: Cell::new(0),
            watch: Cell::new(None),
            watches: Cell::new(0),
            ramp_from: Cell::new(None),
            parked: RefCell::new(Vec::new()),
        }
    }

    /// The same breaker, naming `name` in its log lines.
    pub fn named(self, name: &'static str) -> Self {
        Breaker { name, ..self }
    }

    /// Sets the cap on calls in flight (this core's share changed with the replicas
    /// present); senders parked on a smaller one try again. Calls already in flight past a
    /// smaller cap finish; no new one starts until they are under it.
    pub fn set_cap(&self, cap: u32) {
        let old = self.cap.replace(cap.max(1));
        if cap > old {
            self.wake_parked();
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
        (self.in_flight(), self.cap.get(), self.waiting.get())
    }

    /// Calls in flight, probes included.
    pub fn calls(&self) -> u32 {
        self.started.borrow().len() as u32
    }

    /// Calls in flight on normal permits.
    fn in_flight(&self) -> u32 {
        let calls = self.started.borrow().len() as u32;
        calls.saturating_sub(self.probes.get() + u32::from(self.lookup_out.get()))
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
            return self.cap.get();
        };
        let steps =
            (now.saturating_duration_since(from).as_millis() / RAMP_DOUBLING.as_millis()) as u32;
        let ramp = RAMP_START.checked_shl(steps.min(31)).unwrap_or(u32::MAX);
        if steps >= RAMP_STEPS || ramp >= self.cap.get() {
            self.ramp_from.set(None);
            // Whoever still waits on the slow start goes now.
            self.wake_parked();
            return self.cap.get();
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

    /// A permit for a lookup of an unknown outcome (`GET /payments/{id}`): closed, as
    /// [`Breaker::try_admit`]; open, one lookup in flight at most, at most one a
    /// [`PROBE_INTERVAL`], in a lane of their own: payments pinned here would otherwise wait
    /// behind the fresh payments that take every probe, and a processor slower than our
    /// timeout, whose every call ends unknown, closes only through a lookup that finds our
    /// payment stored.
    pub fn try_lookup(&self, now: Instant) -> Option<Permit> {
        if !self.open.get() {
            return self.try_admit(now);
        }
        if self.lookup_out.get() || now < self.next_lookup.get() {
            return None;
        }
        self.lookup_out.set(true);
        self.next_lookup.set(now + PROBE_INTERVAL);
        Some(self.permit(Kind::Lookup, now))
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
    ///
    /// The waiters share one timer: a waiter arms one only when the one the others rely on
    /// (the watch) would end after its own bound, and takes the watch over; the end of the
    /// watch's wait, however it comes, wakes every waiter. While a processor fails, every
    /// sender of the core waits here for the same next probe: one timer each cost about a
    /// third of the core's CPU meanwhile, in the timer wheel's bookkeeping (docs/benchmarks.md,
    /// "What a payment costs"), and they all ended at once anyway. A waiter may so be woken before
    /// its own bound (at a shorter one's), never after it.
    pub async fn wait_for_room(&self, max: Duration) {
        let until = Instant::now() + max;
        let watch = self
            .watch
            .get()
            .is_none_or(|(_, armed)| until < armed)
            .then(|| {
                let number = self.watches.get() + 1;
                self.watches.set(number);
                self.watch.set(Some((number, until)));
                number
            });
        let waiting = Waiting::new(self, watch);
        let parked = poll_fn(|cx| {
            if waiting.parked.replace(true) {
                return Poll::Ready(());
            }
            if waiting.watch.is_some() {
                waiting.own.set(Some(cx.waker().clone()));
            }
            self.park(cx.waker());
            Poll::Pending
        });
        if watch.is_some() {
            let _ = monoio::time::timeout(max, parked).await;
        } else {
            parked.await;
        }
    }

    /// Timers armed by waiters for room so far.
    pub fn watches(&self) -> u64 {
        self.watches.get()
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

    /// The processor answered (any answer that proves it works: 2XX or 422, or a lookup
    /// that finds our payment stored).
    pub fn success(&self, permit: Permit) {
        self.release(permit);
        self.failures.set(0);
        if self.open.replace(false) {
            self.opened_at.set(None);
            tracing::info!(
                processor = self.name,
                "processor recovered: breaker closed, slow start"
            );
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
            tracing::info!(
                processor = self.name,
                failures = n,
                "processor failing: breaker open"
            );
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
            Kind::Lookup => self.lookup_out.set(false),
        }
    }

    fn wake_one(&self) {
        let next = self.parked.borrow_mut().pop();
        if let Some(w) = next {
            w.wake();
        }
    }

    /// Wakes every parked waiter. Nobody is left relying on the watch's timer: the next to
    /// wait arms one (the watch's holder, woken too, then leaves without waking them all a
    /// second time). Called with no borrow of `parked` held: a woken waiter runs later, on
    /// its own turn.
    fn wake_parked(&self) {
        self.watch.set(None);
        let parked = std::mem::take(&mut *self.parked.borrow_mut());
        for w in parked {
            w.wake();
        }
    }
}

/// A waiter for room, counted in [`Breaker::load`] while it waits. One that holds the watch
/// (`watch`: it armed the timer the others rely on, and no shorter one took over) wakes every
/// other when its wait ends, however it ends (its timer, a wake, its sender dropped): they
/// then decide again, and one arms the next timer. One whose watch was taken over ends on
/// its own timer without waking anyone.
struct Waiting<'a> {
    breaker: &'a Breaker,
    /// The number of the timer it armed, if it armed one.
    watch: Option<u64>,
    /// Whether it parked; its waker, once parked, if it armed a timer (to take it off the
    /// list when the timer ends its wait).
    parked: Cell<bool>,
    own: Cell<Option<Waker>>,
}

impl<'a> Waiting<'a> {
    fn new(breaker: &'a Breaker, watch: Option<u64>) -> Self {
        breaker.waiting.set(breaker.waiting.get() + 1);
        Waiting {
            breaker,
            watch,
            parked: Cell::new(false),
            own: Cell::new(None),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let b = self.breaker;
        b.waiting.set(b.waiting.get().saturating_sub(1));
        let Some(number) = self.watch else {
            // Without a timer a wait ends only when woken, and the wake took its waker off
            // the list.
            return;
        };
        if let Some(own) = self.own.take() {
            // Ended by its timer, its waker may still be parked: neither the wake of every
            // waiter below (it would wake this very sender, whose next wait would then end at
            // once) nor a release's wake_one may spend itself on it.
            b.parked.borrow_mut().retain(|w| !w.will_wake(&own));
        }
        if b.watch
            .get()
            .is_some_and(|(watching, _)| watching == number)
        {
            b.watch.set(None);
            b.wake_parked();
        }
    }
}

#[cfg(test)]
mod tests;
