//! The live state a journal folds to: per payment id, unsettled (with its pin) or confirmed.
//!
//! Replay, compaction and the directory merge all go through [`LiveState`], so the rules in
//! the parent module's doc live in exactly one place ([`LiveState::apply`]).
//!
//! Replay holds one entry per live payment and nothing else, so the entry is packed: 24
//! bytes beside the 16-byte id (`Slot`, `slot.rs`), and [`LiveState::into_ordered`] hands the
//! payments out after freeing the table (docs/reliability.md, "Memory"). Settled payments
//! stamped before the settled horizon are held folded, as the shard holds them ([`Folded`]).

use std::collections::HashMap;

use uuid::Uuid;

use super::record::Event;
pub use super::slot::Live;
use super::slot::{Kind, Slot, Status};
use super::Replay;
use crate::store::Folded;

/// The payments of a [`LiveState`] in event order ([`LiveState::into_ordered`]).
#[derive(Debug)]
pub struct Ordered {
    /// In reverse order: the next one is the last.
    rest: Vec<(Uuid, Slot)>,
}

impl Iterator for Ordered {
    type Item = Live;

    fn next(&mut self) -> Option<Live> {
        let (id, slot) = self.rest.pop()?;
        if self.rest.len() < self.rest.capacity() / 2 && self.rest.capacity() > 1024 {
            // Half empty: give that half back (in place: nothing is copied for a large block).
            self.rest.shrink_to_fit();
        }
        Some(slot.live(id))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rest.len(), Some(self.rest.len()))
    }
}

impl ExactSizeIterator for Ordered {}

/// Payments by id, after folding a sequence of events.
#[derive(Debug, Default, Clone)]
pub struct LiveState {
    slots: HashMap<Uuid, Slot>,
    /// Folded payments (`folded` records, and [`LiveState::fold_before`]), packed as the
    /// shard keeps them, so a replay hands them over whole.
    folded: Folded,
    next_seq: u32,
}

impl LiveState {
    fn seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Folds one event in (see the rules in the parent module's doc).
    pub fn apply(&mut self, event: &Event) {
        match *event {
            Event::Accepted { id, cents } => {
                if !self.slots.contains_key(&id) {
                    let seq = self.seq();
                    let status = Status::Unsettled {
                        cents,
                        pinned: None,
                    };
                    self.slots.insert(id, Slot::new(seq, status));
                }
            }
            Event::Attempt {
                id,
                processor,
                requested_at_us,
            } => {
                if let Some(slot) = self.slots.get_mut(&id).filter(|s| !s.is_confirmed()) {
                    slot.kind = Kind::Pinned(processor);
                    slot.at_us = requested_at_us;
                }
            }
            Event::Confirmed(c) => {
                if !self.slots.get(&c.id).is_some_and(Slot::is_confirmed) {
                    let seq = self.seq();
                    let status = Status::Confirmed {
                        processor: c.processor,
                        requested_at_us: c.requested_at_us,
                        cents: c.cents,
                    };
                    self.slots.insert(c.id, Slot::new(seq, status));
                }
            }
            Event::Dropped { id } => {
                if self.slots.get(&id).is_some_and(|s| !s.is_confirmed()) {
                    self.slots.remove(&id);
                }
            }
            Event::Purged => {
                self.slots.clear();
                self.folded.clear();
            }
            Event::Folded { at_us, bucket } => self.folded.restore(at_us, &bucket),
        }
    }

    /// Folds the confirmed payments stamped before `cutoff_us` into their buckets, forgetting
    /// their ids (compaction: the settled horizon, docs/reliability.md, "Memory").
    pub fn fold_before(&mut self, cutoff_us: i64) {
        let folded = &mut self.folded;
        self.slots.retain(|_, slot| match slot.kind {
            Kind::Confirmed(p) if slot.at_us < cutoff_us => {
                let mut b = crate::store::Bucket::default();
                b.count(p, slot.cents);
                folded.add(slot.at_us, &b);
                false
            }
            _ => true,
        });
        self.folded.seal(i64::MAX, usize::MAX);
    }

    /// Forgets the folded payments (a file whose state another file holds whole: an
    /// interrupted rebalance's copy, `dir.rs`).
    pub fn without_folded(mut self) -> LiveState {
        self.folded = Folded::default();
        self
    }

    /// Takes the folded payments out (a replay hands them to the shard whole).
    pub fn take_folded(&mut self) -> Folded {
        std::mem::take(&mut self.folded)
    }

    /// Buckets of folded payments.
    pub fn folded_len(&self) -> usize {
        self.folded.len()
    }

    /// Folds in the state of another file. The same payment in two files happens only when a
    /// rebalance was interrupted; confirmed wins over unsettled, and a pin over none.
    pub fn merge(&mut self, other: LiveState) {
        let base = self.next_seq;
        for (id, mut slot) in other.slots {
            slot.seq = slot.seq.wrapping_add(base);
            match (self.slots.get(&id).map(Slot::status), slot.status()) {
                (None, _)
                | (Some(Status::Unsettled { .. }), Status::Confirmed { .. })
                | (
                    Some(Status::Unsettled { pinned: None, .. }),
                    Status::Unsettled {
                        pinned: Some(_), ..
                    },
                ) => {
                    self.slots.insert(id, slot);
                }
                _ => {}
            }
        }
        self.next_seq = base.wrapping_add(other.next_seq);
        // Buckets hold no ids: two files' buckets are different payments.
        other.folded.for_each(|at_us, b| self.folded.add(at_us, b));
        self.folded.seal(i64::MAX, usize::MAX);
    }

    /// Calls `f` with each event that rebuilds this state from nothing, in their original
    /// order: one `folded` per bucket (first, in time order), one `confirmed` per recorded
    /// payment, `accepted` (and `attempt` if pinned) per unsettled one.
    pub fn for_each_event(&self, mut f: impl FnMut(&Event)) {
        self.folded
            .for_each(|at_us, &bucket| f(&Event::Folded { at_us, bucket }));
        let mut slots: Vec<(&Uuid, &Slot)> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(_, s)| s.seq);
        for (&id, slot) in slots {
            match slot.live(id) {
                Live::Confirmed(c) => f(&Event::Confirmed(c)),
                Live::Unsettled(u) => {
                    f(&Event::Accepted { id, cents: u.cents });
                    if let Some((processor, requested_at_us)) = u.pinned {
                        f(&Event::Attempt {
                            id,
                            processor,
                            requested_at_us,
                        });
                    }
                }
            }
        }
    }

    /// Keeps only the payments `keep` selects, and the folded ones if `folded` (used to split
    /// a state between cores: the buckets go to one of them).
    pub fn filtered(&self, mut keep: impl FnMut(&Uuid) -> bool, folded: bool) -> LiveState {
        LiveState {
            slots: self
                .slots
                .iter()
                .filter(|(id, _)| keep(id))
                .map(|(id, s)| (*id, *s))
                .collect(),
            folded: if folded {
                self.folded.clone()
            } else {
                Folded::default()
            },
            next_seq: self.next_seq,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Hands out every payment in event order, consuming the state: the table is freed
    /// before the first one comes out, so what is replayed into the server never lives
    /// beside it; the list they come out of (40 bytes per payment) gives its memory back as
    /// it empties.
    pub fn into_ordered(self) -> Ordered {
        let mut rest: Vec<(Uuid, Slot)> = Vec::with_capacity(self.slots.len());
        rest.extend(self.slots);
        // Last first: they are taken from the end, and the list shrinks as it empties.
        rest.sort_unstable_by_key(|(_, s)| std::cmp::Reverse(s.seq));
        Ordered { rest }
    }

    /// The state as lists, each in event order (for tests and tools: the server consumes
    /// [`LiveState::into_ordered`]).
    pub fn to_replay(&self) -> Replay {
        self.clone().into_replay()
    }

    pub fn into_replay(self) -> Replay {
        let mut replay = Replay::default();
        self.folded
            .for_each(|at_us, b| replay.folded.push((at_us, *b)));
        for live in self.into_ordered() {
            match live {
                Live::Confirmed(c) => replay.confirmed.push(c),
                Live::Unsettled(u) => replay.unsettled.push(u),
            }
        }
        replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Confirmed, Processor, Unsettled};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn confirmed(n: u128, cents: u64) -> Event {
        Event::Confirmed(Confirmed {
            id: id(n),
            processor: Processor::Default,
            requested_at_us: 10,
            cents,
        })
    }

    fn fold(events: &[Event]) -> Replay {
        let mut s = LiveState::default();
        events.iter().for_each(|e| s.apply(e));
        s.to_replay()
    }

    #[test]
    fn attempt_then_confirmed_is_settled() {
        let r = fold(&[
            Event::Accepted {
                id: id(1),
                cents: 5,
            },
            Event::Attempt {
                id: id(1),
                processor: Processor::Default,
                requested_at_us: 10,
            },
            confirmed(1, 5),
        ]);
        assert!(r.unsettled.is_empty());
        assert_eq!(r.confirmed.len(), 1);
        assert_eq!(r.confirmed[0].cents, 5);
    }

    #[test]
    fn attempt_only_is_unsettled_and_pinned_to_the_last_attempt() {
        let r = fold(&[
            Event::Accepted {
                id: id(1),
                cents: 5,
            },
            Event::Attempt {
                id: id(1),
                processor: Processor::Default,
                requested_at_us: 10,
            },
            Event::Attempt {
                id: id(1),
                processor: Processor::Fallback,
                requested_at_us: 20,
            },
            Event::Accepted {
                id: id(2),
                cents: 7,
            },
        ]);
        assert!(r.confirmed.is_empty());
        assert_eq!(
            r.unsettled,
            vec![
                Unsettled {
                    id: id(1),
                    cents: 5,
                    pinned: Some((Processor::Fallback, 20))
                },
                Unsettled {
                    id: id(2),
                    cents: 7,
                    pinned: None
                },
            ]
        );
    }

    #[test]
    fn dropped_forgets_and_a_second_confirmed_does_not_double_count() {
        let r = fold(&[
            Event::Accepted {
                id: id(1),
                cents: 5,
            },
            Event::Dropped { id: id(1) },
            Event::Accepted {
                id: id(2),
                cents: 5,
            },
            confirmed(2, 5),
            confirmed(2, 5),
            Event::Dropped { id: id(2) },
        ]);
        assert!(r.unsettled.is_empty());
        assert_eq!(r.confirmed.len(), 1);
    }

    #[test]
    fn purge_forgets_every_payment_settled_or_not() {
        let r = fold(&[
            Event::Accepted {
                id: id(1),
                cents: 5,
            },
            confirmed(1, 5),
            Event::Accepted {
                id: id(2),
                cents: 6,
            },
            Event::Attempt {
                id: id(2),
                processor: Processor::Default,
                requested_at_us: 1,
            },
            Event::Purged,
            // An attempt of a forgotten payment (sent before the purge) pins nothing.
            Event::Attempt {
                id: id(2),
                processor: Processor::Default,
                requested_at_us: 2,
            },
            confirmed(3, 7),
        ]);
        assert_eq!(r.confirmed.len(), 1);
        assert_eq!(r.confirmed[0].id, id(3));
        assert!(r.unsettled.is_empty());
    }

    #[test]
    fn merge_prefers_confirmed_then_pinned() {
        let mut a = LiveState::default();
        a.apply(&Event::Accepted {
            id: id(1),
            cents: 5,
        });
        a.apply(&Event::Accepted {
            id: id(2),
            cents: 6,
        });
        let mut b = LiveState::default();
        b.apply(&confirmed(1, 5));
        b.apply(&Event::Accepted {
            id: id(2),
            cents: 6,
        });
        b.apply(&Event::Attempt {
            id: id(2),
            processor: Processor::Fallback,
            requested_at_us: 3,
        });
        a.merge(b);
        let r = a.to_replay();
        assert_eq!(r.confirmed.len(), 1);
        assert_eq!(r.unsettled[0].pinned, Some((Processor::Fallback, 3)));
    }

    #[test]
    fn to_events_rebuilds_the_same_state() {
        let events = [
            Event::Accepted {
                id: id(1),
                cents: 5,
            },
            Event::Attempt {
                id: id(1),
                processor: Processor::Fallback,
                requested_at_us: 9,
            },
            Event::Accepted {
                id: id(2),
                cents: 6,
            },
            confirmed(3, 7),
        ];
        let mut s = LiveState::default();
        events.iter().for_each(|e| s.apply(e));
        let mut rebuilt = Vec::new();
        s.for_each_event(|e| rebuilt.push(*e));
        assert_eq!(fold(&rebuilt), s.to_replay());
    }

    /// The table's entry is what replay's memory is made of (docs/reliability.md, "Memory").
    #[test]
    fn an_entry_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        assert_eq!(std::mem::size_of::<(Uuid, Slot)>(), 40);
    }
}
