//! The process's open-files limit and descriptor table, set up at start by every server of
//! this workspace (`rinha`, `rinha-lb`, `rinha-bench`) while it still has one thread.
//!
//! Why the table is grown ahead: the kernel starts a process with room for 64 descriptors
//! and doubles the table whenever a new descriptor does not fit. In a process with more than
//! one thread, each doubling waits for an RCU grace period (`expand_fdtable` calls
//! `synchronize_rcu` when the table is shared), and every thread that opens a descriptor
//! meanwhile (accept, connect, socket) waits with it: milliseconds per doubling with two
//! threads, microseconds with one. In the contest's ramp the load balancer crosses 256, 512
//! and 1,024 descriptors at the 128th, 256th and 512th user (two descriptors per
//! connection), and each crossing stalled POST /payments (figures: docs/benchmarks.md,
//! "Findings that shaped the design", descriptor-table stalls). Grown once before the
//! threads exist, the table never has to grow again (it never shrinks).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// Raises the soft open-files limit to the hard one and returns the soft limit now in force.
pub fn raise_limit() -> io::Result<u64> {
    let limit = nofile()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(limit.rlim_cur)
}

/// What every server does at start, while it has one thread: raises the open-files limit
/// and grows the descriptor table to `fds` descriptors (capped by the limit). Returns the
/// limit now in force, for the caller to compare with what it needs.
pub fn prepare(fds: u64) -> io::Result<u64> {
    let limit = raise_limit()?;
    reserve(fds.min(limit))?;
    Ok(limit)
}

/// The size of process `pid`'s descriptor table, as the kernel reports it (`FDSize` in
/// /proc/PID/status).
pub fn table_size(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no FDSize in /proc/PID/status"))
}

/// Grows the descriptor table so that descriptors below `fds` (capped by the soft limit)
/// never make it grow again; returns the count reserved. Call it before starting threads:
/// with one thread the growth is immediate.
///
/// The table is grown the only way the kernel offers: a descriptor is duplicated to the
/// highest number wanted and closed again; the table keeps its size.
pub fn reserve(fds: u64) -> io::Result<u64> {
    let limit = nofile()?.rlim_cur;
    let wanted = fds.min(limit).min(libc::c_int::MAX as u64);
    if wanted == 0 {
        return Ok(0);
    }
    let base = UnixDatagram::unbound()?;
    let highest = (wanted - 1) as libc::c_int;
    // SAFETY: `base` is an open descriptor; F_DUPFD_CLOEXEC only reads its arguments and
    // returns a new descriptor (>= `highest`) that we own, or -1.
    let dup = unsafe { libc::fcntl(base.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` was just returned by fcntl and nothing else owns it; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(dup) });
    Ok(wanted)
}

fn nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_size() -> u64 {
        super::table_size(std::process::id()).unwrap()
    }

    #[test]
    fn reserve_grows_the_table_and_keeps_it() {
        raise_limit().unwrap();
        let limit = nofile().unwrap().rlim_cur;
        let want = 4096.min(limit);
        let before = table_size();
        assert_eq!(reserve(want).unwrap(), want);
        let after = table_size();
        assert!(
            after >= want,
            "FDSize {after} after reserving {want} (was {before})"
        );
        // Nothing stays open: the next descriptor is a low one.
        let probe = UnixDatagram::unbound().unwrap();
        assert!((probe.as_raw_fd() as u64) < want);
    }

    #[test]
    fn reserve_is_capped_by_the_limit() {
        let limit = nofile().unwrap().rlim_cur;
        assert_eq!(
            reserve(u64::MAX).unwrap(),
            limit.min(libc::c_int::MAX as u64)
        );
        assert_eq!(reserve(0).unwrap(), 0);
    }

    #[test]
    fn raise_limit_reaches_the_hard_limit() {
        let soft = raise_limit().unwrap();
        assert_eq!(soft, nofile().unwrap().rlim_max);
    }
}
