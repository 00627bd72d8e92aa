//! The `POST /payments` body: `{"correlationId": "<uuid>", "amount": <number>}`, validated
//! into a [`NewPayment`] with the amount as integer cents.
//!
//! The amount is taken as the exact decimal text of the JSON number (serde_json's
//! `RawValue`, zero-copy) and rounded half-to-even to cents like .NET `decimal.Round`,
//! never through `f64`: `0.125` is 12 cents, `0.135` is 14, `1.99e1` is 1990.
//!
//! Property names match in any case and values may hold JSON escapes, as the processors read
//! bodies (ASP.NET's web defaults); neither costs an allocation: names are compared as
//! serde_json hands them over, and the rare escaped id is unescaped on the stack.
//!
//! serde_json vs sonic-rs on this exact body, both zero-copy with the raw number text, then
//! the same UUID and cents conversion (`cargo bench -p rinha --profile test-release --bench
//! payment_body`; figures: docs/benchmarks.md, "Micro-benchmarks"): serde_json is kept, not
//! slower on a 70-byte body (sonic-rs built without SIMD target features; a SIMD build would
//! need RUSTFLAGS for the whole image) and no special build flags.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// Amounts above this many cents (ten billion) are refused as absurd: sums stay far from
/// overflow and no real payment is that large.
pub const MAX_CENTS: u64 = 1_000_000_000_000;

/// A validated payment as accepted at intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewPayment {
    /// The client's correlation id.
    pub id: Uuid,
    /// The amount in cents, rounded half-to-even.
    pub cents: u64,
}

/// Why a body was refused; each maps to a short JSON reason in a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("body is not a JSON object with correlationId and amount")]
    Json,
    #[error("correlationId or amount is missing")]
    Missing,
    #[error("a property appears twice")]
    Duplicate,
    #[error("correlationId is not a UUID")]
    CorrelationId,
    #[error("amount is not a number")]
    AmountNotNumber,
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    #[error("amount is too large")]
    AmountTooLarge,
}

impl PaymentError {
    /// The JSON body of the 400 answer.
    pub fn json(self) -> &'static [u8] {
        match self {
            PaymentError::Json => {
                br#"{"error":"body must be {\"correlationId\":uuid,\"amount\":number}"}"#
            }
            PaymentError::Missing => br#"{"error":"correlationId and amount are both required"}"#,
            PaymentError::Duplicate => {
                br#"{"error":"a property appears twice (names match in any case)"}"#
            }
            PaymentError::CorrelationId => br#"{"error":"correlationId is not a UUID"}"#,
            PaymentError::AmountNotNumber => br#"{"error":"amount is not a number"}"#,
            PaymentError::AmountNotPositive => {
                br#"{"error":"amount must be at least 0.01 after rounding"}"#
            }
            PaymentError::AmountTooLarge => br#"{"error":"amount is too large"}"#,
        }
    }
}

/// The two properties of a body, as found: names are matched in any case (ASP.NET's web
/// defaults, which the processors follow), values are kept as raw JSON text (zero-copy).
#[derive(Default)]
struct Body<'a> {
    correlation_id: Option<&'a RawValue>,
    amount: Option<&'a RawValue>,
    duplicate: bool,
}

#[derive(Clone, Copy)]
enum Field {
    CorrelationId,
    Amount,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a property name")
            }
            // Escaped names arrive here unescaped, borrowed or not: no allocation either way.
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(if name.eq_ignore_ascii_case("correlationId") {
                    Field::CorrelationId
                } else if name.eq_ignore_ascii_case("amount") {
                    Field::Amount
                } else {
                    Field::Other
                })
            }
        }
        d.deserialize_str(Name)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Object<'a> {
            type Value = Body<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Body<'a>, M::Error> {
                let mut body = Body::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::CorrelationId => &mut body.correlation_id,
                        Field::Amount => &mut body.amount,
                        Field::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    body.duplicate |= slot.is_some();
                    *slot = Some(map.next_value()?);
                }
                Ok(body)
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// Parses and validates a payment body.
pub fn parse(body: &[u8]) -> Result<NewPayment, PaymentError> {
    // JSON is UTF-8 (RFC 8259), but `from_slice` skips the strings of unknown fields
    // without checking them: `{"x":"\xff", ...}` would pass. Validating first costs one
    // word-at-a-time pass, and `from_str` then checks no string again.
    let text = std::str::from_utf8(body).map_err(|_| PaymentError::Json)?;
    let body: Body<'_> = serde_json::from_str(text).map_err(|_| PaymentError::Json)?;
    if body.duplicate {
        return Err(PaymentError::Duplicate);
    }
    let (Some(id), Some(amount)) = (body.correlation_id, body.amount) else {
        return Err(PaymentError::Missing);
    };
    let id = correlation_id(id.get()).ok_or(PaymentError::CorrelationId)?;
    let cents = decimal_to_cents(amount.get().as_bytes())?;
    Ok(NewPayment { id, cents })
}

/// The UUID in a JSON string's raw text (`"..."`), any form `uuid` reads (hyphenated, simple,
/// braced, `urn:uuid:`), escapes (`\u002d`) included.
fn correlation_id(raw: &str) -> Option<Uuid> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Uuid::try_parse(inner).ok();
    }
    // Rare: unescape on the stack (a UUID's longest form is 45 bytes; anything longer is not
    // one).
    let mut buf = [0u8; 48];
    let mut n = 0;
    for c in serde_json::from_str::<std::borrow::Cow<'_, str>>(raw)
        .ok()?
        .chars()
    {
        let mut utf8 = [0u8; 4];
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            *buf.get_mut(n)? = b;
            n += 1;
        }
    }
    Uuid::try_parse_ascii(&buf[..n]).ok()
}

/// Converts the text of a JSON number to cents, rounding half-to-even.
///
/// Accepts `-?digits(.digits)?([eE][+-]?digits)?`; refuses anything <= 0 after rounding and
/// anything above [`MAX_CENTS`].
pub fn decimal_to_cents(text: &[u8]) -> Result<u64, PaymentError> {
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mantissa_end = rest
        .iter()
        .position(|&b| b == b'e' || b == b'E')
        .unwrap_or(rest.len());
    let (mantissa, exp_part) = rest.split_at(mantissa_end);
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || (mantissa.len() > int_part.len() && frac_part.is_empty())
    {
        return Err(PaymentError::AmountNotNumber);
    }
    let exponent: i64 = if exp_part.is_empty() {
        0
    } else {
        let e = &exp_part[1..];
        let (sign, digits) = match e.split_first() {
            Some((b'+', d)) => (1, d),
            Some((b'-', d)) => (-1, d),
            _ => (1, e),
        };
        if digits.is_empty() || !all_digits(digits) {
            return Err(PaymentError::AmountNotNumber);
        }
        // Saturate: an exponent beyond +-10^6 only ever means zero or too large.
        let mut v: i64 = 0;
        for &d in digits {
            v = (v * 10 + i64::from(d - b'0')).min(1_000_000);
        }
        sign * v
    };
    // value = D x 10^(exponent - frac_len); cents = value x 100.
    let digits = int_part.iter().chain(frac_part.iter()).copied();
    let shift = exponent - frac_part.len() as i64 + 2;
    let significant = int_part.iter().chain(frac_part).any(|&d| d != b'0');
    if !significant {
        return Err(PaymentError::AmountNotPositive);
    }
    if negative {
        return Err(PaymentError::AmountNotPositive);
    }
    let total = int_part.len() + frac_part.len();
    // Number of leading digits that form the integer part of the cents.
    let keep = total as i64 + shift.min(0);
    let mut cents: u64 = 0;
    let mut dropped_first: u8 = 0;
    let mut dropped_rest_nonzero = false;
    for (i, d) in digits.enumerate() {
        let d = d - b'0';
        if (i as i64) < keep {
            cents = cents
                .checked_mul(10)
                .and_then(|c| c.checked_add(u64::from(d)))
                .filter(|&c| c <= MAX_CENTS)
                .ok_or(PaymentError::AmountTooLarge)?;
        } else if i as i64 == keep {
            dropped_first = d;
        } else if d != 0 {
            dropped_rest_nonzero = true;
        }
    }
    if keep < 0 {
        // Every digit lies two or more places below the cent: the value is under half a cent.
        return Err(PaymentError::AmountNotPositive);
    }
    for _ in 0..shift.max(0) {
        cents = cents
            .checked_mul(10)
            .filter(|&c| c <= MAX_CENTS)
            .ok_or(PaymentError::AmountTooLarge)?;
    }
    let round_up =
        dropped_first > 5 || (dropped_first == 5 && (dropped_rest_nonzero || cents % 2 == 1));
    if round_up {
        cents += 1;
    }
    if cents == 0 {
        return Err(PaymentError::AmountNotPositive);
    }
    if cents > MAX_CENTS {
        return Err(PaymentError::AmountTooLarge);
    }
    Ok(cents)
}

/// Writes `cents` as a decimal amount with two places (`1990` -> `19.90`).
pub fn write_amount(out: &mut Vec<u8>, cents: u128) {
    let mut buf = itoa_buf(cents / 100);
    out.append(&mut buf);
    let frac = (cents % 100) as u8;
    out.extend_from_slice(&[b'.', b'0' + frac / 10, b'0' + frac % 10]);
}

fn itoa_buf(mut v: u128) -> Vec<u8> {
    let mut tmp = [0u8; 40];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    tmp[i..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Result<u64, PaymentError> {
        decimal_to_cents(s.as_bytes())
    }

    #[test]
    fn rounding_half_to_even() {
        assert_eq!(c("19.90"), Ok(1990));
        assert_eq!(c("19.9"), Ok(1990));
        assert_eq!(c("19"), Ok(1900));
        assert_eq!(c("0.125"), Ok(12));
        assert_eq!(c("0.135"), Ok(14));
        assert_eq!(c("0.1251"), Ok(13));
        assert_eq!(c("0.005"), Err(PaymentError::AmountNotPositive));
        assert_eq!(c("0.0051"), Ok(1));
        assert_eq!(c("0.015"), Ok(2));
        assert_eq!(c("1.99e1"), Ok(1990));
        assert_eq!(c("1990E-2"), Ok(1990));
        assert_eq!(c("1990e-4"), Ok(20));
        assert_eq!(c("1e+2"), Ok(10000));
        assert_eq!(
            c("0.00000000000000000000000000000000001"),
            Err(PaymentError::AmountNotPositive)
        );
        assert_eq!(c("000019.90"), Ok(1990));
    }

    #[test]
    fn refusals() {
        assert_eq!(c("0"), Err(PaymentError::AmountNotPositive));
        assert_eq!(c("-1"), Err(PaymentError::AmountNotPositive));
        assert_eq!(c("0.00"), Err(PaymentError::AmountNotPositive));
        assert_eq!(c("1e999999999999"), Err(PaymentError::AmountTooLarge));
        assert_eq!(c("1e-999999999999"), Err(PaymentError::AmountNotPositive));
        assert_eq!(c("99999999999999999999"), Err(PaymentError::AmountTooLarge));
        assert_eq!(c("\"19.90\""), Err(PaymentError::AmountNotNumber));
        assert_eq!(c("null"), Err(PaymentError::AmountNotNumber));
        assert_eq!(c("1."), Err(PaymentError::AmountNotNumber));
        assert_eq!(c(".5"), Err(PaymentError::AmountNotNumber));
        assert_eq!(c("1e"), Err(PaymentError::AmountNotNumber));
        assert_eq!(c(""), Err(PaymentError::AmountNotNumber));
    }

    #[test]
    fn bodies() {
        let ok = br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.90}"#;
        assert_eq!(parse(ok).unwrap().cents, 1990);
        let spaced = br#" { "amount" : 1.5 , "correlationId" : "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "x": [1] } "#;
        assert_eq!(parse(spaced).unwrap().cents, 150);
        assert_eq!(parse(b"{}"), Err(PaymentError::Missing));
        assert_eq!(parse(b""), Err(PaymentError::Json));
        assert_eq!(
            parse(br#"{"correlationId":"nope","amount":1}"#),
            Err(PaymentError::CorrelationId)
        );
        assert_eq!(
            parse(br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":"1"}"#),
            Err(PaymentError::AmountNotNumber)
        );
        assert_eq!(
            parse(br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":-2}"#),
            Err(PaymentError::AmountNotPositive)
        );
        assert_eq!(
            parse(br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":1e400}"#),
            Err(PaymentError::AmountTooLarge)
        );
        // Not UTF-8, even in a field we ignore: not JSON.
        let mut bad =
            br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":1,"x":""#.to_vec();
        bad.extend_from_slice(b"\xff\xfe\"}");
        assert_eq!(parse(&bad), Err(PaymentError::Json));
        assert_eq!(
            parse(br#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":1,"amount":2}"#),
            Err(PaymentError::Duplicate)
        );
    }

    #[test]
    fn names_match_in_any_case_and_the_id_may_be_escaped() {
        let id = "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3";
        let expect = Ok(NewPayment {
            id: Uuid::parse_str(id).unwrap(),
            cents: 1990,
        });
        // ASP.NET's web defaults, as the processors read bodies (RINHA-2025.md section 3).
        for body in [
            format!(r#"{{"CorrelationId":"{id}","Amount":19.90}}"#),
            format!(r#"{{"CORRELATIONID":"{id}","aMoUnT":19.90}}"#),
            format!(r#"{{"correlation\u0049d":"{id}","amount":19.90}}"#),
            r#"{"correlationId":"4a7901b8\u002d7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.90}"#
                .to_string(),
            r#"{"correlationId":"\u0034a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.9}"#
                .to_string(),
        ] {
            assert_eq!(parse(body.as_bytes()), expect, "{body}");
        }
        // One property under two spellings is a duplicate, refused as such.
        let twice = format!(r#"{{"correlationId":"{id}","CorrelationId":"{id}","amount":1}}"#);
        assert_eq!(parse(twice.as_bytes()), Err(PaymentError::Duplicate));
        let missing = r#"{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"}"#;
        assert_eq!(parse(missing.as_bytes()), Err(PaymentError::Missing));
        assert_eq!(parse(br#"[1,2]"#), Err(PaymentError::Json));
        // Every refusal says why, as a JSON object.
        for e in [
            PaymentError::Json,
            PaymentError::Missing,
            PaymentError::Duplicate,
            PaymentError::CorrelationId,
            PaymentError::AmountNotNumber,
            PaymentError::AmountNotPositive,
            PaymentError::AmountTooLarge,
        ] {
            let v: serde_json::Value = serde_json::from_slice(e.json()).unwrap();
            assert!(v["error"].as_str().is_some_and(|r| !r.is_empty()), "{e:?}");
        }
    }

    #[test]
    fn amounts_written() {
        let mut out = Vec::new();
        write_amount(&mut out, 1990);
        out.push(b' ');
        write_amount(&mut out, 5);
        out.push(b' ');
        write_amount(&mut out, 0);
        assert_eq!(out, b"19.90 0.05 0.00");
    }

    proptest! {
        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&body);
        }

        #[test]
        fn two_decimal_amounts_are_exact(cents in 1u64..MAX_CENTS) {
            let text = format!("{}.{:02}", cents / 100, cents % 100);
            prop_assert_eq!(c(&text), Ok(cents));
            let exp = format!("{}e-2", cents);
            prop_assert_eq!(c(&exp), Ok(cents));
        }

        #[test]
        fn three_decimals_round_half_even(milli in 10u64..10_000_000) {
            let text = format!("{}.{:03}", milli / 1000, milli % 1000);
            let (q, r) = (milli / 10, milli % 10);
            let expect = if r > 5 || (r == 5 && q % 2 == 1) { q + 1 } else { q };
            prop_assert_eq!(c(&text), Ok(expect));
        }
    }
}
