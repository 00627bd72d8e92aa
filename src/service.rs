//! What each request means: routing by method and path, and the answers.
//!
//! `POST /payments` is the hot path, the one p99 is made of: parse the body, validate, take
//! its id in the core's map of accepted ids (src/ids.rs), push on the core's queue, answer 202
//! (with `DATA_DIR`, once the `accepted` record is in the journal). It must never allocate per
//! request beyond the queue entry (and the id map's growth, reserved up front), take a lock,
//! or log above debug. Everything else (summaries, purges) is rare and may take the slow road
//! through the summary aggregator.

use std::time::Instant;

use crate::core_state::CoreState;
use crate::http::request::{query_param, Method, Request};
use crate::http::response::{self, status, Connection};
use crate::ids::Seen;
use crate::journal::SyncMode;
use crate::origin::Origin;
use crate::payment;
use crate::queue::Queued;
use crate::summary::codec::write_summary;
use crate::summary::{parse_window, AsOf, SummaryError};

/// Answers `req`, which came on a connection of `origin`, into `out`.
pub async fn handle(core: &CoreState, origin: Origin, req: &Request<'_>, out: &mut Vec<u8>) {
    let conn = Connection {
        keep_alive: req.keep_alive,
        http10: req.http10,
    };
    // Only a peer may see the internal endpoints: to anyone else they do not exist.
    if req.path.starts_with(b"/internal/") && !origin.is_internal() {
        return response::empty(out, status::NOT_FOUND, conn);
    }
    match (req.path, req.method) {
        (b"/payments", Method::Post) => accept_payment(core, req.body, conn, out).await,
        (b"/payments-summary", Method::Get) => summary(core, req.query, true, conn, out).await,
        (b"/internal/payments-summary", Method::Get) => {
            summary(core, req.query, false, conn, out).await
        }
        // The internal purge needs the token too, as a second lock on the peer socket.
        (path @ (b"/purge-payments" | b"/internal/purge-payments"), Method::Post) => {
            let allowed = match &core.config.purge_token {
                None => true,
                Some(token) => req.purge_token == Some(token.as_bytes()),
            };
            if allowed {
                purge(core, path == b"/purge-payments", conn, out).await;
            } else {
                response::json(
                    out,
                    status::UNAUTHORIZED,
                    conn,
                    br#"{"error":"bad X-Purge-Token"}"#,
                );
            }
        }
        (b"/payments" | b"/purge-payments" | b"/internal/purge-payments", _) => {
            response::method_not_allowed(out, conn, b"POST")
        }
        (b"/payments-summary" | b"/internal/payments-summary", _) => {
            response::method_not_allowed(out, conn, b"GET")
        }
        _ => response::empty(out, status::NOT_FOUND, conn),
    }
}

/// The hot path (see the module doc). A correlationId this core accepted before is answered
/// as it was (the same amount: 202, nothing queued) or refused (another amount: 409). With a
/// journal, the 202 waits for the commit that holds the payment's `accepted` record (made at
/// once with `JOURNAL_SYNC=none`), and the payment is queued only then: a failed commit
/// answers 503 and leaves nothing behind.
async fn accept_payment(core: &CoreState, body: &[u8], conn: Connection, out: &mut Vec<u8>) {
    let p = match payment::parse(body) {
        Ok(p) => p,
        Err(e) => return response::json(out, status::BAD_REQUEST, conn, e.json()),
    };
    let ids = &core.shard.ids;
    match ids.take(p.id, p.cents) {
        Seen::New => {}
        Seen::Same { pending: None } => return response::empty(out, status::ACCEPTED, conn),
        Seen::Same { pending: Some(gen) } => {
            // The first copy still waits for its commit: this one gets the same answer.
            let committed = match &core.journal {
                Some(d) => d.committed(gen).await.is_ok(),
                None => true,
            };
            return if committed {
                response::empty(out, status::ACCEPTED, conn)
            } else {
                journal_unavailable(out, conn)
            };
        }
        Seen::OtherAmount => {
            return response::json(
                out,
                status::CONFLICT,
                conn,
                br#"{"error":"correlationId already accepted with another amount"}"#,
            )
        }
    }
    // The id is taken from here on: every refusal below gives it back.
    let Some(durable) = &core.journal else {
        return match core.queue.accept(p) {
            Ok(()) => {
                core.counters.accepted.inc();
                response::empty(out, status::ACCEPTED, conn)
            }
            Err(_) => {
                ids.remove(&p.id);
                response::json(out, status::UNAVAILABLE, conn, br#"{"error":"queue full"}"#)
            }
        };
    };
    if !core.queue.has_room() {
        ids.remove(&p.id);
        return response::json(out, status::UNAVAILABLE, conn, br#"{"error":"queue full"}"#);
    }
    if durable.poisoned() {
        ids.remove(&p.id);
        return journal_unavailable(out, conn);
    }
    // Taken before the record: a purge while the commit is made forgets this payment (its
    // `accepted` precedes the `purged`), and `admit` then drops it.
    let accepted_at = Instant::now();
    let gen = durable.accepted(p.id, p.cents);
    // A copy can arrive while this one waits for its commit only if it waits at all: with
    // `JOURNAL_SYNC=none` the record is committed as it is appended (journal/commit.rs).
    let waits = core.config.journal_sync == SyncMode::Batch;
    if waits {
        ids.pending(p.id, gen);
    }
    match durable.committed(gen).await {
        Ok(()) => {
            if waits {
                ids.committed(&p.id);
            }
            core.queue.admit(Queued {
                accepted_at,
                ..Queued::new(p.id, p.cents)
            });
            core.counters.accepted.inc();
            response::empty(out, status::ACCEPTED, conn)
        }
        Err(_) => {
            ids.remove(&p.id);
            journal_unavailable(out, conn)
        }
    }
}

fn journal_unavailable(out: &mut Vec<u8>, conn: Connection) {
    response::json(
        out,
        status::UNAVAILABLE,
        conn,
        br#"{"error":"journal unavailable"}"#,
    )
}

async fn summary(
    core: &CoreState,
    query: &[u8],
    include_peers: bool,
    conn: Connection,
    out: &mut Vec<u8>,
) {
    // The moment this summary is taken at (src/store/, "As of when"): now, or for a peer's
    // internal query the moment the first instance received it.
    let as_of = if include_peers {
        AsOf::now()
    } else {
        query_param(query, b"asof")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .map_or_else(AsOf::now, AsOf::from_wall_us)
    };
    let Some(window) = parse_window(query) else {
        response::json(
            out,
            status::BAD_REQUEST,
            conn,
            br#"{"error":"from/to must be ISO-8601 timestamps, e.g. 2025-07-15T12:34:56.000Z"}"#,
        );
        return;
    };
    match core.aggregator.summary(window, as_of, include_peers).await {
        Ok(totals) => {
            let mut body = Vec::with_capacity(128);
            write_summary(&mut body, &totals);
            response::json(out, status::OK, conn, &body);
        }
        Err(e) => incomplete(
            out,
            conn,
            "summary",
            &e,
            br#"{"error":"summary incomplete"}"#,
        ),
    }
}

async fn purge(core: &CoreState, include_peers: bool, conn: Connection, out: &mut Vec<u8>) {
    match core.aggregator.purge(include_peers).await {
        Ok(()) => response::json(
            out,
            status::OK,
            conn,
            br#"{"message":"All payments purged."}"#,
        ),
        Err(e) => incomplete(out, conn, "purge", &e, br#"{"error":"purge incomplete"}"#),
    }
}

/// Answers a summary or purge (`what`) that could not be made whole with `body`, and logs
/// why. A peer that did not answer is a gateway's failure; ours (a shard that did not
/// answer, a journal that cannot record a purge) is this service being unavailable: both are
/// safe to retry.
fn incomplete(out: &mut Vec<u8>, conn: Connection, what: &str, e: &SummaryError, body: &[u8]) {
    tracing::warn!(error = %e, "{what} failed");
    let code = match e {
        SummaryError::Peer { .. } => status::BAD_GATEWAY,
        SummaryError::Shard | SummaryError::Aggregator => status::UNAVAILABLE,
    };
    response::json(out, code, conn, body);
}
