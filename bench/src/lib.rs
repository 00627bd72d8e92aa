//! The instrument every claim of this project is measured with.
//!
//! Layout:
//! - [`processor`]: a faithful emulator of the contest's payment processor (tokio + hyper).
//! - [`rinha`]: the contest's k6 load test rebuilt, with the score exactly as the contest computes it.
//! - [`floor`]: the latency the instrument itself adds.
//! - [`stack`]: starts and stops the local stack (processors, backends, load balancer).
//! - [`lbs`]: rinha-lb against HAProxy and nginx.
//! - [`load`]: the HTTP load generator (closed and open loop, HDR histograms).
//! - [`drivers`]: io_uring against epoll on the same stack.
//! - [`soak`]: a long run at twice the contest's peak: leaks, lost payments.
//!
//! It shares no code path with the monoio server it measures.

pub mod drivers;
pub mod floor;
pub mod lbs;
pub mod load;
pub mod logging;
pub mod processor;
pub mod rinha;
pub mod soak;
pub mod stack;
