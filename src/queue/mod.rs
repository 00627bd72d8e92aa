//! The per-core payment queue: intake pushes, the core's senders pop. Owned by one runtime
//! (`RefCell`, no lock); a parked sender is woken by the push that feeds it.
//!
//! Bounded by memory, not by a small constant: when the processors fail for a while the
//! backlog must survive until they recover. `QUEUE_CAPACITY` payments (by default what half
//! the memory limit holds, `config::queue_capacity_for`); past it, intake answers 503
//! instead of growing without limit, and a restart replays a full queue within the limit.
//!
//! A purge ([`Queue::purge`]) drops what is queued and forgets every payment accepted before
//! it wherever it is: one a sender holds, or intake still waits to queue, is dropped when it
//! comes back ([`Queue::is_current`] says which), so nothing from before a purge is sent or
//! recorded after it.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::payment::NewPayment;

mod queued;

pub use queued::{Pin, Queued};

/// The queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payment queue is full")]
pub struct QueueFull;

/// One core's queue.
#[derive(Debug)]
pub struct Queue {
    items: RefCell<VecDeque<Queued>>,
    parked: RefCell<Vec<Waker>>,
    capacity: usize,
    /// When this core last purged: payments accepted until then are forgotten.
    purged_at: Cell<Option<Instant>>,
    /// Payments set aside until a moment (a lookup or a pinned send backing off,
    /// [`crate::lookup`]): out of the line, still counted; earliest first.
    aside: RefCell<BinaryHeap<Aside>>,
    /// Set-aside payments so far (orders those due at the same instant).
    asides: Cell<u64>,
    /// Whether a task runs [`Queue::return_aside`].
    returning: Cell<bool>,
}

/// How often [`Queue::return_aside`] looks at the earliest set-aside payment at least (one
/// set aside meanwhile with an earlier moment waits at most this much longer).
const ASIDE_TICK: Duration = Duration::from_millis(50);

/// A payment out of the line until `due`.
#[derive(Debug)]
struct Aside {
    due: Instant,
    seq: u64,
    payment: Queued,
}

impl Ord for Aside {
    /// The earliest is the greatest: [`BinaryHeap`] pops it first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for Aside {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Aside {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Aside {}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            items: RefCell::new(VecDeque::with_capacity(capacity.min(16 * 1024))),
            parked: RefCell::new(Vec::new()),
            capacity,
            purged_at: Cell::new(None),
            aside: RefCell::new(BinaryHeap::new()),
            asides: Cell::new(0),
            returning: Cell::new(false),
        }
    }

    /// Intake's seam: a validated payment enters the system here (one call per payment).
    pub fn accept(&self, payment: NewPayment) -> Result<(), QueueFull> {
        if !self.has_room() {
            return Err(QueueFull);
        }
        self.items
            .borrow_mut()
            .push_back(Queued::new(payment.id, payment.cents));
        self.wake_one();
        Ok(())
    }

    /// Whether intake may take one more payment.
    pub fn has_room(&self) -> bool {
        self.len() < self.capacity
    }

    /// Queues a payment whose acceptance is already on file (journal committed, or
    /// replayed at start): never refused, since the 2XX is owed or already given. One
    /// accepted before a purge is dropped (the purge forgot it).
    pub fn admit(&self, payment: Queued) {
        if self.is_current(&payment) {
            self.items.borrow_mut().push_back(payment);
            self.wake_one();
        }
    }

    /// Puts a payment back for a later attempt (never refused: it was already accepted).
    /// One accepted before a purge is dropped.
    pub fn retry_later(&self, payment: Queued) {
        if self.is_current(&payment) {
            self.items.borrow_mut().push_back(payment);
            self.wake_one();
        }
    }

    /// Puts a payment back at the head: unresolved attempts go first so a summary waiting
    /// for them is not held up by the backlog. One accepted before a purge is dropped.
    pub fn retry_first(&self, payment: Queued) {
        if self.is_current(&payment) {
            self.items.borrow_mut().push_front(payment);
            self.wake_one();
        }
    }

    /// Drops every queued payment and forgets, from now on, every payment accepted before
    /// now (see the module doc). Returns how many were queued.
    pub fn purge(&self) -> usize {
        let now = Instant::now();
        self.purged_at.set(Some(now));
        // Payments are stamped on this thread: once the clock has moved past `now` (at once,
        // or one tick of a coarse clock), none accepted after the purge can share its instant.
        while Instant::now() <= now {
            std::hint::spin_loop();
        }
        let dropped = std::mem::take(&mut *self.items.borrow_mut());
        let aside = std::mem::take(&mut *self.aside.borrow_mut());
        dropped.len() + aside.len()
    }

    /// Whether `payment` was accepted after the last purge: only then may it be sent, put
    /// back, or its outcome recorded.
    pub fn is_current(&self, payment: &Queued) -> bool {
        self.purged_at
            .get()
            .is_none_or(|purged| payment.accepted_at > purged)
    }

    /// Takes `payment` out of the line until `due` (counted meanwhile); it comes back at the
    /// head ([`Queue::return_aside`]). Returns whether the caller must start the task that
    /// brings them back (none runs).
    pub fn set_aside(&self, payment: Queued, due: Instant) -> bool {
        let seq = self.asides.get();
        self.asides.set(seq + 1);
        self.aside.borrow_mut().push(Aside { due, seq, payment });
        !self.returning.replace(true)
    }

    /// Puts set-aside payments back at the head of the line as they fall due, for as long as
    /// any is set aside: one task per core, however many wait (a timer task per payment cost
    /// ~1.2 KB each, 230 MB for a replayed backlog of 200,000 pinned payments).
    pub async fn return_aside(&self) {
        loop {
            let earliest = self.aside.borrow().peek().map(|a| a.due);
            let Some(due) = earliest else {
                self.returning.set(false);
                return;
            };
            let now = Instant::now();
            if due > now {
                monoio::time::sleep((due - now).min(ASIDE_TICK)).await;
                continue;
            }
            loop {
                let mut aside = self.aside.borrow_mut();
                if aside.peek().is_none_or(|a| a.due > now) {
                    break;
                }
                let back = aside.pop().map(|a| a.payment);
                drop(aside);
                if let Some(payment) = back {
                    self.retry_first(payment);
                }
            }
        }
    }

    /// Payments set aside now.
    pub fn aside(&self) -> usize {
        self.aside.borrow().len()
    }

    /// Takes the next payment, waiting for one.
    pub async fn pop(&self) -> Queued {
        poll_fn(|cx| match self.items.borrow_mut().pop_front() {
            Some(p) => Poll::Ready(p),
            None => {
                self.parked.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Payments waiting: in the line or set aside.
    pub fn len(&self) -> usize {
        self.items.borrow().len() + self.aside()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake_one(&self) {
        let waker = self.parked.borrow_mut().pop();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn pay(n: u128) -> NewPayment {
        NewPayment {
            id: Uuid::from_u128(n),
            cents: 100,
        }
    }

    #[test]
    fn bounded_and_ordered() {
        let q = Queue::new(2);
        q.accept(pay(1)).unwrap();
        q.accept(pay(2)).unwrap();
        assert_eq!(q.accept(pay(3)), Err(QueueFull));
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async {
            let first = q.pop().await;
            assert_eq!(first.id, Uuid::from_u128(1));
            q.retry_first(first);
            assert_eq!(q.pop().await.id, Uuid::from_u128(1));
            assert_eq!(q.pop().await.id, Uuid::from_u128(2));
            assert!(q.is_empty());
        });
    }

    #[test]
    fn a_purge_drops_the_queue_and_forgets_payments_held_elsewhere() {
        let q = Queue::new(8);
        q.accept(pay(1)).unwrap();
        q.accept(pay(2)).unwrap();
        let held = Queued::new(Uuid::from_u128(3), 1);
        let waiting = Queued::new(Uuid::from_u128(4), 1);
        assert_eq!(q.purge(), 2);
        assert!(q.is_empty());
        assert!(!q.is_current(&held));
        q.retry_first(held.clone());
        q.retry_later(held);
        q.admit(waiting);
        assert!(q.is_empty(), "from before the purge");
        q.accept(pay(5)).unwrap();
        q.admit(Queued::new(Uuid::from_u128(6), 1));
        assert_eq!(q.len(), 2, "accepted after it");
    }

    /// Payments set aside come back at the head as they fall due, brought by one task
    /// however many there are.
    #[test]
    fn set_aside_payments_come_back_when_due() {
        let q = std::rc::Rc::new(Queue::new(8));
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async {
            let now = Instant::now();
            let later = Queued::new(Uuid::from_u128(1), 1);
            let sooner = Queued::new(Uuid::from_u128(2), 1);
            assert!(q.set_aside(later, now + Duration::from_millis(60)));
            assert!(
                !q.set_aside(sooner, now + Duration::from_millis(20)),
                "one task"
            );
            q.accept(pay(3)).unwrap();
            assert_eq!((q.len(), q.aside()), (3, 2));
            let q2 = q.clone();
            monoio::spawn(async move { q2.return_aside().await });
            assert_eq!(q.pop().await.id, Uuid::from_u128(3));
            assert_eq!(q.pop().await.id, Uuid::from_u128(2));
            assert!(now.elapsed() >= Duration::from_millis(20));
            assert_eq!(q.pop().await.id, Uuid::from_u128(1));
            assert!(now.elapsed() >= Duration::from_millis(60));
            assert_eq!((q.len(), q.aside()), (0, 0));
            monoio::time::sleep(Duration::from_millis(60)).await;
            assert!(
                q.set_aside(Queued::new(Uuid::from_u128(4), 1), now),
                "the task ended"
            );
        });
    }

    #[test]
    fn parked_pop_is_woken() {
        let q = std::rc::Rc::new(Queue::new(8));
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(async {
            let q2 = q.clone();
            let h = monoio::spawn(async move { q2.pop().await.id });
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            q.accept(pay(7)).unwrap();
            assert_eq!(h.await, Uuid::from_u128(7));
        });
    }
}
