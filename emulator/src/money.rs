//! Money as the official processor keeps it: exact decimals, never `f64`.
//!
//! Amounts are parsed from the exact JSON text and rounded half-to-even to cents (what .NET
//! `decimal.Round(x, 2)` does); the fee is a decimal kept in millionths; sums are integer cents.

use std::fmt;

/// Why a decimal text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a JSON-style decimal number (`-?digits[.digits][e[+-]digits]`).
    #[error("not a decimal number")]
    Syntax,
    /// Negative values are not accepted by this emulator (the contest never sends them).
    #[error("negative amount")]
    Negative,
    /// Larger than this emulator keeps (u64 of the scaled unit).
    #[error("amount too large")]
    Overflow,
}

/// Parses decimal `text` and rounds it half-to-even to `scale` fractional digits, returning
/// the value in units of `10^-scale` (cents for `scale` 2). Exponent forms (`1.99e1`) work.
pub fn parse_scaled(text: &str, scale: u32) -> Result<u64, DecimalError> {
    let Decimal {
        negative,
        digits,
        int_len,
        exponent,
    } = Decimal::parse(text)?;
    // Drop leading zeros so that the first digit, if any, is significant.
    let first_nonzero = digits.iter().position(|&d| d != 0);
    let Some(first) = first_nonzero else {
        return Ok(0);
    };
    if negative {
        return Err(DecimalError::Negative);
    }
    let digits = &digits[first..];
    // Number of digits that sit before the decimal point once the exponent is applied.
    let point = int_len as i64 - first as i64 + exponent;
    let kept = point + i64::from(scale);
    if kept < 0 {
        return Ok(0);
    }
    if kept > 20 {
        // The first digit is non-zero, so the value is at least 10^20 units: beyond u64.
        return Err(DecimalError::Overflow);
    }
    let kept = kept as usize;
    let mut value: u64 = 0;
    for index in 0..kept {
        let digit = digits.get(index).copied().unwrap_or(0);
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(DecimalError::Overflow)?;
    }
    let dropped = digits.get(kept..).unwrap_or(&[]);
    if rounds_up(value, dropped) {
        value = value.checked_add(1).ok_or(DecimalError::Overflow)?;
    }
    Ok(value)
}

/// Whether `value` rounds up, half-to-even, given the digits dropped after it.
fn rounds_up(value: u64, dropped: &[u8]) -> bool {
    match dropped.split_first() {
        None => false,
        Some((&first_dropped, rest)) => {
            if first_dropped > 5 {
                true
            } else if first_dropped < 5 {
                false
            } else if rest.iter().any(|&d| d != 0) {
                true
            } else {
                // Exactly half: round to the even neighbour.
                value % 2 == 1
            }
        }
    }
}

/// A decimal text taken apart (`-?digits[.digits][e[+-]digits]`): its sign, every digit
/// (integer part then fraction), how many are the integer part, and the exponent.
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    int_len: usize,
    exponent: i64,
}

impl Decimal {
    fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        if bytes.first() == Some(&b'-') {
            i = 1;
        } else if bytes.first() == Some(&b'+') {
            // .NET accepts a leading '+' when reading numbers from strings; harmless to allow.
            i = 1;
        }
        let negative = bytes.first() == Some(&b'-');
        let mut digits: Vec<u8> = Vec::with_capacity(bytes.len());
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            digits.push(bytes[i] - b'0');
            i += 1;
        }
        let int_len = i - int_start;
        let mut frac_len = 0;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                digits.push(bytes[i] - b'0');
                frac_len += 1;
                i += 1;
            }
            if frac_len == 0 {
                return Err(DecimalError::Syntax);
            }
        }
        if int_len == 0 {
            return Err(DecimalError::Syntax);
        }
        let exponent = exponent(bytes, &mut i)?;
        if i != bytes.len() {
            return Err(DecimalError::Syntax);
        }
        Ok(Decimal {
            negative,
            digits,
            int_len,
            exponent,
        })
    }
}

/// The exponent at `bytes[*i..]` (`e[+-]digits`, 0 when there is none), moving `i` past it.
fn exponent(bytes: &[u8], i: &mut usize) -> Result<i64, DecimalError> {
    let mut exponent: i64 = 0;
    if *i < bytes.len() && (bytes[*i] == b'e' || bytes[*i] == b'E') {
        *i += 1;
        let mut exp_negative = false;
        if *i < bytes.len() && (bytes[*i] == b'+' || bytes[*i] == b'-') {
            exp_negative = bytes[*i] == b'-';
            *i += 1;
        }
        let exp_start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            // Saturate: any exponent this large already means 0 or overflow below.
            exponent = (exponent * 10 + i64::from(bytes[*i] - b'0')).min(1_000_000);
            *i += 1;
        }
        if *i == exp_start {
            return Err(DecimalError::Syntax);
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    Ok(exponent)
}

/// Parses an amount into cents, rounded half-to-even.
pub fn parse_cents(text: &str) -> Result<u64, DecimalError> {
    parse_scaled(text, 2)
}

/// Writes integer cents as a decimal with exactly two fractional digits (`1990` -> `19.90`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cents(pub u64);

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// The processor's fee per transaction, kept exactly in millionths (`0.05` = 50,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fee {
    millionths: u64,
}

impl Fee {
    const SCALE: u64 = 1_000_000;

    /// A fee of `percent` % (`Fee::from_percent(5)` is 0.05).
    pub fn from_percent(percent: u32) -> Fee {
        Fee {
            millionths: u64::from(percent) * (Self::SCALE / 100),
        }
    }

    /// A fee in millionths (`50_000` is 0.05).
    pub fn from_millionths(millionths: u64) -> Fee {
        Fee { millionths }
    }

    /// The fee in millionths.
    pub fn millionths(self) -> u64 {
        self.millionths
    }

    /// The fee on `cents`, rounded half-to-even to cents (as `decimal.Round(total * fee, 2)`).
    pub fn of_cents(self, cents: u64) -> u64 {
        let product = u128::from(cents) * u128::from(self.millionths);
        let scale = u128::from(Self::SCALE);
        let quotient = product / scale;
        let remainder = product % scale;
        let twice = remainder * 2;
        let round_up = twice > scale || (twice == scale && quotient % 2 == 1);
        let rounded = quotient + u128::from(round_up);
        u64::try_from(rounded).unwrap_or(u64::MAX)
    }
}

impl std::str::FromStr for Fee {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Fee, DecimalError> {
        parse_scaled(text.trim(), 6).map(Fee::from_millionths)
    }
}

/// Shortest exact decimal (`0.05`, `0.15`, `1`), as .NET prints a `decimal` fee.
impl fmt::Display for Fee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.millionths / Self::SCALE;
        let frac = self.millionths % Self::SCALE;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_from_the_exact_text() {
        assert_eq!(parse_cents("19.90"), Ok(1990));
        assert_eq!(parse_cents("19.905"), Ok(1990));
        assert_eq!(parse_cents("19.915"), Ok(1992));
        assert_eq!(parse_cents("19.9050001"), Ok(1991));
        assert_eq!(parse_cents("19.904999"), Ok(1990));
        assert_eq!(parse_cents("0.005"), Ok(0));
        assert_eq!(parse_cents("0.015"), Ok(2));
        assert_eq!(parse_cents("19"), Ok(1900));
        assert_eq!(parse_cents("0"), Ok(0));
        assert_eq!(parse_cents("-0.00"), Ok(0));
    }

    #[test]
    fn accepts_exponents() {
        assert_eq!(parse_cents("1.99e1"), Ok(1990));
        assert_eq!(parse_cents("1.99E+1"), Ok(1990));
        assert_eq!(parse_cents("1990e-2"), Ok(1990));
        assert_eq!(parse_cents("19905e-3"), Ok(1990));
        assert_eq!(parse_cents("1e-9"), Ok(0));
        assert_eq!(parse_cents("5e-3"), Ok(0));
        assert_eq!(parse_cents("5e-1000000000"), Ok(0));
        assert_eq!(parse_cents("1e2"), Ok(10000));
    }

    #[test]
    fn refuses_what_is_not_a_decimal() {
        for text in [
            "", "-", "abc", "1.", ".5", "1e", "1e+", "1.2.3", "19.90 ", "0x10", "NaN",
        ] {
            assert_eq!(parse_cents(text), Err(DecimalError::Syntax), "{text:?}");
        }
        assert_eq!(parse_cents("-1"), Err(DecimalError::Negative));
        assert_eq!(parse_cents("1e30"), Err(DecimalError::Overflow));
        assert_eq!(
            parse_cents("184467440737095516.16"),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_cents("184467440737095516.15"), Ok(u64::MAX));
    }

    #[test]
    fn formats_cents_with_two_decimals() {
        assert_eq!(Cents(1990).to_string(), "19.90");
        assert_eq!(Cents(5).to_string(), "0.05");
        assert_eq!(Cents(0).to_string(), "0.00");
    }

    #[test]
    fn fee_is_exact_and_rounds_half_to_even() {
        let fee: Fee = "0.05".parse().unwrap();
        assert_eq!(fee, Fee::from_percent(5));
        assert_eq!(fee.to_string(), "0.05");
        assert_eq!(Fee::from_percent(15).to_string(), "0.15");
        assert_eq!(Fee::from_percent(100).to_string(), "1");
        // 3 x 19.90 = 59.70; 5 % = 2.985 -> 2.98 (even), 5.970 = 0.2985 -> 0.30.
        assert_eq!(fee.of_cents(5970), 298);
        assert_eq!(fee.of_cents(1990), 100); // 0.995 -> 1.00
        assert_eq!(fee.of_cents(1970), 98); // 0.985 -> 0.98
        assert_eq!(Fee::from_percent(15).of_cents(1990), 298); // 2.985 -> 2.98
    }

    /// Half-to-even of `units / 10^drop` in integers: the reference the parser must match.
    fn reference_cents(units: u128, drop: u32) -> u64 {
        let divisor = 10u128.pow(drop);
        let (quotient, remainder) = (units / divisor, units % divisor);
        let twice = remainder * 2;
        let up = twice > divisor || (twice == divisor && quotient % 2 == 1);
        u64::try_from(quotient + u128::from(up)).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn plain_decimals_round_like_the_reference(whole in 0u64..10_000_000_000, frac in 0u32..1_000_000) {
            let text = format!("{whole}.{frac:06}");
            let millionths = u128::from(whole) * 1_000_000 + u128::from(frac);
            proptest::prop_assert_eq!(parse_cents(&text), Ok(reference_cents(millionths, 4)));
        }

        #[test]
        fn exponent_forms_round_like_the_reference(mantissa in 0u64..1_000_000_000_000, exponent in -10i32..4) {
            // mantissa x 10^exponent, in units of 10^-10.
            let units = u128::from(mantissa) * 10u128.pow((exponent + 10) as u32);
            let expected = Ok(reference_cents(units, 8));
            proptest::prop_assert_eq!(parse_cents(&format!("{mantissa}e{exponent}")), expected.clone());
            proptest::prop_assert_eq!(parse_cents(&format!("{mantissa}E{exponent:+}")), expected);
        }
    }
}
