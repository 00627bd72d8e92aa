//! Fault injection for fault tests of the backend: lost responses (the payment is stored,
//! the answer never arrives) and reset connections (nothing processed, nothing answered).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which faults to inject; `0` turns a fault off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chaos {
    /// After storing every Nth payment, close the connection instead of answering (a lost
    /// response: the payment *is* stored). Counts stored payments only.
    pub drop_every: u64,
    /// Reset (TCP RST, `SO_LINGER` 0) the connection of every Nth `POST /payments` before
    /// reading its body: nothing is processed or stored.
    pub reset_every: u64,
}

impl Chaos {
    /// No fault at all.
    pub fn none() -> Chaos {
        Chaos::default()
    }
}

/// What to do with one request, decided by the counters.
#[derive(Debug, Default)]
pub struct ChaosCounters {
    chaos: Chaos,
    posts: AtomicU64,
    stored: AtomicU64,
}

impl ChaosCounters {
    pub fn new(chaos: Chaos) -> ChaosCounters {
        ChaosCounters {
            chaos,
            ..ChaosCounters::default()
        }
    }

    /// Whether connections must keep a handle that can reset them.
    pub fn resets(&self) -> bool {
        self.chaos.reset_every > 0
    }

    /// Called for every `POST /payments` on arrival: whether to reset its connection.
    pub fn reset_this_post(&self) -> bool {
        every_nth(self.chaos.reset_every, &self.posts)
    }

    /// Called after every insert: whether to drop the connection instead of answering.
    pub fn drop_after_store(&self) -> bool {
        every_nth(self.chaos.drop_every, &self.stored)
    }
}

fn every_nth(n: u64, counter: &AtomicU64) -> bool {
    n > 0 && (counter.fetch_add(1, Ordering::AcqRel) + 1) % n == 0
}

/// Sets `SO_LINGER` to zero on `socket` (a duplicate of the connection's descriptor), so the
/// close that follows sends RST instead of FIN.
pub fn arm_reset(socket: &OwnedFd) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `socket` is an open descriptor owned for the duration of the call, and the
    // option value is a properly sized `linger` that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_nth() {
        let counters = ChaosCounters::new(Chaos {
            drop_every: 3,
            reset_every: 0,
        });
        let drops: Vec<bool> = (0..6).map(|_| counters.drop_after_store()).collect();
        assert_eq!(drops, [false, false, true, false, false, true]);
        assert!(!counters.reset_this_post());
        assert!(!counters.resets());
    }
}
