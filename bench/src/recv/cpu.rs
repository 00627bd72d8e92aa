//! CPU clocks: the scheduler's own runtime count for this thread or this process, to the
//! nanosecond (unlike `getrusage`, whose user/system split is sampled at ticks).

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid pointer; both clocks exist on
    // every Linux this runs on, so it cannot fail.
    let rc = unsafe { libc::clock_gettime(id, &mut now) };
    assert_eq!(rc, 0, "clock_gettime({id})");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time every thread of this process has used.
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}
