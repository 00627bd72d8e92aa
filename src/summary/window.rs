//! What a summary asks for and what it answers: the window of `requestedAt` times
//! ([`Window`], parsed from the query by [`parse_window`]), the moment it is taken at
//! ([`AsOf`]), and the counts and sums per processor ([`Totals`]).

use std::time::{Duration, Instant};

use crate::http::request::{percent_decode, query_param};
use crate::processor::Processor;
use crate::time::{now_us, parse_iso};

/// An inclusive window in µs since the epoch (`None` = unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Window {
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        self.from_us.is_none_or(|f| t >= f) && self.to_us.is_none_or(|e| t <= e)
    }
}

/// `from`/`to` of a summary query in UTC (a bound with an offset, `+03:00`, is converted),
/// normalised to whole milliseconds (records are stamped in milliseconds, so an inclusive
/// bound rounds inwards). `None` if a value is malformed.
///
/// Like the processors' admin summary (RINHA-2025.md section 3), if either bound is missing
/// the window is unbounded on both sides: we must agree with them for the same query.
pub fn parse_window(query: &[u8]) -> Option<Window> {
    let bound = |key: &[u8]| -> Result<Option<i64>, ()> {
        match query_param(query, key) {
            None => Ok(None),
            Some(b"") => Ok(None),
            Some(raw) => {
                let mut buf = [0u8; 64];
                let text = percent_decode(raw, &mut buf).ok_or(())?;
                parse_iso(text).map(Some).map_err(|_| ())
            }
        }
    };
    let (from, to) = match (bound(b"from").ok()?, bound(b"to").ok()?) {
        (Some(f), Some(t)) => (Some(f), Some(t)),
        _ => (None, None),
    };
    Some(Window {
        from_us: from.map(|f| f + (1000 - f.rem_euclid(1000)) % 1000),
        to_us: to.map(|t| t - t.rem_euclid(1000)),
    })
}

/// The moment a summary is taken at: when its request reached this instance.
#[derive(Debug, Clone, Copy)]
pub struct AsOf(pub Instant);

impl AsOf {
    pub fn now() -> Self {
        Self(Instant::now())
    }

    /// The instant of a wall-clock time (µs since the epoch) sent by a peer on this or
    /// another host; a time in the future (clock skew) means now.
    pub fn from_wall_us(wall_us: i64) -> Self {
        let now = Instant::now();
        let behind = now_us().saturating_sub(wall_us).max(0);
        Self(
            now.checked_sub(Duration::from_micros(behind as u64))
                .unwrap_or(now),
        )
    }

    /// This moment as wall-clock µs since the epoch, for a peer.
    pub fn to_wall_us(self) -> i64 {
        let ago = Instant::now().saturating_duration_since(self.0);
        now_us() - ago.as_micros().min(i64::MAX as u128) as i64
    }
}

/// Counts and sums per processor (index: [`Processor::index`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: [u64; 2],
    pub cents: [u128; 2],
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        for i in 0..2 {
            self.requests[i] += other.requests[i];
            self.cents[i] += other.cents[i];
        }
    }

    /// Counts one payment of `cents` stored by `processor`.
    pub fn count(&mut self, processor: Processor, cents: u64) {
        self.requests[processor.index()] += 1;
        self.cents[processor.index()] += u128::from(cents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window(b""), Some(Window::default()));
        let w =
            parse_window(b"from=2025-07-15T12:34:56.000Z&to=2025-07-15T12:34:57.5005Z").unwrap();
        assert_eq!(w.from_us, Some(1_752_582_896_000_000));
        assert_eq!(w.to_us, Some(1_752_582_897_500_000));
        let w = parse_window(b"from=1970-01-01T00:00:00.0001Z&to=1970-01-01T00:00:01Z").unwrap();
        assert_eq!(w.from_us, Some(1000));
        assert_eq!(
            parse_window(b"to=2025-07-15T12:34:56Z"),
            Some(Window::default())
        );
        assert_eq!(parse_window(b"from=yesterday"), None);
        assert!(parse_window(b"to=2025-07-15T12%3A34%3A56%2B00%3A00").is_some());
        // An offset is converted to UTC.
        let w = parse_window(
            b"from=2025-07-15T15:34:56.000%2B03:00&to=2025-07-15T09%3A34%3A57.5-03%3A00",
        )
        .unwrap();
        assert_eq!(w.from_us, Some(1_752_582_896_000_000));
        assert_eq!(w.to_us, Some(1_752_582_897_500_000));
    }

    #[test]
    fn as_of_survives_the_trip_through_wall_clock_time() {
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let back = AsOf::from_wall_us(AsOf(t0).to_wall_us());
        let err = if back.0 > t0 {
            back.0 - t0
        } else {
            t0 - back.0
        };
        assert!(err < Duration::from_millis(5), "{err:?}");
        // A moment in the future (a skewed peer clock) is taken as now.
        let future = AsOf::from_wall_us(crate::time::now_us() + 10_000_000);
        assert!(future.0 <= Instant::now());
    }
}
