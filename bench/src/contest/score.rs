//! The score, exactly as RINHA-2025.md section 5 and the official scripts' `handleSummary`
//! compute it (the preview from the backend's teardown summary, the final from the processors'): p99 rounded to two decimals, bonus = max((11 - p99) x 0.02, 0) *also* rounded to
//! two decimals (Big.js `round(2)`, half away from zero, on the number's decimal text: p99
//! 1.25 ms gives 0.195 -> 20 %), fine, and profit = net + net x bonus - net x fine in exact
//! decimals (Big.js). Money is kept in exact scaled integers and turned into `f64` at the end,
//! as `Big.toNumber()` does.

use super::calls::{cents, BackendSummary, ProcessorSummary};

/// The fine for any inconsistency.
pub const FINE_RATE: f64 = 0.35;

/// Everything the score is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// The payments counted over the teardown window, per processor: the backend's summary in
    /// the preview, the processors' own totals in the final ([`BackendSummary::of_processors`]).
    pub counted: BackendSummary,
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
    /// Counted default + fallback totalAmount (teardown window).
    pub gross: f64,
    /// Each processor's feePerTransaction x the counted totalAmount for it.
    pub fees: f64,
    /// p99 in ms, rounded to two decimals.
    pub p99_ms: f64,
    /// As a fraction with two decimals (0.2 = 20 %).
    pub bonus: f64,
    /// As a fraction (0.35 = 35 %).
    pub fine: f64,
    /// The fine in money: (gross - fees) x fine.
    pub fine_amount: f64,
    /// The score: (gross - fees) x (1 + bonus - fine).
    pub profit: f64,
    pub inconsistencies: u64,
    /// Successful POSTs minus the payments counted (the backend's, or the processors').
    pub lag: i64,
    /// A negative lag ("caixa dois"): more payments recorded than requested.
    pub disqualified: bool,
}

/// Rounds `x` to two decimals as Big.js `new Big(x).round(2)` does: on the shortest decimal
/// text of the double (what JavaScript prints), half away from zero.
pub fn round2(x: f64) -> f64 {
    let text = format!("{x}");
    let negative = text.starts_with('-');
    let digits = text.trim_start_matches('-');
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let Ok(int) = int.parse::<i128>() else {
        return (x * 100.0).round() / 100.0; // beyond i128: no fraction digits anyway
    };
    let frac = frac.as_bytes();
    let digit = |i: usize| frac.get(i).map_or(0, |d| i128::from(d - b'0'));
    let mut hundredths = int * 100 + digit(0) * 10 + digit(1);
    if digit(2) >= 5 {
        hundredths += 1;
    }
    let value = hundredths as f64 / 100.0;
    if negative {
        -value
    } else {
        value
    }
}

/// max(round2((11 - p99) x 0.02), 0) with p99 in ms (already rounded to two decimals).
pub fn bonus(p99_ms: f64) -> f64 {
    round2((11.0 - p99_ms) * 0.02).max(0.0)
}

/// A fee rate in millionths (the rates are short decimals such as 0.05).
fn fee_millionths(fee: f64) -> i128 {
    (fee * 1e6).round() as i128
}

/// `feePerTransaction x totalAmount` of one processor, exactly (as Big.js multiplies).
pub fn fee(fee_per_transaction: f64, total_amount: f64) -> f64 {
    (fee_millionths(fee_per_transaction) * i128::from(cents(total_amount))) as f64 / 1e8
}

/// Computes the score sheet.
pub fn compute(inputs: &Inputs) -> Score {
    let default_cents = i128::from(cents(inputs.counted.default.total_amount));
    let fallback_cents = i128::from(cents(inputs.counted.fallback.total_amount));
    let gross_cents = default_cents + fallback_cents;
    // Fees in units of 1e-8: millionths x cents.
    let fees_e8 = fee_millionths(inputs.default.fee_per_transaction) * default_cents
        + fee_millionths(inputs.fallback.fee_per_transaction) * fallback_cents;
    let net_e8 = gross_cents * 1_000_000 - fees_e8;
    let p99_ms = round2(inputs.p99_ms);
    let bonus = bonus(p99_ms);
    let bonus_pct = (bonus * 100.0).round() as i128;
    let fine_pct: i128 = if inputs.inconsistencies > 0 { 35 } else { 0 };
    // net x (100 + bonus% - fine%) in units of 1e-10.
    let profit_e10 = net_e8 * (100 + bonus_pct - fine_pct);
    let lag = inputs.successful_posts as i64 - inputs.counted.total_requests() as i64;
    Score {
        gross: gross_cents as f64 / 100.0,
        fees: fees_e8 as f64 / 1e8,
        p99_ms,
        bonus,
        fine: fine_pct as f64 / 100.0,
        fine_amount: (net_e8 * fine_pct) as f64 / 1e10,
        profit: profit_e10 as f64 / 1e10,
        inconsistencies: inputs.inconsistencies,
        lag,
        disqualified: lag < 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contest::calls::Side;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
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
            counted: BackendSummary {
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
    fn bonus_is_rounded_to_whole_percents_like_big_js() {
        // (11 - 1.25) x 0.02 = 0.195 -> 0.2; the best entry's 380,036 = ~316,700 x 1.20.
        assert!(close(bonus(1.25), 0.20));
        // 0.18780000000000002 -> 0.19; 0.1494 -> 0.15; 0.056000000000000015 -> 0.06.
        assert!(close(bonus(1.61), 0.19));
        assert!(close(bonus(3.53), 0.15));
        assert!(close(bonus(8.2), 0.06));
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
        // p99 1.2549 ms -> 1.25 ms -> bonus 20 %.
        let s = compute(&inputs(16_750, 0, 1.2549, 0, 16_750));
        assert!(close(s.p99_ms, 1.25));
        assert!(close(s.bonus, 0.20));
        assert!(close(s.profit, 379_990.5));
    }

    #[test]
    fn fees_per_processor_and_fine() {
        // 100 default (5 %) + 100 fallback (15 %): gross 3980, fees 99.5 + 298.5.
        let s = compute(&inputs(100, 100, 1.0, 2, 200));
        assert!(close(s.gross, 3980.0));
        assert!(close(s.fees, 398.0));
        assert!(close(s.fine, 0.35));
        assert!(close(s.fine_amount, 3582.0 * 0.35));
        // 3582 x (1 + 0.20 - 0.35) = 3044.70
        assert!(close(s.profit, 3044.7));
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

    /// A final's teardown: only the processors' summaries, fees 7 % / 10 %, amount 20.05.
    fn final_inputs(default_n: u64, fallback_n: u64, posts: u64, p99_ms: f64) -> Inputs {
        let processor = |n: u64, fee: f64| ProcessorSummary {
            total_requests: n,
            total_amount: (n * 2005) as f64 / 100.0,
            total_fee: 0.0,
            fee_per_transaction: fee,
        };
        let default = processor(default_n, 0.07);
        let fallback = processor(fallback_n, 0.10);
        Inputs {
            counted: BackendSummary::of_processors(&default, &fallback),
            default,
            fallback,
            p99_ms,
            inconsistencies: 0,
            successful_posts: posts,
        }
    }

    #[test]
    fn the_final_scores_what_the_processors_stored() {
        // Section 7's #1: 52,945 default + 37,646 fallback, lag 0.
        let s = compute(&final_inputs(52_945, 37_646, 90_591, 2.55));
        assert!(close(s.gross, 1_816_349.55), "{}", s.gross);
        // 7 % of 1,061,547.25 + 10 % of 754,802.30
        assert!(close(s.fees, 74_308.307_5 + 75_480.23), "{}", s.fees);
        assert!(close(s.bonus, 0.17));
        assert_eq!(s.lag, 0);
        // (gross - fees) x 1.17: the published 1,949,876.
        assert!(close(s.profit, 1_949_876.384_625), "{}", s.profit);
        // Payments still queued at teardown are lag, and lost revenue.
        let s = compute(&final_inputs(75_367, 0, 90_627, 2.14));
        assert_eq!(s.lag, 15_260);
        assert!(close(s.gross, 75_367.0 * 20.05));
        assert!(close(s.fees, 75_367.0 * 20.05 * 0.07));
        assert!(!s.disqualified);
        // A processor holding more than the POSTs that succeeded: negative lag.
        let s = compute(&final_inputs(60, 41, 100, 1.0));
        assert_eq!(s.lag, -1);
        assert!(s.disqualified);
    }

    #[test]
    fn round2_is_half_away_from_zero_on_the_decimal_text() {
        assert!(close(round2(1.2349), 1.23));
        assert!(close(round2(1.235), 1.24));
        // 1.005 is 1.00499999999999989... as a double, but prints (and rounds) as 1.005.
        assert!(close(round2(1.005), 1.01));
        assert!(close(round2(-0.125), -0.13));
        assert!(close(round2(7.0), 7.0));
        assert!(close(round2(0.0001), 0.0));
    }
}
