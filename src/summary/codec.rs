//! The summary's JSON (RINHA-2025.md section 2), written for clients and peers and read
//! back from peers in exact cents (amounts with at most two decimals, never through `f64`).

use crate::payment::write_amount;

use super::window::Totals;

/// Writes the summary JSON of RINHA-2025.md section 2.
pub fn write_summary(out: &mut Vec<u8>, t: &Totals) {
    out.extend_from_slice(b"{\"default\":{\"totalRequests\":");
    out.extend_from_slice(t.requests[0].to_string().as_bytes());
    out.extend_from_slice(b",\"totalAmount\":");
    write_amount(out, t.cents[0]);
    out.extend_from_slice(b"},\"fallback\":{\"totalRequests\":");
    out.extend_from_slice(t.requests[1].to_string().as_bytes());
    out.extend_from_slice(b",\"totalAmount\":");
    write_amount(out, t.cents[1]);
    out.extend_from_slice(b"}}");
}

/// Reads a peer's summary back into exact cents.
pub fn parse_summary(body: &[u8]) -> Option<Totals> {
    #[derive(serde::Deserialize)]
    struct Side<'a> {
        #[serde(rename = "totalRequests")]
        requests: u64,
        #[serde(rename = "totalAmount", borrow)]
        amount: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Summary<'a> {
        #[serde(borrow)]
        default: Side<'a>,
        #[serde(borrow)]
        fallback: Side<'a>,
    }
    let s: Summary<'_> = serde_json::from_slice(body).ok()?;
    Some(Totals {
        requests: [s.default.requests, s.fallback.requests],
        cents: [
            fixed_cents(s.default.amount.get())?,
            fixed_cents(s.fallback.amount.get())?,
        ],
    })
}

/// `123`, `123.4` or `123.45` -> cents, exactly.
fn fixed_cents(text: &str) -> Option<u128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()? * if frac.len() == 1 { 10 } else { 1 }
    };
    int.checked_mul(100)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_round_trip() {
        let t = Totals {
            requests: [3, 1],
            cents: [5970, 1990],
        };
        let mut out = Vec::new();
        write_summary(&mut out, &t);
        assert_eq!(
            out,
            br#"{"default":{"totalRequests":3,"totalAmount":59.70},"fallback":{"totalRequests":1,"totalAmount":19.90}}"#
        );
        assert_eq!(parse_summary(&out), Some(t));
        assert_eq!(fixed_cents("0"), Some(0));
        assert_eq!(fixed_cents("1.5"), Some(150));
        assert_eq!(fixed_cents("1.555"), None);
        assert_eq!(parse_summary(b"{}"), None);
    }
}
