//! The breaker's states, probes, cap and slow start, driven by hand-made instants.

use super::*;

fn kind(p: &Option<Permit>) -> Option<Kind> {
    p.as_ref().map(Permit::kind)
}

/// Runs `test` on a runtime with timers, as the cores do.
fn on_core(test: impl std::future::Future<Output = ()>) {
    monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(test);
}

/// Fails `n` calls admitted at `now` (opening a closed breaker at `OPEN_AFTER`).
fn fail(b: &Breaker, n: u32, now: Instant) {
    for _ in 0..n {
        let p = b.try_admit(now).expect("closed: admitted");
        b.failure(p);
    }
}

#[test]
fn opens_probes_and_closes() {
    let b = Breaker::new();
    let t0 = Instant::now();
    fail(&b, OPEN_AFTER, t0);
    assert!(b.is_open());
    assert!(b.failing_for(Instant::now()).is_some());
    // No probe before the interval, one at it, not two in the same interval.
    assert_eq!(kind(&b.try_admit(Instant::now())), None);
    let t1 = Instant::now() + PROBE_INTERVAL;
    let probe = b.try_admit(t1);
    assert_eq!(kind(&probe), Some(Kind::Probe));
    assert_eq!(kind(&b.try_admit(t1)), None);
    b.failure(probe.unwrap());
    assert!(b.is_open());
    let t2 = t1 + PROBE_INTERVAL;
    let probe = b.try_admit(t2);
    assert_eq!(kind(&probe), Some(Kind::Probe));
    b.success(probe.unwrap());
    assert!(!b.is_open());
    assert_eq!(b.failing_for(t2), None);
    assert_eq!(kind(&b.try_admit(t2)), Some(Kind::Normal));
}

#[test]
fn senders_parked_on_the_probe_cap_wake_when_it_frees() {
    let b = std::rc::Rc::new(Breaker::new());
    fail(&b, OPEN_AFTER, Instant::now());
    on_core(async move {
        let probe = b.admit().await;
        assert_eq!(probe.kind(), Kind::Probe);
        let b2 = b.clone();
        let waiter = monoio::spawn(async move { b2.admit().await });
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.parked.borrow().len(), 1);
        b.success(probe);
        assert_eq!(waiter.await.kind(), Kind::Normal);
    });
}

/// Opens `b` and closes it again with a successful probe: the slow start begins.
fn recover(b: &Breaker) -> Instant {
    fail(b, OPEN_AFTER, Instant::now());
    let probe_at = Instant::now() + PROBE_INTERVAL;
    let probe = b.try_admit(probe_at).expect("a probe");
    assert_eq!(probe.kind(), Kind::Probe);
    b.success(probe);
    assert!(!b.is_open());
    b.ramp_from.get().expect("closing starts the slow start")
}

#[test]
fn slow_start_caps_calls_in_flight_and_doubles_the_cap() {
    let b = Breaker::with_cap(200);
    // Never opened: only the breaker's own cap.
    let now = Instant::now();
    let permits: Vec<_> = (0..200).map(|_| b.try_admit(now).unwrap()).collect();
    assert_eq!(kind(&b.try_admit(now)), None, "at the breaker's cap");
    for p in permits {
        b.success(p);
    }
    let t0 = recover(&b);
    let mut held: Vec<_> = (0..RAMP_START).map(|_| b.try_admit(t0).unwrap()).collect();
    assert_eq!(kind(&b.try_admit(t0)), None, "at the slow start's cap");
    // A call that ends frees its slot, whatever its outcome.
    b.failure(held.pop().unwrap());
    held.push(b.try_admit(t0).unwrap());
    assert_eq!(kind(&b.try_admit(t0)), None);
    // One doubling later, as many again.
    let t1 = t0 + RAMP_DOUBLING;
    for _ in 0..RAMP_START {
        held.push(b.try_admit(t1).unwrap());
    }
    assert_eq!(kind(&b.try_admit(t1)), None);
    // Once the doubling reaches the breaker's cap, the ramp is over: 200 in all.
    let end = t0 + RAMP_DOUBLING * 5;
    while let Some(p) = b.try_admit(end) {
        held.push(p);
    }
    assert_eq!(held.len(), 200);
    assert!(b.ramp_from.get().is_none());
}

#[test]
fn senders_parked_on_the_slow_start_go_as_calls_finish() {
    let b = std::rc::Rc::new(Breaker::new());
    recover(&b);
    on_core(async move {
        let mut permits = Vec::new();
        for _ in 0..RAMP_START {
            permits.push(b.admit().await);
        }
        let b2 = b.clone();
        let waiter = monoio::spawn(async move { b2.admit().await });
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.parked.borrow().len(), 1, "the ninth sender waits");
        b.success(permits.pop().unwrap());
        assert_eq!(waiter.await.kind(), Kind::Normal);
        assert_eq!(b.in_flight(), RAMP_START);
    });
}

#[test]
fn the_wait_for_the_next_probe_is_known_while_open_with_no_probe_out() {
    let b = Breaker::new();
    let t0 = Instant::now();
    assert_eq!(b.until_probe(t0), None, "closed");
    fail(&b, OPEN_AFTER, t0);
    let opened = Instant::now();
    assert!(b.until_probe(opened).unwrap() <= PROBE_INTERVAL);
    let at = opened + PROBE_INTERVAL;
    assert_eq!(b.until_probe(at), Some(Duration::ZERO));
    let probe = b.try_admit(at).unwrap();
    assert_eq!(b.until_probe(at), None, "a probe is out");
    b.failure(probe);
    assert_eq!(b.until_probe(at), Some(PROBE_INTERVAL));
}

#[test]
fn probes_in_flight_are_capped() {
    let b = Breaker::new();
    fail(&b, OPEN_AFTER, Instant::now());
    let mut t = Instant::now();
    let mut probes = Vec::new();
    for _ in 0..MAX_PROBES {
        t += PROBE_INTERVAL;
        let p = b.try_admit(t);
        assert_eq!(kind(&p), Some(Kind::Probe));
        probes.push(p);
    }
    t += PROBE_INTERVAL;
    assert_eq!(kind(&b.try_admit(t)), None);
}

#[test]
fn the_oldest_call_in_flight_is_known_until_it_ends() {
    let b = Breaker::new();
    let t0 = Instant::now();
    assert_eq!(b.oldest_in_flight(t0), None);
    let first = b.try_admit(t0).unwrap();
    let second = b.try_admit(t0 + Duration::from_millis(300)).unwrap();
    let at = t0 + Duration::from_secs(1);
    assert_eq!(b.oldest_in_flight(at), Some(Duration::from_secs(1)));
    b.success(first);
    assert_eq!(b.oldest_in_flight(at), Some(Duration::from_millis(700)));
    b.cancel(second);
    assert_eq!(b.oldest_in_flight(at), None);
    assert_eq!(b.load().0, 0);
}

#[test]
fn a_scout_goes_only_while_nothing_else_is_in_flight_and_once_per_interval() {
    let b = Breaker::new();
    let t0 = Instant::now() + SCOUT_INTERVAL;
    let scout = b.try_scout(t0).expect("nothing in flight: a scout");
    assert_eq!(
        kind(&b.try_scout(t0 + SCOUT_INTERVAL * 2)),
        None,
        "one in flight"
    );
    b.success(scout);
    assert_eq!(kind(&b.try_scout(t0)), None, "not twice per interval");
    assert!(b.try_scout(t0 + SCOUT_INTERVAL).is_some());
    // Open: a scout is a probe, also at most once per interval.
    let b = Breaker::new();
    fail(&b, OPEN_AFTER, Instant::now());
    let t1 = Instant::now() + SCOUT_INTERVAL;
    let probe = b.try_scout(t1);
    assert_eq!(kind(&probe), Some(Kind::Probe));
    b.failure(probe.unwrap());
    assert_eq!(kind(&b.try_scout(t1 + PROBE_INTERVAL)), None);
    assert!(b.try_scout(t1 + SCOUT_INTERVAL).is_some());
}

#[test]
fn a_sender_waiting_for_room_is_counted_and_woken_by_a_call_that_ends() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let p = b.try_admit(Instant::now()).unwrap();
        let b2 = b.clone();
        let waiter = monoio::spawn(async move {
            let t = Instant::now();
            b2.wait_for_room(Duration::from_secs(5)).await;
            t.elapsed()
        });
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.load(), (1, 1, 1));
        b.success(p);
        assert!(waiter.await < Duration::from_secs(1));
        assert_eq!(b.load(), (0, 1, 0));
        // With nothing to wake it, the wait ends at its bound.
        let t = Instant::now();
        b.wait_for_room(Duration::from_millis(30)).await;
        assert!(t.elapsed() >= Duration::from_millis(30));
    });
}

/// Spawns `n` senders that each wait once for room on `b` with bound `max`; each gives how
/// long it waited.
fn waiters(
    b: &std::rc::Rc<Breaker>,
    n: usize,
    max: Duration,
) -> Vec<monoio::task::JoinHandle<Duration>> {
    (0..n)
        .map(|_| {
            let b = b.clone();
            monoio::spawn(async move {
                let t = Instant::now();
                b.wait_for_room(max).await;
                t.elapsed()
            })
        })
        .collect()
}

/// How long a waiter waited; fails if it is still parked 2 s on (nothing woke it).
async fn woken(waiter: monoio::task::JoinHandle<Duration>) -> Duration {
    monoio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("a sender stayed parked with nothing to wake it")
}

/// Spawns a sender per bound that waits for room on `b` again and again until `until`;
/// counts the waits that ended.
fn waiting_again(
    b: &std::rc::Rc<Breaker>,
    bounds: [Duration; 2],
    until: Instant,
) -> std::rc::Rc<Cell<u32>> {
    let returns = std::rc::Rc::new(Cell::new(0u32));
    for max in bounds {
        let (b, returns) = (b.clone(), returns.clone());
        monoio::spawn(async move {
            while Instant::now() < until {
                b.wait_for_room(max).await;
                returns.set(returns.get() + 1);
            }
        });
    }
    returns
}

/// Fifty senders waiting for room with the same bound arm one timer between them, and its
/// end wakes them all.
#[test]
fn senders_waiting_for_room_share_one_timer_and_all_wake_at_its_end() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let _held = b.try_admit(Instant::now()).unwrap();
        let waiting = waiters(&b, 50, Duration::from_millis(30));
        monoio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(b.load(), (1, 1, 50));
        for waiter in waiting {
            let waited = woken(waiter).await;
            assert!(waited >= Duration::from_millis(20), "{waited:?}");
            assert!(waited < Duration::from_secs(1), "{waited:?}");
        }
        assert_eq!(b.watches(), 1);
        assert_eq!(b.load(), (1, 1, 0));
    });
}

/// A sender whose bound ends before the armed timer's arms its own, and its end wakes the
/// sender with the longer bound too: nobody waits past their bound, some wake before it.
#[test]
fn a_shorter_bound_arms_its_own_timer_and_its_end_wakes_every_waiter() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let _held = b.try_admit(Instant::now()).unwrap();
        let long = waiters(&b, 1, Duration::from_secs(5));
        let short = waiters(&b, 1, Duration::from_millis(20));
        for waiter in short.into_iter().chain(long) {
            let waited = woken(waiter).await;
            assert!(waited < Duration::from_secs(1), "{waited:?}");
        }
        assert_eq!(b.watches(), 2);
    });
}

/// Two senders waiting again and again with different bounds do not wake each other
/// forever: the one whose timer was taken over ends on it without waking anyone.
#[test]
fn senders_that_wait_again_do_not_wake_each_other_forever() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let _held = b.try_admit(Instant::now()).unwrap();
        let bounds = [Duration::from_secs(5), Duration::from_millis(20)];
        let returns = waiting_again(&b, bounds, Instant::now() + Duration::from_millis(300));
        monoio::time::sleep(Duration::from_millis(400)).await;
        // The short one returns about 15 times, each time waking the long one: ~30.
        assert!(returns.get() < 200, "{} returns in 0.3 s", returns.get());
    });
}

/// A wake of every waiter (a cap that grew, here) wakes each once, the watch's holder too,
/// also when another sender parked before it: it does not wake them all a second time.
#[test]
fn a_wake_of_every_waiter_wakes_each_once() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let _held = b.try_admit(Instant::now()).unwrap();
        // The first parks with the long bound; the second takes the watch with a shorter one.
        let bounds = [Duration::from_secs(5), Duration::from_secs(2)];
        let returns = waiting_again(&b, bounds, Instant::now() + Duration::from_secs(60));
        monoio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((b.load().2, b.watches()), (2, 2));
        b.set_cap(2);
        monoio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(returns.get(), 2, "one return each");
        assert_eq!(b.load().2, 2, "both wait again");
    });
}

/// A sender dropped while it keeps the timer for the others wakes them: none is left parked
/// with nothing to wake it.
#[test]
fn a_dropped_sender_holding_the_timer_wakes_the_others() {
    let b = std::rc::Rc::new(Breaker::with_cap(1));
    on_core(async move {
        let _held = b.try_admit(Instant::now()).unwrap();
        let b2 = b.clone();
        let dropped = monoio::spawn(async move {
            monoio::select! {
                _ = b2.wait_for_room(Duration::from_secs(5)) => {}
                _ = monoio::time::sleep(Duration::from_millis(20)) => {}
            }
        });
        monoio::time::sleep(Duration::from_millis(2)).await;
        let others = waiters(&b, 3, Duration::from_secs(5));
        dropped.await;
        for waiter in others {
            woken(waiter).await;
        }
        assert_eq!(b.watches(), 1);
        assert_eq!(b.load(), (1, 1, 0));
    });
}

/// While open, lookups have a lane of their own: fresh payments holding the probe do not
/// keep them out, and one that finds our payment stored closes the breaker.
#[test]
fn lookups_have_their_own_lane_while_open_and_close_it() {
    let b = Breaker::with_cap(4);
    let t0 = Instant::now();
    fail(&b, OPEN_AFTER, t0);
    let t1 = Instant::now() + PROBE_INTERVAL;
    let probe = b.try_admit(t1);
    assert_eq!(kind(&probe), Some(Kind::Probe));
    let lookup = b.try_lookup(t1);
    assert_eq!(kind(&lookup), Some(Kind::Lookup));
    assert_eq!(
        kind(&b.try_lookup(t1 + PROBE_INTERVAL)),
        None,
        "one at a time"
    );
    b.failure(probe.unwrap());
    b.success(lookup.unwrap());
    assert!(!b.is_open());
    assert_eq!(b.load().0, 0, "nothing left in flight");
    assert_eq!(
        kind(&b.try_lookup(t1)),
        Some(Kind::Normal),
        "closed: a call"
    );
}
