//! The score, exactly as RINHA-2025.md section 5 computes it: gross, fees, p99 (rounded to two
//! decimals), bonus, fine, profit, lag. Money enters as integer cents; the products with the
//! fee rates and the bonus are in `f64`, as the official JavaScript computes them.

use super::calls::{cents, BackendSummary, ProcessorSummary};

/// The fine for any inconsistency.
pub const FINE_RATE: f64 = 0.35;

/// Everything the score is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// The backend's summary over the teardown window.
    pub backend: BackendSummary,
    /// The processors' admin summaries over the same window (their fee rates are read there).
    pub default: ProcessorSummary,
    pub fallback: ProcessorSummary,
    /// p99 of every successful request, in ms (unrounded).
    pub p99_ms: f64,
    /// Inconsistencies the checker counted.
    pub inconsistencies: u64,
    /// Successful `POST /payments`.
    pub successful_posts: u64,
}

/// The score sheet.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    pub gross: f64,
    pub fees: f64,
    /// p99 in ms, rounded to two decimals.
    pub p99_ms: f64,
    /// As a fraction (0.2 = 20 %).
    pub bonus: f64,
    /// As a fraction (0.35 = 35 %).
    pub fine: f64,
    /// The fine in money: (gross - fees) x fine.
    pub fine_amount: f64,
    pub profit: f64,
    pub inconsistencies: u64,
    /// Successful POSTs minus the payments the backend reports.
    pub lag: i64,
    /// A negative lag: more payments recorded than were requested.
    pub disqualified: bool,
}

/// Rounds to two decimals (half away from zero, as `toFixed` does for these magnitudes).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// max((11 - p99) x 0.02, 0) with p99 in ms.
pub fn bonus(p99_ms: f64) -> f64 {
    ((11.0 - p99_ms) * 0.02).max(0.0)
}

/// Computes the score sheet.
pub fn compute(inputs: &Inputs) -> Score {
    let default_cents = cents(inputs.backend.default.total_amount);
    let fallback_cents = cents(inputs.backend.fallback.total_amount);
    let gross = (default_cents + fallback_cents) as f64 / 100.0;
    let fees = inputs.default.fee_per_transaction * default_cents as f64 / 100.0
        + inputs.fallback.fee_per_transaction * fallback_cents as f64 / 100.0;
    let p99_ms = round2(inputs.p99_ms);
    let bonus = bonus(p99_ms);
    let fine = if inputs.inconsistencies > 0 {
        FINE_RATE
    } else {
        0.0
    };
    let net = gross - fees;
    let lag = inputs.successful_posts as i64 - inputs.backend.total_requests() as i64;
    Score {
        gross: round2(gross),
        fees: round2(fees),
        p99_ms,
        bonus,
        fine,
        fine_amount: round2(net * fine),
        profit: round2(net * (1.0 + bonus - fine)),
        inconsistencies: inputs.inconsistencies,
        lag,
        disqualified: lag < 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rinha::calls::Side;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn inputs(
        default_n: u64,
        fallback_n: u64,
        p99_ms: f64,
        inconsistencies: u64,
        posts: u64,
    ) -> Inputs {
        let side = |n: u64| Side {
            total_requests: n,
            total_amount: n as f64 * 19.9,
        };
        Inputs {
            backend: BackendSummary {
                default: side(default_n),
                fallback: side(fallback_n),
            },
            default: ProcessorSummary {
                fee_per_transaction: 0.05,
                ..Default::default()
            },
            fallback: ProcessorSummary {
                fee_per_transaction: 0.15,
                ..Default::default()
            },
            p99_ms,
            inconsistencies,
            successful_posts: posts,
        }
    }

    #[test]
    fn bonus_examples_from_the_rules() {
        assert!(close(bonus(1.0), 0.20));
        assert!(close(bonus(0.5), 0.21));
        assert!(close(bonus(11.0), 0.0));
        assert!(close(bonus(73.0), 0.0));
    }

    #[test]
    fn the_ceiling_of_section_7() {
        // ~16,750 payments x 19.90 x 0.95 = ~316,700 before the bonus.
        let s = compute(&inputs(16_750, 0, 11.0, 0, 16_750));
        assert!(close(s.gross, 333_325.0));
        assert!(close(s.fees, 16_666.25));
        assert!(close(s.profit, 316_658.75));
        assert_eq!(s.lag, 0);
        assert!(!s.disqualified);
        // The best entry's p99 1.25 ms -> bonus 19.5 %.
        let s = compute(&inputs(16_750, 0, 1.2549, 0, 16_750));
        assert!(close(s.p99_ms, 1.25));
        assert!(close(s.bonus, 0.195));
        assert!(close(s.profit, round2(316_658.75 * 1.195)));
    }

    #[test]
    fn fees_per_processor_and_fine() {
        // 100 default (5 %) + 100 fallback (15 %): gross 3980, fees 99.5 + 298.5.
        let s = compute(&inputs(100, 100, 1.0, 2, 200));
        assert!(close(s.gross, 3980.0));
        assert!(close(s.fees, 398.0));
        assert!(close(s.fine, 0.35));
        assert!(close(s.fine_amount, round2(3582.0 * 0.35)));
        assert!(close(s.profit, round2(3582.0 * (1.0 + 0.2 - 0.35))));
        assert_eq!(s.inconsistencies, 2);
    }

    #[test]
    fn lag_and_disqualification() {
        let s = compute(&inputs(90, 0, 1.0, 0, 100));
        assert_eq!(s.lag, 10);
        assert!(!s.disqualified);
        let s = compute(&inputs(101, 0, 1.0, 0, 100));
        assert_eq!(s.lag, -1);
        assert!(s.disqualified);
    }

    #[test]
    fn p99_rounds_to_two_decimals() {
        assert!(close(round2(1.234_9), 1.23));
        assert!(close(round2(1.235_1), 1.24));
    }
}
