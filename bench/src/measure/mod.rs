//! What every subcommand measures with and none owns: a process's CPU time and memory
//! ([`process`]), medians, spreads and latency percentiles ([`stats`]), markdown tables
//! ([`table`]) and the frame of a hand-written SVG chart ([`svg`]).

pub mod process;
pub mod stats;
pub mod svg;
pub mod table;
