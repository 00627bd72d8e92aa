//! Accepting clients: one loop per worker runtime, and its graceful shutdown.
//!
//! Each worker accepts on its own `SO_REUSEPORT` listener (bound on the main thread, so the
//! start log can name the real port), hands every client to a task that connects a backend
//! and relays, and counts it against the cap shared by all workers (`rinha_sys::cap`). In relay
//! mode a timer of the worker's own watches for stalled backends (`stall.rs`). On
//! shutdown the worker closes its listener, waits up to the grace for its open connections,
//! then returns (which drops, and so closes, whatever is still open).

use std::cell::Cell;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use rinha_sys::cap::{self, ConnectionCap};
use rinha_sys::discovery::Watch;

use crate::backend::{BackendSet, BackendStream};
use crate::config::{Config, Mode};
use crate::handoff::hand_over;
use crate::relay::relay;

/// How often a draining worker looks at its open-connection count.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Pause after an accept error such as EMFILE, so a full descriptor table is not a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// One open connection: releases its place under the cap and in the worker's count on drop.
struct Slot {
    _place: cap::Slot,
    worker_open: Rc<Cell<usize>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker_open.set(self.worker_open.get() - 1);
    }
}

/// Runs one worker until `stop` fires (its sender dropped), then drains. `found`: the
/// backends discovered in the background, if any.
pub async fn run_worker(
    index: usize,
    listener: std::net::TcpListener,
    config: Arc<Config>,
    cap: Arc<ConnectionCap>,
    stop: flume::Receiver<()>,
    found: Option<Watch>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let targets = config.targets().map_err(io::Error::other)?;
    let backends = Rc::new(BackendSet::with_discovery(
        &targets,
        found,
        index,
        config.connect_timeout(),
    ));
    let mode = config.lb_mode;
    let worker_open = Rc::new(Cell::new(0usize));
    let buffer_size = config.buffer_size as usize;
    let send = config.relay_send;
    let timeouts = config.relay_timeouts();
    if mode == Mode::Relay {
        let backends = backends.clone();
        let stall = config.stall();
        monoio::spawn(async move { backends.watch_stalls(stall).await });
    }
    let mut stopped = pin!(stop.recv_async());
    loop {
        let accepted = monoio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _peer)) => client,
            Err(error) => {
                tracing::warn!(worker = index, %error, "accept failed");
                monoio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(place) = cap.try_acquire() else {
            drop(client);
            continue;
        };
        worker_open.set(worker_open.get() + 1);
        let slot = Slot {
            _place: place,
            worker_open: worker_open.clone(),
        };
        // Small requests must not wait for Nagle on the way back to the client.
        let _ = client.set_nodelay(true);
        let backends = backends.clone();
        monoio::spawn(async move {
            let _slot = slot;
            if mode == Mode::Handoff {
                let outcome = hand_over(client, &backends).await;
                tracing::trace!(?outcome, "hand-over done");
                return;
            }
            let outcome = match backends.connect().await {
                Some((BackendStream::Unix(backend), exchanges)) => {
                    relay(client, backend, buffer_size, send, timeouts, &exchanges).await
                }
                Some((BackendStream::Tcp(backend), exchanges)) => {
                    relay(client, backend, buffer_size, send, timeouts, &exchanges).await
                }
                None => {
                    tracing::debug!("every backend is down: closing the client");
                    return;
                }
            };
            tracing::trace!(?outcome, "connection done");
        });
    }
    drop(listener);
    drain(index, &worker_open, config.shutdown_grace()).await;
    Ok(())
}

async fn drain(index: usize, worker_open: &Cell<usize>, grace: Duration) {
    let deadline = Instant::now() + grace;
    while worker_open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(DRAIN_POLL).await;
    }
    let left = worker_open.get();
    if left > 0 {
        tracing::warn!(
            worker = index,
            open = left,
            grace_ms = grace.as_millis() as u64,
            "closing connections still open after the shutdown grace"
        );
    }
}
