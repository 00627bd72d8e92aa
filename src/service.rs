//! What each request means: routing by method and path, and the answers.
//!
//! `POST /payments` is the hot path, the one p99 is made of: parse the body, validate, take
//! its id in the core's map of accepted ids (src/ids.rs), push on the core's queue, answer 202
//! (with `DATA_DIR`, once the `accepted` record is in the journal). It must never allocate per
//! request beyond the queue entry (and the id map's growth, reserved up front), take a lock,
//! or log above debug. Everything else (summaries, purges) is rare and may take the slow road
//! through the router thread.

use std::time::Instant;

use crate::core::Core;
use crate::http::request::{percent_decode, query_param, Method, Request};
use crate::http::response::{self, status, Connection};
use crate::ids::Seen;
use crate::journal::SyncMode;
use crate::payment;
use crate::queue::Queued;
use crate::router::{write_summary, SummaryError};
use crate::store::{AsOf, Window};
use crate::time::parse_iso;

/// Answers `req` into `out`.
pub async fn handle(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) {
    let conn = Connection {
        keep_alive: req.keep_alive,
        http10: req.http10,
    };
    match (req.path, req.method) {
        (b"/payments", Method::Post) => accept_payment(core, req.body, conn, out).await,
        (b"/payments-summary", Method::Get) => summary(core, req.query, true, conn, out).await,
        (b"/internal/payments-summary", Method::Get) => {
            summary(core, req.query, false, conn, out).await
        }
        // The internal purge needs the token too: the layer-4 lb forwards every path.
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
async fn accept_payment(core: &Core, body: &[u8], conn: Connection, out: &mut Vec<u8>) {
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
            let committed = match &core.durable {
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
    let Some(durable) = &core.durable else {
        return match core.queue.accept(p) {
            Ok(()) => response::empty(out, status::ACCEPTED, conn),
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
    // `JOURNAL_SYNC=none` the record is committed as it is appended (durable.rs).
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
    core: &Core,
    query: &[u8],
    include_peers: bool,
    conn: Connection,
    out: &mut Vec<u8>,
) {
    // The moment this summary is taken at (store.rs, "As of when"): now, or for a peer's
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
    match core.router.summary(window, as_of, include_peers).await {
        Ok(totals) => {
            let mut body = Vec::with_capacity(128);
            write_summary(&mut body, &totals);
            response::json(out, status::OK, conn, &body);
        }
        Err(e) => {
            tracing::warn!(error = %e, "summary failed");
            let code = match e {
                SummaryError::Peer(..) => status::BAD_GATEWAY,
                SummaryError::Shard | SummaryError::Router => status::UNAVAILABLE,
            };
            response::json(out, code, conn, br#"{"error":"summary incomplete"}"#);
        }
    }
}

async fn purge(core: &Core, include_peers: bool, conn: Connection, out: &mut Vec<u8>) {
    match core.router.purge(include_peers).await {
        Ok(()) => response::json(
            out,
            status::OK,
            conn,
            br#"{"message":"All payments purged."}"#,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "purge failed");
            // A peer that did not purge is a gateway's failure; ours (the journal cannot
            // record it) is this service being unavailable: both are safe to retry.
            let code = match e {
                SummaryError::Peer(..) => status::BAD_GATEWAY,
                SummaryError::Shard | SummaryError::Router => status::UNAVAILABLE,
            };
            response::json(out, code, conn, br#"{"error":"purge incomplete"}"#);
        }
    }
}

/// `from`/`to` of a summary query in UTC (a bound with an offset, `+03:00`, is converted),
/// normalised to whole milliseconds (records are stamped in milliseconds, so an inclusive
/// bound rounds inwards). `None` if a value is malformed.
///
/// Like the processors' admin summary (RINHA-2025.md section 3), if either bound is missing
/// the window is unbounded on both sides: we must agree with them for the same query.
pub fn parse_window(query: &[u8]) -> Option<Window> {
    let bound = |key: &[u8]| -> Result<Option<i64>, ()> {
        match query_param(query, key) {
            None => Ok(None),
            Some(b"") => Ok(None),
            Some(raw) => {
                let mut buf = [0u8; 64];
                let text = percent_decode(raw, &mut buf).ok_or(())?;
                parse_iso(text).map(Some).map_err(|_| ())
            }
        }
    };
    let (from, to) = match (bound(b"from").ok()?, bound(b"to").ok()?) {
        (Some(f), Some(t)) => (Some(f), Some(t)),
        _ => (None, None),
    };
    Some(Window {
        from_us: from.map(|f| f + (1000 - f.rem_euclid(1000)) % 1000),
        to_us: to.map(|t| t - t.rem_euclid(1000)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window(b""), Some(Window::default()));
        let w =
            parse_window(b"from=2025-07-15T12:34:56.000Z&to=2025-07-15T12:34:57.5005Z").unwrap();
        assert_eq!(w.from_us, Some(1_752_582_896_000_000));
        assert_eq!(w.to_us, Some(1_752_582_897_500_000));
        let w = parse_window(b"from=1970-01-01T00:00:00.0001Z&to=1970-01-01T00:00:01Z").unwrap();
        assert_eq!(w.from_us, Some(1000));
        assert_eq!(
            parse_window(b"to=2025-07-15T12:34:56Z"),
            Some(Window::default())
        );
        assert_eq!(parse_window(b"from=yesterday"), None);
        assert!(parse_window(b"to=2025-07-15T12%3A34%3A56%2B00%3A00").is_some());
        // An offset is converted to UTC.
        let w = parse_window(
            b"from=2025-07-15T15:34:56.000%2B03:00&to=2025-07-15T09%3A34%3A57.5-03%3A00",
        )
        .unwrap();
        assert_eq!(w.from_us, Some(1_752_582_896_000_000));
        assert_eq!(w.to_us, Some(1_752_582_897_500_000));
    }
}
