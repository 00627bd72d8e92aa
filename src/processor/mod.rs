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
