//! What the servers of this workspace (`rinha`, `rinha-lb`, and for [`fds`] `rinha-bench`)
//! share below their own logic: the few raw system calls, each behind a safe function, and
//! the server plumbing both binaries run the same way. Every `unsafe` of the servers is here.
//! - [`fds`]: the open-files limit and the descriptor table, set up before threads start;
//! - [`send`]: one non-blocking `send(2)`, for answers that should leave before the
//!   runtime's next batch;
//! - [`peek`]: whether an idle pooled connection was closed by its server;
//! - [`handoff`]: passing an accepted connection to another process (`SCM_RIGHTS`), the
//!   load balancer's hand-over mode;
//! - [`uring`]: how an io_uring ring runs its completion work (`URING_TASKRUN`);
//! - [`driver`]: which I/O driver runs (`IO_DRIVER`), chosen once, and a runtime of it on a
//!   thread; [`both_drivers!`], the tests of either server under both;
//! - [`listener`]: TCP listeners sharing a port (`SO_REUSEPORT`), one per runtime;
//! - [`discovery`]: replicas found through DNS (`dns:name:port`), resolved off the cores;
//! - [`cap`]: the process-wide connection cap (`MAX_CONNECTIONS`) and its default from memory;
//! - [`cgroup`]: the memory limit the container sets (`MEMORY_LIMIT_MB`, cgroup v2 or v1);
//! - [`signals`]: SIGTERM/SIGINT taken by `sigwait`, for graceful shutdown;
//! - [`sched`]: the threads' scheduler slice (`SCHED_SLICE_US`) and nice value.

pub mod cap;
pub mod cgroup;
pub mod discovery;
pub mod driver;
pub mod fds;
pub mod handoff;
pub mod listener;
pub mod peek;
pub mod sched;
pub mod send;
pub mod signals;
pub mod uring;
