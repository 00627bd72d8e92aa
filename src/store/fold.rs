//! The long-life pass of one core: every [`FOLD_EVERY`], settled payments older than
//! [`SETTLED_HORIZON`] are folded into their buckets ([`super::folded`]) and, every
//! [`ID_WINDOW`], the accepted ids of the window before the last are forgotten
//! ([`crate::ids`]). So a core's memory grows with the horizon's payments and the buckets
//! (one per millisecond stamped), not with every payment it ever took.
//!
//! It runs on the core, between requests, in steps of at most [`FOLD_STEP`] records folded
//! or buckets sealed, and yields between them: a step holds the core for tens of
//! microseconds (measured: docs/reliability.md, "Memory"), even when a replay hands it a
//! million records at once.

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::ids::ID_WINDOW;
use crate::time::now_us;

use super::folded::{SEAL_LAG, SETTLED_HORIZON};
use super::shard::Shard;

/// How often the pass runs.
pub const FOLD_EVERY: Duration = Duration::from_secs(1);
/// Records folded and buckets sealed in one step before the pass yields to the core's
/// other tasks (each costs a map insert or removal: ~0.2 µs).
pub const FOLD_STEP: usize = 256;

/// Folds and rotates forever (one core's task).
pub async fn keep_folding(shard: &Shard) {
    let mut rotated = Instant::now();
    loop {
        monoio::time::sleep(FOLD_EVERY).await;
        fold_due(shard).await;
        if rotated.elapsed() >= ID_WINDOW {
            shard.ids.rotate();
            rotated = Instant::now();
        }
    }
}

/// Folds every record past the horizon, one step at a time.
pub async fn fold_due(shard: &Shard) {
    loop {
        let step = fold_step(shard, Instant::now(), now_us());
        if step < FOLD_STEP {
            return;
        }
        yield_once().await;
    }
}

/// One step at `now` (the wall clock's `now_us`): how many records it folded and buckets
/// it sealed.
pub fn fold_step(shard: &Shard, now: Instant, now_us: i64) -> usize {
    let recorded_before = now.checked_sub(SETTLED_HORIZON).unwrap_or(now);
    let seal_before_us = now_us - (SETTLED_HORIZON + SEAL_LAG).as_micros() as i64;
    shard.fold(recorded_before, seal_before_us, FOLD_STEP)
}

/// Lets every other ready task of the core run once.
async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::Processor;
    use crate::summary::{AsOf, Totals, Window};

    fn rt<F: std::future::Future<Output = ()>>(f: F) {
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(f)
    }

    /// Replayed (old) and fresh records, folded at a moment past the horizon: every window's
    /// summary is what a plain sum over the payments gives, before and after.
    #[test]
    fn folding_keeps_every_summary_exact() {
        rt(async {
            let s = Shard::new();
            let now = now_us();
            let mut naive: Vec<(i64, Processor, u64)> = Vec::new();
            for n in 0..20_000i64 {
                let at = now - 3_600_000_000 + (n * 7919 % 3_000) * 1000;
                let p = if n % 4 == 0 {
                    Processor::Fallback
                } else {
                    Processor::Default
                };
                let cents = 1990 + (n as u64 % 3);
                if n % 2 == 0 {
                    s.restore(at, cents, p);
                } else {
                    let a = s.begin_attempt(at, p);
                    s.record(a, at, cents, p);
                }
                naive.push((at, p, cents));
            }
            let windows: Vec<Window> = (0..40)
                .map(|k| Window {
                    from_us: Some(now - 3_600_000_000 + k * 77_000),
                    to_us: Some(now - 3_600_000_000 + k * 77_000 + 500_000 + k * 13_000),
                })
                .chain([Window::default()])
                .collect();
            let want = |naive: &[(i64, Processor, u64)], w: &Window| {
                let mut t = Totals::default();
                for &(_, p, c) in naive.iter().filter(|(at, _, _)| w.contains(*at)) {
                    t.count(p, c);
                }
                t
            };
            let later = Instant::now() + SETTLED_HORIZON * 2;
            let mut steps = 0;
            while fold_step(&s, later, now) == FOLD_STEP {
                steps += 1;
            }
            // A step folds or seals at most FOLD_STEP: records, then buckets.
            assert_eq!(steps, (20_000 + 3_000) / FOLD_STEP);
            let (records, buckets) = s.held();
            assert_eq!(records, 0);
            assert_eq!(buckets, 3_000, "one bucket per millisecond stamped");
            for w in &windows {
                let got = s.summary(*w, AsOf::now(), Duration::ZERO).await;
                assert_eq!(got, want(&naive, w), "{w:?}");
                assert_eq!(s.window(*w), want(&naive, w));
            }
            // A payment recorded after the fold, stamped inside the folded stretch, counts too.
            let a = s.begin_attempt(now - 3_600_000_000, Processor::Default);
            s.record(a, now - 3_600_000_000, 5, Processor::Default);
            naive.push((now - 3_600_000_000, Processor::Default, 5));
            fold_step(&s, later + SETTLED_HORIZON * 2, now);
            assert_eq!(s.held().0, 0);
            for w in &windows {
                assert_eq!(s.window(*w), want(&naive, w), "{w:?}");
            }
        });
    }
}
