//! Summaries of repeated measurements: the median over runs, the lowest and highest run
//! ([`Spread`]), the ratio of two medians, and latency percentiles of an HDR histogram.

use std::cmp::Ordering;

use hdrhistogram::Histogram;

/// What a median needs of a value: a total order, which values count, and the median of an
/// even count. Floats (figures averaged over runs) take the mean of the middle two and leave
/// out NaN and infinities; whole numbers (microseconds a round measured) take the lower one,
/// so the median is a figure some round really measured.
pub trait Middle: Copy {
    fn order(&self, other: &Self) -> Ordering;
    fn counts(&self) -> bool;
    fn middle(low: Self, high: Self) -> Self;
}

impl Middle for f64 {
    fn order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    fn counts(&self) -> bool {
        self.is_finite()
    }
    fn middle(low: Self, high: Self) -> Self {
        (low + high) / 2.0
    }
}

macro_rules! whole_middle {
    ($($t:ty),*) => {$(
        impl Middle for $t {
            fn order(&self, other: &Self) -> Ordering {
                self.cmp(other)
            }
            fn counts(&self) -> bool {
                true
            }
            fn middle(low: Self, _high: Self) -> Self {
                low
            }
        }
    )*};
}
whole_middle!(u64, i64);

/// The median of `values` ([`Middle`] says how an even count ends), `None` when none counts.
pub fn median<T: Middle>(values: &[T]) -> Option<T> {
    let mut sorted: Vec<T> = values.iter().copied().filter(Middle::counts).collect();
    sorted.sort_by(Middle::order);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(T::middle(sorted[n / 2 - 1], sorted[n / 2])),
    }
}

/// The lowest and highest value of a figure over the runs that measured it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    /// How many runs measured it.
    pub runs: usize,
}

impl Spread {
    /// Over the finite `values`; None when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut finite = values.iter().copied().filter(|v| v.is_finite());
        let first = finite.next()?;
        Some(finite.fold(
            Spread {
                min: first,
                max: first,
                runs: 1,
            },
            |s, v| Spread {
                min: s.min.min(v),
                max: s.max.max(v),
                runs: s.runs + 1,
            },
        ))
    }

    /// Whether no value of `self` lies within `other` (the runs do not overlap), with at
    /// least two runs on each side: a single run is apart from anything by chance alone.
    pub fn apart_from(self, other: Spread) -> bool {
        self.runs >= 2 && other.runs >= 2 && (self.max < other.min || other.max < self.min)
    }
}

/// `numerator / denominator`, when both exist and the denominator is not zero.
pub fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d != 0.0 => Some(n / d),
        _ => None,
    }
}

/// `count` per second over `secs` (0 when no time passed).
pub fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Latency percentiles in ms of a histogram of µs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// All zeros for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// p99 of a histogram of µs, in ms (0 when empty).
pub fn p99_ms(h: &Histogram<u64>) -> f64 {
    Percentiles::of(h).p99
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median::<f64>(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn median_of_rounds() {
        assert_eq!(median::<u64>(&[]), None);
        assert_eq!(median(&[5u64]), Some(5));
        assert_eq!(median(&[9u64, 1, 5]), Some(5));
        assert_eq!(median(&[4i64, -2, 8, 1]), Some(1));
    }

    #[test]
    fn spread_is_the_lowest_and_highest_finite_run() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(
            Spread::of(&[0.4, f64::INFINITY, 0.73, 0.49]),
            Some(Spread {
                min: 0.4,
                max: 0.73,
                runs: 3
            })
        );
    }
}
