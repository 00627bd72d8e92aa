//! The two payment processors as this core sees them: which one ([`Processor`]), how to
//! talk to it ([`client`], its idle connections [`pool`]), where it is ([`resolve`]), whether it
//! currently works ([`breaker`]) and the answers that prove nothing ([`refusals`]).

pub mod breaker;
pub mod client;
pub mod pool;
pub mod refusals;
pub mod resolve;

/// One of the two processors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Processor {
    Default,
    Fallback,
}

impl Processor {
    /// 0 for default, 1 for fallback (index of per-processor arrays).
    pub fn index(self) -> usize {
        match self {
            Processor::Default => 0,
            Processor::Fallback => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Processor::Default => "default",
            Processor::Fallback => "fallback",
        }
    }
}

/// Test support: the driver named by `both_drivers!` (`uring`, `epoll`), with a small ring.
#[cfg(test)]
pub(crate) fn test_driver(name: &str) -> rinha_sys::driver::Driver {
    use clap::ValueEnum;
    use rinha_sys::driver::{Driver, IoDriver, RingSize};
    Driver::choose(
        IoDriver::from_str(name, true).expect("a driver name"),
        rinha_sys::uring::Taskrun::Defer,
        RingSize {
            entries: 64,
            completions: None,
        },
    )
    .expect("driver")
}
