//! `rinha-lb`: a layer-4 round-robin load balancer on monoio (io_uring, epoll fallback).
//!
//! Layout:
//! - [`config`]: the one configuration struct (flags and env vars), validated once at start.
//! - [`runtime`]: the process: the driver, the worker threads, the signal thread.
//! - [`server`]: one accept loop per worker runtime and its graceful shutdown.
//! - [`backend`]: the backend set of a worker: round-robin, down marks with backoff.
//! - [`stall`]: a backend that takes bytes and answers none, as the relays report it.
//! - [`relay`]: the copy loops that move bytes both ways without parsing them (the hot path).
//! - [`handoff`]: hand-over mode, the client's socket passed to a backend instead of relayed.
//!
//! Each worker owns its runtime, listener (`SO_REUSEPORT`) and backend set; the only state
//! shared between workers is the open-connection count behind the cap. What the backend
//! runs the same way (driver choice, listeners, cap, signals) lives in `rinha_sys`.

pub mod backend;
pub mod config;
pub mod handoff;
pub mod relay;
pub mod runtime;
pub mod server;
pub mod stall;
