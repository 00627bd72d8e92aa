//! Long life (issue 24, item 9): one core's store, accepted ids and journal through 5
//! million payments (500,000 in a debug build), driven directly, with fast emulated
//! processors (every attempt stored at once) at the soak's rate per instance (550 a second,
//! in synthetic time: the stamps run from 2.5 hours ago to now).
//!
//! What must hold: past the horizon the heap stays flat (under a byte a payment: the packed
//! buckets go to the spill file, as with `DATA_DIR`), not growing by the ~100 a stored record
//! and its id take, nor by the ~7 of a packed bucket; a restart replays into less
//! than the memory it was given; every summary equals a plain sum over the payments, before
//! and after the restart. How long each fold step, id rotation and compaction step (the
//! core's part) holds the core is measured, not asserted: each step's wall and on-CPU time,
//! and the worst steps' page faults and context switches, are printed (`cargo test --profile test-release -p rinha --test
//! long_life -- --nocapture`): docs/reliability.md, "Memory".

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rinha::ids::{Seen, ID_WINDOW};
use rinha::journal::{commit, Journal, Processor, SyncMode};
use rinha::queue::Queue;
use rinha::store::fold::FOLD_STEP;
use rinha::store::{Shard, SEAL_LAG, SETTLED_HORIZON};
use rinha::summary::{Totals, Window};
use uuid::Uuid;

/// Counts the bytes live on the heap, and the most ever live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
}

const PAYMENTS: u64 = if cfg!(debug_assertions) {
    500_000
} else {
    5_000_000
};
/// Payments per synthetic second: the soak's 1,100 a second over two instances.
const RATE: u64 = 550;

/// Payment `n`: its stamp (whole milliseconds), processor and cents. The model is this
/// function: a summary is a plain sum of it over the payments in the window.
fn payment(start_us: i64, n: u64) -> (i64, Processor, u64) {
    let at = start_us + (n * 1_000_000 / RATE) as i64 / 1000 * 1000;
    let p = if n % 7 == 3 {
        Processor::Fallback
    } else {
        Processor::Default
    };
    (at, p, 1990 + n % 11)
}

fn naive(start_us: i64, upto: u64, w: Window) -> Totals {
    let mut t = Totals::default();
    for n in 0..upto {
        let (at, p, cents) = payment(start_us, n);
        if w.contains(at) {
            t.count(p, cents);
        }
    }
    t
}

fn windows(start_us: i64, end_us: i64) -> Vec<Window> {
    let span = end_us - start_us;
    let mut w: Vec<Window> = (0..12)
        .map(|k| {
            // The checker's 13.5 s windows, spread over the run, on odd milliseconds.
            let from = start_us + span / 12 * k + 7_000;
            Window {
                from_us: Some(from),
                to_us: Some(from + 13_500_000),
            }
        })
        .collect();
    w.push(Window::default());
    w.push(Window {
        from_us: Some(start_us + span / 3),
        to_us: Some(end_us - span / 5),
    });
    w
}

/// The calling thread's CPU time (user and system): what a step costs itself, without the
/// time the scheduler gave the core to another thread meanwhile.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a whole timespec into the pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Durations binned 64 to a power of two (a quantile within 1.6 %), with the exact max: a
/// fixed size, so that timing every intake adds nothing to the heap this test watches.
struct Histogram {
    bins: Box<[u64; 64 * 64]>,
    n: u64,
    max: Duration,
}

impl Histogram {
    fn new() -> Self {
        Self {
            bins: Box::new([0; 64 * 64]),
            n: 0,
            max: Duration::ZERO,
        }
    }

    fn add(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let bin = if ns < 64 {
            ns as usize
        } else {
            let e = 63 - ns.leading_zeros() as usize;
            (e - 5) * 64 + (ns >> (e - 6)) as usize % 64
        };
        self.bins[bin] += 1;
        self.n += 1;
        self.max = self.max.max(d);
    }

    /// The sample of rank `f` (0 to 1), as the lower bound of its bin.
    fn quantile(&self, f: f64) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.n - 1) as f64 * f) as u64;
        let mut seen = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen > rank {
                let ns = if i < 64 {
                    i as u64
                } else {
                    (64 + i as u64 % 64) << (i / 64 - 1)
                };
                return Duration::from_nanos(ns).min(self.max);
            }
        }
        self.max
    }

    fn show(&self) -> String {
        format!(
            "median {:.1?} p99 {:.1?} max {:.1?}",
            self.quantile(0.5),
            self.quantile(0.99),
            self.max
        )
    }
}

/// The calling thread's page faults (minor, major) and context switches (voluntary: it
/// waited; involuntary: preempted) so far.
fn thread_events() -> [i64; 4] {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer on success (return 0).
    let u = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr()), 0);
        u.assume_init()
    };
    [u.ru_minflt, u.ru_majflt, u.ru_nvcsw, u.ru_nivcsw]
}

/// One step: its number, wall time, on-CPU time, and events during it ([`thread_events`]).
type Step = (u64, Duration, Duration, [i64; 4]);

/// How long each step of one kind held the core: wall time, and on-CPU time.
struct Stalls {
    what: &'static str,
    wall: Histogram,
    cpu: Histogram,
    /// The steps that took longest on the CPU.
    worst: Vec<Step>,
    /// The steps that took longest in wall time: whether they were preempted (involuntary
    /// switches) or waited in the kernel (voluntary ones) tells the host from the code.
    slowest: Vec<Step>,
}

impl Stalls {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            wall: Histogram::new(),
            cpu: Histogram::new(),
            worst: Vec::with_capacity(6),
            slowest: Vec::with_capacity(6),
        }
    }

    /// Runs one step, timed.
    fn time<T>(&mut self, step: impl FnOnce() -> T) -> T {
        let e0 = thread_events();
        let (t0, c0) = (Instant::now(), thread_cpu());
        let out = step();
        let (c1, t1) = (thread_cpu(), Instant::now());
        let e1 = thread_events();
        let (wall, cpu) = (t1 - t0, c1 - c0);
        let events = [0, 1, 2, 3].map(|i| e1[i] - e0[i]);
        let step = (self.wall.n, wall, cpu, events);
        keep_top(&mut self.worst, step, |w| w.2);
        keep_top(&mut self.slowest, step, |w| w.1);
        self.wall.add(wall);
        self.cpu.add(cpu);
        out
    }

    /// Prints median, p99 and max of both, and the worst steps.
    fn show(&self) {
        println!(
            "{}: {} samples; wall {}; on-CPU {}",
            self.what,
            self.wall.n,
            self.wall.show(),
            self.cpu.show()
        );
        for (label, steps) in [("on the CPU", &self.worst), ("in wall time", &self.slowest)] {
            println!("  longest {label}:");
            for (n, wall, cpu, [minflt, majflt, nvcsw, nivcsw]) in steps {
                println!(
                    "    step {n}: wall {wall:.1?}, on-CPU {cpu:.1?}, page faults {minflt} minor \
                     {majflt} major, context switches {nvcsw} voluntary {nivcsw} involuntary"
                );
            }
        }
    }
}

/// Keeps the five steps of `steps` with the largest `key`, largest first.
fn keep_top(steps: &mut Vec<Step>, step: Step, key: impl Fn(&Step) -> Duration) {
    if steps.len() < 5 || key(&step) > key(&steps[4]) {
        steps.push(step);
        steps.sort_by_key(|w| std::cmp::Reverse(key(w)));
        steps.truncate(5);
    }
}

#[test]
fn five_million_payments_keep_memory_flat_and_summaries_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    // As `rinha` does with DATA_DIR: full pages of sealed buckets go to unnamed files there.
    rinha::store::spill::keep_in(dir.path());
    let span_us = (PAYMENTS * 1_000_000 / RATE) as i64;
    let start_us = (rinha::time::now_us() - span_us) / 1000 * 1000;
    let horizon_us = SETTLED_HORIZON.as_micros() as i64;
    let (mut journal, _) = Journal::open(dir.path(), 0, SyncMode::None).expect("journal");
    let shard = Shard::new();

    // When each synthetic second was reached, in real time: the fold's cutoff.
    let mut seconds: VecDeque<(i64, Instant)> = VecDeque::new();
    let mut takes = Stalls::new("intake: an id taken");
    let mut folds = Stalls::new("fold step");
    let mut rotations = Stalls::new("id rotation");
    let mut compactions = Stalls::new("compaction start (on the core)");
    let mut finishes = Stalls::new("compaction finish or catch-up (on the core)");
    let mut rotated_us = start_us;
    let mut compacting: Option<rinha::journal::background::Background> = None;
    let mut heap = Vec::new();
    let began = Instant::now();
    for n in 0..PAYMENTS {
        let (at, p, cents) = payment(start_us, n);
        let id = Uuid::from_u64_pair(0x10f0_11fe, n);
        assert_eq!(takes.time(|| shard.ids.take(id, cents)), Seen::New);
        journal.accepted(id, cents);
        let attempt = shard.begin_attempt(at, p);
        journal.attempt(id, p, at);
        shard.record(attempt, at, cents, p);
        journal.confirmed(id, p, at, cents);
        if n % RATE == RATE - 1 {
            // A synthetic second: commit, and the core's long-life pass.
            journal.commit().expect("commit");
            // The core's part of a compaction, as `GroupCommit::tend_compaction` does it: take
            // the last finish's directory sync (off the core) once it is done, start the
            // helper, later switch files.
            journal.settle().expect("directory synced");
            match compacting.take() {
                Some(bg) if bg.is_finished() => {
                    compacting = finishes
                        .time(|| journal.finish_compaction(bg))
                        .expect("finish compaction");
                }
                Some(bg) => compacting = Some(bg),
                None if journal.wants_compaction() => {
                    let bg = compactions.time(|| journal.start_compaction());
                    compacting = Some(bg.expect("start compaction"));
                }
                None => {}
            }
            seconds.push_back((at, Instant::now()));
            let mut cutoff = None;
            while seconds.front().is_some_and(|(s, _)| *s <= at - horizon_us) {
                cutoff = seconds.pop_front().map(|(_, i)| i);
            }
            if let Some(before) = cutoff {
                let seal = at - horizon_us - SEAL_LAG.as_micros() as i64;
                loop {
                    let step = folds.time(|| shard.fold(before, seal, FOLD_STEP));
                    if step < FOLD_STEP {
                        break;
                    }
                }
            }
            if at - rotated_us >= ID_WINDOW.as_micros() as i64 {
                rotations.time(|| shard.ids.rotate());
                rotated_us = at;
            }
        }
        if (n + 1) % (PAYMENTS / 16) == 0 {
            // What the core keeps, without a compaction's passing state (its peak is below).
            while let Some(bg) = compacting.take() {
                compacting = journal.finish_compaction(bg).expect("finish compaction");
            }
            heap.push((n + 1, live_mib()));
        }
    }
    journal.commit().expect("commit");
    while let Some(bg) = compacting.take() {
        compacting = journal.finish_compaction(bg).expect("finish compaction");
    }
    let (records, buckets) = shard.held();
    println!(
        "{PAYMENTS} payments in {:?}; held: {records} records, {buckets} buckets, {} ids; \
         heap by sixteenths (MiB): {:.1?}; journal {} MiB",
        began.elapsed(),
        shard.ids.len(),
        heap.iter().map(|h| h.1).collect::<Vec<_>>(),
        journal.file_len() >> 20
    );
    // How long each step held the core (issue 24, item 9: at most 1 ms of its own work) is
    // measured here and printed, not asserted: the machine's own interrupts are charged to
    // the thread they land on, a millisecond or two on the CPU with no page fault and no
    // context switch, so a timed assertion fails with the host, not with the code. The bound
    // holds by construction, and that is what the unit tests assert: a fold step folds or
    // seals at most `FOLD_STEP` (`store::fold`), a full id map is joined by a larger one
    // instead of rehashed (`ids`), a compaction's work runs on a helper thread
    // (`journal::background`). docs/reliability.md, "Long life", keeps the figures.
    for stalls in [&takes, &folds, &rotations, &compactions, &finishes] {
        stalls.show();
    }
    let run_peak = PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
    println!("heap peak during the run (a compaction's state included): {run_peak:.1} MiB");

    // Flat: once past the horizon and two id windows, a payment adds nothing that stays on
    // the heap, not a record and an id (~105 bytes), nor its packed bucket (~7 bytes): full
    // pages and chunks of those go to the spill file; the heap keeps ~32 bytes per 64 KiB.
    let settled = RATE * (SETTLED_HORIZON + SEAL_LAG + ID_WINDOW * 2).as_secs() + RATE * 10;
    let from = heap
        .iter()
        .find(|h| h.0 > settled)
        .expect("a long enough run");
    let to = heap.last().expect("samples");
    let per_payment = (to.1 - from.1) * (1 << 20) as f64 / (to.0 - from.0) as f64;
    println!("heap growth past the horizon: {per_payment:.2} bytes a payment");
    assert!(per_payment < 1.0, "{per_payment:.2} bytes a payment");
    assert!(records as u64 <= RATE * (SETTLED_HORIZON + SEAL_LAG).as_secs() + RATE * 2);
    assert!(shard.ids.len() as u64 <= RATE * 2 * ID_WINDOW.as_secs() + RATE);
    // A compaction's helper holds what was appended since the last one (an eighth of the
    // file at most), never a second copy of the buckets: it copies their records as they
    // are (`replay::scan_file_for_compaction`). With that copy the peak was 72 MiB above
    // what the core keeps (35 MiB of it the buckets, packed again); without, 40 MiB.
    let kept = to.1;
    assert!(
        run_peak - kept < 56.0,
        "a compaction peaked {:.1} MiB above the {kept:.1} MiB the core keeps",
        run_peak - kept
    );

    let end_us = payment(start_us, PAYMENTS - 1).0;
    for w in windows(start_us, end_us) {
        assert_eq!(shard.window(w), naive(start_us, PAYMENTS, w), "{w:?}");
    }

    // A restart: the journal, compacted once more as the core does when quiet, replays
    // into a fresh shard within the memory a 150 MB container leaves beside its queue.
    journal.compact().expect("compact");
    let file = journal.file_len();
    drop((journal, shard));
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t0 = Instant::now();
    let (journal, state) = Journal::open_state(dir.path(), 0, SyncMode::None).expect("reopen");
    let shard = Shard::new();
    commit::restore(0, &shard, &Queue::new(1024), state);
    let peak = (PEAK.load(Ordering::Relaxed) - base) as f64 / (1 << 20) as f64;
    let kept = (LIVE.load(Ordering::Relaxed) - base) as f64 / (1 << 20) as f64;
    println!(
        "restart: journal {} MiB, replayed in {:?}, heap peak {peak:.1} MiB, kept {kept:.1} MiB",
        file >> 20,
        t0.elapsed()
    );
    assert!(peak < 64.0, "a restart peaked at {peak:.1} MiB");
    for w in windows(start_us, end_us) {
        assert_eq!(
            shard.window(w),
            naive(start_us, PAYMENTS, w),
            "after restart {w:?}"
        );
    }
    drop(journal);
}
