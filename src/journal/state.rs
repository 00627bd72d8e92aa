//! The live state a journal folds to: per payment id, unsettled (with its pin) or confirmed.
//!
//! Replay, compaction and the directory merge all go through [`LiveState`], so the rules in
//! the parent module's doc live in exactly one place ([`LiveState::apply`]).

use std::collections::HashMap;

use uuid::Uuid;

use super::record::Event;
use super::{Confirmed, Processor, Replay, Unsettled};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unsettled {
        cents: u64,
        pinned: Option<(Processor, i64)>,
    },
    Confirmed {
        processor: Processor,
        requested_at_us: i64,
        cents: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Order of the event that put the payment in its current status, for stable output.
    seq: u64,
    status: Status,
}

/// Payments by id, after folding a sequence of events.
#[derive(Debug, Default, Clone)]
pub struct LiveState {
    slots: HashMap<Uuid, Slot>,
    next_seq: u64,
}

impl LiveState {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
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
                    self.slots.insert(id, Slot { seq, status });
                }
            }
            Event::Attempt {
                id,
                processor,
                requested_at_us,
            } => {
                if let Some(Slot {
                    status: Status::Unsettled { pinned, .. },
                    ..
                }) = self.slots.get_mut(&id)
                {
                    *pinned = Some((processor, requested_at_us));
                }
            }
            Event::Confirmed(c) => {
                let already = matches!(
                    self.slots.get(&c.id),
                    Some(Slot {
                        status: Status::Confirmed { .. },
                        ..
                    })
                );
                if !already {
                    let seq = self.seq();
                    let status = Status::Confirmed {
                        processor: c.processor,
                        requested_at_us: c.requested_at_us,
                        cents: c.cents,
                    };
                    self.slots.insert(c.id, Slot { seq, status });
                }
            }
            Event::Dropped { id } => {
                if let Some(Slot {
                    status: Status::Unsettled { .. },
                    ..
                }) = self.slots.get(&id)
                {
                    self.slots.remove(&id);
                }
            }
            Event::Purged => self.slots.clear(),
        }
    }

    /// Folds in the state of another file. The same payment in two files happens only when a
    /// rebalance was interrupted; confirmed wins over unsettled, and a pin over none.
    pub fn merge(&mut self, other: LiveState) {
        let base = self.next_seq;
        for (id, mut slot) in other.slots {
            slot.seq += base;
            match (self.slots.get(&id).map(|s| s.status), slot.status) {
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
        self.next_seq = base + other.next_seq;
    }

    /// The events that rebuild this state from nothing, in their original order: one
    /// `confirmed` per recorded payment; `accepted` (and `attempt` if pinned) per unsettled one.
    pub fn to_events(&self) -> Vec<Event> {
        let mut slots: Vec<(&Uuid, &Slot)> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(_, s)| s.seq);
        let mut events = Vec::with_capacity(slots.len() + slots.len() / 4);
        for (&id, slot) in slots {
            match slot.status {
                Status::Confirmed {
                    processor,
                    requested_at_us,
                    cents,
                } => events.push(Event::Confirmed(Confirmed {
                    id,
                    processor,
                    requested_at_us,
                    cents,
                })),
                Status::Unsettled { cents, pinned } => {
                    events.push(Event::Accepted { id, cents });
                    if let Some((processor, requested_at_us)) = pinned {
                        events.push(Event::Attempt {
                            id,
                            processor,
                            requested_at_us,
                        });
                    }
                }
            }
        }
        events
    }

    /// Keeps only the payments `keep` selects (used to split a state between cores).
    pub fn filtered(&self, mut keep: impl FnMut(&Uuid) -> bool) -> LiveState {
        LiveState {
            slots: self
                .slots
                .iter()
                .filter(|(id, _)| keep(id))
                .map(|(id, s)| (*id, *s))
                .collect(),
            next_seq: self.next_seq,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The state as the server consumes it, each list in event order.
    pub fn to_replay(&self) -> Replay {
        let mut slots: Vec<(&Uuid, &Slot)> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(_, s)| s.seq);
        let mut replay = Replay::default();
        for (&id, slot) in slots {
            match slot.status {
                Status::Confirmed {
                    processor,
                    requested_at_us,
                    cents,
                } => replay.confirmed.push(Confirmed {
                    id,
                    processor,
                    requested_at_us,
                    cents,
                }),
                Status::Unsettled { cents, pinned } => {
                    replay.unsettled.push(Unsettled { id, cents, pinned })
                }
            }
        }
        replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(fold(&s.to_events()), s.to_replay());
    }
}
