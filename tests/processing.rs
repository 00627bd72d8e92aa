//! End to end: two `rinha` processes peering over unix sockets, emulated processors, under
//! both io drivers. Each scenario checks the backend's summary against the processors'.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rinha_emulator::Chaos;
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(15);

/// Sends `n` payments of 19.90 alternating between the instances; all must be accepted.
fn send(a: &Instance, b: &Instance, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|i| {
            let id = Uuid::new_v4();
            let inst = if i % 2 == 0 { a } else { b };
            assert_eq!(inst.pay(id, "19.90"), 202);
            id
        })
        .collect()
}

fn drained(procs: &Processors, a: &Instance, expect: u64) -> bool {
    eventually(DRAIN, || {
        let (d, f) = procs.counts();
        d + f == expect && {
            let (sd, sf) = a.summary("");
            sd.0 + sf.0 == expect
        }
    })
}

fn summary_matches_processors_across_stages(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    let start = now_us();
    let mut total = 0;
    // Stages of the official test, shortened: (default delay, default failing, fallback failing).
    for (delay, d_fail, f_fail) in [
        (0, false, false),
        (100, false, false),
        (100, true, false),
        (300, true, true),
        (20, false, false),
    ] {
        procs.default.set_delay(delay);
        procs.default.set_failure(d_fail);
        procs.fallback.set_failure(f_fail);
        send(&a, &b, 40);
        total += 40;
        // While payments may be in flight, the summary for a closed past window must be
        // what the processors held at the moment it was asked: between their state just
        // before and just after (equal when nothing landed meanwhile).
        std::thread::sleep(Duration::from_millis(150));
        let to = now_us() - 100_000;
        let q = format!("?from={}&to={}", iso(start), iso(to));
        let window = || procs.window(Some(start - start % 1000), Some(to - to % 1000));
        let before = window();
        let ours = a.summary(&q);
        let after = window();
        let within = |o: (u64, u64), b: (u64, u64), a: (u64, u64)| {
            b.0 <= o.0 && o.0 <= a.0 && b.1 <= o.1 && o.1 <= a.1
        };
        assert!(
            within(ours.0, before.0, after.0) && within(ours.1, before.1, after.1),
            "ours {ours:?} before {before:?} after {after:?}: stage delay={delay} failing={d_fail}/{f_fail}"
        );
    }
    procs.default.set_failure(false);
    procs.fallback.set_failure(false);
    assert!(
        drained(&procs, &a, total),
        "not drained: {:?}",
        procs.counts()
    );
    assert_eq!(a.summary(""), procs.window(None, None));
    assert_eq!(b.summary(""), procs.window(None, None));
    // Default only by default.
    assert_eq!(procs.counts().1, 0);
}
both_drivers!(summary_matches_processors_across_stages);

fn both_failing_then_recovering_loses_nothing(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    procs.default.set_failure(true);
    procs.fallback.set_failure(true);
    send(&a, &b, 100);
    let cpu0 = a.cpu_seconds() + b.cpu_seconds();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = a.cpu_seconds() + b.cpu_seconds() - cpu0;
    println!("{driver}: CPU while both processors fail: {cpu:.3} s over 3 s (two instances, debug build)");
    assert!(cpu < 0.6, "failing processors burn CPU: {cpu:.3} s in 3 s");
    assert_eq!(procs.counts(), (0, 0));
    procs.default.set_failure(false);
    procs.fallback.set_failure(false);
    assert!(
        drained(&procs, &a, 100),
        "lost payments: {:?}",
        procs.counts()
    );
    assert_eq!(a.summary(""), procs.window(None, None));
}
both_drivers!(both_failing_then_recovering_loses_nothing);

fn delay_longer_than_timeout_never_double_counts(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[("PROCESSOR_TIMEOUT_MS", "150")]);
    procs.default.set_delay(400);
    send(&a, &b, 30);
    std::thread::sleep(Duration::from_millis(1500));
    procs.default.set_delay(0);
    // Every attempt timed out, so the breakers are open and each payment's lookups back off
    // (up to 2 s) until a probe closes them: draining takes 10-14 s alone, more in a loaded
    // suite.
    let slow_drain = || {
        eventually(DRAIN * 2, || {
            let (d, f) = procs.counts();
            d + f == 30 && {
                let (sd, sf) = a.summary("");
                sd.0 + sf.0 == 30
            }
        })
    };
    assert!(slow_drain(), "{:?} / {:?}", procs.counts(), a.summary(""));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.summary(""), procs.window(None, None));
    assert_eq!(procs.counts(), (30, 0));
}
both_drivers!(delay_longer_than_timeout_never_double_counts);

fn lost_responses_are_resolved(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::with_chaos(Chaos {
        drop_every: 3,
        reset_every: 0,
    });
    let (a, b) = pair(
        &dir.0,
        driver,
        &procs,
        &[("RUST_LOG", "info,rinha::senders=debug,rinha::lookup=debug")],
    );
    let start = now_us();
    send(&a, &b, 30);
    let mid = now_us();
    send(&a, &b, 30);
    assert!(drained(&procs, &a, 60), "{:?}", procs.counts());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.summary(""), procs.window(None, None));
    // Every recorded requestedAt is the one the processor kept: windows agree too.
    let q = format!("?from={}&to={}", iso(start), iso(mid));
    let theirs = procs.window(Some(start - start % 1000), Some(mid - mid % 1000));
    assert_eq!(a.summary(&q), theirs);
    // The drops really happened and were resolved by looking the payments up.
    let resolved = a.log_text().matches("unknown outcome resolved").count()
        + b.log_text().matches("unknown outcome resolved").count();
    assert!(resolved >= 15, "only {resolved} lookups");
}
both_drivers!(lost_responses_are_resolved);

fn reset_connections_are_retried(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::with_chaos(Chaos {
        drop_every: 0,
        reset_every: 4,
    });
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    send(&a, &b, 40);
    assert!(drained(&procs, &a, 40), "{:?}", procs.counts());
    assert_eq!(a.summary(""), procs.window(None, None));
}
both_drivers!(reset_connections_are_retried);

fn duplicate_ids_are_counted_once(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    let id = Uuid::new_v4();
    assert_eq!(a.pay(id, "10"), 202);
    assert_eq!(b.pay(id, "10"), 202);
    assert_eq!(a.pay(id, "10"), 202);
    assert!(eventually(DRAIN, || procs.counts() == (1, 0)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.summary(""), ((1, 1000), (0, 0)));
    assert_eq!(a.summary(""), procs.window(None, None));
}
both_drivers!(duplicate_ids_are_counted_once);

fn in_flight_payments_follow_the_processor(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, _b) = pair(&dir.0, driver, &procs, &[]);
    // Short delay: by the time we ask, the processor holds it, so must we.
    procs.default.set_delay(100);
    let t0 = now_us();
    assert_eq!(a.pay(Uuid::new_v4(), "1"), 202);
    std::thread::sleep(Duration::from_millis(110));
    let to = now_us();
    let q = format!("?from={}&to={}", iso(t0 - 1000), iso(to));
    assert_eq!(
        a.summary(&q),
        procs.window(Some(t0 - 1000 - (t0 - 1000) % 1000), Some(to - to % 1000))
    );
    assert_eq!(a.summary(&q).0 .0, 1);
    // Long delay, asked mid-flight: the processor does not hold it yet, neither do we.
    procs.default.set_delay(3000);
    let t1 = now_us();
    assert_eq!(a.pay(Uuid::new_v4(), "2"), 202);
    std::thread::sleep(Duration::from_millis(1200));
    let to = now_us();
    let q = format!("?from={}&to={}", iso(t1 - 1000), iso(to));
    let theirs = procs.window(Some(t1 - 1000 - (t1 - 1000) % 1000), Some(to - to % 1000));
    let ours = a.summary(&q);
    assert_eq!(ours, theirs);
    assert_eq!(ours.0 .0, 0);
    // Once stored, both count it.
    assert!(eventually(Duration::from_secs(5), || a.summary(&q).0 .0 == 1));
    assert_eq!(
        a.summary(&q),
        procs.window(Some(t1 - 1000 - (t1 - 1000) % 1000), Some(to - to % 1000))
    );
}
both_drivers!(in_flight_payments_follow_the_processor);

fn sigterm_drains_the_queue(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let mut a = Instance::start(&dir.0, "solo", driver, &procs, &[], &[]);
    procs.default.set_delay(200);
    for _ in 0..30 {
        assert_eq!(a.pay(Uuid::new_v4(), "3.33"), 202);
    }
    let status = a.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert_eq!(procs.counts(), (30, 0));
    assert!(
        a.log_text().contains("no payment left unprocessed"),
        "{}",
        a.log_text()
    );
}
both_drivers!(sigterm_drains_the_queue);

fn fallback_is_opt_in_and_used_after_the_wait(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[("FALLBACK_AFTER_MS", "300")]);
    procs.default.set_failure(true);
    send(&a, &b, 20);
    assert!(drained(&procs, &a, 20), "{:?}", procs.counts());
    assert_eq!(procs.counts(), (0, 20));
    assert_eq!(a.summary(""), procs.window(None, None));
    // The purge clears both instances.
    let (status, _) = a.post("/purge-payments", "");
    assert_eq!(status, 200);
    assert_eq!(a.summary(""), ((0, 0), (0, 0)));
    assert_eq!(b.summary(""), ((0, 0), (0, 0)));
}
both_drivers!(fallback_is_opt_in_and_used_after_the_wait);

fn a_silent_peer_fails_the_summary_loudly(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    send(&a, &b, 4);
    drop(b);
    let (status, _) = a.get("/payments-summary");
    assert!(status == 502 || status == 503, "{status}");
    // Its own shards still answer the internal summary.
    assert_eq!(a.get_as_peer("/internal/payments-summary").0, 200);
}
both_drivers!(a_silent_peer_fails_the_summary_loudly);

/// A peer that restarts within the summary's budget (`PEER_TIMEOUT_MS`, 3 s here) is waited
/// for: a summary asked while it is down answers whole once it is back (its journal replayed),
/// not `502`. One that stays down still fails the summary loudly, once the budget is spent.
fn a_restarting_peer_is_waited_for_within_the_budget(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (s1, s2) = (dir.0.join("b1.sock"), dir.0.join("b2.sock"));
    let start = |name: &str, peer: &Path| {
        let data = dir.0.join(format!("{name}-data"));
        let data = data.to_str().unwrap();
        Instance::start(&dir.0, name, driver, &procs, &[peer], &[("DATA_DIR", data)])
    };
    let a = start("b1", &s2);
    let b = start("b2", &s1);
    send(&a, &b, 6);
    assert!(drained(&procs, &a, 6), "{:?}", procs.counts());
    let whole = a.summary("");

    drop(b); // SIGKILL: its socket file stays, connects are refused
    let socket = a.socket.clone();
    let asked = Instant::now();
    let during = std::thread::spawn(move || {
        let answer = request(&socket, "GET /payments-summary HTTP/1.1\r\nHost: t\r\n\r\n");
        (answer, asked.elapsed())
    });
    std::thread::sleep(Duration::from_millis(400));
    let b = start("b2", &s1);
    let ((status, body), took) = during.join().unwrap();
    assert_eq!(
        status, 200,
        "asked during the restart: {body} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}"
    );
    assert_eq!(body, a.get("/payments-summary").1);
    assert_eq!(a.summary(""), whole);

    drop(b);
    let asked = Instant::now();
    let (status, body) = a.get("/payments-summary");
    let took = asked.elapsed();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("summary incomplete"), "{body}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "failed after {took:?}"
    );
}
both_drivers!(a_restarting_peer_is_waited_for_within_the_budget);

/// Second 40 of the official test: probes sent under a long delay while failing are stored
/// once the failure is switched off, after their old delay, while new attempts answer fast.
/// Asked in between, we must hold exactly what the processor holds.
fn delay_drop_with_slow_probes_in_flight(driver: &str) {
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, driver, &procs, &[]);
    let start = now_us();
    procs.default.set_delay(1200);
    procs.default.set_failure(true);
    send(&a, &b, 30);
    std::thread::sleep(Duration::from_millis(1500));
    procs.default.set_delay(10);
    procs.default.set_failure(false);
    for wait in [300, 300, 300] {
        std::thread::sleep(Duration::from_millis(wait));
        let to = now_us();
        let q = format!("?from={}&to={}", iso(start), iso(to));
        let window = || procs.window(Some(start - start % 1000), Some(to - to % 1000));
        let before = window();
        let ours = a.summary(&q);
        let after = window();
        assert!(
            before.0 .0 <= ours.0 .0 && ours.0 .0 <= after.0 .0,
            "ours {ours:?} before {before:?} after {after:?}"
        );
    }
    assert!(drained(&procs, &a, 30));
}
both_drivers!(delay_drop_with_slow_probes_in_flight);
