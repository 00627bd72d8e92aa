//! Unknown outcomes (issue 24): a processor slower than `PROCESSOR_TIMEOUT_MS` stores every
//! payment after our call gave up on it, and a processor at its cap must still let the
//! lookups of payments whose answer was lost through. Real processes: two journaled
//! backends behind `rinha-lb`, the emulated processors, a paced load that keeps its 2XX ids.
//!
//! Breaker states are read from the backends' logs (`processor failing: breaker open`,
//! `processor recovered: breaker closed`, each naming its processor).

mod common;
mod faults_support;

use std::time::{Duration, Instant};

use common::{iso, now_us, Processors};
use faults_support::{load, Fleet, Outcome};
use rinha_emulator::Chaos;

const DRAIN: Duration = Duration::from_secs(40);
const CONNS: usize = 4;

/// Runs the load (`CONNS` connections, one payment each per `every`, for `length`) in a
/// thread and, while it flows, compares our summary of `[start, now - 2 s]` with the
/// processors' every 400 ms once the window holds payments; returns what the load saw and
/// every check that differed.
fn checked_load(
    fleet: &Fleet,
    procs: &Processors,
    every: Duration,
    length: Duration,
) -> (Outcome, Vec<String>) {
    let start = now_us() / 1000 * 1000;
    let addr = fleet.lb.addr;
    let handle = std::thread::spawn(move || load(addr, CONNS, every, length));
    let began = Instant::now();
    let mut differed = Vec::new();
    std::thread::sleep(Duration::from_millis(2500));
    while !handle.is_finished() {
        let to = (now_us() - 2_000_000) / 1000 * 1000;
        let q = format!("?from={}&to={}", iso(start), iso(to));
        let theirs = procs.window(Some(start), Some(to));
        let ours = fleet.b1.summary(&q);
        if ours != theirs {
            differed.push(format!(
                "at {:?}: ours {ours:?}, processors {theirs:?}",
                began.elapsed()
            ));
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    (handle.join().expect("load"), differed)
}

/// The breaker lines of `log` about `processor`, in order: `true` for closed, `false` for
/// open.
fn breaker_states(log: &str, processor: &str) -> Vec<bool> {
    let named = format!("processor=\"{processor}\"");
    log.lines()
        .filter(|l| l.contains(&named))
        .filter_map(|l| {
            if l.contains("breaker closed") {
                Some(true)
            } else if l.contains("breaker open") {
                Some(false)
            } else {
                None
            }
        })
        .collect()
}

/// Both processors take 300 ms and we wait 200: every call ends unknown, yet every payment
/// is stored. Our summary must equal the processors' at every check while payments flow
/// (each attempt stays in flight until a lookup finds it stored), every 2XX is stored once,
/// and the default's breaker does not stay open (a lookup that finds our payment proves the
/// processor works).
#[test]
fn a_processor_slower_than_the_timeout_is_counted_as_it_stores() {
    let procs = Processors::start();
    for p in [&procs.default, &procs.fallback] {
        p.set_delay(300);
    }
    let fleet = Fleet::start(&procs, &[("PROCESSOR_TIMEOUT_MS", "200")]);
    let (load, differed) = checked_load(
        &fleet,
        &procs,
        Duration::from_millis(100),
        Duration::from_secs(7),
    );
    assert!(load.refused.is_empty() && load.lost.is_empty());
    assert!(load.ok.len() > 150, "too little load: {}", load.ok.len());
    assert!(
        differed.is_empty(),
        "our summary differed from the processors' at {} checks:\n{}",
        differed.len(),
        differed.join("\n")
    );
    fleet.drained_and_exact(&procs, &load, DRAIN);
    // Every call timed out, so the breaker may have opened; the lookups that found the
    // payments stored closed it again.
    for inst in [&fleet.b1, &fleet.b2] {
        let states = breaker_states(&inst.log_text(), "default");
        assert_ne!(
            states.last(),
            Some(&false),
            "the default's breaker stayed open: {states:?}"
        );
    }
}

/// A processor slower than the timeout that then starts failing (500 after its delay)
/// stores nothing: its lookups answer 404, which proves nothing, so its breaker opens and
/// stays open, and every payment still ends at the fallback or at it exactly once.
#[test]
fn a_slow_processor_that_starts_failing_still_opens_its_breaker() {
    let procs = Processors::start();
    procs.default.set_delay(300);
    let fleet = Fleet::start(&procs, &[("PROCESSOR_TIMEOUT_MS", "200")]);
    let addr = fleet.lb.addr;
    let handle = std::thread::spawn(move || {
        load(
            addr,
            CONNS,
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    procs.default.set_failure(true);
    let load = handle.join().expect("load");
    // Lookups that find payments stored before the failure may close it once more; then
    // nothing but failures.
    std::thread::sleep(Duration::from_millis(1500));
    let stored = procs.default.stored();
    for inst in [&fleet.b1, &fleet.b2] {
        let states = breaker_states(&inst.log_text(), "default");
        assert_eq!(
            states.last(),
            Some(&false),
            "the failing default's breaker is not open: {states:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(procs.default.stored(), stored, "the failing default stored");
    procs.default.set_failure(false);
    procs.default.set_delay(0);
    assert!(load.refused.is_empty() && load.lost.is_empty());
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

/// One core's cap on the default is 2 calls, each takes 500 ms, fresh payments keep it
/// full (a backlog waits), and every 5th stored payment's answer is lost. The payments whose
/// outcome is unknown are looked up within a bounded time (freed slots are shared between
/// them and fresh payments): our summary equals the processors' at every check while
/// payments flow, and every 2XX is stored once.
#[test]
fn lookups_are_not_starved_by_fresh_payments_at_the_cap() {
    let procs = Processors::with_chaos(Chaos {
        drop_every: 5,
        reset_every: 0,
    });
    procs.default.set_delay(500);
    // The fallback is dear and slower, so the default stays the choice.
    procs.fallback.set_delay(2000);
    let fleet = Fleet::start(
        &procs,
        &[
            ("PROCESSOR_TIMEOUT_MS", "1500"),
            ("MAX_IN_FLIGHT", "8"),
            ("SENDERS", "16"),
        ],
    );
    // 40/s against 2 instances x 2 cores x 2 calls per 500 ms (16/s): saturated throughout.
    let (load, differed) = checked_load(
        &fleet,
        &procs,
        Duration::from_millis(100),
        Duration::from_secs(7),
    );
    assert!(load.refused.is_empty() && load.lost.is_empty());
    let stored = procs.default.stored() + procs.fallback.stored();
    assert!(
        load.ok.len() > stored + 20,
        "not saturated: {stored} stored of {}",
        load.ok.len()
    );
    assert!(
        differed.is_empty(),
        "our summary differed from the processors' at {} checks:\n{}",
        differed.len(),
        differed.join("\n")
    );
    fleet.drained_and_exact(&procs, &load, DRAIN);
}
