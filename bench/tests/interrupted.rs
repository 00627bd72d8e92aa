//! A `rinha-bench` command that runs a stack, stopped by SIGTERM in the middle of its load,
//! leaves nothing behind: no process of its stack still running and, for `capacity`, none of
//! the cpu groups it made (that case needs root and cgroup v1's cpu controller, as the command
//! does: the test says so and passes without). Needs `rinha` and `rinha-lb` next to
//! `rinha-bench` (built when missing).

mod stack_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack_support::{stack_bins, stack_flags};

/// Where the command makes its groups (`capacity/cgroup.rs`).
const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

/// The groups made by the capacity run of process `pid`.
fn groups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("rinha-capacity-{pid}-");
    std::fs::read_dir(CPU_ROOT)
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may
/// hold spaces): the state letter first, then the parent's pid, ...; None once it is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat.rsplit_once(')')?.1.split_whitespace();
    Some(fields.map(str::to_owned).collect())
}

/// The state letter of process `pid` (`R`, `S`, `Z`, ...), None once it is gone.
fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// Whether process `pid` still runs (a zombie has ended: only its parent's reaping is left).
fn running(pid: u32) -> bool {
    state(pid).is_some_and(|state| state != 'Z')
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).and_then(|fields| fields.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// Waits up to `limit` for `done`; whether it came.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// `rinha-bench <command> <flags>` on the real stack at free ports, its output kept out of
/// the test's; and the lb's port.
fn start(command: &str, flags: &[&str]) -> (Child, u16) {
    let (rinha, lb) = stack_bins();
    let (stack, lb_port) = stack_flags(&rinha, &lb);
    let child = Command::new(env!("CARGO_BIN_EXE_rinha-bench"))
        .arg(command)
        .args(flags)
        .args(stack)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rinha-bench starts");
    (child, lb_port)
}

/// Waits until `run` is under load (`loaded`), sends it SIGTERM, and asserts that it ends
/// within 20 s and that none of its stack's processes (two processors, two backends, the lb)
/// still runs. The stack's processes are killed on the way out either way, so the next test
/// starts clean.
fn stop_under_load(mut run: Child, loaded: impl Fn(u32) -> bool) {
    let pid = run.id();
    let under_load = wait_for(Duration::from_secs(60), || loaded(pid));
    let parts = children_of(pid);
    if !under_load {
        let _ = run.kill();
        let _ = run.wait();
        panic!("the run never came under load (its children: {parts:?})");
    }
    assert!(
        parts.len() >= 5,
        "two processors, two backends and the lb, found {parts:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) reads no memory; `pid` is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let ended = wait_for(Duration::from_secs(20), || {
        run.try_wait().expect("wait").is_some()
    });
    if !ended {
        let _ = run.kill();
        let _ = run.wait();
    }
    let left: Vec<u32> = parts
        .iter()
        .copied()
        .filter(|&part| running(part))
        .collect();
    for &part in &left {
        // SAFETY: as above; the test's own leftovers.
        unsafe { libc::kill(part as i32, libc::SIGKILL) };
    }
    assert!(ended, "the run did not end within 20 s of SIGTERM");
    assert!(
        left.is_empty(),
        "still running after the run ended: {left:?}"
    );
}

#[test]
fn a_capacity_run_stopped_by_sigterm_leaves_no_process_and_no_group() {
    // SAFETY: geteuid(2) reads no memory and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new(CPU_ROOT).join("cgroup.procs").is_file() {
        eprintln!("skipped: needs root and cgroup v1's cpu controller at {CPU_ROOT}");
        return;
    }
    // A ramp that would run for minutes.
    let (run, _) = start(
        "capacity",
        &[
            "--warmup-secs",
            "0",
            "--start-rate",
            "200",
            "--step",
            "100",
            "--hold",
            "60",
            "--tries",
            "1",
        ],
    );
    let leftovers = Leftovers(run.id());
    // The groups appear once the stack is up and under its quotas: the ramp begins.
    stop_under_load(run, |pid| groups_of(pid).len() == 3);
    let groups = groups_of(leftovers.0);
    assert!(groups.is_empty(), "groups left behind: {groups:?}");
}

/// Removes the groups of the capacity run of process `.0` however the test ends, so a failed
/// run does not leave them to the next.
struct Leftovers(u32);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for group in groups_of(self.0) {
            // Empty once its killed processes have exited, moments after.
            wait_for(Duration::from_secs(2), || {
                std::fs::remove_dir(&group).is_ok()
            });
        }
    }
}

#[test]
fn a_soak_stopped_by_sigterm_leaves_no_process() {
    let (run, lb_port) = start(
        "soak",
        &["--duration", "120", "--rate", "200", "--warmup-secs", "0"],
    );
    // The lb is the last part started: once it answers, the load is on its way.
    stop_under_load(run, |_| {
        std::net::TcpStream::connect(("127.0.0.1", lb_port)).is_ok()
    });
}
