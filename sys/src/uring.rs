//! How an io_uring ring runs its completion work (the kernel's "task work"), chosen with
//! `URING_TASKRUN` by both servers.
//!
//! When a socket operation the ring armed becomes ready, the kernel finishes it in the
//! context of the thread that owns the ring. By default it interrupts that thread to do so
//! (a signal-like notification, `get_signal` in a profile); the other two modes let the
//! thread pick the work up at a moment it chooses.

use std::io;

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
    /// (`EINVAL`): build through [`Taskrun::build_or_default`] to fall back.
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

    /// Builds a ring (`build` sets the mode's flags with [`Taskrun::apply`]) in this mode or,
    /// when the kernel refuses it (older than 5.19 for `coop`, 6.1 for `defer`), in the
    /// default mode; returns what was built and the mode it runs in.
    pub fn build_or_default<T>(
        self,
        build: impl Fn(Taskrun) -> io::Result<T>,
    ) -> io::Result<(T, Taskrun)> {
        match build(self) {
            Ok(built) => Ok((built, self)),
            Err(_) if self != Taskrun::Default => {
                build(Taskrun::Default).map(|built| (built, Taskrun::Default))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusing(refused: Taskrun) -> impl Fn(Taskrun) -> io::Result<Taskrun> {
        move |mode| {
            if mode == refused {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(mode)
            }
        }
    }

    #[test]
    fn a_refused_mode_falls_back_to_the_default_one() {
        let built = Taskrun::Defer
            .build_or_default(refusing(Taskrun::Defer))
            .unwrap();
        assert_eq!(built, (Taskrun::Default, Taskrun::Default));
        let built = Taskrun::Coop
            .build_or_default(refusing(Taskrun::Defer))
            .unwrap();
        assert_eq!(built, (Taskrun::Coop, Taskrun::Coop));
    }

    #[test]
    fn a_refused_default_mode_is_the_error() {
        let err = Taskrun::Default
            .build_or_default(refusing(Taskrun::Default))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
