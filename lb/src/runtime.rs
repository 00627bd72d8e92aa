//! Which I/O driver runs, and the process-wide setup the workers need.
//!
//! io_uring is probed once on the main thread by building a real ring (the probe monoio's
//! `FusionDriver` does is not enough: creating the ring can still fail afterwards, e.g. on
//! memlock limits of kernels < 5.12), so every worker then builds the driver the start log named.

use std::fmt;
use std::future::Future;
use std::io;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use rinha_sys::uring::Taskrun;

use crate::config::IoDriver;

/// io_uring submission queue entries per worker. Each open connection has at most two
/// operations in flight (one read per direction); the kernel queues completions past this.
const RING_ENTRIES: u32 = 1024;

/// The driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring, with the task-work mode the kernel accepted.
    IoUring(Taskrun),
    Epoll,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::IoUring(_) => "io_uring",
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

/// Resolves the requested driver to the one that will run. A task-work mode the kernel
/// refuses falls back to the default one ([`Taskrun::build_or_default`]).
pub fn choose(requested: IoDriver, taskrun: Taskrun) -> Result<Driver, RuntimeError> {
    let uring = || {
        taskrun
            .build_or_default(probe_uring)
            .map(|((), used)| Driver::IoUring(used))
    };
    match requested {
        IoDriver::Epoll => Ok(Driver::Epoll),
        IoDriver::Uring => uring().map_err(RuntimeError::UringUnavailable),
        IoDriver::Auto if monoio::utils::detect_uring() => Ok(uring().unwrap_or(Driver::Epoll)),
        IoDriver::Auto => Ok(Driver::Epoll),
    }
}

fn probe_uring(taskrun: Taskrun) -> io::Result<()> {
    uring_runtime(taskrun).build().map(drop)
}

/// The io_uring runtime builder for `taskrun`.
///
/// Why `defer` is the default: in the default mode `perf` put ~4 % of the lb's samples in
/// `get_signal`, the kernel interrupting the thread to run completion work; `defer` runs that
/// work inside the wait the worker makes anyway, with no interruption. In interleaved
/// `rinha-bench lbs` runs the three modes measured within noise of each other (4.4-4.6
/// CPU-s per 100k requests, docs/benchmarks.md), so the choice rests on the mechanism.
fn uring_runtime(taskrun: Taskrun) -> RuntimeBuilder<IoUringDriver> {
    let mut ring = io_uring::IoUring::builder();
    taskrun.apply(&mut ring);
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(ring)
}

/// Builds a runtime with `driver` (timers on) on the calling thread and runs `future` to the end.
pub fn block_on<F: Future>(driver: Driver, future: F) -> Result<F::Output, RuntimeError> {
    let build_error = |source| RuntimeError::Build { driver, source };
    match driver {
        Driver::IoUring(taskrun) => {
            let mut rt = uring_runtime(taskrun)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_is_always_available() {
        assert_eq!(
            choose(IoDriver::Epoll, Taskrun::Defer).unwrap(),
            Driver::Epoll
        );
        let ran = block_on(Driver::Epoll, async { monoio::utils::is_legacy() }).unwrap();
        assert!(ran, "the epoll runtime must run monoio's legacy driver");
    }

    #[test]
    fn auto_names_the_driver_that_runs() {
        let driver = choose(IoDriver::Auto, Taskrun::Defer).unwrap();
        let legacy = block_on(driver, async { monoio::utils::is_legacy() }).unwrap();
        assert_eq!(legacy, driver == Driver::Epoll);
    }
}

#[cfg(test)]
mod uring_tests {
    use super::*;

    #[test]
    fn every_taskrun_mode_runs_io() {
        if !monoio::utils::detect_uring() {
            return; // nothing to check on a kernel without io_uring
        }
        for taskrun in [Taskrun::Default, Taskrun::Coop, Taskrun::Defer] {
            let Ok(driver) = choose(IoDriver::Uring, taskrun) else {
                continue;
            };
            let echoed = block_on(driver, async {
                use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
                let (mut a, mut b) = monoio::net::UnixStream::pair().unwrap();
                let (written, _) = a.write_all(b"ping".to_vec()).await;
                written.unwrap();
                let (read, buf) = b.read(Vec::with_capacity(8)).await;
                (read.unwrap(), buf)
            })
            .unwrap();
            assert_eq!(echoed, (4, b"ping".to_vec()), "{driver:?}");
        }
    }
}
