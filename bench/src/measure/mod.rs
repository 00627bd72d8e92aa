//! What every subcommand measures with and none owns: a process's CPU time and memory
//! ([`process`]), medians, spreads and latency percentiles ([`stats`]), markdown tables
//! ([`table`]), the frame of a hand-written SVG chart ([`svg`]) and a process's threads' CPU
//! and wake-ups by role ([`threads`]).

pub mod process;
pub mod stats;
pub mod svg;
pub mod table;
pub mod threads;
