//! The routing policy against the emulated processors, with the final run's fees (7 % / 10 %):
//! where payments go when the default is slow, failing briefly, or when the fallback fails,
//! and that the processors' admission limit is never overrun.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Processors, Solo};
use rinha_emulator::Limits;
use uuid::Uuid;

/// Sends `n` payments of 20.05 spread evenly over `over`, each on its own connection.
fn send_over(solo: &Solo, n: usize, over: Duration) {
    let start = Instant::now();
    for i in 0..n {
        let due = start + over.mul_f64(i as f64 / n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        assert_eq!(solo.inst.pay(Uuid::new_v4(), "20.05"), 202);
    }
}

/// Waits until the processors hold `n` payments in all, and checks that the backend's
/// summary agrees with them.
fn all_stored(solo: &Solo, n: u64, within: Duration) -> (u64, u64) {
    let held = || {
        let (d, f) = solo.procs.counts();
        d + f == n
    };
    assert!(eventually(within, held), "{:?}", solo.procs.counts());
    assert_eq!(solo.inst.summary(""), solo.procs.window(None, None));
    solo.procs.counts()
}

fn final_fees() -> Processors {
    Processors::with_fees(7, 10, Limits::default())
}

#[test]
fn a_slow_default_sends_the_overflow_to_the_fallback() {
    let procs = final_fees();
    procs.default.set_delay(2000);
    let solo = Solo::with("auto", procs, &[("WORKERS", "1")]);
    send_over(&solo, 150, Duration::from_secs(4));
    let (default, fallback) = all_stored(&solo, 150, Duration::from_secs(20));
    // Until a call has been out ~1.6 s the default still looks worth its 3 points; after that
    // only a scout at a time goes there.
    assert!(default >= 1, "the default was tried: {default}");
    assert!(
        fallback >= 75,
        "the overflow went to the fallback: {default} / {fallback}"
    );
}

#[test]
fn a_short_default_outage_is_waited_out() {
    let procs = final_fees();
    procs.default.set_failure(true);
    let solo = Solo::with("auto", procs, &[("WORKERS", "1")]);
    send_over(&solo, 60, Duration::from_millis(1500));
    solo.procs.default.set_failure(false);
    let (default, fallback) = all_stored(&solo, 60, Duration::from_secs(15));
    assert_eq!((default, fallback), (60, 0));
    assert_eq!(solo.procs.fallback.traffic().received, 0);
}

#[test]
fn a_long_default_outage_moves_to_the_fallback() {
    let procs = final_fees();
    procs.default.set_failure(true);
    let solo = Solo::with("auto", procs, &[("WORKERS", "1")]);
    send_over(&solo, 120, Duration::from_secs(6));
    let (_, fallback) = all_stored(&solo, 120, Duration::from_secs(20));
    assert!(fallback >= 30, "{:?}", solo.procs.counts());
}

#[test]
fn a_failing_fallback_is_not_chosen() {
    let procs = final_fees();
    // Slow enough that a working fallback would take the overflow.
    procs.default.set_delay(2000);
    procs.fallback.set_failure(true);
    let solo = Solo::with("auto", procs, &[("WORKERS", "1")]);
    send_over(&solo, 100, Duration::from_secs(3));
    let (default, _) = all_stored(&solo, 100, Duration::from_secs(20));
    assert_eq!(default, 100);
    // Three failures open its breaker; after that it only sees a scout now and then, not
    // the payments.
    let traffic = solo.procs.fallback.traffic();
    assert!(traffic.received <= 40, "{traffic:?}");
}

#[test]
fn the_processors_limit_is_never_overrun() {
    // A default that admits 20 at once and queues 5: the instance's share is set to match.
    let limits = Limits {
        running: 20,
        queued: 5,
    };
    let procs = Processors::with_fees(7, 10, limits);
    procs.default.set_delay(300);
    let solo = Solo::with("auto", procs, &[("WORKERS", "1"), ("MAX_IN_FLIGHT", "20")]);
    // As fast as one client goes: far beyond 20 per 300 ms.
    send_over(&solo, 300, Duration::from_millis(500));
    all_stored(&solo, 300, Duration::from_secs(30));
    assert_eq!(solo.procs.default.traffic().rejected, 0);
    assert_eq!(solo.procs.fallback.traffic().rejected, 0);
}
