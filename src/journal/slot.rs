//! One payment's state in a [`LiveState`](super::state::LiveState), packed: 24 bytes beside
//! its 16-byte id, since replay holds one per live payment and nothing else
//! (docs/reliability.md, "Memory").

use uuid::Uuid;

use super::{Confirmed, Processor, Unsettled};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
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

/// What a [`Status`] needs besides its amount and time, in two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Unsettled,
    Pinned(Processor),
    Confirmed(Processor),
}

/// One payment's [`Status`], packed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) cents: u64,
    /// The pin's `requestedAt`, or the confirmation's (0 when unpinned).
    pub(super) at_us: i64,
    /// Order of the event that put the payment in its current status, for stable output
    /// (wraps after 4 billion events in one fold: only the order of the output would suffer).
    pub(super) seq: u32,
    pub(super) kind: Kind,
}

impl Slot {
    pub(super) fn new(seq: u32, status: Status) -> Slot {
        let (cents, at_us, kind) = match status {
            Status::Unsettled { cents, pinned } => match pinned {
                None => (cents, 0, Kind::Unsettled),
                Some((p, at)) => (cents, at, Kind::Pinned(p)),
            },
            Status::Confirmed {
                processor,
                requested_at_us,
                cents,
            } => (cents, requested_at_us, Kind::Confirmed(processor)),
        };
        Slot {
            cents,
            at_us,
            seq,
            kind,
        }
    }

    pub(super) fn status(&self) -> Status {
        match self.kind {
            Kind::Unsettled => Status::Unsettled {
                cents: self.cents,
                pinned: None,
            },
            Kind::Pinned(p) => Status::Unsettled {
                cents: self.cents,
                pinned: Some((p, self.at_us)),
            },
            Kind::Confirmed(processor) => Status::Confirmed {
                processor,
                requested_at_us: self.at_us,
                cents: self.cents,
            },
        }
    }

    pub(super) fn is_confirmed(&self) -> bool {
        matches!(self.kind, Kind::Confirmed(_))
    }

    pub(super) fn live(&self, id: Uuid) -> Live {
        match self.status() {
            Status::Confirmed {
                processor,
                requested_at_us,
                cents,
            } => Live::Confirmed(Confirmed {
                id,
                processor,
                requested_at_us,
                cents,
            }),
            Status::Unsettled { cents, pinned } => Live::Unsettled(Unsettled { id, cents, pinned }),
        }
    }
}

/// One live payment, as [`LiveState::into_ordered`](super::state::LiveState::into_ordered) hands them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Confirmed(Confirmed),
    Unsettled(Unsettled),
}
