//! `rinha`: the Rinha de Backend 2025 payment intermediary, thread-per-core on monoio.
//!
//! # Layout
//! - [`config`]: the one configuration struct (env vars and flags), validated at start;
//!   [`cgroup`]: the CPUs and memory the container allows, for its defaults.
//! - [`runtime`]: one monoio runtime per core (io_uring or epoll) plus the summary
//!   aggregator's thread.
//! - [`listener`]: where connections are accepted (TCP with SO_REUSEPORT, or a unix socket).
//! - [`conn`]: one connection: read, answer every pipelined request, write; [`origin`]:
//!   where it came from (public, handed over, or a peer: only peers reach `/internal/*`).
//! - [`handoff`]: connections `rinha-lb` hands over (`HANDOFF_LISTEN`), dealt to the cores.
//! - [`http`]: request framing, answers, and the small client for processors and peers.
//! - [`service`]: what each request means; `POST /payments` is the hot path.
//! - [`payment`]: the payment body and exact decimal -> cents.
//! - [`ids`]: the correlation ids each core accepted (idempotent intake).
//! - [`queue`]: the per-core payment queue.
//! - [`core_state`]: everything one core owns ([`core_state::CoreState`]), shared by its
//!   tasks.
//! - [`senders`]: the per-core senders: placing, retries, unknown outcomes, recording.
//! - [`lookup`]: unknown outcomes resolved by lookup; pinned payments set aside with back-off.
//! - [`route`]: the routing policy: which processor costs less, fee against waiting;
//!   [`fees`]: the processors' fees it weighs, read from them or set (`PROCESSOR_FEES`).
//! - [`processor`]: the processors as a core sees them: client and circuit breaker.
//! - [`store`]: the per-core shard of processed payments and the in-flight rule.
//! - [`summary`]: summaries and purges across shards and peers: windows, JSON, the
//!   aggregator thread and the peers; [`replicas`]: which peers there are (listed, or
//!   found through DNS and remembered once seen).
//! - [`metrics`]: per-core counters and the `GET /metrics` listener (`METRICS_LISTEN`).
//! - [`helper`]: helper threads for background work (a compaction's steps, freeing large
//!   maps and spill files), behind the cores and never joined once done.
//! - [`time`]: the timestamps, as text and as microseconds.
//! - [`journal`]: the per-core append-only journal (durability, replay, compaction), and
//!   how a core uses it ([`journal::commit`]: when a record is on file; group commit).
//!
//! A payment's life: [`conn`] reads it, [`service`] validates it and calls
//! [`queue::Queue::accept`] (the intake seam) and answers 202; a sender ([`senders`]) sends it
//! and calls [`store::Shard::record`] (the outcome seam) once a processor holds it.

pub mod cgroup;
pub mod config;
pub mod conn;
pub mod core_state;
pub mod fees;
pub mod handoff;
pub mod helper;
pub mod http;
pub mod ids;
pub mod journal;
pub mod listener;
pub mod lookup;
pub mod metrics;
pub mod origin;
pub mod payment;
pub mod processor;
pub mod queue;
pub mod replicas;
pub mod route;
pub mod runtime;
pub mod senders;
pub mod service;
pub mod store;
pub mod summary;
pub mod time;
