//! Accepting clients: one loop per worker runtime, the connection cap, and graceful shutdown.
//!
//! Each worker accepts on its own `SO_REUSEPORT` listener (bound on the main thread, so the
//! start log can name the real port), hands every client to a task that connects a backend
//! and relays, and counts it against the cap shared by all workers. On shutdown the worker
//! closes its listener, waits up to the grace for its open connections, then returns (which
//! drops, and so closes, whatever is still open).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::backend::{BackendSet, BackendStream};
use crate::config::{Config, Mode};
use crate::handoff::hand_over;
use crate::relay::relay;

/// How often a draining worker looks at its open-connection count.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Pause after an accept error such as EMFILE, so a full descriptor table is not a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Binds the listening sockets: one per worker, all on the same port with `SO_REUSEPORT`
/// (the first one fixes the port when `listen` asks for port 0). Returns them and the address.
pub fn bind_listeners(
    listen: SocketAddr,
    workers: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = listen;
    for _ in 0..workers {
        let listener = bind_one(addr)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok((listeners, addr))
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the listener closes it on drop.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for `fd`'s family.
    if unsafe { libc::bind(fd, (&raw const storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a bound stream socket.
    if unsafe { libc::listen(fd, 4096) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

fn set_flag(fd: i32, level: i32, name: i32) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The open-connection count of all workers, behind `MAX_CONNECTIONS`.
#[derive(Debug)]
pub struct ConnectionCap {
    open: AtomicUsize,
    max: usize,
    /// Set while the cap is reached and logged, so the log says it once per episode.
    saturated: AtomicBool,
}

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            open: AtomicUsize::new(0),
            max,
            saturated: AtomicBool::new(false),
        }
    }

    /// Counts one more connection, or says no when the cap is reached.
    fn try_acquire(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before < self.max {
            return true;
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        if !self.saturated.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                max_connections = self.max,
                "connection cap reached: new clients are closed at once until open ones finish (raise MAX_CONNECTIONS?)"
            );
        }
        false
    }

    fn release(&self) {
        let now_open = self.open.fetch_sub(1, Ordering::AcqRel) - 1;
        // Hysteresis: say "accepting again" only once well below the cap, not at every release.
        if now_open < self.max - self.max / 10 && self.saturated.swap(false, Ordering::AcqRel) {
            tracing::info!(open = now_open, "below the connection cap again");
        }
    }

    /// Connections open now (all workers).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection: releases its place under the cap and in the worker's count on drop.
struct Slot {
    cap: Arc<ConnectionCap>,
    worker_open: Rc<Cell<usize>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.cap.release();
        self.worker_open.set(self.worker_open.get() - 1);
    }
}

/// Runs one worker until `stop` fires (its sender dropped), then drains.
pub async fn run_worker(
    index: usize,
    listener: std::net::TcpListener,
    config: Arc<Config>,
    cap: Arc<ConnectionCap>,
    stop: flume::Receiver<()>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let targets = config.targets().map_err(io::Error::other)?;
    let backends = Rc::new(BackendSet::new(&targets, index, config.connect_timeout()));
    let mode = config.lb_mode;
    let worker_open = Rc::new(Cell::new(0usize));
    let buffer_size = config.buffer_size as usize;
    let send = config.relay_send;
    let timeouts = config.relay_timeouts();
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
        if !cap.try_acquire() {
            drop(client);
            continue;
        }
        worker_open.set(worker_open.get() + 1);
        let slot = Slot {
            cap: cap.clone(),
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
                Some(BackendStream::Unix(backend)) => {
                    relay(client, backend, buffer_size, send, timeouts).await
                }
                Some(BackendStream::Tcp(backend)) => {
                    relay(client, backend, buffer_size, send, timeouts).await
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

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it spawns afterwards, so
/// that [`wait_for_signal`] receives them instead of the default handler killing the process.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is an initialized sigset; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT (blocked first by [`block_shutdown_signals`]); returns its name.
pub fn wait_for_signal() -> io::Result<&'static str> {
    let set = shutdown_signals();
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is initialized and `signal` is writable for the call.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_refuses_past_the_limit_and_recovers() {
        let cap = ConnectionCap::new(2);
        assert!(cap.try_acquire());
        assert!(cap.try_acquire());
        assert!(!cap.try_acquire());
        assert_eq!(cap.open(), 2);
        cap.release();
        assert!(cap.try_acquire());
    }

    #[test]
    fn listeners_share_one_port() {
        let (listeners, addr) = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        assert_ne!(addr.port(), 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
    }
}
