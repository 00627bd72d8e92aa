//! One non-blocking `send(2)` on a socket the caller owns.
//!
//! On io_uring, monoio pushes a write to the submission queue and submits it with the next
//! batch, after every other task that is ready has run; the caller then waits for its
//! completion. Sending at once instead puts the bytes on the wire while the task still runs,
//! and leaves the runtime only what the socket buffer did not take (nothing, for small
//! answers). On epoll the runtime's own write is already such a call.

use std::io;
use std::os::fd::RawFd;

/// Sends what the socket takes now, without blocking: how many bytes it took (0 when its
/// buffer is full). A closed peer is an error (`EPIPE`, never `SIGPIPE`).
///
/// `fd` must be an open stream socket for the whole call (the caller's stream owns it).
pub fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: send(2) reads `bytes.len()` bytes from a valid slice; a descriptor that is not
    // an open socket is an error return (EBADF/ENOTSOCK), not undefined behaviour.
    let rc = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn sends_what_fits_and_never_blocks() {
        let (a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(send_now(a.as_raw_fd(), b"ping").unwrap(), 4);
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // Fill the buffer: a full socket takes less, then nothing, and the call returns.
        let chunk = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = send_now(a.as_raw_fd(), &chunk).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(total > 0);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = send_now(a.as_raw_fd(), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
