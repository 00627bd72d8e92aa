//! Where an unpinned payment goes: to the processor with the lower expected cost, where the
//! cost of a processor is its fee plus what its slowness risks (docs/architecture.md,
//! "Routing").
//!
//! A payment not stored yet can still be lost (the run ends, the instance dies); the longer
//! it waits, the likelier. So each processor is priced as
//! `fee + (1 - fee) x min(1, risk_per_s x T)`, with `T` the seconds until a payment sent
//! now is expected to be stored there: the delay in force (the last answer's response
//! time, or the age of the oldest call still in flight when that is longer: a delay that
//! just rose shows there before any answer does), plus the wait for a free slot once the
//! core's share of the processor's admission is taken (Little's law: `cap` calls per
//! `delay`), plus, for a failing processor, how much longer it is expected to fail
//! (`outage_factor` x how long it has failed so far). The cheaper processor wins; the
//! default on a tie. The other one is scouted (one call at a time, see
//! [`crate::processor::breaker::Breaker::try_scout`]) only while, answering at once, it
//! would win: the only way to learn that it did.

use std::time::Duration;

use crate::processor::Processor;

/// The routing knobs (`ROUTE_RISK_PER_S`, `ROUTE_OUTAGE_FACTOR`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Chance per second of waiting that a payment not stored yet is never stored.
    pub risk_per_s: f64,
    /// Expected remaining length of an outage, as a fraction of its length so far.
    pub outage_factor: f64,
}

/// What one core knows of one processor when a payment is to be placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlook {
    /// Fee per payment, a fraction of the amount.
    pub fee: f64,
    /// Response time of the answered call sent last (the delay in force when it was sent).
    pub response: Duration,
    /// Age of the oldest call in flight, if any.
    pub oldest_in_flight: Option<Duration>,
    /// How long it has been failing (breaker open), if it is.
    pub failing_for: Option<Duration>,
    /// Calls in flight from this core, and the most it may have.
    pub in_flight: u32,
    pub cap: u32,
    /// Senders of this core waiting for a slot.
    pub waiting: u32,
}

impl Outlook {
    /// Seconds until a payment sent now is expected to be stored.
    pub fn expected_completion(&self, policy: &Policy) -> f64 {
        let delay = self
            .response
            .max(self.oldest_in_flight.unwrap_or_default())
            .as_secs_f64();
        let queued = if self.in_flight >= self.cap {
            f64::from(self.waiting + 1) * delay / f64::from(self.cap.max(1))
        } else {
            0.0
        };
        let outage = self
            .failing_for
            .map_or(0.0, |f| f.as_secs_f64() * policy.outage_factor);
        delay + queued + outage
    }

    /// Expected cost of a payment sent now, as a fraction of its amount.
    pub fn cost(&self, policy: &Policy) -> f64 {
        let loss = (policy.risk_per_s * self.expected_completion(policy)).min(1.0);
        self.fee + (1.0 - self.fee) * loss
    }
}

/// Where a payment goes, and which processor is worth a look meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub choice: Processor,
    /// The other processor, when at its best it would be cheaper than the choice is now.
    pub scout: Option<Processor>,
}

/// Chooses between the default and the fallback.
pub fn choose(default: &Outlook, fallback: &Outlook, policy: &Policy) -> Decision {
    let (mut cd, mut cf) = (default.cost(policy), fallback.cost(policy));
    // Waiting out an outage can only pay for the cheaper fee: a failing processor that costs
    // at least as much as a working one is never waited for.
    match (default.failing_for, fallback.failing_for) {
        (Some(_), None) if default.fee >= fallback.fee => cd = f64::INFINITY,
        (None, Some(_)) if fallback.fee >= default.fee => cf = f64::INFINITY,
        _ => {}
    }
    let (choice, cost, other, other_fee) = if cd <= cf {
        (Processor::Default, cd, Processor::Fallback, fallback.fee)
    } else {
        (Processor::Fallback, cf, Processor::Default, default.fee)
    };
    Decision {
        choice,
        scout: (other_fee < cost).then_some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        risk_per_s: 0.02,
        outage_factor: 0.4,
    };

    fn healthy(fee: f64, delay_ms: u64) -> Outlook {
        Outlook {
            fee,
            response: Duration::from_millis(delay_ms),
            oldest_in_flight: None,
            failing_for: None,
            in_flight: 0,
            cap: 160,
            waiting: 0,
        }
    }

    fn failing(fee: f64, delay_ms: u64, for_ms: u64) -> Outlook {
        Outlook {
            failing_for: Some(Duration::from_millis(for_ms)),
            ..healthy(fee, delay_ms)
        }
    }

    fn choice(d: Outlook, f: Outlook) -> Processor {
        choose(&d, &f, &POLICY).choice
    }

    #[test]
    fn a_healthy_default_wins_unless_it_is_much_slower() {
        // The final's fees (7 % / 10 %): a few hundred ms or a second is worth the 3 points...
        for delay in [0, 50, 103, 500, 1000] {
            assert_eq!(
                choice(healthy(0.07, delay), healthy(0.10, 0)),
                Processor::Default
            );
        }
        // ...two seconds is not.
        assert_eq!(
            choice(healthy(0.07, 2000), healthy(0.10, 0)),
            Processor::Fallback
        );
        // The preview's (5 % / 15 %): even 5 s is worth waiting for.
        assert_eq!(
            choice(healthy(0.05, 5000), healthy(0.15, 0)),
            Processor::Default
        );
    }

    #[test]
    fn a_delay_that_rose_shows_in_the_oldest_call_before_any_answer() {
        let mut d = healthy(0.07, 100);
        d.oldest_in_flight = Some(Duration::from_millis(300));
        assert_eq!(choice(d, healthy(0.10, 0)), Processor::Default);
        d.oldest_in_flight = Some(Duration::from_millis(1800));
        assert_eq!(choice(d, healthy(0.10, 0)), Processor::Fallback);
    }

    #[test]
    fn a_short_outage_is_waited_out_a_long_one_is_not() {
        // Final fees, the fallback answering at once.
        assert_eq!(
            choice(failing(0.07, 0, 2000), healthy(0.10, 0)),
            Processor::Default
        );
        assert_eq!(
            choice(failing(0.07, 0, 6000), healthy(0.10, 0)),
            Processor::Fallback
        );
        // Preview fees: ten seconds of outage are still worth waiting for.
        assert_eq!(
            choice(failing(0.05, 100, 10_000), healthy(0.15, 0)),
            Processor::Default
        );
    }

    #[test]
    fn a_failing_fallback_is_not_chosen_over_a_working_default() {
        // Even a slow default, against a fallback that has just started failing.
        assert_eq!(
            choice(healthy(0.07, 2000), failing(0.10, 0, 100)),
            Processor::Default
        );
        assert_eq!(
            choice(healthy(0.07, 5000), failing(0.10, 0, 0)),
            Processor::Default
        );
        // Both failing: the cheaper one, whose outage is no older, is waited for.
        assert_eq!(
            choice(failing(0.07, 0, 1000), failing(0.10, 0, 1000)),
            Processor::Default
        );
    }

    #[test]
    fn a_saturated_default_sends_the_overflow_to_the_fallback() {
        // 1 s delay: fine while there is room...
        let mut d = healthy(0.07, 1000);
        d.in_flight = 160;
        assert_eq!(choice(d, healthy(0.10, 0)), Processor::Default);
        // ...but with 160 calls in flight and as many waiting, the next one would wait a
        // whole delay more.
        d.waiting = 160;
        assert_eq!(choice(d, healthy(0.10, 0)), Processor::Fallback);
    }

    #[test]
    fn the_other_processor_is_scouted_only_while_it_could_win() {
        // Preview fees, fast default: the fallback cannot win even answering at once.
        let d = choose(&healthy(0.05, 100), &healthy(0.15, 0), &POLICY);
        assert_eq!(d.scout, None);
        // Final fees, slow default: a default answering at once would win again.
        let d = choose(&healthy(0.07, 2000), &healthy(0.10, 0), &POLICY);
        assert_eq!(
            (d.choice, d.scout),
            (Processor::Fallback, Some(Processor::Default))
        );
    }

    #[test]
    fn the_loss_is_at_most_the_whole_payment() {
        let d = failing(0.07, 0, 1_000_000_000);
        assert!((d.cost(&POLICY) - 1.0).abs() < 1e-9);
    }
}
