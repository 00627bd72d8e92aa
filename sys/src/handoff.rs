//! Passing an accepted connection from one process to another over a unix socket
//! (`SCM_RIGHTS`): `rinha-lb` in hand-over mode sends a client's socket, `rinha` receives it
//! and serves the client itself (docs/architecture.md, "Hand-over").
//!
//! The protocol is one hand-over per connection to the receiver's hand-over socket: the
//! sender writes [`TAG`] with exactly one descriptor attached; the receiver answers one byte,
//! [`ACCEPTED`] or [`REFUSED`], and closes. Anything else that arrives (other bytes, no
//! descriptor, more than one, a truncated set) is refused, and every descriptor that came
//! with it is closed here, before the caller sees the refusal.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The bytes a hand-over carries beside its descriptor ("rinha hand-over, version 1").
pub const TAG: &[u8; 4] = b"RHO1";
/// The receiver's answer: it owns the connection now (the sender closes its copy).
pub const ACCEPTED: u8 = b'+';
/// The receiver's answer: it closed its copy; the sender may offer the connection elsewhere.
pub const REFUSED: u8 = b'-';

/// Descriptors one receive makes room for. A legitimate hand-over carries one; room for a
/// few more lets a peer that sends several be told apart from one whose set was cut short.
const ROOM: usize = 4;

/// Control-message buffer of `N` bytes, aligned for `cmsghdr` as the kernel requires.
#[repr(C, align(8))]
struct Control<const N: usize>([MaybeUninit<u8>; N]);

impl<const N: usize> Control<N> {
    fn new() -> Self {
        Control([MaybeUninit::zeroed(); N])
    }
}

// SAFETY: CMSG_SPACE only computes a size from its argument; no pointer is involved.
const SEND_SPACE: usize =
    unsafe { libc::CMSG_SPACE((MAX_SEND_FDS * size_of::<RawFd>()) as u32) } as usize;
// SAFETY: as above.
const ROOM_SPACE: usize = unsafe { libc::CMSG_SPACE((ROOM * size_of::<RawFd>()) as u32) } as usize;

/// Sends [`TAG`] with `fd` attached over the connected unix stream socket `channel`, without
/// blocking and without `SIGPIPE`. The receiver gets its own descriptor for the same socket;
/// the caller's `fd` stays open (close it once the receiver has answered [`ACCEPTED`]).
///
/// Both descriptors must stay open for the call (the caller's streams own them); one that
/// is not is an error return (`EBADF`), never undefined behaviour.
pub fn send_fd(channel: RawFd, fd: RawFd) -> io::Result<()> {
    match send_with(channel, TAG, &[fd])? {
        n if n == TAG.len() => Ok(()),
        // A unix stream socket takes a 4-byte message whole or not at all; be explicit anyway.
        _ => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "hand-over tag sent in part",
        )),
    }
}

/// Most descriptors [`send_with`] attaches to one message.
pub const MAX_SEND_FDS: usize = 8;

/// Sends `bytes` with `fds` attached (none, one, or up to [`MAX_SEND_FDS`]) over `channel`,
/// without blocking and without `SIGPIPE`; returns the bytes sent. [`send_fd`] is the
/// protocol's use; this is also how tests play a peer that breaks it.
pub fn send_with(channel: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_SEND_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let mut control = Control::<SEND_SPACE>::new();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = size_of_val(fds) as u32;
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size; it fits SEND_SPACE (MAX_SEND_FDS checked).
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as _;
        // SAFETY: `msg` points at `control`, aligned and at least CMSG_SPACE(data_len) bytes
        // long, so CMSG_FIRSTHDR returns a header inside it with room for `fds` after it;
        // every write stays inside `control`.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data_len) as _;
            let data = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
    }
    // SAFETY: `msg` and everything it points to (`iov`, `bytes`, `control`) outlive the call;
    // sendmsg only reads them. Descriptors that are not open are an error return (EBADF).
    let sent = unsafe { libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// What one receive on a hand-over connection got.
#[derive(Debug)]
pub enum Received {
    /// [`TAG`] with exactly one descriptor: the connection handed over, now owned here.
    Descriptor(OwnedFd),
    /// The peer closed without sending anything.
    Closed,
    /// Something else; every descriptor that came with it is already closed.
    Refused(Refusal),
}

/// Why a hand-over was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The bytes were not [`TAG`].
    NotTheTag,
    /// No descriptor came with the tag.
    NoDescriptor,
    /// More than one descriptor came.
    SeveralDescriptors,
    /// More descriptors came than there was room for (the kernel closed the rest).
    Truncated,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotTheTag => "bytes other than the hand-over tag",
            Refusal::NoDescriptor => "no descriptor",
            Refusal::SeveralDescriptors => "more than one descriptor",
            Refusal::Truncated => "more descriptors than room for them",
        })
    }
}

/// Receives one hand-over from the unix stream socket `channel` without blocking:
/// `WouldBlock` when nothing has arrived yet (wait until it is readable and call again).
/// Received descriptors are close-on-exec.
pub fn recv_fd(channel: RawFd) -> io::Result<Received> {
    let mut bytes = [0u8; 16];
    let mut control = Control::<ROOM_SPACE>::new();
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = ROOM_SPACE as _;
    // SAFETY: `msg` points at `bytes` and `control`, both writable for the lengths given and
    // alive for the call; a `channel` that is not an open socket is an error return.
    let got = unsafe {
        libc::recvmsg(
            channel,
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = got as usize;
    // Own every descriptor that arrived before judging anything, so each is closed on drop.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: recvmsg filled `control` with `msg.msg_controllen` bytes of well-formed control
    // messages; CMSG_FIRSTHDR/CMSG_NXTHDR walk only those and return null at their end.
    // Each SCM_RIGHTS message holds `(cmsg_len - CMSG_LEN(0)) / 4` descriptors that the kernel
    // installed in this process for us, and nothing else owns them: wrapping each in an
    // OwnedFd is taking the ownership the kernel handed over.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    let refusal = if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        Some(Refusal::Truncated)
    } else if len == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    } else if &bytes[..len] != TAG {
        Some(Refusal::NotTheTag)
    } else if fds.is_empty() {
        Some(Refusal::NoDescriptor)
    } else if fds.len() > 1 {
        Some(Refusal::SeveralDescriptors)
    } else {
        None
    };
    match refusal {
        Some(refusal) => Ok(Received::Refused(refusal)),
        None => Ok(Received::Descriptor(fds.pop().expect("one descriptor"))),
    }
}

/// A connected stream socket, as a handed-over descriptor must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// TCP over IPv4 or IPv6.
    Tcp,
    /// A unix stream socket.
    Unix,
}

/// What `fd` is, when it is a connected stream socket (TCP or unix); `None` for anything
/// else: not a socket, a datagram socket, a listening socket, a socket never connected.
pub fn connected_stream(fd: BorrowedFd<'_>) -> Option<StreamKind> {
    let raw = fd.as_raw_fd();
    if int_option(raw, libc::SO_TYPE)? != libc::SOCK_STREAM
        || int_option(raw, libc::SO_ACCEPTCONN)? != 0
    {
        return None;
    }
    let kind = match int_option(raw, libc::SO_DOMAIN)? {
        libc::AF_INET | libc::AF_INET6 => StreamKind::Tcp,
        libc::AF_UNIX => StreamKind::Unix,
        _ => return None,
    };
    // SAFETY: all-zero is a valid sockaddr_storage, large enough for any address.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `peer` is writable for `len` bytes and `len` is a valid in/out length.
    let rc = unsafe { libc::getpeername(raw, (&raw mut peer).cast(), &mut len) };
    (rc == 0).then_some(kind)
}

/// An integer socket option of level `SOL_SOCKET`, `None` when it cannot be read (`fd` is not
/// a socket, for one).
fn int_option(fd: RawFd, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; a bad `fd` is an error return.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// Sends `bytes` with `fds` attached, as a hostile peer may.
    fn send_raw(channel: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
        assert_eq!(
            send_with(channel.as_raw_fd(), bytes, fds).unwrap(),
            bytes.len()
        );
    }

    #[test]
    fn a_handed_over_socket_is_the_same_connection() {
        let (lb, backend) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send_fd(lb.as_raw_fd(), accepted.as_raw_fd()).unwrap();
        drop(accepted); // the sender's copy goes; the receiver's keeps the connection
        let Received::Descriptor(fd) = recv_fd(backend.as_raw_fd()).unwrap() else {
            panic!("no descriptor");
        };
        assert_eq!(connected_stream(fd.as_fd()), Some(StreamKind::Tcp));
        // SAFETY: fcntl(F_GETFD) only reads the flags of an open descriptor.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        let mut served = TcpStream::from(fd);
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        served.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    #[test]
    fn nothing_yet_would_block_and_a_close_is_closed() {
        let (lb, backend) = UnixStream::pair().unwrap();
        let err = recv_fd(backend.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(lb);
        assert!(matches!(
            recv_fd(backend.as_raw_fd()).unwrap(),
            Received::Closed
        ));
    }

    /// A pipe whose write end is sent: once every copy of it is closed, the read end
    /// reads EOF; while one stays open somewhere, it would block.
    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `ends`, which we then own.
        assert_eq!(
            unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        // SAFETY: both descriptors were just created and nothing else owns them.
        unsafe {
            (
                std::fs::File::from_raw_fd(ends[0]),
                OwnedFd::from_raw_fd(ends[1]),
            )
        }
    }

    fn every_write_end_closed(read_end: &mut std::fs::File) -> bool {
        matches!(read_end.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn hostile_messages_are_refused_and_their_descriptors_closed() {
        let cases: [(&[u8], usize, Refusal); 5] = [
            (b"garbage", 0, Refusal::NotTheTag),
            (b"garbage", 1, Refusal::NotTheTag),
            (TAG, 0, Refusal::NoDescriptor),
            (TAG, 2, Refusal::SeveralDescriptors),
            (TAG, ROOM + 3, Refusal::Truncated),
        ];
        for (bytes, count, expected) in cases {
            let (lb, backend) = UnixStream::pair().unwrap();
            let pipes: Vec<_> = (0..count).map(|_| pipe()).collect();
            let fds: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
            send_raw(&lb, bytes, &fds);
            let mut read_ends: Vec<_> = pipes.into_iter().map(|(r, _w)| r).collect();
            match recv_fd(backend.as_raw_fd()).unwrap() {
                Received::Refused(why) => assert_eq!(why, expected, "{bytes:?} with {count}"),
                other => panic!("{bytes:?} with {count} fds: {other:?}"),
            }
            for read_end in &mut read_ends {
                assert!(
                    every_write_end_closed(read_end),
                    "{bytes:?} with {count}: a refused descriptor stayed open"
                );
            }
        }
    }

    #[test]
    fn only_connected_stream_sockets_qualify() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(connected_stream(a.as_fd()), Some(StreamKind::Unix));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(connected_stream(listener.as_fd()), None);
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(connected_stream(file.as_fd()), None);
        let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(connected_stream(datagram.as_fd()), None);
        // SAFETY: a plain socket(2); the result is checked and owned at once.
        let fresh = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fresh >= 0);
        // SAFETY: `fresh` is a new descriptor nothing else owns.
        let fresh = unsafe { OwnedFd::from_raw_fd(fresh) };
        assert_eq!(connected_stream(fresh.as_fd()), None, "never connected");
    }
}
