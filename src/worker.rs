//! The senders of one core: they drain its queue through the processors, decide where
//! each payment goes, retry, resolve attempts whose outcome was unknown, and record
//! outcomes in the core's shard.
//!
//! The rules, per attempt (see RINHA-2025.md section 3 for the processor's behaviour):
//! - 2XX: stored, with the `requestedAt` we stamped (when we expected it to be stored):
//!   record it.
//! - 500, 429 (or any 5XX): nothing stored: retry later. Connect error: nothing sent: retry.
//! - timeout, connection lost after writing, unparsable answer: maybe stored, maybe later
//!   (the processor stores after its delay even when the caller left). The payment is
//!   pinned to that processor forever and resolved with `GET /payments/{id}` there (that
//!   endpoint ignores delay and failure): 200 -> record with the processor's
//!   `requestedAt`; 404 -> send it again to the same processor (a duplicate cannot be
//!   stored there: it would answer 422).
//! - 422 after an unknown outcome: ours is stored: look it up and record it. 422 on a
//!   payment's first attempt: that id belongs to someone else's payment: not ours to
//!   record, dropped.
//!
//! With a journal, each send is preceded by a committed `attempt` record and each outcome
//! followed by a `confirmed` or `dropped` one (see [`crate::durable`]).
//!
//! Policy: the default processor only (its fee is the lowest and every top entry found
//! waiting cheaper than the fallback), unless `FALLBACK_AFTER_MS` is set: then a payment
//! that waited that long goes to the fallback while the default's breaker is open and the
//! fallback's is closed.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::processor::breaker::Permit;
use crate::processor::client::{CallError, Lookup};
use crate::processor::Processor;
use crate::queue::Queued;

/// Pause before looking up an unknown outcome again after the lookup itself failed.
const LOOKUP_RETRY: Duration = Duration::from_millis(50);
/// Pause of a sender whose `attempt` record cannot be written because the journal is
/// poisoned (the payments wait, in memory and on file, for a restart).
const POISONED_PAUSE: Duration = Duration::from_secs(1);
/// Pause of a sender after a failure while the breaker is still closed, so a processor
/// that fails fast is not spun on before the breaker opens.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

/// Runs one sender for as long as its runtime runs.
pub async fn sender(core: Rc<Core>) {
    loop {
        let payment = core.queue.pop().await;
        core.set_busy(true);
        process(&core, payment).await;
        core.set_busy(false);
    }
}

/// Takes one payment one step further.
async fn process(core: &Core, mut p: Queued) {
    let timeout = core.config.processor_timeout;
    if let (Some(attempt), Some(proc)) = (p.unresolved, p.pinned) {
        let up = core.upstream(proc);
        match up.client.get_payment(&p.id, timeout).await {
            Ok(Lookup::Found { requested_at_us }) => {
                core.shard.record(attempt, requested_at_us, p.cents, proc);
                if let Some(d) = &core.durable {
                    d.confirmed(p.id, proc, requested_at_us, p.cents);
                }
                tracing::debug!(id = %p.id, processor = proc.name(), "unknown outcome resolved: stored");
            }
            Ok(Lookup::NotFound) => {
                // Not stored (yet): send it again, to the same processor only.
                core.shard.end_attempt(attempt);
                p.unresolved = None;
                core.queue.retry_first(p);
            }
            Ok(Lookup::Other(status)) => {
                tracing::debug!(id = %p.id, status, "payment lookup refused; retrying");
                monoio::time::sleep(LOOKUP_RETRY).await;
                core.queue.retry_first(p);
            }
            Err(e) => {
                tracing::debug!(id = %p.id, error = %e, "payment lookup failed; retrying");
                monoio::time::sleep(LOOKUP_RETRY).await;
                core.queue.retry_first(p);
            }
        }
        return;
    }

    let proc = p.pinned.unwrap_or_else(|| choose(core, &p));
    let up = core.upstream(proc);
    let permit = up.breaker.admit().await;
    // Stamped with when the processor should store it, not now (store.rs, "Stamped when
    // it will be stored").
    let requested_at_us = core.shard.stamp_us(proc);
    let attempt = core.shard.begin_attempt(requested_at_us, proc);
    if let Some(d) = &core.durable {
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
            // A poisoned journal stays so until a restart: do not spin on it.
            let pause = if d.poisoned() {
                POISONED_PAUSE
            } else {
                LOOKUP_RETRY
            };
            monoio::time::sleep(pause).await;
            return;
        }
    }
    let sent = Instant::now();
    let result = up
        .client
        .post_payment(&p.id, p.cents, requested_at_us, timeout)
        .await;
    if result.is_ok() {
        // Any answer came after the processor's delay: it tells the summary how long an
        // attempt sent at this moment takes to be stored.
        core.shard.observe_response(proc, sent, sent.elapsed());
    }
    match result {
        Ok(200..=299) => {
            up.breaker.success(permit);
            core.shard.observe_latency(proc, sent.elapsed());
            core.shard.record(attempt, requested_at_us, p.cents, proc);
            if let Some(d) = &core.durable {
                d.confirmed(p.id, proc, requested_at_us, p.cents);
            }
        }
        Ok(422) if p.pinned.is_some() => {
            // An earlier attempt of ours was stored: find out with which requestedAt.
            up.breaker.success(permit);
            p.unresolved = Some(attempt);
            core.queue.retry_first(p);
        }
        Ok(422) => {
            up.breaker.success(permit);
            core.shard.end_attempt(attempt);
            if let Some(d) = &core.durable {
                d.dropped(p.id);
            }
            tracing::debug!(id = %p.id, "correlationId already used by another payment; dropped");
        }
        Ok(status) if status == 429 || status >= 500 => {
            core.shard.end_attempt(attempt);
            failed(core, proc, permit, p).await;
        }
        Ok(status) => {
            // A 4XX other than 422/429 means the processor refuses this request as written;
            // repeating it cannot succeed.
            up.breaker.success(permit);
            core.shard.end_attempt(attempt);
            if let Some(d) = &core.durable {
                d.dropped(p.id);
            }
            tracing::warn!(id = %p.id, status, "processor refused the payment; dropped");
        }
        Err(CallError::Connect(e)) => {
            tracing::debug!(processor = proc.name(), error = %e, "connect failed");
            core.shard.end_attempt(attempt);
            failed(core, proc, permit, p).await;
        }
        Err(CallError::Unknown(e)) => {
            tracing::debug!(id = %p.id, processor = proc.name(), error = %e, "outcome unknown; pinned");
            p.pinned = Some(proc);
            p.unresolved = Some(attempt);
            up.breaker.failure(permit);
            core.queue.retry_first(p);
        }
    }
}

async fn failed(core: &Core, proc: Processor, permit: Permit, p: Queued) {
    let breaker = &core.upstream(proc).breaker;
    breaker.failure(permit);
    core.queue.retry_later(p);
    if !breaker.is_open() {
        monoio::time::sleep(FAILURE_PAUSE).await;
    }
}

/// Where an unpinned payment goes.
fn choose(core: &Core, p: &Queued) -> Processor {
    if let Some(after) = core.config.fallback_after {
        if p.accepted_at.elapsed() >= after
            && core.upstream(Processor::Default).breaker.is_open()
            && !core.upstream(Processor::Fallback).breaker.is_open()
        {
            return Processor::Fallback;
        }
    }
    Processor::Default
}
