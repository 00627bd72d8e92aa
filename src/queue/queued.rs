//! A queued payment and its pin: the processor a payment whose outcome was unknown may be
//! stored at, the attempt still to resolve there, and every stamp it was sent with.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::processor::Processor;
use crate::store::AttemptId;

/// A payment waiting for (another) attempt.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: Uuid,
    pub cents: u64,
    /// When intake accepted it (for `FALLBACK_AFTER_MS`).
    pub accepted_at: Instant,
    /// Set once an attempt's outcome was unknown. Boxed: rare, and it keeps every other
    /// queued payment small.
    pub pin: Option<Box<Pin>>,
}

/// A payment that may be stored at one processor: it is never sent to the other one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub processor: Processor,
    /// An attempt whose outcome is still unknown and must be resolved (by looking the
    /// payment up on `processor`) before anything else is sent.
    pub unresolved: Option<AttemptId>,
    /// When the unresolved attempt was sent and how long its call was out before it ended
    /// unknown (`None` if before a restart): a lookup that does not find it yet sends it
    /// again only once it is older than [`crate::lookup::resend_after`], since a processor
    /// slower than our timeout stores it late.
    pub unknown_call: Option<(Instant, Duration)>,
    /// The `requestedAt` of every attempt sent to `processor` since the pin (the one that set
    /// it included): the payment a lookup finds is this one only if it carries one of them;
    /// otherwise it is a copy's that reached the processor under the same id.
    pub stamps: Vec<i64>,
    /// Whether `stamps` holds every such attempt. Not after a replay: the journal keeps the
    /// last attempt only, so any stamp found is taken as ours (docs/reliability.md).
    pub stamps_complete: bool,
    /// Lookups or sends in a row that could not go or failed: the back-off's exponent
    /// (crate::lookup).
    pub setbacks: u32,
    /// Whether it is counted (and was logged) as stuck.
    pub stuck: bool,
}

impl Queued {
    /// A payment intake accepted now.
    pub fn new(id: Uuid, cents: u64) -> Self {
        Queued {
            id,
            cents,
            accepted_at: Instant::now(),
            pin: None,
        }
    }

    /// A payment replayed from the journal whose last attempt (`attempt`, stamped
    /// `requested_at_us`) went to `processor`: resolved there before anything else.
    pub fn replayed_pinned(
        id: Uuid,
        cents: u64,
        processor: Processor,
        attempt: AttemptId,
        requested_at_us: i64,
    ) -> Self {
        Queued {
            pin: Some(Box::new(Pin {
                processor,
                unresolved: Some(attempt),
                unknown_call: None,
                stamps: vec![requested_at_us],
                stamps_complete: false,
                setbacks: 0,
                stuck: false,
            })),
            ..Queued::new(id, cents)
        }
    }

    /// The processor it is pinned to, if any.
    pub fn pinned(&self) -> Option<Processor> {
        self.pin.as_ref().map(|p| p.processor)
    }

    /// The attempt whose outcome is unknown, if any.
    pub fn unresolved(&self) -> Option<AttemptId> {
        self.pin.as_ref().and_then(|p| p.unresolved)
    }

    /// An attempt stamped `requested_at_us` is going to `processor`: if the payment is pinned
    /// there, the stamp is one the processor may come to hold.
    pub fn note_attempt(&mut self, processor: Processor, requested_at_us: i64) {
        if let Some(pin) = self.pin.as_mut().filter(|p| p.processor == processor) {
            pin.stamps.push(requested_at_us);
        }
    }

    /// The attempt `attempt` (stamped `requested_at_us`, sent at `sent`) to `processor` has
    /// just ended with an unknown outcome: pin the payment there (its stamp kept) and resolve the attempt
    /// next.
    pub fn pin_unknown(
        &mut self,
        processor: Processor,
        attempt: AttemptId,
        requested_at_us: i64,
        sent: Instant,
    ) {
        let pin = self.pin.get_or_insert_with(|| {
            Box::new(Pin {
                processor,
                unresolved: None,
                unknown_call: None,
                stamps: Vec::new(),
                stamps_complete: true,
                setbacks: 0,
                stuck: false,
            })
        });
        debug_assert_eq!(pin.processor, processor, "a pinned payment went elsewhere");
        if !pin.stamps.contains(&requested_at_us) {
            pin.stamps.push(requested_at_us);
        }
        pin.unresolved = Some(attempt);
        pin.unknown_call = Some((sent, sent.elapsed()));
    }

    /// Whether a payment a lookup found, stamped `requested_at_us` (whole milliseconds), is
    /// this one: it must carry one of this payment's stamps, unless they are not all known.
    pub fn holds_stamp(&self, requested_at_us: i64) -> bool {
        self.pin
            .as_ref()
            .is_some_and(|p| !p.stamps_complete || p.stamps.contains(&requested_at_us))
    }
}
