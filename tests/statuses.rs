//! What the processors answer besides the contest's statuses, end to end: a status that proves
//! nothing (a wrong URL's 404) never drops a payment, an interim `100 Continue` is skipped,
//! and a pooled connection the processor closed while idle is never used for a call.

mod common;

use std::time::Duration;

use common::*;
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(20);

/// Sends `n` payments of 19.90; all must be accepted.
fn send(inst: &Instance, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|_| {
            let id = Uuid::new_v4();
            assert_eq!(inst.pay(id, "19.90"), 202);
            id
        })
        .collect()
}

/// Waits until the processors hold exactly `ids` (each once, in one of them) and the
/// instance's summary says what they hold.
fn stored_once_and_exact(solo: &Solo, ids: &[Uuid]) {
    let expect = ids.len() as u64;
    let drained = eventually(DRAIN, || {
        let (d, f) = solo.procs.counts();
        d + f == expect && {
            let (sd, sf) = solo.inst.summary("");
            sd.0 + sf.0 == expect
        }
    });
    assert!(
        drained,
        "processors {:?}, summary {:?}\n{}",
        solo.procs.counts(),
        solo.inst.summary(""),
        solo.inst.log_text()
    );
    for id in ids {
        let held = usize::from(solo.procs.default.payment(*id).is_some())
            + usize::from(solo.procs.fallback.payment(*id).is_some());
        assert_eq!(held, 1, "{id} held {held} times");
    }
    // Nothing lands later that the summary missed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(solo.inst.summary(""), solo.procs.window(None, None));
}

/// Both processors answer 404 to every payment for a while (a wrong URL, a proxy's route
/// missing), then heal: every payment that got its 202 is stored once, none is dropped.
fn a_status_that_proves_nothing_never_drops_a_payment(driver: &str) {
    let solo = Solo::start(driver, &[]);
    solo.procs.default.set_answer(Some(404));
    solo.procs.fallback.set_answer(Some(404));
    let mut ids = send(&solo.inst, 40);
    assert!(eventually(Duration::from_secs(5), || {
        solo.procs.default.traffic().forced + solo.procs.fallback.traffic().forced >= 10
    }));
    std::thread::sleep(Duration::from_millis(500));
    solo.procs.default.set_answer(None);
    solo.procs.fallback.set_answer(None);
    ids.extend(send(&solo.inst, 20));
    stored_once_and_exact(&solo, &ids);
    let log = solo.inst.log_text();
    assert!(
        log.contains("proves nothing"),
        "no warning about the 404s:\n{log}"
    );
}
both_drivers!(a_status_that_proves_nothing_never_drops_a_payment);

/// Both processors write `100 Continue` before every answer: it is skipped, the real answer
/// settles the payment, and no call ends unknown (no lookup reaches a processor).
fn an_interim_100_continue_is_skipped(driver: &str) {
    let procs = Processors::start();
    procs.default.set_continue_first(true);
    procs.fallback.set_continue_first(true);
    let solo = Solo::with(driver, procs, &[]);
    let ids = send(&solo.inst, 30);
    stored_once_and_exact(&solo, &ids);
    let lookups = solo.procs.default.traffic().lookups + solo.procs.fallback.traffic().lookups;
    assert_eq!(lookups, 0, "unknown outcomes were looked up");
}
both_drivers!(an_interim_100_continue_is_skipped);

/// The processors close keep-alive connections idle for 1 s (with or without saying so in a
/// `Keep-Alive` header); after the pool sat idle past that, a burst: no call goes out on a
/// closed connection, so no outcome is unknown (no lookup) and no breaker opens.
fn idle_closed_connections(driver: &str, advertise: bool) {
    let procs = Processors::start();
    for p in [&procs.default, &procs.fallback] {
        p.set_close_idle(Some(Duration::from_secs(1)), advertise);
    }
    let solo = Solo::with(driver, procs, &[]);
    let mut ids = send(&solo.inst, 30);
    stored_once_and_exact(&solo, &ids);
    std::thread::sleep(Duration::from_millis(1600));
    let closed = solo.procs.default.traffic().idle_closed;
    assert!(closed > 0, "the processor closed no idle connection");
    ids.extend(send(&solo.inst, 60));
    stored_once_and_exact(&solo, &ids);
    let lookups = solo.procs.default.traffic().lookups + solo.procs.fallback.traffic().lookups;
    let log = solo.inst.log_text();
    assert_eq!(
        lookups, 0,
        "calls on closed connections ended unknown:\n{log}"
    );
    assert!(!log.contains("breaker open"), "a breaker opened:\n{log}");
}

fn idle_pooled_connections_closed_by_the_processor_are_not_reused(driver: &str) {
    idle_closed_connections(driver, false);
}
both_drivers!(idle_pooled_connections_closed_by_the_processor_are_not_reused);

fn a_keep_alive_timeout_header_is_honoured(driver: &str) {
    idle_closed_connections(driver, true);
}
both_drivers!(a_keep_alive_timeout_header_is_honoured);
