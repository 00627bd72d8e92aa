//! The few raw system calls the servers of this workspace (`rinha`, `rinha-lb`,
//! `rinha-bench`) share, each behind a safe function:
//! - [`fds`]: the open-files limit and the descriptor table, set up before threads start;
//! - [`send`]: one non-blocking `send(2)`, for answers that should leave before the
//!   runtime's next batch;
//! - [`handoff`]: passing an accepted connection to another process (`SCM_RIGHTS`), the
//!   load balancer's hand-over mode;
//! - [`uring`]: how an io_uring ring runs its completion work (`URING_TASKRUN`);
//! - [`sched`]: the threads' scheduler slice (`SCHED_SLICE_US`).

pub mod fds;
pub mod handoff;
pub mod sched;
pub mod send;
pub mod uring;
