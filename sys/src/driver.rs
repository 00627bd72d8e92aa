//! Which I/O driver a server's runtimes run (`IO_DRIVER`, `URING_TASKRUN`), and running a
//! future on it: both servers choose once on the main thread ([`Driver::choose`]) and every
//! runtime thread then builds the driver the start log named ([`Driver::block_on`]).
//!
//! The choice builds a real io_uring ring: monoio's own probe (`FusionDriver`) is not enough,
//! creating the ring can still fail afterwards (EPERM under seccomp, memlock limits of kernels
//! older than 5.12), and `auto` then falls back to epoll for the whole process.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::uring::Taskrun;

/// The driver asked for (`IO_DRIVER`): the same words for both servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoDriver {
    /// io_uring, failing at start if the kernel refuses it.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
    /// io_uring when the kernel allows it, else epoll (the start log says which).
    Auto,
}

/// The size of each io_uring ring: each server sizes its own (its reasons beside the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSize {
    /// Submission queue entries: the most operations pushed between two `io_uring_enter`
    /// calls before monoio submits early (a full queue is flushed, never an error).
    pub entries: u32,
    /// Completion queue entries; `None`: the kernel's default, twice `entries`.
    pub completions: Option<u32>,
}

/// The driver every runtime of the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring, with the task-work mode the kernel accepted.
    IoUring {
        /// The mode in force (`default` when the one asked for was refused).
        taskrun: Taskrun,
        /// The size of each ring.
        ring: RingSize,
    },
    /// epoll.
    Epoll,
}

impl fmt::Display for Driver {
    /// The name the start logs show: `io_uring` or `epoll`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::IoUring { .. } => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Why no runtime could be started.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// `IO_DRIVER=uring` on a kernel (or sandbox) that refuses io_uring.
    #[error("IO_DRIVER=uring, but io_uring is not available here: {0}")]
    UringUnavailable(io::Error),
    /// A runtime of the chosen driver could not be built on a thread.
    #[error("could not build the {driver} runtime: {source}")]
    Build {
        /// The driver that was to run.
        driver: Driver,
        /// What the kernel said.
        source: io::Error,
    },
}

impl Driver {
    /// Resolves the requested driver to the one that will run, by building (and dropping) a
    /// ring of `ring`'s size. A task-work mode the kernel refuses falls back to the default
    /// one ([`Taskrun::build_or_default`]).
    pub fn choose(
        requested: IoDriver,
        taskrun: Taskrun,
        ring: RingSize,
    ) -> Result<Driver, DriverError> {
        let uring = || {
            let ((), used) =
                taskrun.build_or_default(|mode| uring_runtime(mode, ring).build().map(drop))?;
            if used != taskrun {
                tracing::debug!(?taskrun, "task-work mode refused; using the default");
            }
            Ok::<_, io::Error>(Driver::IoUring {
                taskrun: used,
                ring,
            })
        };
        match requested {
            IoDriver::Epoll => Ok(Driver::Epoll),
            IoDriver::Uring => uring().map_err(DriverError::UringUnavailable),
            IoDriver::Auto if monoio::utils::detect_uring() => Ok(uring().unwrap_or_else(|e| {
                tracing::debug!(error = %e, "io_uring unavailable; using epoll");
                Driver::Epoll
            })),
            IoDriver::Auto => Ok(Driver::Epoll),
        }
    }

    /// Builds a runtime of this driver (timers on) on the calling thread and runs `future`
    /// to the end.
    pub fn block_on<F: Future>(self, future: F) -> Result<F::Output, DriverError> {
        let build_error = |source| DriverError::Build {
            driver: self,
            source,
        };
        match self {
            Driver::IoUring { taskrun, ring } => {
                let mut rt = uring_runtime(taskrun, ring)
                    .enable_timer()
                    .build()
                    .map_err(build_error)?;
                Ok(rt.block_on(future))
            }
            Driver::Epoll => {
                let mut rt = RuntimeBuilder::<LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .map_err(build_error)?;
                Ok(rt.block_on(future))
            }
        }
    }
}

/// The io_uring runtime builder for `taskrun` and `ring`.
fn uring_runtime(taskrun: Taskrun, ring: RingSize) -> RuntimeBuilder<IoUringDriver> {
    let mut builder = io_uring::IoUring::builder();
    if let Some(completions) = ring.completions {
        builder.setup_cqsize(completions);
    }
    taskrun.apply(&mut builder);
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(ring.entries)
        .uring_builder(builder)
}

/// Runs a test scenario, `fn name(driver: &str)`, once per I/O driver: for each name, the
/// tests `name::uring` and `name::epoll` (`driver` is the `IO_DRIVER` value, `"uring"` or
/// `"epoll"`). Used by the integration tests of both servers.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$name("uring");
                }
                #[test]
                fn epoll() {
                    super::$name("epoll");
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: RingSize = RingSize {
        entries: 256,
        completions: Some(1024),
    };

    #[test]
    fn epoll_is_always_available() {
        assert_eq!(
            Driver::choose(IoDriver::Epoll, Taskrun::Defer, RING).unwrap(),
            Driver::Epoll
        );
        let ran = Driver::Epoll
            .block_on(async { monoio::utils::is_legacy() })
            .unwrap();
        assert!(ran, "the epoll runtime must run monoio's legacy driver");
    }

    #[test]
    fn auto_names_the_driver_that_runs() {
        let driver = Driver::choose(IoDriver::Auto, Taskrun::Defer, RING).unwrap();
        let legacy = driver
            .block_on(async { monoio::utils::is_legacy() })
            .unwrap();
        assert_eq!(legacy, driver == Driver::Epoll);
    }

    /// Every driver and task-work mode runs io on the driver it names: `epoll` always the
    /// legacy one, `uring` never, `auto` io_uring wherever the kernel has it.
    #[test]
    fn every_driver_and_taskrun_mode_runs_io() {
        let uring_here = monoio::utils::detect_uring();
        for taskrun in [Taskrun::Default, Taskrun::Coop, Taskrun::Defer] {
            for requested in [IoDriver::Epoll, IoDriver::Auto, IoDriver::Uring] {
                if requested == IoDriver::Uring && !uring_here {
                    continue;
                }
                let driver = Driver::choose(requested, taskrun, RING).unwrap();
                let (legacy, echoed) = driver
                    .block_on(async {
                        use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
                        let (mut a, mut b) = monoio::net::UnixStream::pair().unwrap();
                        let (written, _) = a.write_all(b"ping".to_vec()).await;
                        written.unwrap();
                        let (read, buf) = b.read(Vec::with_capacity(8)).await;
                        read.unwrap();
                        (monoio::utils::is_legacy(), buf)
                    })
                    .unwrap();
                assert_eq!(echoed, b"ping", "{requested:?} {taskrun:?}");
                let expect_legacy = requested == IoDriver::Epoll || !uring_here;
                assert_eq!(legacy, expect_legacy, "{requested:?} {taskrun:?}");
            }
        }
    }
}
