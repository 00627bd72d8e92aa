//! The payments table, in memory: by `correlationId` for inserts and look-ups, and by
//! `requestedAt` (one bucket per microsecond) so a summary window is a range scan, not a
//! scan of every payment. Money is integer cents.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::money::Fee;

/// One stored payment, as `GET /payments/{id}` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub correlation_id: Uuid,
    /// Amount in cents, already rounded half-to-even.
    pub cents: u64,
    /// `requestedAt`, microseconds since the epoch.
    pub requested_at_micros: i64,
}

/// What `GET /admin/payments-summary` reports, in exact units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total_requests: u64,
    pub total_cents: u64,
    /// `total_cents x fee`, rounded half-to-even to cents.
    pub total_fee_cents: u64,
    pub fee: Fee,
}

/// The `correlationId` is already stored (the official table's primary key refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payment {0} is already stored")]
pub struct Duplicate(pub Uuid);

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    count: u64,
    cents: u64,
}

/// Every payment the processor holds.
#[derive(Debug, Default)]
pub struct Store {
    by_id: HashMap<Uuid, Payment>,
    by_time: BTreeMap<i64, Bucket>,
    total: Bucket,
}

impl Store {
    /// Stores `payment` unless its `correlationId` is already there.
    pub fn insert(&mut self, payment: Payment) -> Result<(), Duplicate> {
        match self.by_id.entry(payment.correlation_id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(Duplicate(payment.correlation_id))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(payment);
            }
        }
        let bucket = self.by_time.entry(payment.requested_at_micros).or_default();
        bucket.count += 1;
        bucket.cents = bucket.cents.saturating_add(payment.cents);
        self.total.count += 1;
        self.total.cents = self.total.cents.saturating_add(payment.cents);
        Ok(())
    }

    /// The payment stored under `id`.
    pub fn get(&self, id: &Uuid) -> Option<Payment> {
        self.by_id.get(id).copied()
    }

    /// How many payments are stored.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Removes every payment.
    pub fn purge(&mut self) {
        self.by_id.clear();
        self.by_time.clear();
        self.total = Bucket::default();
    }

    /// Payments with `from <= requestedAt <= to` (both inclusive); every payment when either
    /// bound is missing, as the official query does (`BETWEEN` only applies with both).
    pub fn summary(&self, from: Option<i64>, to: Option<i64>, fee: Fee) -> Summary {
        let bucket = match (from, to) {
            (Some(from), Some(to)) if from <= to => {
                self.by_time
                    .range(from..=to)
                    .fold(Bucket::default(), |sum, (_, b)| Bucket {
                        count: sum.count + b.count,
                        cents: sum.cents.saturating_add(b.cents),
                    })
            }
            (Some(_), Some(_)) => Bucket::default(),
            _ => self.total,
        };
        Summary {
            total_requests: bucket.count,
            total_cents: bucket.cents,
            total_fee_cents: fee.of_cents(bucket.cents),
            fee,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(n: u128, cents: u64, at: i64) -> Payment {
        Payment {
            correlation_id: Uuid::from_u128(n),
            cents,
            requested_at_micros: at,
        }
    }

    #[test]
    fn refuses_a_duplicate_and_keeps_the_first() {
        let mut store = Store::default();
        assert_eq!(store.insert(payment(1, 1990, 10)), Ok(()));
        assert_eq!(
            store.insert(payment(1, 500, 20)),
            Err(Duplicate(Uuid::from_u128(1)))
        );
        assert_eq!(store.get(&Uuid::from_u128(1)), Some(payment(1, 1990, 10)));
        assert_eq!(
            store
                .summary(None, None, Fee::from_percent(5))
                .total_requests,
            1
        );
    }

    #[test]
    fn summary_window_is_inclusive_and_unbounded_when_a_bound_is_missing() {
        let mut store = Store::default();
        for (n, at) in [(1, 10), (2, 20), (3, 20), (4, 30)] {
            store.insert(payment(n, 1990, at)).unwrap();
        }
        let fee = Fee::from_percent(5);
        let count = |from, to| store.summary(from, to, fee).total_requests;
        assert_eq!(count(Some(10), Some(30)), 4);
        assert_eq!(count(Some(11), Some(29)), 2);
        assert_eq!(count(Some(20), Some(20)), 2);
        assert_eq!(count(Some(31), Some(40)), 0);
        assert_eq!(count(Some(30), Some(10)), 0);
        assert_eq!(count(Some(25), None), 4);
        assert_eq!(count(None, Some(15)), 4);
        let all = store.summary(None, None, fee);
        assert_eq!((all.total_cents, all.total_fee_cents), (7960, 398));
        store.purge();
        assert_eq!(store.summary(None, None, fee).total_requests, 0);
        assert_eq!(store.count(), 0);
    }
}
