//! The hot path: copy bytes client -> backend and backend -> client until both sides are done.
//!
//! Bytes are never parsed, so keep-alive and pipelining pass through untouched. Each
//! direction owns one buffer for the life of the connection and hands it to the kernel for
//! every read and write (monoio's owned-buffer I/O): nothing here allocates per read, locks
//! or logs above debug.
//!
//! Half-close: when one side sends FIN, the other side's write half is shut down (its FIN is
//! forwarded) and the opposite direction keeps flowing, so a reply to a half-closed request
//! still comes back. Any error on either direction ends both at once: both sockets are closed
//! together. A direction left open after the other finished cleanly gets `HALF_OPEN_LIMIT`.
//!
//! Stalls end too ([`Timeouts`]): a chunk the receiving side does not take within
//! `WRITE_TIMEOUT_MS` is an error (a client that sends and never reads would otherwise hold
//! both sockets forever, every buffer on the way full), and a connection silent both ways for
//! `IDLE_TIMEOUT_MS` is closed. Silence is seen without reading the clock per chunk: each
//! chunk bumps a counter, which a timer looks at four times per timeout.
//!
//! Each connection also tells its backend's [`Exchanges`] when client bytes go out and when a
//! byte comes back (`stall.rs`): a backend that stops answering gets no new clients.
//!
//! Buffered copy rather than monoio's `zero_copy` (splice through a pipe): on io_uring the
//! kernel runs splices on worker threads, measured ~100 us per small round trip here against
//! ~19 us for this loop (issue 4).
//!
//! Writes go through the runtime ([`SendMode::Runtime`], the default): on io_uring the write
//! joins the next read in one `io_uring_enter`. [`SendMode::Direct`] tries one non-blocking
//! `send(2)` first and only hands the rest to the runtime; it saves the write completion but
//! costs a syscall of its own, and measured more lb CPU per request on io_uring in
//! interleaved `rinha-bench lbs` runs (docs/benchmarks.md, "Load balancers", relay
//! defaults), so it is off by default.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;
use rinha_sys::send::send_now;

use crate::stall::{Exchange, Exchanges};

/// How long the second direction may stay open once the first has finished cleanly: a peer
/// that half-closed and then vanished must not pin two descriptors forever.
const HALF_OPEN_LIMIT: Duration = Duration::from_secs(60);

/// How long a relayed connection may stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long one chunk may wait for the receiving side to take it.
    pub write: Duration,
    /// How long a connection may stay silent both ways (closed within a quarter more).
    pub idle: Duration,
}

/// How relayed chunks are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    /// A non-blocking `send(2)` first; the runtime writes only the rest.
    Direct,
    /// Every chunk through the runtime (an io_uring write, or epoll readiness + write).
    Runtime,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides sent FIN; every byte was delivered.
    Finished,
    /// One side failed (reset, broken pipe) and both were closed.
    Aborted,
    /// One side stayed open longer than `HALF_OPEN_LIMIT` (60 s) after the other finished.
    HalfOpenTimeout,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
}

/// Relays between `client` and `backend` until both directions end; both are closed on return.
/// `exchanges`: the backend's, which this connection reports to.
pub async fn relay<B>(
    client: TcpStream,
    backend: B,
    buffer_size: usize,
    send: SendMode,
    timeouts: Timeouts,
    exchanges: &Exchanges,
) -> Outcome
where
    B: Split + AsyncReadRent + AsyncWriteRent + AsRawFd,
{
    // The descriptors stay open as long as the halves below, which outlive both copy loops.
    let (client_fd, backend_fd) = match send {
        SendMode::Direct => (Some(client.as_raw_fd()), Some(backend.as_raw_fd())),
        SendMode::Runtime => (None, None),
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();
    // Chunks moved either way so far: what the idle timer watches.
    let moved = Cell::new(0u64);
    let exchange = Exchange::new(exchanges);
    let mut upstream = pin!(copy_one_way(
        &mut client_read,
        &mut backend_write,
        backend_fd,
        Vec::with_capacity(buffer_size),
        &moved,
        timeouts.write,
        |len| {
            if len > 0 {
                exchange.sent();
            }
        },
    ));
    let mut downstream = pin!(copy_one_way(
        &mut backend_read,
        &mut client_write,
        client_fd,
        Vec::with_capacity(buffer_size),
        &moved,
        timeouts.write,
        |_| exchange.answered(),
    ));
    let mut silent = pin!(silence(&moved, timeouts.idle));
    let remaining = monoio::select! {
        done = &mut upstream => match done {
            Ok(()) => Remaining::Downstream,
            Err(_) => return Outcome::Aborted,
        },
        done = &mut downstream => match done {
            Ok(()) => Remaining::Upstream,
            Err(_) => return Outcome::Aborted,
        },
        _ = &mut silent => return Outcome::IdleTimeout,
    };
    let rest = monoio::time::timeout(HALF_OPEN_LIMIT, async {
        match remaining {
            Remaining::Downstream => (&mut downstream).await,
            Remaining::Upstream => (&mut upstream).await,
        }
    });
    let rest = monoio::select! {
        rest = rest => rest,
        _ = &mut silent => return Outcome::IdleTimeout,
    };
    match rest {
        Ok(Ok(())) => Outcome::Finished,
        Ok(Err(_)) => Outcome::Aborted,
        Err(_) => Outcome::HalfOpenTimeout,
    }
}

enum Remaining {
    Upstream,
    Downstream,
}

/// Copies `from` into `to` until `from` sends FIN, then shuts down `to`'s write half.
/// `to_fd`, when given, is `to`'s descriptor for the direct `send(2)` fast path. Each chunk
/// read and each chunk written bumps `moved`; a chunk `to` does not take within
/// `write_timeout` is a `TimedOut` error. `on_read` sees the length of every read (0: FIN)
/// before its bytes go on.
async fn copy_one_way<R, W, F>(
    from: &mut R,
    to: &mut W,
    to_fd: Option<RawFd>,
    mut buf: Vec<u8>,
    moved: &Cell<u64>,
    write_timeout: Duration,
    on_read: F,
) -> io::Result<()>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
    F: Fn(usize),
{
    loop {
        buf.clear();
        let (read, returned) = from.read(buf).await;
        buf = returned;
        let len = read?;
        moved.set(moved.get() + 1);
        on_read(len);
        if len == 0 {
            return to.shutdown().await;
        }
        let sent = match to_fd {
            Some(fd) => send_now(fd, &buf[..len])?,
            None => 0,
        };
        if sent < len {
            let write = to.write_all(buf.slice(sent..len));
            let (written, returned) = monoio::time::timeout(write_timeout, write)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
            buf = returned.into_inner();
            written?;
            moved.set(moved.get() + 1);
        }
    }
}

/// Resolves once `moved` has stayed the same for four checks `idle / 4` apart: after between
/// `idle` and `1.25 x idle` of silence both ways.
async fn silence(moved: &Cell<u64>, idle: Duration) {
    const CHECKS: u32 = 4;
    let tick = idle / CHECKS;
    let (mut seen, mut quiet) = (moved.get(), 0);
    loop {
        monoio::time::sleep(tick).await;
        let now = moved.get();
        if now == seen {
            quiet += 1;
            if quiet == CHECKS {
                return;
            }
        } else {
            (seen, quiet) = (now, 0);
        }
    }
}
