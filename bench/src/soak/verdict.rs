//! What the soak concludes from its samples: each process's second and last quarters
//! ([`Flatness`]), the growth each may show ([`judge`]), and the per-process table.

use std::fmt::Write as _;

use crate::measure::process::{open_fds, rss_kib};

/// Bytes of resident memory a backend may gain per payment it stores (its record is 32 B, its
/// accepted id ~29 B in a map filled to at most 7/8; twice that covers a growth of the `Vec`
/// or the map landing inside the measured span).
pub const STORE_BYTES_PER_PAYMENT: u64 = 128;
/// RSS growth always tolerated, KiB (allocator noise, a page-cache touch).
pub const RSS_SLACK_KIB: u64 = 4 * 1024;
/// RSS growth tolerated as a share of the second quarter's mean.
pub const RSS_SLACK_RATIO: f64 = 0.05;
/// Descriptors the last quarter may hold above the second (a reconnect racing a sample).
pub const FD_SLACK: u64 = 4;

/// One sample of one process.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_secs: f64,
    pub rss_kib: u64,
    pub fds: u64,
}

/// Every sample of one stack process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    pub name: String,
    pub pid: u32,
    pub samples: Vec<Sample>,
}
/// Judges every process's samples (adding to `failures`), the load having sent `rate`
/// payments a second, and returns the per-process table.
pub fn judge_series(rate: f64, series: &[Series], failures: &mut Vec<String>) -> String {
    let backends = series
        .iter()
        .filter(|s| s.name.starts_with("backend"))
        .count()
        .max(1) as u64;
    let mut table = String::from(
        "process              samples  rss q2 KiB  rss q4 KiB  allowed +KiB  fds q2  fds q4\n",
    );
    for s in series {
        let Some(flat) = Flatness::of(&s.samples) else {
            failures.push(format!("{}: too few samples to judge", s.name));
            continue;
        };
        // Payments each backend received between the middles of the two quarters.
        let span = (rate * (flat.q4_mid_secs - flat.q2_mid_secs)).max(0.0) as u64 / backends;
        let verdict = judge(&s.name, &flat, span);
        let _ = writeln!(
            table,
            "{:<20} {:>7}  {:>10}  {:>10}  {:>12}  {:>6}  {:>6}{}",
            s.name,
            s.samples.len(),
            flat.rss_q2,
            flat.rss_q4,
            verdict.allowed_kib.map_or("-".into(), |a| a.to_string()),
            flat.fds_q2,
            flat.fds_q4,
            if verdict.allowed_kib.is_some() {
                ""
            } else {
                "  (instrument, RSS not judged)"
            }
        );
        failures.extend(verdict.failures);
    }
    table
}

/// What the soak concluded about one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The RSS growth allowed, KiB; `None` for the instrument's processes (not judged).
    pub allowed_kib: Option<u64>,
    pub failures: Vec<String>,
}

/// Judges one process: `rinha` backends (names `backend-*`) and `rinha-lb` on RSS, every
/// process on descriptors. `span_payments` is what one backend received between the two
/// quarters' middles (its store grows by design with them).
pub fn judge(name: &str, flat: &Flatness, span_payments: u64) -> Verdict {
    let backend = name.starts_with("backend");
    let judged = backend || name == "rinha-lb";
    let store_kib = if backend {
        span_payments * STORE_BYTES_PER_PAYMENT / 1024
    } else {
        0
    };
    let allowed = RSS_SLACK_KIB.max((flat.rss_q2 as f64 * RSS_SLACK_RATIO) as u64) + store_kib;
    let mut failures = Vec::new();
    if judged && flat.rss_q4 > flat.rss_q2 + allowed {
        failures.push(format!(
            "{name}: RSS grew from {} KiB to {} KiB (allowed +{allowed} KiB)",
            flat.rss_q2, flat.rss_q4
        ));
    }
    if flat.fds_q4 > flat.fds_q2 + FD_SLACK {
        failures.push(format!(
            "{name}: open descriptors grew from {} to {}",
            flat.fds_q2, flat.fds_q4
        ));
    }
    Verdict {
        allowed_kib: judged.then_some(allowed),
        failures,
    }
}

/// The second and last quarters of one process's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    /// Mean RSS of the quarter, KiB.
    pub rss_q2: u64,
    pub rss_q4: u64,
    /// Largest fd count of the quarter.
    pub fds_q2: u64,
    pub fds_q4: u64,
    /// Mean time of the quarter's samples, seconds into the load.
    pub q2_mid_secs: f64,
    pub q4_mid_secs: f64,
}

impl Flatness {
    /// `None` with fewer than four samples (no quarters to compare).
    pub fn of(samples: &[Sample]) -> Option<Flatness> {
        let n = samples.len();
        if n < 4 {
            return None;
        }
        let q2 = &samples[n / 4..n / 2];
        let q4 = &samples[n - n / 4..];
        let mean = |part: &[Sample], f: fn(&Sample) -> f64| {
            part.iter().map(f).sum::<f64>() / part.len() as f64
        };
        let max_fds = |part: &[Sample]| part.iter().map(|s| s.fds).max().unwrap_or(0);
        Some(Flatness {
            rss_q2: mean(q2, |s| s.rss_kib as f64) as u64,
            rss_q4: mean(q4, |s| s.rss_kib as f64) as u64,
            fds_q2: max_fds(q2),
            fds_q4: max_fds(q4),
            q2_mid_secs: mean(q2, |s| s.at_secs),
            q4_mid_secs: mean(q4, |s| s.at_secs),
        })
    }
}

/// RSS and fd count of `pid` now; `None` if the process is gone.
pub fn sample(pid: u32, at_secs: f64) -> Option<Sample> {
    let rss_kib = rss_kib(pid).ok()?;
    let fds = open_fds(pid).ok()?;
    Some(Sample {
        at_secs,
        rss_kib,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64], fds: &[u64]) -> Vec<Sample> {
        rss.iter()
            .zip(fds)
            .enumerate()
            .map(|(i, (&rss_kib, &fds))| Sample {
                at_secs: i as f64,
                rss_kib,
                fds,
            })
            .collect()
    }

    #[test]
    fn quarters_skip_the_warm_up_and_compare_the_second_with_the_last() {
        let s = samples(&[1, 1, 10, 10, 20, 20, 30, 30], &[3, 3, 5, 6, 7, 7, 9, 8]);
        let flat = Flatness::of(&s).expect("8 samples");
        assert_eq!((flat.rss_q2, flat.rss_q4), (10, 30));
        assert_eq!((flat.fds_q2, flat.fds_q4), (6, 9));
        assert_eq!((flat.q2_mid_secs, flat.q4_mid_secs), (2.5, 6.5));
        assert!(Flatness::of(&s[..3]).is_none());
    }

    #[test]
    fn a_leak_fails_where_a_growing_store_does_not() {
        let flat = |q2: u64, q4: u64, fds: (u64, u64)| Flatness {
            rss_q2: q2,
            rss_q4: q4,
            fds_q2: fds.0,
            fds_q4: fds.1,
            q2_mid_secs: 150.0,
            q4_mid_secs: 525.0,
        };
        // The lb grows 20 MiB: a leak. A backend that stored 200,000 payments meanwhile may
        // grow 25 MiB + slack; 40 MiB is still a leak, 20 MiB is its store.
        let lb = judge("rinha-lb", &flat(10_000, 30_480, (70, 70)), 200_000);
        assert_eq!(lb.failures.len(), 1, "{lb:?}");
        assert_eq!(lb.allowed_kib, Some(RSS_SLACK_KIB));
        let leak = judge("backend-1", &flat(30_000, 70_960, (70, 70)), 200_000);
        assert_eq!(leak.failures.len(), 1, "{leak:?}");
        let store = judge("backend-1", &flat(30_000, 50_480, (70, 70)), 200_000);
        assert!(store.failures.is_empty(), "{store:?}");
        // The processors keep every payment: RSS not judged, descriptors are.
        let processor = judge("default processor", &flat(10_000, 90_000, (20, 30)), 0);
        assert_eq!(processor.allowed_kib, None);
        assert_eq!(processor.failures.len(), 1, "{processor:?}");
        assert!(processor.failures[0].contains("descriptors"));
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id(), 0.0).expect("own /proc");
        assert!(me.rss_kib > 0 && me.fds >= 3, "{me:?}");
        assert!(sample(u32::MAX, 0.0).is_none());
    }
}
