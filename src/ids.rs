//! The correlation ids one core accepted since the last purge, with their amounts: what makes
//! intake idempotent. The same id with the same amount again is the same payment (answered as
//! before, queued once); with another amount it is refused.
//!
//! Per core and per instance only: a copy that reaches another core or the other instance is
//! not seen here, and is kept from being counted twice by the lookup rule instead (senders.rs:
//! a processor's stored payment is ours only if it carries one of our own attempts' stamps).
//! docs/reliability.md, "One correlationId, one payment", says what each covers.
//!
//! Cost on the hot path: one hash of 16 bytes and one insert per payment ([`AcceptedIds::take`];
//! the map is reserved for a contest run's share up front, so it does not grow during one),
//! tens of nanoseconds (`cargo bench -p rinha --profile test-release --bench payment_body --
//! intake`; figures: docs/benchmarks.md, "Micro-benchmarks"). ~25 bytes per id, more while
//! the map doubles.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
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

    /// What is known of `id`; if it is new, it is taken for `cents` at once (one hash): the
    /// caller gives it back with [`AcceptedIds::remove`] if the payment is refused after all.
    pub fn take(&self, id: Uuid, cents: u64) -> Seen {
        match self.cents.borrow_mut().entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(cents);
                Seen::New
            }
            Entry::Occupied(slot) if *slot.get() != cents => Seen::OtherAmount,
            Entry::Occupied(_) => Seen::Same {
                pending: self.pending.borrow().get(&id).copied(),
            },
        }
    }

    /// The id is accepted (its payment queued, or its `2XX` given): a replayed payment.
    pub fn insert(&self, id: Uuid, cents: u64) {
        self.cents.borrow_mut().insert(id, cents);
    }

    /// The id just taken waits for journal commit `gen`: then [`AcceptedIds::committed`], or
    /// [`AcceptedIds::remove`] if it fails.
    pub fn pending(&self, id: Uuid, gen: u64) {
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
        assert_eq!(ids.take(a, 100), Seen::New);
        assert_eq!(ids.take(a, 100), Seen::Same { pending: None });
        assert_eq!(ids.take(a, 101), Seen::OtherAmount);
        // A copy arriving while the first waits for its commit waits for the same one.
        assert_eq!(ids.take(b, 5), Seen::New);
        ids.pending(b, 7);
        assert_eq!(ids.take(b, 5), Seen::Same { pending: Some(7) });
        ids.committed(&b);
        assert_eq!(ids.take(b, 5), Seen::Same { pending: None });
        // A refusal (a failed commit, a full queue) leaves nothing behind.
        let c = Uuid::from_u128(3);
        assert_eq!(ids.take(c, 5), Seen::New);
        ids.pending(c, 8);
        ids.remove(&c);
        assert_eq!(ids.take(c, 6), Seen::New);
        ids.remove(&c);
        // A replayed id.
        ids.insert(c, 9);
        assert_eq!(ids.take(c, 9), Seen::Same { pending: None });
        assert_eq!(ids.len(), 3);
        ids.clear();
        assert!(ids.is_empty());
        assert_eq!(ids.take(a, 101), Seen::New);
    }
}
