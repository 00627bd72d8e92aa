//! Payments whose outcome is unknown: resolving them with `GET /payments/{id}` at the
//! processor they are pinned to, and setting aside, with a back-off, whatever cannot go now.
//!
//! A lookup takes a permit from the pinned processor's breaker like any call (so an
//! unreachable processor is asked once per probe interval, not by every payment at once) but
//! never waits for one: a payment that cannot be looked up or sent now leaves the line for a
//! while ([`set_aside`]) and comes back at its head, so pinned payments never hold a sender
//! while fresh ones could go to the other processor. Each failure in a row doubles the wait
//! ([`backoff`]: 50 ms to 2 s); a payment failing for [`STUCK_AFTER`] lookups in a row is
//! logged at warn, at most once per [`STUCK_LOG_EVERY`] per core.
//!
//! A processor slower than `PROCESSOR_TIMEOUT_MS` stores the payment after the call gave up,
//! so a 404 proves nothing until the attempt is old: it stays in flight (the summary's as-of
//! rule awaits it) and is looked up again every [`recheck`], and sent again only once older
//! than [`resend_after`]. A lookup that finds our payment stored is a success for the breaker
//! (the processor works, only slower than we wait); a 404 is neutral.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core_state::CoreState;
use crate::processor::client::{CallError, Lookup};
use crate::queue::Queued;

/// The first wait after a lookup or a pinned send could not go or failed...
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// ...doubling up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A lookup answers at once when the processor works (it ignores the payment delay): one
/// that takes longer than this (or `PROCESSOR_TIMEOUT_MS`, if shorter) has failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Setbacks in a row after which a payment counts as stuck (~1.5 s of failed lookups).
pub const STUCK_AFTER: u32 = 6;
/// At most one stuck warning per core per this long.
pub const STUCK_LOG_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    /// This core's stuck payments, and when that was last logged (one runtime per thread).
    static STUCK: Cell<(usize, Option<Instant>)> = const { Cell::new((0, None)) };
}

/// An unknown attempt not found yet is sent again only once older than this many times
/// how long its call was out (a timeout: `PROCESSOR_TIMEOUT_MS`, which the processor's delay
/// then exceeds) and than this many times the processor's storage delay seen last (its last
/// answer's response time, or how long the last payment a lookup found had been out).
pub const RESEND_AFTER: u32 = 2;
/// A lookup that did not find an unknown attempt yet asks again after a quarter of its age,
/// within these bounds: often enough that a payment stored just before a summary is found
/// within the summary's wait (`summary::SHARD_WAIT`, 500 ms).
pub const RECHECK_MIN: Duration = Duration::from_millis(25);
pub const RECHECK_MAX: Duration = Duration::from_millis(200);

/// How old an unknown attempt to `proc` whose call was out for `out` must be before a lookup
/// that does not find it lets the payment be sent again: the processor stores after its
/// delay, however long, so an attempt younger than that may still be stored. A call cut
/// early (a reset connection) leaves a short bound; one that timed out, a long one.
pub fn resend_after(
    core: &CoreState,
    proc: crate::processor::Processor,
    out: Duration,
) -> Duration {
    out.max(core.shard.timing.storage_seen(proc)) * RESEND_AFTER
}

/// The age of `p`'s unknown attempt and how old it must be before it is sent again
/// ([`resend_after`]): it may still be stored while younger. An attempt from before a
/// restart is of unknown age: old.
fn unknown_age(
    core: &CoreState,
    proc: crate::processor::Processor,
    p: &Queued,
) -> (Duration, Duration) {
    match p.pin.as_ref().and_then(|pin| pin.unknown_call) {
        Some((sent, out)) => (sent.elapsed(), resend_after(core, proc, out)),
        None => (Duration::MAX, Duration::ZERO),
    }
}

/// When to look again for an unknown attempt of age `age` not found yet, which is sent again
/// once older than `resend_after`: a quarter of its age within [`RECHECK_MIN`] and
/// [`RECHECK_MAX`], but no later than when it comes of that age. An attempt cut early (a
/// reset connection, a bound of a few ms) then goes again within ms, not 25 ms later, about
/// when a client's copy sent to the other instance right after goes: a re-send stamped in
/// that copy's millisecond cannot be told from it (docs/reliability.md, "Not covered").
pub fn recheck(age: Duration, resend_after: Duration) -> Duration {
    (age / 4)
        .clamp(RECHECK_MIN, RECHECK_MAX)
        .min(resend_after.saturating_sub(age))
}

/// The wait after `setbacks` setbacks in a row (at least one).
pub fn backoff(setbacks: u32) -> Duration {
    let doublings = setbacks.saturating_sub(1).min(16);
    (BACKOFF_MIN * (1u32 << doublings)).min(BACKOFF_MAX)
}

/// Resolves a pinned payment's unknown attempt by looking it up at its processor.
pub async fn resolve(core: &Rc<CoreState>, mut p: Queued) {
    let (Some(attempt), Some(proc)) = (p.unresolved(), p.pinned()) else {
        return core.queue.retry_first(p);
    };
    let up = core.upstream(proc);
    let Some(permit) = up.breaker.try_lookup(Instant::now()) else {
        // An attempt young enough to be stored any moment is asked about again soon: the
        // summary awaits it, and the breaker's lookup lane frees every probe interval.
        let (age, old_at) = unknown_age(core, proc, &p);
        let most = if age < old_at {
            RECHECK_MAX
        } else {
            BACKOFF_MAX
        };
        return back_off_within(core, p, "the processor admits no call now", most);
    };
    core.counters.lookup(proc);
    let timeout = core.config.processor_timeout.min(LOOKUP_TIMEOUT);
    let result = up.client.get_payment(&p.id, timeout).await;
    // Our payment found stored proves the processor works: a success for the breaker (else a
    // processor slower than the timeout, whose every call ends unknown, would never close
    // it). Any other answer says it is reachable, not that it stores payments (the lookup
    // ignores its failure mode): neutral. No answer is a failure.
    match result {
        // Purged while it was looked up: nothing of before a purge is recorded.
        Ok(Lookup::Found { .. }) if !core.queue.is_current(&p) => {
            up.breaker.cancel(permit);
            unstick(&mut p);
            core.shard.end_attempt(attempt);
        }
        Ok(Lookup::Found {
            requested_at_us,
            cents,
        }) if p.holds_stamp(requested_at_us) && cents.is_none_or(|c| c == p.cents) => {
            up.breaker.success(permit);
            unstick(&mut p);
            if let Some((sent, _)) = p.pin.as_ref().and_then(|pin| pin.unknown_call) {
                core.shard.timing.observe_found(proc, sent.elapsed());
            }
            core.shard.record(attempt, requested_at_us, p.cents, proc);
            core.counters.processed(proc);
            if let Some(d) = &core.journal {
                d.confirmed(p.id, proc, requested_at_us, p.cents);
            }
            tracing::debug!(id = %p.id, processor = proc.name(), "unknown outcome resolved: stored");
        }
        Ok(Lookup::Found { .. }) => {
            // The processor holds a payment under this id that none of our attempts sent: a
            // copy's (the same id accepted by another core or instance). Ours can never be
            // stored there (it would be a duplicate): settled, not counted.
            up.breaker.cancel(permit);
            unstick(&mut p);
            core.shard.end_attempt(attempt);
            if let Some(d) = &core.journal {
                d.dropped(p.id);
            }
            tracing::debug!(id = %p.id, processor = proc.name(), "correlationId stored by another copy; dropped");
        }
        Ok(Lookup::NotFound) if !core.queue.is_current(&p) => {
            up.breaker.cancel(permit);
            unstick(&mut p);
            core.shard.end_attempt(attempt);
        }
        Ok(Lookup::NotFound) => {
            up.breaker.cancel(permit);
            unstick(&mut p);
            let (age, old_at) = unknown_age(core, proc, &p);
            if age < old_at {
                // Not stored yet, maybe later (a processor slower than our timeout stores
                // after it): still in flight for the summary, looked up again soon.
                return set_aside(core, p, recheck(age, old_at));
            }
            // Not stored, long after it could have been: send it again, to the same
            // processor only.
            core.shard.end_attempt(attempt);
            if let Some(pin) = p.pin.as_mut() {
                pin.unresolved = None;
            }
            core.queue.retry_first(p);
        }
        Ok(Lookup::Unreadable) => {
            up.breaker.cancel(permit);
            back_off(core, p, "its answer has no readable requestedAt");
        }
        Ok(Lookup::Other(status)) => {
            if status == 429 || status >= 500 {
                up.breaker.failure(permit);
            } else {
                up.breaker.cancel(permit);
            }
            back_off(core, p, &format!("it answered {status}"));
        }
        Err(e @ (CallError::Connect(_) | CallError::Unknown(_))) => {
            up.breaker.failure(permit);
            back_off(core, p, &e.to_string());
        }
    }
}

/// A pinned payment (or its lookup) could not go now, or failed: set it aside for its
/// back-off, counting and logging it once it is stuck.
pub fn back_off(core: &Rc<CoreState>, p: Queued, reason: &str) {
    back_off_within(core, p, reason, BACKOFF_MAX)
}

/// [`back_off`], waiting at most `most`.
fn back_off_within(core: &Rc<CoreState>, mut p: Queued, reason: &str, most: Duration) {
    let Some(pin) = p.pin.as_mut() else {
        return set_aside(core, p, BACKOFF_MIN);
    };
    pin.setbacks = pin.setbacks.saturating_add(1);
    let delay = backoff(pin.setbacks).min(most);
    tracing::debug!(id = %p.id, processor = pin.processor.name(), setbacks = pin.setbacks, reason, "pinned payment set aside");
    if pin.unresolved.is_some() && pin.setbacks >= STUCK_AFTER {
        let now = Instant::now();
        let (mut stuck, logged) = STUCK.get();
        if !pin.stuck {
            pin.stuck = true;
            stuck += 1;
        }
        let due = logged.is_none_or(|t| now.saturating_duration_since(t) >= STUCK_LOG_EVERY);
        STUCK.set((stuck, if due { Some(now) } else { logged }));
        if due {
            tracing::warn!(
                core = core.id,
                id = %p.id,
                processor = pin.processor.name(),
                lookups = pin.setbacks,
                reason,
                stuck,
                "payment outcome unknown and its lookup keeps failing; retrying with back-off"
            );
        }
    }
    set_aside(core, p, delay);
}

/// The payment left the stuck state (resolved either way).
fn unstick(p: &mut Queued) {
    if let Some(pin) = p.pin.as_mut() {
        pin.setbacks = 0;
        if std::mem::take(&mut pin.stuck) {
            let (stuck, logged) = STUCK.get();
            STUCK.set((stuck.saturating_sub(1), logged));
        }
    }
}

/// Takes `p` out of the line for `delay`, then back at its head: it holds no sender meanwhile.
pub fn set_aside(core: &Rc<CoreState>, p: Queued, delay: Duration) {
    if core.queue.set_aside(p, Instant::now() + delay) {
        let core = core.clone();
        monoio::spawn(async move { core.queue.return_aside().await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap() {
        let waits: Vec<u128> = (1..=8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(0), BACKOFF_MIN);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        // Stuck after about a second and a half of failed lookups.
        let before: Duration = (1..STUCK_AFTER).map(backoff).sum();
        assert!(before >= Duration::from_secs(1) && before <= Duration::from_secs(2));
    }

    #[test]
    fn a_young_unknown_attempt_is_asked_about_often_an_old_one_less() {
        let ms = |n| Duration::from_millis(n);
        let timeout = ms(60_000);
        assert_eq!(recheck(ms(0), timeout), RECHECK_MIN);
        assert_eq!(recheck(ms(200), timeout), ms(50), "a quarter of its age");
        assert_eq!(recheck(ms(60_000), ms(120_000)), RECHECK_MAX);
        // No later than when it may be sent again: a reset connection's attempt (a bound of
        // a few ms) goes again within ms, long before a copy sent 20 ms later.
        assert_eq!(recheck(ms(1), ms(3)), ms(2));
        assert_eq!(recheck(ms(190), ms(200)), ms(10));
        // Within the summary's wait, so a payment stored just before one is found by then.
        assert!(RECHECK_MAX < crate::summary::aggregator::SHARD_WAIT);
    }
}
