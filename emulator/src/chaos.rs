//! Fault injection for fault tests of the backend: lost responses (the payment is stored,
//! the answer never arrives) and reset connections (nothing processed, nothing answered),
//! set at start ([`Chaos`]); and faults switched on and off while it runs ([`Switches`]):
//! another status answered to every payment, `100 Continue` before the real answer, idle
//! keep-alive connections closed as real servers do.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

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

/// Faults a test switches on and off while the processor runs (through [`crate::Running`]
/// or `PUT /admin/configurations/answer`).
#[derive(Debug, Default)]
pub struct Switches {
    /// The status every `POST /payments` gets at once, nothing stored (0: off): a wrong
    /// URL's 404, a proxy's 401/403, a 408, a 3XX.
    answer: AtomicU16,
    /// Whether `POST /payments` writes `100 Continue` on arrival, before its real answer.
    continue_first: AtomicBool,
    /// Connections accepted from now on are closed once idle this long, ms (0: never).
    close_idle_ms: AtomicU64,
    /// Whether those answers say so (`Keep-Alive: timeout=<s>`).
    advertise_idle: AtomicBool,
}

impl Switches {
    /// Sets the status forced on `POST /payments` (`None`: process payments); returns the
    /// previous one.
    pub fn set_answer(&self, status: Option<u16>) -> Option<u16> {
        let was = self.answer.swap(status.unwrap_or(0), Ordering::AcqRel);
        (was != 0).then_some(was)
    }

    pub fn answer(&self) -> Option<u16> {
        let status = self.answer.load(Ordering::Acquire);
        (status != 0).then_some(status)
    }

    pub fn set_continue_first(&self, on: bool) {
        self.continue_first.store(on, Ordering::Release);
    }

    pub fn continue_first(&self) -> bool {
        self.continue_first.load(Ordering::Acquire)
    }

    /// Closes connections accepted from now on after `idle` without a request (`None`:
    /// never), saying so in a `Keep-Alive: timeout=` header when `advertise`.
    pub fn set_close_idle(&self, idle: Option<Duration>, advertise: bool) {
        let ms = idle.map_or(0, |d| d.as_millis().max(1) as u64);
        self.close_idle_ms.store(ms, Ordering::Release);
        self.advertise_idle.store(advertise, Ordering::Release);
    }

    /// How long an idle connection accepted now lives, and whether its answers say so.
    pub fn close_idle(&self) -> Option<(Duration, bool)> {
        let ms = self.close_idle_ms.load(Ordering::Acquire);
        (ms > 0).then(|| {
            (
                Duration::from_millis(ms),
                self.advertise_idle.load(Ordering::Acquire),
            )
        })
    }
}

/// The interim answer [`Switches::continue_first`] writes.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes `bytes` straight to `socket` (a duplicate of a connection's descriptor) while hyper
/// waits for the handler: the caller sends one request at a time, so nothing of hyper's is
/// queued before them.
pub fn write_raw(socket: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: `socket` is an open descriptor for the duration of the call, and `bytes` is a
    // live slice of the given length.
    let n = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else if (n as usize) < bytes.len() {
        Err(std::io::Error::other("interim answer written in part"))
    } else {
        Ok(())
    }
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
