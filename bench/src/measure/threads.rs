//! What a process's threads cost, by role: CPU nanoseconds and times put on a CPU, read from
//! every thread's `/proc/PID/task/TID/schedstat` (and its name from `comm`), summed per role
//! (`rinha-core-*` are the cores: intake and senders; `rinha-router` the summary; `lb-worker-*`
//! the lb's workers). Two samples, taken before and after a run, give the cost of the run.
//!
//! "Runs" is schedstat's third field: how many times the thread was put on a CPU. For a thread
//! that sleeps between events (an event loop), that is its wake-ups, plus the rare return
//! after being preempted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

/// CPU and runs of one role's threads (or of a whole process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    /// Nanoseconds on a CPU.
    pub cpu_ns: u64,
    /// Times put on a CPU (wake-ups).
    pub runs: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.cpu_ns += other.cpu_ns;
        self.runs += other.runs;
    }

    /// What was spent between `before` and `self` (a thread gone since counts as nothing).
    pub fn since(self, before: Cost) -> Cost {
        Cost {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }
}

/// The role of a backend's core threads (`rinha-core-*`).
pub const CORES: &str = "cores (intake, senders)";

/// The role a thread plays, from its name.
pub fn role(comm: &str) -> &'static str {
    let comm = comm.trim();
    if comm.starts_with("rinha-core-") {
        CORES
    } else if comm == "rinha-router" {
        "summary"
    } else if comm.starts_with("lb-worker-") {
        "lb workers"
    } else {
        "other"
    }
}

/// A process's cost so far, per role (roles in name order).
pub fn sample(pid: u32) -> anyhow::Result<BTreeMap<&'static str, Cost>> {
    let mut roles = BTreeMap::new();
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks:?}"))? {
        let dir = task?.path();
        // A thread that ended between the listing and the read counts as nothing.
        let (Ok(schedstat), Ok(comm)) = (
            std::fs::read_to_string(dir.join("schedstat")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue;
        };
        let cost = parse_schedstat(&schedstat).context("malformed schedstat")?;
        roles
            .entry(role(&comm))
            .or_insert_with(Cost::default)
            .add(cost);
    }
    Ok(roles)
}

/// `ns_on_cpu ns_waiting runs` (the first and third fields).
fn parse_schedstat(text: &str) -> Option<Cost> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let cpu_ns = fields.next()??;
    let _waiting = fields.next()??;
    let runs = fields.next()??;
    Some(Cost { cpu_ns, runs })
}

/// What each role spent between two samples of one process.
pub fn spent(
    before: &BTreeMap<&'static str, Cost>,
    after: &BTreeMap<&'static str, Cost>,
) -> BTreeMap<&'static str, Cost> {
    after
        .iter()
        .map(|(role, cost)| {
            let was = before.get(role).copied().unwrap_or_default();
            (*role, cost.since(was))
        })
        .collect()
}

/// The sum of a process's roles.
pub fn total(roles: &BTreeMap<&'static str, Cost>) -> Cost {
    let mut sum = Cost::default();
    for cost in roles.values() {
        sum.add(*cost);
    }
    sum
}

/// Test support: runs `before`, has a thread named as a core (`rinha-core-0`, so that no other
/// thread of the test process, which may end meanwhile, shares its role) spend CPU, then runs
/// `after` on what `before` returned while that thread is alive and asleep, its time accounted.
#[cfg(test)]
pub(crate) fn around_a_busy_core_thread<S, T>(
    before: impl FnOnce() -> S,
    after: impl FnOnce(S) -> T,
) -> T {
    let (start_tx, start_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("rinha-core-0".into())
        .spawn(move || {
            start_rx.recv().unwrap();
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            std::hint::black_box(x);
            done_tx.send(()).unwrap();
            exit_rx.recv().unwrap();
        })
        .unwrap();
    let state = before();
    start_tx.send(()).unwrap();
    done_rx.recv().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    let result = after(state);
    exit_tx.send(()).unwrap();
    worker.join().unwrap();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_schedstat_fields() {
        assert_eq!(
            parse_schedstat("123456 789 42\n"),
            Some(Cost {
                cpu_ns: 123456,
                runs: 42
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
    }

    #[test]
    fn names_the_roles() {
        assert_eq!(role("rinha-core-0\n"), CORES);
        assert_eq!(role("rinha-router"), "summary");
        assert_eq!(role("lb-worker-1"), "lb workers");
        assert_eq!(role("rinha"), "other");
    }

    #[test]
    fn our_own_threads_spend_cpu_and_runs() {
        let pid = std::process::id();
        let (before, after) = around_a_busy_core_thread(
            || sample(pid).unwrap(),
            |before| (before, sample(pid).unwrap()),
        );
        let spent = spent(&before, &after)[CORES];
        assert!(spent.cpu_ns > 0 && spent.runs > 0, "{spent:?}");
    }
}
