//! The scheduler slice of the calling thread (`SCHED_SLICE_US`), set before the servers start
//! their threads so that every thread inherits it, its nice value, and the CPUs it may run on
//! (the benchmarks' binding of a server apart from its clients).
//!
//! Linux 6.6+ schedules ordinary threads by EEVDF: a thread that wakes runs at once only if
//! its deadline (when it became runnable plus its slice) comes before the running thread's;
//! otherwise it waits for that thread's slice to end. The default slice on a 2-vCPU machine
//! is 1.4 ms, so a server thread woken by a request while a busy client holds both CPUs may
//! wait up to that long. Since 6.12 a thread can ask for a shorter slice (`sched_runtime` of
//! `sched_setattr(2)` under `SCHED_OTHER`, 0.1-100 ms, no privilege needed), and a thread
//! with a shorter slice preempts on wakeup (`PREEMPT_SHORT`). It gets no more CPU than
//! before: its turns are shorter, and come sooner.

use std::io;
use std::time::Duration;

/// The kernel's `struct sched_attr` (`SCHED_ATTR_SIZE_VER1`, 56 bytes), which libc does not
/// export.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Sets the calling thread's slice (kept `SCHED_OTHER`, its nice value unchanged); threads it
/// starts afterwards inherit it. The kernel clamps it to 0.1-100 ms. Kernels before 6.12
/// refuse it (`EINVAL`) or, before 6.6, ignore it: the caller logs and carries on.
pub fn set_slice(slice: Duration) -> io::Result<()> {
    // SAFETY: getpriority(2) reads no memory; -1 is also a valid nice value, so errno is the
    // only error signal, and a failure leaves nice at 0 (the default) below.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr(2) on thread 0 (the caller) reads `attr.size` bytes of a valid,
    // initialized struct of exactly that size; flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's nice value (-20..=19; raising it needs no privilege): a thread
/// at 19 gets the CPU only when the threads at 0 leave it, as if it ran on another machine.
/// Threads it starts afterwards inherit it.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid(2) takes nothing and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority(2) reads no memory; on Linux a thread id names that thread alone.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's nice value.
pub fn current_nice() -> i32 {
    // SAFETY: as in `set_nice`; -1 is also a valid value, so errors are not told apart
    // (there are none for the calling thread).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// The calling thread's slice as the scheduler reports it (`se.slice` in
/// `/proc/thread-self/sched`), when it does.
pub fn current_slice() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("se.slice"))
        .and_then(|rest| rest.trim_start_matches([' ', ':']).trim().parse().ok())
        .map(Duration::from_nanos)
}

/// The CPUs the calling thread may run on, in order.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity(2) on thread 0 (the caller) writes at most `size_of` bytes.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set for an index below its capacity.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Binds the calling thread to `cpus` (none is refused); threads it starts afterwards
/// inherit the binding.
pub fn pin(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no CPU {cpu}"),
            ));
        }
        // SAFETY: `cpu` is below the set's capacity, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: sched_setaffinity(2) on thread 0 (the caller) reads `size_of` bytes of `set`.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_is_the_kernels_first_version() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    /// A nice value set is the thread's own, not its siblings', and its children inherit it.
    #[test]
    fn a_nice_value_is_the_threads_own_and_inherited() {
        let before = current_nice();
        let (own, child) = std::thread::spawn(|| {
            set_nice(7).unwrap();
            (
                current_nice(),
                std::thread::spawn(current_nice).join().unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!((own, child), (7, 7));
        assert_eq!(current_nice(), before);
    }

    /// A binding is the thread's own and its children inherit it; an empty one is refused.
    #[test]
    fn a_binding_is_the_threads_own_and_inherited() {
        let before = affinity().unwrap();
        let first = before[0];
        let (own, child, empty) = std::thread::spawn(move || {
            pin(&[first]).unwrap();
            (
                affinity().unwrap(),
                std::thread::spawn(|| affinity().unwrap()).join().unwrap(),
                pin(&[]).is_err(),
            )
        })
        .join()
        .unwrap();
        assert_eq!((own.clone(), child), (vec![first], vec![first]));
        assert!(empty, "an empty binding was taken");
        assert_eq!(affinity().unwrap(), before);
    }

    /// On a kernel with custom slices (6.12+), the slice asked for is the one reported, and a
    /// thread started afterwards inherits it; elsewhere the call may fail, which callers log.
    #[test]
    fn a_slice_set_is_reported_and_inherited() {
        std::thread::spawn(|| {
            let want = Duration::from_micros(300);
            if set_slice(want).is_err() || current_slice().is_none() {
                return;
            }
            assert_eq!(current_slice(), Some(want));
            let child = std::thread::spawn(current_slice).join().unwrap();
            assert_eq!(child, Some(want));
        })
        .join()
        .unwrap();
    }
}
