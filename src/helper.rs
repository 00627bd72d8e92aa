//! Helper threads: background work (a compaction's steps, freeing what takes long to free)
//! that must never hold a core.
//!
//! A finished helper may still be exiting (its C library frees its arena and stack, and on a
//! busy machine it waits for a CPU to do so): `pthread_join` then held the core 1-4 ms in
//! one wait, measured by tests/long_life.rs. The result is handed over in a slot the helper
//! lets go of last; the thread is left to exit alone, and joined only when the core must wait
//! for a helper that is not done. A helper runs at nice 19 (`HELPER_NICE`): on two CPUs it
//! preempted a core 1-3 ms at a time at the cores' own priority; now a core that wakes
//! takes the CPU from it.
//!
//! [`off_core`] frees on a helper: a large map gives its pages back to the system at ~0.6 µs
//! a page (a 6 MB map: ~1 ms), and the last descriptor of an unlinked file frees its blocks.

use std::io;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// The helpers' nice value: the lowest priority, background work behind every core.
pub const HELPER_NICE: i32 = 19;

/// A helper thread and the slot its result arrives in.
#[derive(Debug)]
pub struct Helper<T> {
    thread: JoinHandle<()>,
    slot: Arc<OnceLock<T>>,
}

impl<T: Send + Sync + 'static> Helper<T> {
    /// Runs `work` on a thread named `name`.
    pub fn spawn(name: &str, work: impl FnOnce() -> T + Send + 'static) -> io::Result<Helper<T>> {
        let slot = Arc::new(OnceLock::new());
        let theirs = slot.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                behind_the_cores();
                // Everything `work` held is dropped before the slot is let go of: a finished
                // helper holds nothing of its caller's (an old file, a temp file's handle).
                let _ = theirs.set(work());
                drop(theirs);
            })?;
        Ok(Helper { thread, slot })
    }

    /// Whether the work is done (or panicked): taking the result will not wait.
    pub fn is_finished(&self) -> bool {
        Arc::strong_count(&self.slot) == 1
    }

    /// The work's result, waiting for it if it is not done; `None` if it panicked.
    pub fn take(self) -> Option<T> {
        if !self.is_finished() {
            // Not done: waiting is what the caller asked for, and joining is how.
            let _ = self.thread.join();
        }
        // Done: the thread is left to exit by itself (dropping its handle detaches it).
        Arc::try_unwrap(self.slot).ok()?.into_inner()
    }
}

/// Drops `value` on a helper thread (on the calling one if no thread can start).
pub fn off_core<T: Send + 'static>(value: T) {
    if let Err(error) = Helper::spawn("rinha-free", move || drop(value)) {
        // The work, and `value` with it, was dropped here.
        tracing::debug!(%error, "no helper thread to free on; freed on the core");
    }
}

/// Lowers the calling helper thread to [`HELPER_NICE`], then yields: a new thread starts at
/// its spawner's priority, and a core that spawned it would otherwise wait for the next tick
/// (up to 4 ms) to run again.
fn behind_the_cores() {
    if let Err(error) = rinha_sys::sched::set_nice(HELPER_NICE) {
        tracing::debug!(%error, "a helper thread keeps the cores' priority");
    }
    std::thread::yield_now();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_result_is_taken_once_done_or_waited_for() {
        let h = Helper::spawn("t-done", || 7).unwrap();
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(h.take(), Some(7));

        let (go, wait) = mpsc::channel::<()>();
        let h = Helper::spawn("t-wait", move || {
            wait.recv().unwrap();
            8
        })
        .unwrap();
        assert!(!h.is_finished());
        go.send(()).unwrap();
        assert_eq!(h.take(), Some(8));
    }

    /// Finished means its result is in: taking it does not wait for the thread to exit. The
    /// thread here cannot exit (a thread-local's destructor blocks until the test lets it),
    /// so a `take` that joined would hang.
    #[test]
    fn a_finished_helper_is_not_joined() {
        struct Blocks(Option<mpsc::Receiver<()>>);
        impl Drop for Blocks {
            fn drop(&mut self) {
                if let Some(rx) = self.0.take() {
                    let _ = rx.recv();
                }
            }
        }
        thread_local!(static AT_EXIT: std::cell::RefCell<Blocks> = const {
            std::cell::RefCell::new(Blocks(None))
        });
        let (release, held) = mpsc::channel::<()>();
        let h = Helper::spawn("t-exit", move || {
            AT_EXIT.with(|b| b.borrow_mut().0 = Some(held));
            9
        })
        .unwrap();
        let (done, got) = mpsc::channel();
        std::thread::spawn(move || {
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = done.send(h.take());
        });
        let taken = got.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        assert_eq!(taken, Ok(Some(9)), "taken without the thread's exit");
    }

    #[test]
    fn a_helper_runs_behind_the_cores() {
        let h = Helper::spawn("t-nice", rinha_sys::sched::current_nice).unwrap();
        assert_eq!(h.take(), Some(HELPER_NICE));
    }

    #[test]
    fn a_panicked_helper_gives_none() {
        let h = Helper::spawn("t-panic", || -> u8 { panic!("helper fails") }).unwrap();
        assert_eq!(h.take(), None);
    }
}
