//! The correlation ids one core accepted since the last purge, with their amounts: what makes
//! intake idempotent. The same id with the same amount again is the same payment (answered as
//! before, queued once); with another amount it is refused.
//!
//! Per core and per instance only: a copy that reaches another core or the other instance is
//! not seen here, and is kept from being counted twice by the lookup rule instead (worker.rs:
//! a processor's stored payment is ours only if it carries one of our own attempts' stamps).
//! docs/reliability.md, "One correlationId, one payment", says what each covers.
//!
//! Cost on the hot path: one hash of 16 bytes and one insert per payment (amortised; the map is
//! reserved for a contest run's share up front). ~25 bytes per id, more while the map doubles.

use std::cell::RefCell;
use std::collections::HashMap;

use uuid::Uuid;

/// What intake knows of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never accepted here (or purged since).
    New,
    /// Accepted with this amount; `pending` is the journal commit its `202` still waits for.
    Same { pending: Option<u64> },
    /// Accepted with another amount.
    OtherAmount,
}

/// One core's accepted ids.
#[derive(Debug, Default)]
pub struct AcceptedIds {
    cents: RefCell<HashMap<Uuid, u64>>,
    /// Ids whose `accepted` record is not committed yet, with the commit's generation: a copy
    /// arriving meanwhile waits for the same commit and gets the same answer.
    pending: RefCell<HashMap<Uuid, u64>>,
}

impl AcceptedIds {
    /// Room for `n` ids before the first growth.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            cents: RefCell::new(HashMap::with_capacity(n)),
            pending: RefCell::default(),
        }
    }

    pub fn seen(&self, id: &Uuid, cents: u64) -> Seen {
        match self.cents.borrow().get(id) {
            None => Seen::New,
            Some(&c) if c != cents => Seen::OtherAmount,
            Some(_) => Seen::Same {
                pending: self.pending.borrow().get(id).copied(),
            },
        }
    }

    /// The id was accepted (its payment queued, or its `2XX` given).
    pub fn insert(&self, id: Uuid, cents: u64) {
        self.cents.borrow_mut().insert(id, cents);
    }

    /// The id is accepted once journal commit `gen` succeeds ([`AcceptedIds::committed`]) or
    /// forgotten if it fails ([`AcceptedIds::remove`]).
    pub fn insert_pending(&self, id: Uuid, cents: u64, gen: u64) {
        self.insert(id, cents);
        self.pending.borrow_mut().insert(id, gen);
    }

    pub fn committed(&self, id: &Uuid) {
        self.pending.borrow_mut().remove(id);
    }

    /// The id was refused after all (its commit failed): a later copy is new.
    pub fn remove(&self, id: &Uuid) {
        self.cents.borrow_mut().remove(id);
        self.pending.borrow_mut().remove(id);
    }

    /// Forgets every id (the purge).
    pub fn clear(&self) {
        self.cents.borrow_mut().clear();
        self.pending.borrow_mut().clear();
    }

    pub fn len(&self) -> usize {
        self.cents.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_amount_until_purged() {
        let ids = AcceptedIds::with_capacity(4);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(ids.seen(&a, 100), Seen::New);
        ids.insert(a, 100);
        assert_eq!(ids.seen(&a, 100), Seen::Same { pending: None });
        assert_eq!(ids.seen(&a, 101), Seen::OtherAmount);
        assert_eq!(ids.seen(&b, 100), Seen::New);
        // A copy arriving while the first waits for its commit waits for the same one.
        ids.insert_pending(b, 5, 7);
        assert_eq!(ids.seen(&b, 5), Seen::Same { pending: Some(7) });
        ids.committed(&b);
        assert_eq!(ids.seen(&b, 5), Seen::Same { pending: None });
        // A failed commit leaves nothing behind.
        let c = Uuid::from_u128(3);
        ids.insert_pending(c, 5, 8);
        ids.remove(&c);
        assert_eq!(ids.seen(&c, 5), Seen::New);
        assert_eq!(ids.len(), 2);
        ids.clear();
        assert!(ids.is_empty());
        assert_eq!(ids.seen(&a, 101), Seen::New);
    }
}
