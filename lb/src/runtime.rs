//! Which I/O driver runs, and the process-wide setup the workers need.
//!
//! io_uring is probed once on the main thread by building a real ring (the probe monoio's
//! `FusionDriver` does is not enough: creating the ring can still fail afterwards, e.g. on
//! memlock limits of kernels < 5.12), so every worker then builds the driver the start log named.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::IoDriver;

/// io_uring submission queue entries per worker. Each open connection has at most two
/// operations in flight (one read per direction); the kernel queues completions past this.
const RING_ENTRIES: u32 = 1024;

/// The driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Why no runtime could be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("IO_DRIVER=uring, but io_uring is not available here: {0}")]
    UringUnavailable(io::Error),
    #[error("could not build the {driver} runtime: {source}")]
    Build { driver: Driver, source: io::Error },
}

/// Resolves the requested driver to the one that will run.
pub fn choose(requested: IoDriver) -> Result<Driver, RuntimeError> {
    match requested {
        IoDriver::Epoll => Ok(Driver::Epoll),
        IoDriver::Uring => probe_uring()
            .map(|()| Driver::IoUring)
            .map_err(RuntimeError::UringUnavailable),
        IoDriver::Auto => {
            if monoio::utils::detect_uring() && probe_uring().is_ok() {
                Ok(Driver::IoUring)
            } else {
                Ok(Driver::Epoll)
            }
        }
    }
}

fn probe_uring() -> io::Result<()> {
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .build()
        .map(drop)
}

/// Builds a runtime with `driver` (timers on) on the calling thread and runs `future` to the end.
pub fn block_on<F: Future>(driver: Driver, future: F) -> Result<F::Output, RuntimeError> {
    let build_error = |source| RuntimeError::Build { driver, source };
    match driver {
        Driver::IoUring => {
            let mut rt = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
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

/// Raises the soft open-files limit to the hard one (every connection holds two descriptors)
/// and returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_is_always_available() {
        assert_eq!(choose(IoDriver::Epoll).unwrap(), Driver::Epoll);
        let ran = block_on(Driver::Epoll, async { monoio::utils::is_legacy() }).unwrap();
        assert!(ran, "the epoll runtime must run monoio's legacy driver");
    }

    #[test]
    fn auto_names_the_driver_that_runs() {
        let driver = choose(IoDriver::Auto).unwrap();
        let legacy = block_on(driver, async { monoio::utils::is_legacy() }).unwrap();
        assert_eq!(legacy, driver == Driver::Epoll);
    }
}
