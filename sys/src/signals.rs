//! Graceful shutdown on SIGTERM/SIGINT. The signals are blocked in every thread (the mask
//! is set before any thread starts and inherited) and taken synchronously by one thread with
//! `sigwait`, which then tells the runtimes to stop accepting and drain. No signal handler
//! runs, so nothing async-signal-unsafe can happen.

use std::io;

/// The blocked signal set; [`Signals::wait`] returns the first one delivered.
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in this thread (and every thread it starts afterwards): call
    /// it before any thread exists.
    pub fn block() -> Self {
        let set = shutdown_set();
        // SAFETY: `set` is initialised and outlives the call; the old mask is not asked for.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        // The only error is EINVAL, for a `how` other than SIG_BLOCK/UNBLOCK/SETMASK.
        debug_assert_eq!(rc, 0, "pthread_sigmask");
        Signals { set }
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: `self.set` was initialised by `block`; `signal` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
            if rc == 0 {
                return if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}

/// Sends `signal` to the process `pid` (`kill(2)`): how tests stop the servers they started.
pub fn send(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn shutdown_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before sigaddset reads
    // it, and every pointer is to the local, which outlives the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}
