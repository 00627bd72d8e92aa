//! Stalled backends: one that takes a client's bytes and answers none (frozen by `SIGSTOP`, a
//! paused VM). Its kernel still completes handshakes and buffers requests, so connecting to it
//! succeeds and only the silence tells.
//!
//! Relay mode: each relayed connection tells its backend's [`Exchanges`] when it sends bytes
//! the backend has not answered and when a byte comes back (a few `Cell` updates per chunk, no
//! clock read); a timer per worker ([`Exchanges::check`], four times per `STALL_MS`) calls a
//! backend stalled once something has waited `STALL_MS` with no byte back from it on any
//! connection. The round-robin then skips it for new clients unless every other backend is
//! stalled or down; the first byte back clears the mark. Nothing is retried elsewhere: the
//! bytes it holds may still be processed when it resumes.

use std::cell::Cell;

/// Checks of the watcher per `STALL_MS`: a stall is seen after between `STALL_MS` and
/// `1.25 x STALL_MS`.
pub const CHECKS: u32 = 4;

/// The exchanges of one worker with one backend, as the relays report them.
#[derive(Debug, Default)]
pub struct Exchanges {
    /// Relayed connections with bytes sent to the backend and nothing back since.
    waiting: Cell<u32>,
    /// Reads from the backend so far, all connections together: what the watcher compares.
    answers: Cell<u64>,
    /// `answers` at the watcher's last check.
    seen: Cell<u64>,
    /// Checks in a row that found something waiting and no new answer.
    quiet: Cell<u32>,
    /// Set by the watcher, cleared by the first byte back: what the round-robin reads.
    stalled: Cell<bool>,
    /// `stalled` as the watcher last reported it, so each change is logged once.
    reported: Cell<bool>,
}

/// What a check of the watcher changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something has waited `STALL_MS` and nothing came back.
    Stalled,
    /// A byte came back.
    Answered,
    /// Nothing waits any more (the connections that waited ended unanswered): nothing is
    /// left to learn the backend's state from, so the next client tells.
    Cleared,
}

impl Exchanges {
    /// Whether new clients should go elsewhere.
    pub fn is_stalled(&self) -> bool {
        self.stalled.get()
    }

    /// One check of the watcher (every `STALL_MS / CHECKS`). The `CHECKS + 1`-th quiet check in
    /// a row marks the backend stalled: the first of them only proves that something was
    /// waiting, the next `CHECKS` that it stayed unanswered for `STALL_MS`.
    pub fn check(&self) -> Option<Change> {
        let answers = self.answers.get();
        let waiting = self.waiting.get() > 0;
        let answered = answers != self.seen.get();
        let quiet = if !waiting || answered {
            0
        } else {
            self.quiet.get().saturating_add(1)
        };
        self.seen.set(answers);
        self.quiet.set(quiet);
        if quiet > CHECKS {
            self.stalled.set(true);
        }
        if !waiting {
            self.stalled.set(false);
        }
        let stalled = self.stalled.get();
        if stalled == self.reported.replace(stalled) {
            return None;
        }
        Some(match (stalled, answered) {
            (true, _) => Change::Stalled,
            (false, true) => Change::Answered,
            (false, false) => Change::Cleared,
        })
    }
}

/// One relayed connection's part in its backend's [`Exchanges`]; leaves it on drop.
pub struct Exchange<'a> {
    exchanges: &'a Exchanges,
    waiting: Cell<bool>,
}

impl<'a> Exchange<'a> {
    pub fn new(exchanges: &'a Exchanges) -> Self {
        Exchange {
            exchanges,
            waiting: Cell::new(false),
        }
    }

    /// Bytes from the client are on their way to the backend.
    #[inline]
    pub fn sent(&self) {
        if !self.waiting.replace(true) {
            let waiting = &self.exchanges.waiting;
            waiting.set(waiting.get() + 1);
        }
    }

    /// A byte came back from the backend (or its FIN): it is answering.
    #[inline]
    pub fn answered(&self) {
        let answers = &self.exchanges.answers;
        answers.set(answers.get().wrapping_add(1));
        if self.waiting.replace(false) {
            let waiting = &self.exchanges.waiting;
            waiting.set(waiting.get() - 1);
        }
        self.exchanges.stalled.set(false);
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if self.waiting.get() {
            let waiting = &self.exchanges.waiting;
            waiting.set(waiting.get() - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(exchanges: &Exchanges, n: u32) -> Vec<Option<Change>> {
        (0..n).map(|_| exchanges.check()).collect()
    }

    #[test]
    fn an_unanswered_exchange_stalls_after_a_full_period() {
        let exchanges = Exchanges::default();
        let one = Exchange::new(&exchanges);
        one.sent();
        let seen = checks(&exchanges, CHECKS + 1);
        assert_eq!(seen[..CHECKS as usize], [None; CHECKS as usize]);
        assert_eq!(seen[CHECKS as usize], Some(Change::Stalled));
        assert!(exchanges.is_stalled());
        assert_eq!(exchanges.check(), None, "reported once");
        one.answered();
        assert!(!exchanges.is_stalled(), "the first byte back clears it");
        assert_eq!(exchanges.check(), Some(Change::Answered));
        assert_eq!(
            checks(&exchanges, 2 * CHECKS),
            vec![None; 2 * CHECKS as usize]
        );
    }

    #[test]
    fn answers_on_any_connection_keep_the_backend_live() {
        let exchanges = Exchanges::default();
        let (slow, busy) = (Exchange::new(&exchanges), Exchange::new(&exchanges));
        slow.sent();
        for _ in 0..3 * CHECKS {
            busy.sent();
            busy.answered();
            assert_eq!(exchanges.check(), None);
        }
        assert!(!exchanges.is_stalled());
    }

    #[test]
    fn idle_is_not_stalled_and_unanswered_connections_that_end_clear_it() {
        let exchanges = Exchanges::default();
        assert_eq!(
            checks(&exchanges, 3 * CHECKS),
            vec![None; 3 * CHECKS as usize]
        );
        let one = Exchange::new(&exchanges);
        one.sent();
        one.sent();
        assert_eq!(exchanges.check(), None);
        assert!(checks(&exchanges, CHECKS).contains(&Some(Change::Stalled)));
        drop(one);
        assert_eq!(exchanges.check(), Some(Change::Cleared));
        assert!(!exchanges.is_stalled());
    }
}
