//! Graceful shutdown on SIGTERM/SIGINT. The signals are blocked in every thread (the mask
//! is set before any thread starts and inherited) and taken synchronously by the main
//! thread with `sigwait`, which then tells each core to stop accepting and drain. No signal
//! handler runs, so nothing async-signal-unsafe can happen.

/// The blocked signal set; [`Signals::wait`] returns the first one delivered.
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in this thread (and every thread it starts afterwards).
    pub fn block() -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it fully before
        // pthread_sigmask reads it, and all pointers are to locals that outlive the calls.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> &'static str {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` was initialised by `block`; `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}
