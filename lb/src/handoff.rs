//! Hand-over mode (`LB_MODE=handoff`): instead of relaying a client's bytes for the life of
//! its connection, pass the client's socket itself to a backend (`SCM_RIGHTS` over the
//! backend's hand-over socket, `rinha_sys::handoff`) and step out. The backend then answers
//! the client directly: no request byte crosses this process, which pays one accept and one
//! short unix connection per client connection and nothing per request.
//!
//! Which backend: round-robin, skipping down ones ([`BackendSet::offer`]). A backend that
//! cannot be reached or answers "refused" (at its connection cap, shutting down) is marked
//! down like a failed connect, and the client is offered to the next. Once a backend has
//! the descriptor and has not answered, the client is never offered to another (two
//! processes would read the same socket): after `CONNECT_TIMEOUT_MS` without an answer this
//! process lets its copy go, and the client is served by that backend or, if it never took
//! it, sees a close and reconnects. A backend that leaves a hand-over unanswered is marked
//! stalled ([`Offered::Unanswered`]): the next clients go to the others until its backoff runs
//! out and one client probes it, or until no other takes them.

use std::io;
use std::os::fd::AsRawFd;

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rinha_sys::handoff::{send_fd, ACCEPTED};

use crate::backend::{BackendSet, BackendStream, Offered};

/// How a hand-over ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A backend answered that it took the client.
    Taken,
    /// A backend got the client and did not answer in time: it may be serving it.
    Unanswered,
    /// Every backend was down or refused: the client is closed.
    NoBackend,
}

/// Hands `client` to the next backend that takes it; this process's copy is closed on return
/// either way.
pub async fn hand_over(client: TcpStream, backends: &BackendSet) -> Outcome {
    let wait = backends.connect_timeout();
    let outcome = backends
        .offer(|stream| offer(&client, stream, wait))
        .await
        .unwrap_or(Outcome::NoBackend);
    match outcome {
        Outcome::Taken => {}
        Outcome::Unanswered => tracing::warn!(
            wait_ms = wait.as_millis() as u64,
            "a backend got a client's connection and did not answer in time; letting it go"
        ),
        Outcome::NoBackend => {
            tracing::debug!("every backend is down or refused: closing the client")
        }
    }
    outcome
}

/// Passes `client` over `stream` (a backend's hand-over connection) and reads the answer.
/// An error means the backend does not have the client: it may be offered to the next.
async fn offer(
    client: &TcpStream,
    stream: BackendStream,
    wait: std::time::Duration,
) -> io::Result<Offered<Outcome>> {
    let BackendStream::Unix(mut channel) = stream else {
        // `Config::targets` lets only unix sockets through in this mode.
        return Err(io::Error::other("hand-over needs a unix socket"));
    };
    send_fd(channel.as_raw_fd(), client.as_raw_fd())?;
    let answer = monoio::time::timeout(wait, channel.read(Vec::with_capacity(1))).await;
    match answer {
        Ok((Ok(1), byte)) if byte[0] == ACCEPTED => Ok(Offered::Taken(Outcome::Taken)),
        Ok((Ok(1), _)) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "backend refused the hand-over",
        )),
        // Closed without an answer: it never took the client (a backend that dies after
        // taking one has already answered, and the answer stays readable).
        Ok((Ok(_), _)) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the hand-over without an answer",
        )),
        Ok((Err(error), _)) => Err(error),
        Err(_elapsed) => Ok(Offered::Unanswered(Outcome::Unanswered)),
    }
}
