//! Answers that prove nothing about a payment: any status but 2XX, 422, 429 and 5XX (a wrong
//! URL's 404, a proxy's 401/403, a 408 or 425, a 3XX). They come from a misconfiguration or a
//! transient refusal, not from the processor's verdict on the payment, so the payment is kept
//! and sent again after the breaker's back-off (src/senders.rs); this counts them per core
//! (scraped as `rinha_inconclusive_answers_total`) and warns at most once per [`LOG_EVERY`] so
//! an operator sees the cause.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::Processor;

/// At most one warning per processor per core per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether a processor's answer to `POST /payments` proves nothing: neither stored (2XX), nor a
/// duplicate (422), nor refused for load or failure (429, 5XX).
pub fn proves_nothing(status: u16) -> bool {
    !matches!(status, 200..=299 | 422 | 429 | 500..=599)
}

/// One core's count of such answers from one processor, and when it last warned.
#[derive(Debug, Default)]
pub struct Refusals {
    count: Cell<u64>,
    logged: Cell<Option<Instant>>,
}

impl Refusals {
    /// Counts one answer `status`; warns when the last warning is old enough.
    pub fn note(&self, proc: Processor, status: u16, now: Instant) {
        let count = self.count.get() + 1;
        self.count.set(count);
        let due = self
            .logged
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if due {
            self.logged.set(Some(now));
            tracing::warn!(
                processor = proc.name(),
                status,
                count,
                "processor answer proves nothing (misconfigured URL or proxy?); payment kept, retried after a back-off"
            );
        }
    }

    /// How many such answers this core has had from the processor.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_contest_statuses_prove_something() {
        for status in [200, 201, 204, 422, 429, 500, 503, 599] {
            assert!(!proves_nothing(status), "{status}");
        }
        for status in [100, 301, 302, 400, 401, 403, 404, 408, 425, 451] {
            assert!(proves_nothing(status), "{status}");
        }
    }

    #[test]
    fn counts_every_one_and_warns_once_per_period() {
        let refusals = Refusals::default();
        let start = Instant::now();
        refusals.note(Processor::Default, 404, start);
        refusals.note(Processor::Default, 404, start + Duration::from_secs(1));
        assert_eq!(refusals.logged.get(), Some(start));
        refusals.note(Processor::Default, 404, start + LOG_EVERY);
        assert_eq!(refusals.logged.get(), Some(start + LOG_EVERY));
        assert_eq!(refusals.count(), 3);
    }
}
