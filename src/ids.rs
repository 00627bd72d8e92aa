//! The correlation ids one core accepted since the last purge, with their amounts: what makes
//! intake idempotent. The same id with the same amount again is the same payment (answered as
//! before, queued once); with another amount it is refused.
//!
//! Kept for [`ID_WINDOW`], not forever: [`AcceptedIds::rotate`] (every `ID_WINDOW`) forgets
//! the ids of the window before the last one at once, so an id is known for one to two
//! windows after it was accepted. A copy arriving later is a new payment to intake; the
//! processor's `422` (it holds the first) drops it uncounted (docs/reliability.md, "One
//! correlationId, one payment").
//!
//! Per core and per instance only: a copy that reaches another core or the other instance is
//! not seen here, and is kept from being counted twice by the lookup rule instead (senders.rs:
//! a processor's stored payment is ours only if it carries one of our own attempts' stamps).
//! docs/reliability.md, "One correlationId, one payment", says what each covers.
//!
//! Cost on the hot path: one insert per payment and, once a window has rotated, one more
//! lookup in the older window's map ([`AcceptedIds::take`]), tens of nanoseconds (`cargo
//! bench -p rinha --profile test-release --bench payment_body -- intake`; figures:
//! docs/benchmarks.md, "Micro-benchmarks"). ~25 bytes per id.
//!
//! No step holds the core for as long as it takes to copy a window's ids: a map is never
//! grown (a full one is kept as it is and a new one, twice as large, takes the next ids: one
//! more lookup per payment until the rotation), and a rotation empties the forgotten
//! window's map and takes it for the next window, instead of allocating one and freeing the
//! other (measured: docs/reliability.md, "Memory").

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

/// How long an accepted id is known at least (at most twice that while the process runs).
pub const ID_WINDOW: Duration = Duration::from_secs(300);

/// The fewest ids a new map is made for.
const MIN_MAP: usize = 1024;
/// Maps of more bytes than this are freed on a helper thread: freeing gives their pages
/// back to the system, which holds the core ~0.6 µs a page (a 6 MB map: ~1 ms).
const FREE_ON_CORE_MAX: usize = 1 << 20;

type Map = HashMap<Uuid, u64>;

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
#[derive(Debug)]
pub struct AcceptedIds {
    /// The ids of this window: never empty; new ids go to the last map, the others are full.
    current: RefCell<Vec<Map>>,
    /// The ids of the window before (forgotten at the next rotation).
    older: RefCell<Vec<Map>>,
    /// Ids whose `accepted` record is not committed yet, with the commit's generation: a copy
    /// arriving meanwhile waits for the same commit and gets the same answer.
    pending: RefCell<HashMap<Uuid, u64>>,
}

impl Default for AcceptedIds {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl AcceptedIds {
    /// Room for `n` ids before a second map is needed.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            current: RefCell::new(vec![HashMap::with_capacity(n)]),
            older: RefCell::default(),
            pending: RefCell::default(),
        }
    }

    /// What is known of `id`; if it is new, it is taken for `cents` at once (one hash in the
    /// last map): the caller gives it back with [`AcceptedIds::remove`] if the payment is
    /// refused after all.
    pub fn take(&self, id: Uuid, cents: u64) -> Seen {
        let mut current = self.current.borrow_mut();
        let older = self.older.borrow();
        let in_older = || older.iter().find_map(|m| m.get(&id)).copied();
        let (last, full) = current.split_last_mut().expect("a map for this window");
        let known = match full.iter().find_map(|m| m.get(&id)) {
            Some(&c) => Some(c),
            // Room left: `entry` and the insert never grow the map.
            None if last.len() < last.capacity() => match last.entry(id) {
                Entry::Vacant(slot) => match in_older() {
                    None => {
                        slot.insert(cents);
                        return Seen::New;
                    }
                    known => known,
                },
                Entry::Occupied(slot) => Some(*slot.get()),
            },
            None => last.get(&id).copied().or_else(in_older),
        };
        match known {
            None => {
                add_map(&mut current).insert(id, cents);
                Seen::New
            }
            Some(c) if c != cents => Seen::OtherAmount,
            Some(_) => Seen::Same {
                pending: self.pending.borrow().get(&id).copied(),
            },
        }
    }

    /// The id is accepted (its payment queued, or its `2XX` given): a replayed payment.
    pub fn insert(&self, id: Uuid, cents: u64) {
        let mut current = self.current.borrow_mut();
        if let Some(c) = current.iter_mut().find_map(|m| m.get_mut(&id)) {
            *c = cents;
            return;
        }
        let last = current.last_mut().expect("a map for this window");
        if last.len() < last.capacity() {
            last.insert(id, cents);
        } else {
            add_map(&mut current).insert(id, cents);
        }
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
        for m in self.current.borrow_mut().iter_mut() {
            m.remove(id);
        }
        for m in self.older.borrow_mut().iter_mut() {
            m.remove(id);
        }
        self.pending.borrow_mut().remove(id);
    }

    /// Forgets every id (the purge). The largest map is kept, empty, for the next ids.
    pub fn clear(&self) {
        let mut current = self.current.borrow_mut();
        let mut largest = take_largest(&mut current).unwrap_or_default();
        largest.clear();
        free(std::mem::replace(&mut *current, vec![largest]));
        free(std::mem::take(&mut *self.older.borrow_mut()));
        self.pending.borrow_mut().clear();
    }

    /// Forgets the ids of the window before the last one; the last window's become the
    /// older ones. The new window's ids go to the forgotten window's largest map, emptied
    /// (a memset of its control bytes), if it holds as many as the last window took and not
    /// four times more: a steady load neither allocates nor frees here, nor waits for a map
    /// to grow, and memory held for a burst is given back once it has passed.
    pub fn rotate(&self) {
        let mut current = self.current.borrow_mut();
        let mut older = self.older.borrow_mut();
        let last_window = current.iter().map(HashMap::len).sum::<usize>().max(MIN_MAP);
        let mut forgotten = std::mem::take(&mut *older);
        let next = match take_largest(&mut forgotten) {
            Some(mut m) if (last_window..=last_window * 4).contains(&m.capacity()) => {
                m.clear();
                m
            }
            too_small => {
                forgotten.extend(too_small);
                HashMap::with_capacity(last_window)
            }
        };
        *older = std::mem::replace(&mut *current, vec![next]);
        // What is not reused: the load changed since the forgotten window.
        free(forgotten);
    }

    pub fn len(&self) -> usize {
        let current = self.current.borrow();
        let older = self.older.borrow();
        current.iter().chain(older.iter()).map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Starts a new map for this window's ids, the last one being full: twice as large as the
/// ids the window holds (growing the full one would copy every one of them at once).
fn add_map(current: &mut Vec<Map>) -> &mut Map {
    let held = current.iter().map(HashMap::len).sum::<usize>();
    current.push(HashMap::with_capacity((held * 2).max(MIN_MAP)));
    current.last_mut().expect("just pushed")
}

/// Drops `maps`, on a helper thread if they are large (on the core if it cannot start).
fn free(maps: Vec<Map>) {
    let bytes: usize = maps
        .iter()
        .map(|m| m.capacity() * std::mem::size_of::<(Uuid, u64)>())
        .sum();
    if bytes > FREE_ON_CORE_MAX {
        crate::helper::off_core(maps);
    }
}

/// Takes the map of the largest capacity out of `maps`.
fn take_largest(maps: &mut Vec<Map>) -> Option<Map> {
    let i = (0..maps.len()).max_by_key(|&i| maps[i].capacity())?;
    Some(maps.swap_remove(i))
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

    #[test]
    fn an_id_is_known_for_one_to_two_windows() {
        let ids = AcceptedIds::with_capacity(4);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(ids.take(a, 100), Seen::New);
        ids.rotate();
        // One window on: still the same payment, and still one amount.
        assert_eq!(ids.take(a, 100), Seen::Same { pending: None });
        assert_eq!(ids.take(a, 7), Seen::OtherAmount);
        assert_eq!(ids.take(b, 5), Seen::New);
        ids.rotate();
        // Two windows on: forgotten; the one accepted in between is not.
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.take(b, 5), Seen::Same { pending: None });
        assert_eq!(ids.take(a, 100), Seen::New);
    }

    /// No map ever grows (growing copies every id of the window in one insert): a full one
    /// is joined by a larger one, whose ids are known as well, and the next window is sized
    /// for the last one's, larger or smaller.
    #[test]
    fn a_window_grows_without_growing_a_map() {
        let ids = AcceptedIds::with_capacity(100);
        let caps = |ids: &AcceptedIds| -> Vec<usize> {
            ids.current.borrow().iter().map(HashMap::capacity).collect()
        };
        let mut before = caps(&ids);
        for n in 0..10_000u128 {
            assert_eq!(ids.take(Uuid::from_u128(n), 1), Seen::New);
            let now = caps(&ids);
            assert_eq!(now[..before.len()], before[..], "after {n} ids");
            before = now;
        }
        assert!(before.len() > 2, "{before:?}");
        for n in 0..10_000u128 {
            let id = Uuid::from_u128(n);
            assert_eq!(ids.take(id, 1), Seen::Same { pending: None });
            assert_eq!(ids.take(id, 2), Seen::OtherAmount);
        }
        ids.remove(&Uuid::from_u128(5));
        assert_eq!(ids.take(Uuid::from_u128(5), 3), Seen::New);
        ids.rotate();
        for n in 10_000..20_000u128 {
            assert_eq!(ids.take(Uuid::from_u128(n), 1), Seen::New);
        }
        assert_eq!(caps(&ids).len(), 1, "sized for the last window");
        assert_eq!(
            ids.take(Uuid::from_u128(5), 3),
            Seen::Same { pending: None }
        );
        ids.rotate();
        assert_eq!(caps(&ids).len(), 1);
        assert!(caps(&ids)[0] >= 10_000);
        assert_eq!(ids.len(), 10_000);
        assert_eq!(ids.take(Uuid::from_u128(5), 4), Seen::New);
        assert_eq!(ids.take(Uuid::from_u128(15_000), 2), Seen::OtherAmount);
        // A quieter window: the busy one's map is not kept for it.
        ids.rotate();
        assert!(caps(&ids)[0] < 4 * MIN_MAP, "{:?}", caps(&ids));
        assert_eq!(
            ids.take(Uuid::from_u128(5), 4),
            Seen::Same { pending: None }
        );
    }
}
