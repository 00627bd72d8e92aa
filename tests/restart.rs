//! Restarts over a large journal (issue 16, items 5 and 6): how much memory a `rinha` takes
//! at its peak (`VmHWM`) when its queue was full, and how long it takes from its start to
//! its first answer.
//!
//! Both processors fail throughout, so the replayed payments stay queued: the worst case
//! for memory, a full queue carried over a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Instance, Processors, TempDir};
use rinha::journal::{Journal, Processor, SyncMode};
use uuid::Uuid;

/// Writes `unsettled` accepted payments (one in `pin_every` with an attempt on file: pinned
/// at replay) and `confirmed` settled ones into `dir/core-0.journal`, as one core would have.
fn write_journal(dir: &Path, unsettled: u64, pin_every: u64, confirmed: u64) {
    let (mut j, _) = Journal::open(dir, 0, SyncMode::None).expect("journal");
    let now_us = common::now_us() / 1000 * 1000;
    for n in 0..unsettled + confirmed {
        let id = Uuid::from_u64_pair(0x5eed_0000_0000_0000, n);
        j.accepted(id, 1990);
        if n >= unsettled {
            j.attempt(id, Processor::Default, now_us);
            j.confirmed(id, Processor::Default, now_us, 1990);
        } else if n % pin_every == 0 {
            j.attempt(id, Processor::Fallback, now_us);
        }
        if n % 4096 == 0 {
            j.commit().expect("commit");
        }
    }
    j.commit().expect("commit");
}

/// A field of `/proc/PID/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `rinha` (one core) on `data` and waits for its first whole answer; returns the
/// instance and the time from the start to that answer.
fn start_timed(
    dir: &Path,
    procs: &Processors,
    data: &Path,
    extra: &[(&str, &str)],
) -> (Instance, Duration) {
    let data = data.display().to_string();
    let mut env = vec![("DATA_DIR", data.as_str()), ("WORKERS", "1")];
    env.extend_from_slice(extra);
    let started = Instant::now();
    // Returns once the socket accepts connections (bound before the replay runs).
    let inst = Instance::start(dir, "r", "auto", procs, &[], &env);
    let answered = common::eventually(Duration::from_secs(120), || {
        inst.get("/payments-summary").0 == 200
    });
    assert!(answered, "no answer: {}", inst.log_text());
    (inst, started.elapsed())
}

fn failing_processors() -> Processors {
    let procs = Processors::start();
    procs.default.set_failure(true);
    procs.fallback.set_failure(true);
    procs
}

/// A restart with a full queue fits the memory limit (issue 16, item 6), at 64 MiB and at
/// the compose file's 150 MiB. The queue's capacity comes from the limit; every replayed
/// payment is pinned (its attempt on file), the costliest kind to replay and to hold, and
/// goes round for a while (looked up, sent, failed, set aside, back) before the peak is read.
#[test]
fn a_restart_with_a_full_queue_fits_the_memory_limit() {
    for limit_mb in [64u64, 150] {
        let capacity = rinha::config::queue_capacity_for(limit_mb << 20, 1);
        let procs = failing_processors();
        let dir = TempDir::new();
        let data = dir.0.join("data");
        write_journal(&data, capacity as u64, 1, 0);
        let limit = limit_mb.to_string();
        let env = [
            ("MEMORY_LIMIT_MB", limit.as_str()),
            ("SENDERS", "4"),
            ("NO_COLOR", "1"),
        ];
        let (inst, ready) = start_timed(&dir.0, &procs, &data, &env);
        let log = inst.log_text();
        assert!(log.contains(&format!("unsettled={capacity}")), "{log}");
        std::thread::sleep(Duration::from_secs(3));
        // Full: intake refuses (the 4 senders hold at most 4 of them at a time).
        let refused = (0..10)
            .filter(|_| inst.pay(Uuid::new_v4(), "1.00") == 503)
            .count();
        let hwm = status_kib(inst.pid(), "VmHWM:");
        println!(
            "{capacity} pinned payments queued: start to first answer {} ms, peak RSS {} MiB of {limit_mb}",
            ready.as_millis(),
            hwm / 1024
        );
        assert!(
            refused >= 6,
            "only {refused} of 10 refused: the queue was not full"
        );
        assert!(
            hwm < limit_mb << 10,
            "peak RSS {hwm} KiB over the {limit_mb} MiB limit"
        );
    }
}

/// The figures of docs/benchmarks.md ("Restart time and memory"): `cargo test --release -p
/// rinha --test restart -- --include-ignored --nocapture`.
#[test]
#[ignore = "a measurement: 1,000,000 records, run by hand in release"]
fn a_million_journal_records_restart_time_and_peak_memory() {
    for (label, unsettled, confirmed) in [
        ("1,000,000 unsettled (queued, half pinned)", 1_000_000, 0),
        ("1,000,000 confirmed", 0, 1_000_000),
    ] {
        let procs = failing_processors();
        let dir = TempDir::new();
        let data = dir.0.join("data");
        write_journal(&data, unsettled, 2, confirmed);
        let file = std::fs::metadata(data.join("core-0.journal"))
            .unwrap()
            .len();
        let (inst, ready) = start_timed(&dir.0, &procs, &data, &[]);
        let hwm = status_kib(inst.pid(), "VmHWM:");
        let rss = status_kib(inst.pid(), "VmRSS:");
        println!(
            "{label}: journal {} MB; start to first answer {} ms; peak RSS (VmHWM) {} MiB, RSS after {} MiB",
            file / 1_000_000,
            ready.as_millis(),
            hwm / 1024,
            rss / 1024
        );
        for line in inst.log_text().lines().filter(|l| l.contains("journal")) {
            println!("  {line}");
        }
    }
}
