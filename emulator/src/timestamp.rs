//! `requestedAt` and the summary bounds: ISO-8601 in, microseconds since the epoch kept,
//! ISO-8601 UTC with milliseconds out (the processor's column is a PostgreSQL `TIMESTAMP`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// A timestamp that is not ISO-8601.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO-8601 timestamp: {0:?}")]
pub struct TimestampError(pub String);

/// Parses ISO-8601 (`2025-07-15T12:34:56.000Z`, with or without fraction, `Z` or any offset;
/// without an offset the time is taken as UTC) into microseconds since the epoch. Digits
/// below the microsecond are truncated, as Npgsql does when it writes a `TIMESTAMP`.
pub fn parse_micros(text: &str) -> Result<i64, TimestampError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_micros());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(at.and_utc().timestamp_micros());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(at) = day.and_hms_opt(0, 0, 0) {
            return Ok(at.and_utc().timestamp_micros());
        }
    }
    Err(TimestampError(text.to_owned()))
}

/// Formats microseconds since the epoch as `2025-07-15T12:34:56.000Z`; sub-millisecond
/// digits, when there are any, are kept (`.000123Z`) rather than lost.
pub fn format_micros(micros: i64) -> String {
    let Some(at) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return String::from("invalid");
    };
    if micros.rem_euclid(1000) == 0 {
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_752_582_896_000_000; // 2025-07-15T12:34:56Z

    #[test]
    fn parses_the_forms_clients_send() {
        assert_eq!(parse_micros("2025-07-15T12:34:56.000Z"), Ok(BASE));
        assert_eq!(parse_micros("2025-07-15T12:34:56Z"), Ok(BASE));
        assert_eq!(parse_micros("2025-07-15T12:34:56+00:00"), Ok(BASE));
        assert_eq!(
            parse_micros("2025-07-15T12:34:56.123456Z"),
            Ok(BASE + 123_456)
        );
        assert_eq!(
            parse_micros("2025-07-15T12:34:56.1234567Z"),
            Ok(BASE + 123_456)
        );
        assert_eq!(parse_micros("2025-07-15T12:34:56.5"), Ok(BASE + 500_000));
        assert_eq!(parse_micros("2025-07-15T15:34:56.000+03:00"), Ok(BASE));
        assert!(parse_micros("yesterday").is_err());
        assert!(parse_micros("2025-13-15T12:34:56Z").is_err());
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(format_micros(BASE), "2025-07-15T12:34:56.000Z");
        assert_eq!(format_micros(BASE + 7_000), "2025-07-15T12:34:56.007Z");
        assert_eq!(format_micros(BASE + 7), "2025-07-15T12:34:56.000007Z");
    }
}
