//! Where connections are accepted. TCP: every core binds its own listener on the same
//! address with `SO_REUSEPORT` (`rinha_sys::listener`), so the kernel spreads connections
//! over the cores. Unix socket: one socket bound once, each core accepting on its own
//! duplicate of it.
//!
//! monoio 0.2.4 turns on `SO_REUSEPORT` for unix sockets, which kernels >= 6.13 refuse
//! (EOPNOTSUPP), and under epoll its unix accept blocks the thread; so the unix socket is
//! bound with std, set non-blocking, and handed to each runtime with `from_std`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use monoio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::Endpoint;

/// The listening address, prepared on the main thread and handed to each core.
#[derive(Debug, Clone)]
pub enum Prepared {
    Tcp(SocketAddr),
    Unix(Arc<std::os::unix::net::UnixListener>, PathBuf),
}

impl Prepared {
    /// Resolves a TCP address, or binds the unix socket (replacing a stale file).
    pub fn new(endpoint: &Endpoint) -> io::Result<Self> {
        match endpoint {
            Endpoint::Tcp(text) => {
                let addr = text
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::other("address resolves to nothing"))?;
                Ok(Prepared::Tcp(addr))
            }
            Endpoint::Unix(path) => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let l = std::os::unix::net::UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                // The load balancer may run as another user.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
                Ok(Prepared::Unix(Arc::new(l), path.clone()))
            }
        }
    }

    /// After the first core bound an ephemeral port, the others bind that same port.
    pub fn set_tcp_addr(&mut self, addr: SocketAddr) {
        if let Prepared::Tcp(a) = self {
            *a = addr;
        }
    }

    /// Builds this core's listener (call inside the core's runtime).
    pub fn for_core(&self) -> io::Result<CoreListener> {
        match self {
            Prepared::Tcp(addr) => Ok(CoreListener::Tcp(TcpListener::from_std(
                rinha_sys::listener::bind_reuseport(*addr)?,
            )?)),
            Prepared::Unix(l, _) => Ok(CoreListener::Unix(UnixListener::from_std(l.try_clone()?)?)),
        }
    }

    /// For the start log line.
    pub fn describe(&self) -> String {
        match self {
            Prepared::Tcp(a) => a.to_string(),
            Prepared::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Removes the unix socket file.
    pub fn cleanup(&self) {
        if let Prepared::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One core's listener.
#[derive(Debug)]
pub enum CoreListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection.
#[derive(Debug)]
pub enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl CoreListener {
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            CoreListener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
            CoreListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }

    /// The bound TCP address (the real port when 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            CoreListener::Tcp(l) => l.local_addr().ok(),
            CoreListener::Unix(_) => None,
        }
    }
}
