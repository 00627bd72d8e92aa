//! `--freeze-instance SECS`: one backend of the local stack frozen (`SIGSTOP`) for a while
//! mid-run, then resumed (`SIGCONT`): a peer that stops answering without closing anything,
//! as a paused VM or a host cut off looks to the others. Nothing accepted may be lost, and
//! every summary meanwhile must be exact or fail loudly.

use std::time::Duration;

/// Sends `SIGCONT` when dropped: an interrupted run never leaves a backend stopped.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child of this process (the stack's), not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits `at`, stops `pid` for `secs`, resumes it; returns the note the report prints.
pub async fn freeze(name: String, pid: u32, at: Duration, secs: Duration) -> String {
    tokio::time::sleep(at).await;
    signal(pid, libc::SIGSTOP);
    let frozen = Frozen(pid);
    tokio::time::sleep(secs).await;
    drop(frozen);
    format!(
        "{name} (pid {pid}) frozen (SIGSTOP) at {:.1} s for {:.1} s, then resumed (SIGCONT)",
        at.as_secs_f64(),
        secs.as_secs_f64()
    )
}

/// When the freeze starts: `at`, else centred in a run of `duration`.
pub fn start(at: Option<f64>, secs: u64, duration: Duration) -> Duration {
    match at {
        Some(at) => Duration::from_secs_f64(at.max(0.0)),
        None => duration.saturating_sub(Duration::from_secs(secs)) / 2,
    }
}
