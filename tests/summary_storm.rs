//! A storm of summaries: two `rinha` peering each other, many clients asking both at once
//! for the same windows and for different ones, while payments are settled. Summaries that
//! share a pass over the shards (src/summary/aggregator.rs) must answer exactly what one
//! asked alone answers: every answer equals the processors' own summary of its window. And
//! the thread that aggregates them runs nicer than the cores, so that a storm takes the CPUs
//! after the intake (`ROUTER_NICE`), and public summaries past `SUMMARY_RATE` wait for their
//! turn, never a peer's.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use uuid::Uuid;

/// ((default count, cents), (fallback count, cents)), as `Instance::summary` answers.
type Sides = ((u64, u64), (u64, u64));

#[test]
fn a_storm_of_summaries_is_exact() {
    const CLIENTS: usize = 64;
    let dir = TempDir::new();
    let procs = Processors::start();
    let (a, b) = pair(&dir.0, "auto", &procs, &[]);
    let start = now_us();
    for i in 0..60 {
        let inst = if i % 2 == 0 { &a } else { &b };
        assert_eq!(inst.pay(Uuid::new_v4(), "19.90"), 202);
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    assert!(
        eventually(Duration::from_secs(15), || {
            let (d, f) = procs.counts();
            d + f == 60
        }),
        "not settled: {:?}",
        procs.counts()
    );
    std::thread::sleep(Duration::from_millis(50));
    let end = now_us();
    // Windows on whole milliseconds: everything, the first half, the second half, one shared.
    let mid = start + (end - start) / 2;
    let windows: Vec<(String, Sides)> = [(start, mid), (mid + 1000, end), (start, end)]
        .iter()
        .map(|&(from, to)| {
            let (from, to) = (from - from % 1000, to - to % 1000);
            let q = format!("?from={}&to={}", iso(from), iso(to));
            (q, procs.window(Some(from), Some(to)))
        })
        .chain(std::iter::once((String::new(), procs.window(None, None))))
        .collect();
    let (windows, a, b) = (Arc::new(windows), Arc::new(a), Arc::new(b));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (windows, a, b) = (windows.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                for round in 0..8 {
                    // Half the storm asks one window at once, the rest spread over the others.
                    let (q, theirs) = &windows[if c % 2 == 0 {
                        2
                    } else {
                        (c + round) % windows.len()
                    }];
                    let inst = if (c + round) % 2 == 0 { &a } else { &b };
                    assert_eq!(
                        &inst.summary(q),
                        theirs,
                        "client {c} round {round} window {q:?}"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a summary was not exact");
    }
}

/// The nice value of each of `pid`'s threads named `name` (field 19 of its `stat`, counted
/// after the parenthesised name, which may hold spaces).
fn nice_of_threads(pid: u32, name: &str) -> Vec<i32> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from the 3rd (state) on; nice is the 19th.
        let nice = after_name.split(' ').nth(19 - 3).unwrap();
        nices.push(nice.parse().unwrap());
    }
    nices
}

#[test]
fn the_aggregator_runs_nicer_than_the_cores() {
    for (setting, nicer_by) in [(None, 10), (Some("3"), 3), (Some("0"), 0)] {
        let extra: Vec<(&str, &str)> = setting.map(|n| ("ROUTER_NICE", n)).into_iter().collect();
        let solo = Solo::start("auto", &extra);
        let pid = solo.inst.pid();
        let cores = nice_of_threads(pid, "rinha-core-0");
        let router = nice_of_threads(pid, "rinha-router");
        assert_eq!((cores.len(), router.len()), (1, 1), "threads of {pid}");
        assert_eq!(
            router[0],
            (cores[0] + nicer_by).min(19),
            "ROUTER_NICE={setting:?}: router at {router:?}, core 0 at {cores:?}"
        );
    }
}

/// Past `SUMMARY_RATE` a public summary waits for its turn, at most 500 ms, and is answered
/// all the same; a peer's internal summary is never paced.
#[test]
fn a_public_summary_past_summary_rate_waits_its_turn_an_internal_one_never() {
    // 1 a second, a burst of 1: after the first, turns are a second apart.
    let solo = Solo::start("auto", &[("SUMMARY_RATE", "1")]);
    let asked = Instant::now();
    for _ in 0..3 {
        let (status, body) = solo.inst.get("/payments-summary");
        assert_eq!(status, 200, "{body}");
    }
    // The second goes after the longest wait (its turn was a second away), the third at its
    // turn, a second after the first.
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // Paced, ten internal ones would take 5 s at least.
    let asked = Instant::now();
    for _ in 0..10 {
        let (status, body) = solo.inst.get_as_peer("/internal/payments-summary");
        assert_eq!(status, 200, "internal: {body}");
    }
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        asked.elapsed()
    );
}
