//! How an io_uring ring runs its completion work (the kernel's "task work"), chosen with
//! `URING_TASKRUN` by both servers.
//!
//! When a socket operation the ring armed becomes ready, the kernel finishes it in the
//! context of the thread that owns the ring. By default it interrupts that thread to do so
//! (a signal-like notification, `get_signal` in a profile); the other two modes let the
//! thread pick the work up at a moment it chooses.

/// The task-work mode of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Taskrun {
    /// Kernel default: task work interrupts the thread.
    Default,
    /// `COOP_TASKRUN | SINGLE_ISSUER` (Linux 5.19): task work waits for the thread's next
    /// entry into the kernel, any system call.
    Coop,
    /// `DEFER_TASKRUN | SINGLE_ISSUER` (Linux 6.1): task work runs only when the thread waits
    /// for completions, batched.
    Defer,
}

impl Taskrun {
    /// Sets the mode's flags on `ring`. A kernel that does not know them refuses the ring
    /// (`EINVAL`): callers retry with [`Taskrun::Default`].
    pub fn apply(self, ring: &mut io_uring::Builder) {
        match self {
            Taskrun::Default => {}
            Taskrun::Coop => {
                ring.setup_coop_taskrun().setup_single_issuer();
            }
            Taskrun::Defer => {
                ring.setup_defer_taskrun().setup_single_issuer();
            }
        }
    }
}
