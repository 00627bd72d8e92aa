//! The two payment processors as this core sees them: which one ([`Processor`]), how to
//! talk to it ([`client`]), where it is ([`resolve`]) and whether it currently works
//! ([`breaker`]).

pub mod breaker;
pub mod client;
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
