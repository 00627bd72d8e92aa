//! Fault tests (issue 7, "Faults"): real `rinha` processes with journals (`DATA_DIR`) behind
//! a real `rinha-lb`, the emulated processors in-process, a paced load that remembers the
//! ids it got a 2XX for. Each test kills, stops or starves a part mid-load, then checks
//! after the drain that every 2XX payment is stored by a processor exactly once and that
//! our summary equals the processors'.
//!
//! Each test is bounded (a few seconds of load, a bounded drain) and they run in parallel:
//! they share nothing but the CPU.

mod common;
mod faults_support;

use std::time::Duration;

use common::cpu_seconds;
use common::Processors;
use faults_support::{assert_lost_only_to_the_dead, kill, load, Fleet, Outcome};
use rinha::journal::replay_dir;
use rinha_emulator::Chaos;

const DRAIN: Duration = Duration::from_secs(40);
/// Load connections: each loses at most its one request in flight when a part dies.
const CONNS: usize = 8;

/// Runs the load in a thread while `during` acts on the fleet; returns what the load saw.
fn with_load(
    fleet: &mut Fleet,
    every: Duration,
    length: Duration,
    during: impl FnOnce(&mut Fleet),
) -> Outcome {
    let addr = fleet.lb.addr;
    let handle = std::thread::spawn(move || load(addr, CONNS, every, length));
    during(fleet);
    handle.join().expect("load")
}

/// Nothing refused, and enough answered for the run to prove something.
fn assert_answered(load: &Outcome) {
    assert!(load.refused.is_empty(), "refused: {:?}", &load.refused[..1]);
    assert!(load.ok.len() > 200, "too little load: {}", load.ok.len());
}

fn assert_only_in_flight_lost(fleet: &Fleet, load: &Outcome) {
    assert_answered(load);
    assert!(
        load.lost.len() <= CONNS,
        "{} requests lost, more than the {CONNS} that can be in flight: {:#?}\n{}",
        load.lost.len(),
        load.lost,
        fleet.lb_logs()
    );
}

/// The processors are slow and the senders few, so a backlog builds that only the journal
/// can carry over a kill -9.
const BACKLOG: [(&str, &str); 1] = [("SENDERS", "2")];

#[test]
fn kill9_backend_lb_serves_from_the_other_and_restart_loses_nothing() {
    let procs = Processors::start();
    procs.default.set_delay(40);
    let mut fleet = Fleet::start(&procs, &BACKLOG);
    let mut unsettled_at_kill = 0;
    let load = with_load(
        &mut fleet,
        Duration::from_millis(25),
        Duration::from_secs(5),
        |fleet| {
            std::thread::sleep(Duration::from_millis(2000));
            kill(fleet.b1.pid(), libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            let data = Fleet::data_dir_of(&fleet.dir.0, "b1");
            unsettled_at_kill = replay_dir(&data).expect("journal readable").unsettled.len();
            std::thread::sleep(Duration::from_millis(1000));
            fleet.restart_b1(&procs);
        },
    );
    println!(
        "kill -9 backend: 2XX {}, lost {}, unsettled in its journal at the kill {unsettled_at_kill}",
        load.ok.len(),
        load.lost.len()
    );
    assert_only_in_flight_lost(&fleet, &load);
    assert!(
        unsettled_at_kill > 0,
        "no backlog at the kill: the test proves nothing"
    );
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

#[test]
fn kill9_lb_clients_reconnect_and_nothing_is_lost() {
    let procs = Processors::start();
    // `batch` here, so the fdatasync path runs under a fault too.
    let mut fleet = Fleet::start(&procs, &[("JOURNAL_SYNC", "batch")]);
    let mut killed = None;
    let load = with_load(
        &mut fleet,
        Duration::from_millis(20),
        Duration::from_secs(4),
        |fleet| {
            std::thread::sleep(Duration::from_millis(1500));
            killed = Some(fleet.lb.kill9());
            std::thread::sleep(Duration::from_millis(300));
            fleet.restart_lb();
        },
    );
    let kill = killed.expect("the lb was killed");
    println!(
        "kill -9 lb: 2XX {}, lost {}, failed connects {}, port refused {} ms after the kill",
        load.ok.len(),
        load.lost.len(),
        load.connect_failures,
        (kill.refused_from - kill.at).as_millis()
    );
    assert_answered(&load);
    assert_lost_only_to_the_dead(&load, CONNS, kill, &fleet.lb_logs());
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

#[test]
fn sigterm_drains_leaves_a_consistent_journal_and_restart_resumes() {
    let procs = Processors::start();
    procs.default.set_delay(40);
    let extra = [BACKLOG[0], ("SHUTDOWN_GRACE_MS", "300")];
    let mut fleet = Fleet::start(&procs, &extra);
    let mut left = 0;
    let load = with_load(
        &mut fleet,
        Duration::from_millis(25),
        Duration::from_secs(4),
        |fleet| {
            std::thread::sleep(Duration::from_millis(1500));
            let status = fleet.b1.terminate(Duration::from_secs(10));
            assert!(status.success(), "{status:?}");
            // Consistent: every payment the journal holds as confirmed is stored, with
            // the requestedAt we recorded.
            let data = Fleet::data_dir_of(&fleet.dir.0, "b1");
            let replay = replay_dir(&data).expect("journal readable after SIGTERM");
            for c in &replay.confirmed {
                let stored = procs.default.payment(c.id).or(procs.fallback.payment(c.id));
                let stored = stored.unwrap_or_else(|| panic!("{} confirmed, not stored", c.id));
                assert_eq!(stored.requested_at_micros, c.requested_at_us);
            }
            left = replay.unsettled.len();
            fleet.restart_b1(&procs);
        },
    );
    println!(
        "SIGTERM: 2XX {}, lost {}, unsettled in the journal after the stop {left}",
        load.ok.len(),
        load.lost.len()
    );
    assert_only_in_flight_lost(&fleet, &load);
    assert!(
        left > 0,
        "the grace drained everything: the restart resumes nothing"
    );
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

#[test]
fn both_processors_down_and_slow_then_back_loses_nothing_and_idles() {
    let procs = Processors::start();
    let mut fleet = Fleet::start(&procs, &[("PROCESSOR_TIMEOUT_MS", "300")]);
    for p in [&procs.default, &procs.fallback] {
        p.set_failure(true);
        p.set_delay(1000);
    }
    let load = with_load(
        &mut fleet,
        Duration::from_millis(20),
        Duration::from_secs(2),
        |_| {},
    );
    let pids = [fleet.b1.pid(), fleet.b2.pid()];
    let cpu0: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    std::thread::sleep(Duration::from_secs(4));
    let cpu: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu0;
    println!(
        "both processors down: CPU of both backends {cpu:.3} s over 4 s with {} payments waiting",
        load.ok.len()
    );
    assert!(
        cpu < 0.8,
        "retry storm while both are down: {cpu:.3} CPU-s in 4 s"
    );
    for p in [&procs.default, &procs.fallback] {
        p.set_failure(false);
        p.set_delay(0);
    }
    assert_only_in_flight_lost(&fleet, &load);
    assert!(load.lost.is_empty());
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

#[test]
fn lost_responses_and_reset_connections_are_resolved_exactly_once() {
    let procs = Processors::with_chaos(Chaos {
        drop_every: 5,
        reset_every: 7,
    });
    let mut fleet = Fleet::start(&procs, &[("PROCESSOR_TIMEOUT_MS", "300")]);
    let load = with_load(
        &mut fleet,
        Duration::from_millis(20),
        Duration::from_secs(3),
        |_| {},
    );
    assert_only_in_flight_lost(&fleet, &load);
    assert!(load.lost.is_empty());
    fleet.drained_and_exact(&procs, &load, DRAIN);
}

#[test]
fn the_start_log_says_whether_payments_are_kept() {
    let procs = Processors::start();
    let dir = common::TempDir::new();
    let memory = common::Instance::start(&dir.0, "m", "auto", &procs, &[], &[]);
    let data = dir.0.join("data").display().to_string();
    let kept = common::Instance::start(&dir.0, "k", "auto", &procs, &[], &[("DATA_DIR", &data)]);
    assert!(common::eventually(Duration::from_secs(5), || {
        memory.log_text().contains("rinha started") && kept.log_text().contains("rinha started")
    }));
    let (m, k) = (memory.log_text(), kept.log_text());
    assert_eq!(m.matches("memory only").count(), 1, "{m}");
    assert!(
        !k.contains("memory only") && k.contains("journal on"),
        "{k}"
    );
}

/// A host crash can leave a page of a journal unwritten (zeros) while later pages were
/// written (issue 16, item 4): the instance starts, keeps every record that verifies, and
/// says loudly what it skipped. Before, it exited 1 and a restart policy looped forever.
#[test]
fn a_journal_with_a_zeroed_page_reopens_with_every_record_that_verifies() {
    use rinha::journal::{Journal, Processor, SyncMode};
    let procs = Processors::start();
    let dir = common::TempDir::new();
    let data = dir.0.join("data");
    // 300 confirmed payments of 1 cent each, 106 bytes apiece: about eight pages.
    let (mut j, _) = Journal::open(&data, 0, SyncMode::None).expect("journal");
    let at = common::now_us() / 1000 * 1000;
    let mut ends = vec![(uuid::Uuid::nil(), j.file_len())];
    for n in 1..=300u128 {
        let id = uuid::Uuid::from_u128(n);
        j.accepted(id, 1);
        j.attempt(id, Processor::Default, at);
        j.confirmed(id, Processor::Default, at, 1);
        j.commit().expect("commit");
        ends.push((id, j.file_len()));
    }
    drop(j);
    let path = data.join("core-0.journal");
    let mut bytes = std::fs::read(&path).expect("journal file");
    let page = 8192..12288u64;
    bytes[page.start as usize..page.end as usize].fill(0);
    std::fs::write(&path, &bytes).expect("damage");
    // A payment survives when its `confirmed` record (the last of its three) is outside the
    // zeroed page, or when the page cut only its `accepted`/`attempt` and left the
    // `confirmed` (a `confirmed` alone counts, as after a compaction).
    let confirmed_len = 42;
    let kept = ends
        .windows(2)
        .filter(|w| {
            let end = w[1].1;
            end <= page.start || end - confirmed_len >= page.end
        })
        .count() as u64;
    assert!(kept < 300 && kept > 250, "{kept}");
    let data_env = data.display().to_string();
    let inst = common::Instance::start(
        &dir.0,
        "z",
        "auto",
        &procs,
        &[],
        &[("DATA_DIR", &data_env), ("WORKERS", "1")],
    );
    let answered = common::eventually(Duration::from_secs(10), || {
        inst.get("/payments-summary").0 == 200
    });
    assert!(answered, "no summary: {}", inst.log_text());
    assert_eq!(inst.summary(""), ((kept, kept), (0, 0)));
    let log = inst.log_text();
    assert!(
        log.contains("ERROR") && log.contains("skipped bytes between records"),
        "{log}"
    );
}

/// `POST /purge-payments` with a backlog (issue 16, item 2): what is queued is dropped, the
/// outcomes of the attempts in flight are not recorded, the journal replays none of it after
/// a restart, and payments accepted after the purge go through as usual.
#[test]
fn a_purge_leaves_nothing_that_is_counted_later() {
    let procs = Processors::start();
    for p in [&procs.default, &procs.fallback] {
        p.set_delay(300);
    }
    let dir = common::TempDir::new();
    let data = dir.0.join("data").display().to_string();
    // Two cores, one sender each: two payments in flight, the rest queued.
    let env = [("DATA_DIR", data.as_str()), ("SENDERS", "1")];
    let start = || common::Instance::start(&dir.0, "p", "auto", &procs, &[], &env);
    let inst = start();
    for _ in 0..60 {
        assert_eq!(inst.pay(uuid::Uuid::new_v4(), "19.90"), 202);
    }
    std::thread::sleep(Duration::from_millis(150));
    let (status, body) = inst.post("/purge-payments", "");
    assert_eq!(status, 200, "{body}");
    let stored = |procs: &Processors| procs.default.stored() + procs.fallback.stored();
    let at_purge = stored(&procs);
    // Long enough for the attempts in flight to end and for several more to be sent.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        inst.summary(""),
        ((0, 0), (0, 0)),
        "counted after the purge"
    );
    let sent_after = stored(&procs) - at_purge;
    assert!(
        sent_after <= 2,
        "{sent_after} payments stored after the purge, more than the 2 in flight at it"
    );
    // A restart over the same journal replays nothing of before the purge.
    drop(inst);
    let inst = start();
    let before_restart = stored(&procs);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        inst.summary(""),
        ((0, 0), (0, 0)),
        "replayed after the purge"
    );
    assert_eq!(stored(&procs), before_restart, "sent after the restart");
    // And new payments are counted as usual.
    for p in [&procs.default, &procs.fallback] {
        p.set_delay(0);
    }
    for _ in 0..5 {
        assert_eq!(inst.pay(uuid::Uuid::new_v4(), "19.90"), 202);
    }
    let counted = common::eventually(Duration::from_secs(10), || {
        let ((d, _), (f, _)) = inst.summary("");
        d + f == 5
    });
    assert!(counted, "{:?}", inst.summary(""));
    assert_eq!(stored(&procs), before_restart + 5);
}
