//! Wall-clock time as microseconds since the Unix epoch: the fast `requestedAt` formatter
//! (`2025-07-15T12:34:56.789Z`, what the processors receive and store) and the ISO-8601
//! parser for summary bounds and for the processors' echoed `requestedAt`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros().min(i64::MAX as u128) as i64
}

/// Microseconds since the epoch, now, truncated to the millisecond: the processor stores
/// `requestedAt` with millisecond precision, so the store must record exactly that.
pub fn now_ms_as_us() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as i64) * 1000
}

/// Formats `us` (microseconds since the epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 bytes).
pub fn format_iso_ms(us: i64) -> [u8; 24] {
    let ms = us.div_euclid(1000);
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let y = y.clamp(0, 9999) as u32;
    put(&mut out[0..4], y, 4);
    put(&mut out[5..7], m, 2);
    put(&mut out[8..10], d, 2);
    put(&mut out[11..13], sod / 3600, 2);
    put(&mut out[14..16], sod / 60 % 60, 2);
    put(&mut out[17..19], sod % 60, 2);
    put(&mut out[20..23], milli, 3);
    out
}

fn put(dst: &mut [u8], mut v: u32, width: usize) {
    for i in (0..width).rev() {
        dst[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// A timestamp that is not ISO-8601 as we accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timestamp is not ISO-8601 (YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM])")]
pub struct BadTimestamp;

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z|±HH:MM|±HHMM|±HH]` into microseconds since the
/// epoch (UTC): an offset is subtracted, no zone at all is read as UTC (what PostgreSQL's
/// `timestamp` comes back as through .NET), a space may stand for the `T`. Fractions finer
/// than a microsecond are truncated.
pub fn parse_iso(text: &[u8]) -> Result<i64, BadTimestamp> {
    let num = |s: &[u8]| -> Result<u32, BadTimestamp> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return Err(BadTimestamp);
        }
        Ok(s.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
    };
    if text.len() < 19
        || text[4] != b'-'
        || text[7] != b'-'
        || (text[10] != b'T' && text[10] != b't' && text[10] != b' ')
        || text[13] != b':'
        || text[16] != b':'
    {
        return Err(BadTimestamp);
    }
    let (y, mo, d) = (num(&text[0..4])?, num(&text[5..7])?, num(&text[8..10])?);
    let (h, mi, s) = (
        num(&text[11..13])?,
        num(&text[14..16])?,
        num(&text[17..19])?,
    );
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return Err(BadTimestamp);
    }
    let mut rest = &text[19..];
    let mut micros: u32 = 0;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return Err(BadTimestamp);
        }
        for i in 0..6 {
            micros = micros * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |&b| u32::from(b - b'0'));
        }
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (hh, mm) = match zone {
                [h1, h2] => ([*h1, *h2], [b'0', b'0']),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => ([*h1, *h2], [*m1, *m2]),
                _ => return Err(BadTimestamp),
            };
            let (oh, om) = (num(&hh)?, num(&mm)?);
            if oh > 23 || om > 59 {
                return Err(BadTimestamp);
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(BadTimestamp),
    };
    let days = days_from_civil(y as i64, mo, d);
    // Local time minus its offset is UTC.
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset_secs;
    Ok(secs * 1_000_000 + i64::from(micros))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (public domain), proleptic Gregorian.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every one of `texts` parses to `expected` (a failure names the text).
    fn all_parse_to(texts: &[&[u8]], expected: Result<i64, BadTimestamp>) {
        for text in texts {
            assert_eq!(
                parse_iso(text),
                expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn known_instants() {
        let t = parse_iso(b"2025-07-15T12:34:56.789Z").unwrap();
        assert_eq!(t, 1_752_582_896_789_000);
        assert_eq!(&format_iso_ms(t), b"2025-07-15T12:34:56.789Z");
        assert_eq!(
            parse_iso(b"2025-07-15T12:34:56Z").unwrap(),
            1_752_582_896_000_000
        );
        assert_eq!(
            parse_iso(b"2025-07-15T12:34:56+00:00").unwrap(),
            1_752_582_896_000_000
        );
        assert_eq!(
            parse_iso(b"2025-07-15T12:34:56.7891239Z").unwrap(),
            1_752_582_896_789_123
        );
        assert_eq!(parse_iso(b"1970-01-01T00:00:00.000Z").unwrap(), 0);
        assert_eq!(
            parse_iso(b"2024-02-29T00:00:00Z").unwrap() % 86_400_000_000,
            0
        );
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let utc = parse_iso(b"2025-07-15T09:34:56.789Z").unwrap();
        all_parse_to(
            &[
                b"2025-07-15T12:34:56.789+03:00",
                b"2025-07-15T12:34:56.789+0300",
                b"2025-07-15T12:34:56.789+03",
                b"2025-07-15T06:04:56.789-03:30",
                b"2025-07-15T09:34:56.7890000+00:00",
            ],
            Ok(utc),
        );
        // Across a day (and a year) boundary.
        assert_eq!(
            parse_iso(b"2026-01-01T01:00:00+02:00"),
            parse_iso(b"2025-12-31T23:00:00Z")
        );
        // Every fraction length .NET and PostgreSQL write (0 to 7 digits), zone or not.
        for (text, us) in [
            (&b"2025-07-15T12:34:56"[..], 0),
            (b"2025-07-15T12:34:56.7", 700_000),
            (b"2025-07-15T12:34:56.78Z", 780_000),
            (b"2025-07-15T12:34:56.789123", 789_123),
            (b"2025-07-15T12:34:56.7891234Z", 789_123),
        ] {
            assert_eq!(parse_iso(text), Ok(1_752_582_896_000_000 + us));
        }
        all_parse_to(
            &[
                b"2025-07-15T12:34:56+24:00",
                b"2025-07-15T12:34:56+03:60",
                b"2025-07-15T12:34:56+3:00",
                b"2025-07-15T12:34:56+03:0",
                b"2025-07-15T12:34:56+03:00Z",
                b"2025-07-15T12:34:56 +03:00",
            ],
            Err(BadTimestamp),
        );
    }

    #[test]
    fn refusals() {
        all_parse_to(
            &[
                b"",
                b"2025-07-15",
                b"2025-13-15T12:34:56Z",
                b"2025-02-30T12:34:56Z",
                b"2025-07-15T24:00:00Z",
                b"2025-07-15T12:34:56.Z",
                b"2025-07-15T12:34:56Zjunk",
                b"abcd-07-15T12:34:56Z",
            ],
            Err(BadTimestamp),
        );
    }

    proptest! {
        #[test]
        fn round_trip(ms in 0i64..253_402_300_799_999) {
            let us = ms * 1000;
            prop_assert_eq!(parse_iso(&format_iso_ms(us)), Ok(us));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_iso(&b);
        }
    }
}
