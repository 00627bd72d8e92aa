//! Whether an idle connection is still usable: one non-blocking `recv(2)` with `MSG_PEEK`,
//! which reads nothing. A server that closed the connection while it sat in a pool (a
//! keep-alive timeout) left an end of file (or a reset) to be read; a request written on it
//! would be lost with an unknown outcome, so the caller discards it before use.

use std::io;
use std::os::fd::RawFd;

/// What an idle connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing to read: the peer has not closed it.
    Open,
    /// The peer closed it (end of file) or reset it.
    Closed,
    /// Bytes nobody asked for (a late answer): the connection is out of step.
    Unread,
}

/// Peeks at `fd` without blocking or consuming anything.
///
/// `fd` must be an open stream socket for the whole call (the caller's stream owns it).
pub fn idle_state(fd: RawFd) -> io::Result<Idle> {
    let mut byte = 0u8;
    // SAFETY: recv(2) writes at most one byte into a live local; a descriptor that is not an
    // open socket is an error return (EBADF/ENOTSOCK), not undefined behaviour.
    let rc = unsafe {
        libc::recv(
            fd,
            std::ptr::addr_of_mut!(byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match rc {
        0 => Ok(Idle::Closed),
        n if n > 0 => Ok(Idle::Unread),
        _ => {
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Idle::Open),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    Ok(Idle::Closed)
                }
                _ => Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn tells_open_unread_and_closed_apart() {
        let (a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(idle_state(a.as_raw_fd()).unwrap(), Idle::Open);
        b.write_all(b"x").unwrap();
        assert_eq!(idle_state(a.as_raw_fd()).unwrap(), Idle::Unread);
        // Peeking consumed nothing.
        assert_eq!(idle_state(a.as_raw_fd()).unwrap(), Idle::Unread);
        let (c, d) = UnixStream::pair().unwrap();
        drop(d);
        assert_eq!(idle_state(c.as_raw_fd()).unwrap(), Idle::Closed);
        assert!(idle_state(-1).is_err());
    }
}
