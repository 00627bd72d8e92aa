//! `--drain`: after the run, wait, then read every summary over all time and list what
//! disagrees: the backend against each processor, and the backend's total against the POSTs.

use std::time::Duration;

use super::calls::{cents, BackendSummary, Parties, ProcessorSummary, Window};
use super::recorder::PostCounts;

/// The all-time summaries read after `--drain` seconds, and what disagrees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drain {
    pub secs: u64,
    pub backend: Option<BackendSummary>,
    pub default: Option<ProcessorSummary>,
    pub fallback: Option<ProcessorSummary>,
    pub problems: Vec<String>,
}

/// Waits `secs`, then reads every summary over all time and lists what disagrees: the backend
/// against each processor, and the backend's total against the POSTs (fewer than succeeded =
/// missing; more than were sent = counted twice).
pub async fn drain(secs: u64, parties: &mut Parties, posts: PostCounts) -> Drain {
    let Parties {
        backend,
        default,
        fallback,
    } = parties;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (b, d, f) = tokio::join!(
        backend.summary(Window::ALL, None),
        default.summary(Window::ALL, None),
        fallback.summary(Window::ALL, None),
    );
    let mut problems = Vec::new();
    for (who, e) in [
        ("backend", b.as_ref().err()),
        ("default processor", d.as_ref().err()),
        ("fallback processor", f.as_ref().err()),
    ] {
        if let Some(e) = e {
            problems.push(format!("{who} summary failed: {e}"));
        }
    }
    let (b, d, f) = (b.ok(), d.ok(), f.ok());
    if let (Some(b), Some(d), Some(f)) = (b, d, f) {
        problems.extend(drain_problems(&b, &d, &f, posts));
    }
    Drain {
        secs,
        backend: b,
        default: d,
        fallback: f,
        problems,
    }
}

/// The comparisons of [`drain`].
pub fn drain_problems(
    b: &BackendSummary,
    d: &ProcessorSummary,
    f: &ProcessorSummary,
    posts: PostCounts,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, side, p) in [("default", &b.default, d), ("fallback", &b.fallback, f)] {
        if side.total_requests != p.total_requests
            || cents(side.total_amount) != cents(p.total_amount)
        {
            problems.push(format!(
                "{name}: backend counts {} payments ({:.2}), the processor holds {} ({:.2})",
                side.total_requests, side.total_amount, p.total_requests, p.total_amount
            ));
        }
    }
    let recorded = b.total_requests();
    if recorded < posts.success {
        problems.push(format!(
            "{} payments missing: {} POSTs succeeded, the backend reports {recorded}",
            posts.success - recorded,
            posts.success
        ));
    }
    let held = d.total_requests + f.total_requests;
    if recorded.max(held) > posts.total() {
        problems.push(format!(
            "payments counted twice: {} POSTs were sent, the backend reports {recorded}, the processors hold {held}",
            posts.total()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contest::calls::Side;

    fn summary(n: u64) -> ProcessorSummary {
        ProcessorSummary {
            total_requests: n,
            total_amount: n as f64 * 19.9,
            ..Default::default()
        }
    }

    fn backend(d: u64, f: u64) -> BackendSummary {
        let side = |n: u64| Side {
            total_requests: n,
            total_amount: n as f64 * 19.9,
        };
        BackendSummary {
            default: side(d),
            fallback: side(f),
        }
    }

    fn posts(success: u64, timeout: u64) -> PostCounts {
        PostCounts {
            success,
            timeout,
            ..Default::default()
        }
    }

    #[test]
    fn drain_accepts_a_consistent_run_with_late_timeouts() {
        // 2 timed-out POSTs were processed after all: allowed.
        assert!(
            drain_problems(&backend(90, 12), &summary(90), &summary(12), posts(100, 5)).is_empty()
        );
    }

    #[test]
    fn drain_catches_missing_double_and_disagreement() {
        let p = drain_problems(&backend(90, 5), &summary(90), &summary(5), posts(100, 0));
        assert!(p.iter().any(|p| p.contains("5 payments missing")), "{p:?}");
        let p = drain_problems(
            &backend(100, 100),
            &summary(100),
            &summary(100),
            posts(100, 0),
        );
        assert!(p.iter().any(|p| p.contains("counted twice")), "{p:?}");
        let p = drain_problems(&backend(100, 0), &summary(99), &summary(0), posts(100, 0));
        assert!(p.iter().any(|p| p.starts_with("default:")), "{p:?}");
    }
}
