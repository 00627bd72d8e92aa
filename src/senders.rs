//! The senders of one core: they drain its queue through the processors, decide where
//! each payment goes, retry, resolve attempts whose outcome was unknown, and record
//! outcomes in the core's shard.
//!
//! The rules, per attempt (see RINHA-2025.md section 3 for the processor's behaviour):
//! - 2XX: stored, with the `requestedAt` we stamped (when we expected it to be stored):
//!   record it.
//! - 500, 429 (or any 5XX): nothing stored: retry later. Connect error: nothing sent: retry.
//! - any other status (404, 401/403, 408, 3XX: a misconfiguration or a proxy's refusal, never
//!   the processor's verdict): nothing stored: counted, warned about, retried later
//!   ([`crate::processor::refusals`]).
//! - timeout, connection lost after writing, unparsable answer: maybe stored, maybe later
//!   (the processor stores after its delay even when the caller left). The payment is
//!   pinned to that processor forever and resolved with `GET /payments/{id}` there (that
//!   endpoint ignores delay and failure): 200 with one of this payment's own attempt stamps
//!   (each attempt to the pinned processor keeps its `requestedAt` with the payment) ->
//!   record it; 200 with another stamp -> the processor holds a copy's payment under this
//!   id (the same correlationId accepted by another core or instance): ours can never be
//!   stored there, dropped; 404 -> not stored yet: still in flight, looked up again, and
//!   sent again to the same processor only once older than [`crate::lookup::resend_after`]
//!   (a duplicate cannot be stored there: it would answer 422). Lookups, and sends of pinned payments, take the
//!   processor's breaker like any call and step aside with a back-off when they cannot go
//!   or fail ([`crate::lookup`]): they never hold a sender that fresh payments could use.
//! - 422 after an unknown outcome: ours or a copy's is stored: look it up, as above. 422 on
//!   a payment's first attempt: that id belongs to someone else's payment: not ours to
//!   record, dropped.
//!
//! With a journal, each send is preceded by a committed `attempt` record and each outcome
//! followed by a `confirmed` or `dropped` one (see [`crate::journal::commit`]).
//!
//! A payment a purge forgot while a sender held it ([`crate::queue::Queue::is_current`]) is
//! not sent, its outcome is not recorded, and it is not put back.
//!
//! Policy ([`crate::route`]): each unpinned payment goes to the processor with the lower
//! expected cost (fee against the risk of waiting), re-decided whenever the chosen one has
//! no room, so a payment held for a failing default moves to the fallback once waiting no
//! longer pays. `FALLBACK_AFTER_MS`, when set, also sends to a working fallback a payment
//! that waited that long while the default's breaker is open.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core_state::CoreState;
use crate::lookup;
use crate::processor::breaker::Permit;
use crate::processor::client::CallError;
use crate::processor::Processor;
use crate::queue::Queued;
use crate::store::{on_lane, AttemptId};

/// Pause of a sender whose `attempt` record could not be committed.
const COMMIT_RETRY: Duration = Duration::from_millis(50);
/// Pause of a sender whose `attempt` record cannot be written because the journal refuses
/// commits (waiting to open its compacted file; the payments wait, in memory and on file).
const POISONED_PAUSE: Duration = Duration::from_secs(1);
/// Pause of a sender after a failure while the breaker is still closed, so a processor
/// that fails fast is not spun on before the breaker opens.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);
/// A sender whose chosen processor has no room decides again at least this often (an
/// outage's price grows with its length even when nothing else happens).
const RECONSIDER: Duration = Duration::from_millis(100);

/// Runs one sender for as long as its runtime runs.
pub async fn sender(core: Rc<CoreState>) {
    // Fairness at a processor's cap: a sender back from a call takes the head of the line
    // without yielding (but after a failure's pause), and pinned work (lookups, re-sends)
    // waits at the head, so the slot it freed goes to that work before any sender parked
    // for room (woken by the release) runs: fresh payments never starve it.
    loop {
        let payment = core.queue.pop().await;
        core.set_busy(true);
        process(&core, payment).await;
        core.set_busy(false);
    }
}

/// Takes one payment one step further: a lookup for an unknown outcome, else a send to the
/// processor that admits it, and its outcome settled.
async fn process(core: &Rc<CoreState>, p: Queued) {
    if p.unresolved().is_some() {
        return lookup::resolve(core, p).await;
    }
    let Some((p, proc, permit)) = admit(core, p).await else {
        return;
    };
    let Some((p, attempt)) = begin(core, p, proc, permit).await else {
        return;
    };
    let sent = core.shard.sending(attempt.id);
    let result = core
        .upstream(proc)
        .client
        .post_payment(
            &p.id,
            p.cents,
            attempt.requested_at_us,
            core.config.processor_timeout,
        )
        .await;
    if result.is_ok() {
        // Any answer came after the processor's delay: it tells the summary how long an
        // attempt sent at this moment takes to be stored.
        core.shard
            .timing
            .observe_response(proc, sent, sent.elapsed());
    }
    settle(core, p, attempt, sent, result).await;
}

/// One attempt under way: where, with which permit, and the `requestedAt` it carries.
struct Attempt {
    proc: Processor,
    permit: Permit,
    id: AttemptId,
    requested_at_us: i64,
}

/// The processor a payment goes to, with the permit to send it there: its pinned processor
/// (if it admits no call now, the payment steps aside: `None`), else the one [`place`]
/// picks.
async fn admit(core: &Rc<CoreState>, p: Queued) -> Option<(Queued, Processor, Permit)> {
    let (proc, permit) = match p.pinned() {
        // A pinned payment can go nowhere else: rather than hold a sender while its
        // processor admits nothing, it steps aside (lookup.rs).
        Some(proc) => match core.upstream(proc).breaker.try_admit(Instant::now()) {
            Some(permit) => (proc, permit),
            None => {
                lookup::back_off(core, p, "the processor admits no call now");
                return None;
            }
        },
        None => place(core, &p).await,
    };
    Some((p, proc, permit))
}

/// Stamps the attempt, marks it in flight and, with a journal, puts it on file; `None` (the
/// permit given back) when it must not be sent: the commit failed (the payment is queued
/// again) or a purge forgot the payment meanwhile.
async fn begin(
    core: &CoreState,
    mut p: Queued,
    proc: Processor,
    permit: Permit,
) -> Option<(Queued, Attempt)> {
    let up = core.upstream(proc);
    // Stamped with when the processor should store it, not now (src/store/timing.rs), on
    // this core's own milliseconds.
    let requested_at_us = on_lane(
        core.shard.timing.stamp_us(proc),
        core.id,
        core.config.workers,
    );
    p.note_attempt(proc, requested_at_us);
    let attempt = core.shard.begin_attempt(requested_at_us, proc);
    if let Some(d) = &core.journal {
        // The attempt must be on file before the send: a payment replayed without it
        // would be sent blindly and, if this send stored it, refused as a duplicate (422)
        // and never recorded.
        if d.committed(d.attempt(p.id, proc, requested_at_us))
            .await
            .is_err()
        {
            core.shard.end_attempt(attempt);
            up.breaker.cancel(permit);
            core.queue.retry_later(p);
            // A journal refusing commits does so for a while: do not spin on it.
            let pause = if d.poisoned() {
                POISONED_PAUSE
            } else {
                COMMIT_RETRY
            };
            monoio::time::sleep(pause).await;
            return None;
        }
    }
    if !core.queue.is_current(&p) {
        // Purged while it waited for room or for its attempt's commit: never sent.
        core.shard.end_attempt(attempt);
        up.breaker.cancel(permit);
        return None;
    }
    let attempt = Attempt {
        proc,
        permit,
        id: attempt,
        requested_at_us,
    };
    Some((p, attempt))
}

/// What the answer to an attempt sent at `sent` means for the payment (the rules of the
/// module doc): recorded, dropped, pinned for a lookup, or queued again.
async fn settle(
    core: &CoreState,
    mut p: Queued,
    attempt: Attempt,
    sent: Instant,
    result: Result<u16, CallError>,
) {
    let Attempt {
        proc,
        permit,
        id: attempt,
        requested_at_us,
    } = attempt;
    let up = core.upstream(proc);
    match result {
        Ok(status) if status < 500 && status != 429 && !core.queue.is_current(&p) => {
            // Purged while it was out: the answer tells the breaker about the processor,
            // and nothing is recorded, stored or not.
            up.breaker.success(permit);
            core.shard.end_attempt(attempt);
        }
        Ok(200..=299) => {
            up.breaker.success(permit);
            core.shard.timing.observe_latency(proc, sent.elapsed());
            core.shard.record(attempt, requested_at_us, p.cents, proc);
            core.counters.processed(proc);
            if let Some(d) = &core.journal {
                d.confirmed(p.id, proc, requested_at_us, p.cents);
            }
        }
        Ok(422) if p.pinned().is_some() => {
            // An earlier attempt of ours was stored, or a copy's: find out with which
            // requestedAt.
            up.breaker.success(permit);
            p.pin_unknown(proc, attempt, requested_at_us, sent);
            core.queue.retry_first(p);
        }
        Ok(422) => {
            up.breaker.success(permit);
            core.shard.end_attempt(attempt);
            if let Some(d) = &core.journal {
                d.dropped(p.id);
            }
            tracing::debug!(id = %p.id, "correlationId already used by another payment; dropped");
        }
        Ok(status) if status == 429 || status >= 500 => {
            core.shard.end_attempt(attempt);
            failed(core, proc, permit, p).await;
        }
        Ok(status) => {
            // Any other status proves nothing about the payment (a wrong URL's 404, a proxy's
            // 401/403, a 408, a 3XX): it was not stored, and the client has its 202. Kept and
            // sent again after the breaker's back-off, as for a 5XX; counted and warned about.
            up.refusals.note(proc, status, Instant::now());
            core.shard.end_attempt(attempt);
            failed(core, proc, permit, p).await;
        }
        Err(CallError::Connect(e)) => {
            tracing::debug!(processor = proc.name(), error = %e, "connect failed");
            core.shard.end_attempt(attempt);
            failed(core, proc, permit, p).await;
        }
        Err(CallError::Unknown(e)) => {
            tracing::debug!(id = %p.id, processor = proc.name(), error = %e, "outcome unknown; pinned");
            p.pin_unknown(proc, attempt, requested_at_us, sent);
            core.counters.unknown(proc);
            up.breaker.failure(permit);
            core.queue.retry_first(p);
        }
    }
}

async fn failed(core: &CoreState, proc: Processor, permit: Permit, p: Queued) {
    let breaker = &core.upstream(proc).breaker;
    breaker.failure(permit);
    core.queue.retry_later(p);
    if !breaker.is_open() {
        monoio::time::sleep(FAILURE_PAUSE).await;
    }
}

/// Where an unpinned payment goes, with the permit to send it there: the cheaper processor
/// ([`crate::route::choose`]), or the other one as a scout; decided again whenever the
/// choice has no room.
async fn place(core: &CoreState, p: &Queued) -> (Processor, Permit) {
    loop {
        let now = Instant::now();
        if let Some(permit) = fallback_after(core, p, now) {
            core.counters.routed(Processor::Fallback);
            return (Processor::Fallback, permit);
        }
        let decision = crate::route::choose(
            &core.outlook(Processor::Default, now),
            &core.outlook(Processor::Fallback, now),
            &core.config.policy,
        );
        if let Some(scout) = decision.scout {
            if let Some(permit) = core.upstream(scout).breaker.try_scout(now) {
                core.counters.routed(scout);
                return (scout, permit);
            }
        }
        let breaker = &core.upstream(decision.choice).breaker;
        if let Some(permit) = breaker.try_admit(now) {
            core.counters.routed(decision.choice);
            return (decision.choice, permit);
        }
        let wait = breaker
            .until_probe(now)
            .map_or(RECONSIDER, |d| d.min(RECONSIDER));
        breaker
            .wait_for_room(wait.max(Duration::from_millis(1)))
            .await;
    }
}

/// `FALLBACK_AFTER_MS`: a payment that waited that long goes to a working fallback while the
/// default's breaker is open.
fn fallback_after(core: &CoreState, p: &Queued, now: Instant) -> Option<Permit> {
    let after = core.config.fallback_after?;
    let fallback = &core.upstream(Processor::Fallback).breaker;
    if now.saturating_duration_since(p.accepted_at) >= after
        && core.upstream(Processor::Default).breaker.is_open()
        && !fallback.is_open()
    {
        fallback.try_admit(now)
    } else {
        None
    }
}
