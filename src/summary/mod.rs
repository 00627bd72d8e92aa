//! `GET /payments-summary` and the purge, across shards and instances: what a summary asks
//! and answers ([`window`]), its JSON ([`codec`]), the aggregator thread that fans it out to
//! the shards and the peers and adds their answers up ([`aggregator`]), how fast it lets
//! public ones through ([`pace`]), and the peers themselves ([`peers`]).

pub mod aggregator;
pub mod codec;
pub mod pace;
pub mod peers;
pub mod window;

pub use aggregator::{Aggregator, AggregatorHandle, ShardCmd, ShardHost, SummaryError};
pub use window::{parse_window, AsOf, Totals, Window};
