//! Connections handed over by `rinha-lb` in hand-over mode (`LB_MODE=handoff`): core 0
//! accepts on the hand-over socket (`HANDOFF_LISTEN`), receives each client's socket
//! (`SCM_RIGHTS`, `rinha_sys::handoff`), answers whether it takes it, and passes what it
//! takes to the cores in turn, where [`conn::serve`] serves it exactly like an accepted
//! connection (the connection cap, both timeouts, pipelining).
//!
//! A hand-over is refused (answer `-`, descriptor closed) at the connection cap, while
//! shutting down, and for anything but one connected stream socket with the tag; the lb then
//! offers the client to the other backend. What is answered `+` is this process's alone: the
//! lb closes its copy, and if this process dies the client's connection dies with it.
//! A hand-over connection that sends nothing within [`RECEIVE_TIMEOUT`] is closed, and at
//! most [`MAX_RECEIVING`] are read at once: a stuck or hostile peer costs a task and a
//! descriptor for a second, never a core. Per connection, never per request.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpStream, UnixStream};
use rinha_sys::cap::{ConnectionCap, Slot};
use rinha_sys::handoff::{self, Received, StreamKind, ACCEPTED, REFUSED};
use rinha_sys::send::send_now;

use crate::conn;
use crate::core_state::CoreState;
use crate::listener::{Accepted, CoreListener, Prepared};
use crate::origin::Origin;

/// How long a hand-over connection may take to deliver its descriptor (the lb sends it at
/// once after connecting).
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Hand-over connections read at once; past it, new ones are closed unread.
pub const MAX_RECEIVING: usize = 256;

/// A client connection on its way to the core that will serve it.
#[derive(Debug)]
pub struct Adoption {
    fd: OwnedFd,
    kind: StreamKind,
    slot: Slot,
}

/// One core's part in hand-overs: its inbox, and on core 0 the acceptor.
#[derive(Debug)]
pub struct CoreHandoff {
    inbox: flume::Receiver<Adoption>,
    acceptor: Option<Acceptor>,
}

/// What core 0 needs to accept hand-overs and deal them out.
#[derive(Debug)]
struct Acceptor {
    socket: Prepared,
    cores: Vec<flume::Sender<Adoption>>,
}

/// Builds each core's part (index = core id): every core gets an inbox, core 0 the socket.
pub fn per_core(socket: Prepared, workers: usize) -> Vec<CoreHandoff> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| flume::unbounded()).unzip();
    let mut acceptor = Some(Acceptor {
        socket,
        cores: senders,
    });
    inboxes
        .into_iter()
        .map(|inbox| CoreHandoff {
            inbox,
            acceptor: acceptor.take(),
        })
        .collect()
}

/// Hand-overs running on a core; dropping it stops accepting new ones (connections already
/// adopted keep being served).
#[derive(Debug)]
pub struct Running {
    _stop: Option<flume::Sender<()>>,
}

impl CoreHandoff {
    /// Starts this core's adopter and, on core 0, the acceptor. Call inside the core's runtime.
    pub fn start(self, core: &Rc<CoreState>, cap: &Arc<ConnectionCap>) -> io::Result<Running> {
        let stop = match self.acceptor {
            Some(acceptor) => {
                let listener = acceptor.socket.for_core()?;
                let (stop_tx, stop_rx) = flume::bounded::<()>(1);
                let dealer = Rc::new(Dealer {
                    core: core.clone(),
                    cap: cap.clone(),
                    cores: acceptor.cores,
                    next: Cell::new(0),
                    receiving: Cell::new(0),
                });
                monoio::spawn(accept(listener, dealer, stop_rx));
                Some(stop_tx)
            }
            None => None,
        };
        monoio::spawn(adopt_all(core.clone(), self.inbox));
        Ok(Running { _stop: stop })
    }
}

/// Serves every connection another core deals to this one.
async fn adopt_all(core: Rc<CoreState>, inbox: flume::Receiver<Adoption>) {
    while let Ok(adoption) = inbox.recv_async().await {
        adopt(&core, adoption);
    }
}

/// Serves a handed-over connection on this core, as [`crate::runtime`] serves an accepted one.
fn adopt(core: &Rc<CoreState>, Adoption { fd, kind, slot }: Adoption) {
    let served = match kind {
        StreamKind::Tcp => {
            let stream = std::net::TcpStream::from(fd);
            // The lb's copy may have been blocking; the driver needs it non-blocking.
            stream.set_nonblocking(true).and_then(|()| {
                let _ = stream.set_nodelay(true);
                let stream = TcpStream::from_std(stream)?;
                monoio::spawn(conn::serve(stream, Origin::HandedOver, core.clone(), slot));
                Ok(())
            })
        }
        StreamKind::Unix => {
            let stream = std::os::unix::net::UnixStream::from(fd);
            stream.set_nonblocking(true).and_then(|()| {
                let stream = UnixStream::from_std(stream)?;
                monoio::spawn(conn::serve(stream, Origin::HandedOver, core.clone(), slot));
                Ok(())
            })
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "cannot serve a handed-over connection");
    }
}

/// Core 0's state for dealing hand-overs out.
struct Dealer {
    core: Rc<CoreState>,
    cap: Arc<ConnectionCap>,
    cores: Vec<flume::Sender<Adoption>>,
    /// The core the next connection goes to.
    next: Cell<usize>,
    /// Hand-over connections being read now.
    receiving: Cell<usize>,
}

/// Accepts hand-over connections until `stop` fires (its sender dropped).
async fn accept(listener: CoreListener, dealer: Rc<Dealer>, stop: flume::Receiver<()>) {
    loop {
        let accepted = monoio::select! {
            _ = stop.recv_async() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(Accepted::Unix(channel)) => {
                if dealer.receiving.get() >= MAX_RECEIVING {
                    tracing::debug!("too many hand-over connections at once; closing one");
                    continue;
                }
                dealer.receiving.set(dealer.receiving.get() + 1);
                let dealer = dealer.clone();
                monoio::spawn(async move {
                    receive(&channel, &dealer).await;
                    dealer.receiving.set(dealer.receiving.get() - 1);
                });
            }
            Ok(Accepted::Tcp(_)) => {}
            Err(error) => {
                // EMFILE and kin: back off instead of spinning.
                tracing::warn!(%error, "hand-over accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads one hand-over from `channel`, answers it, and deals the connection out if taken.
async fn receive(channel: &UnixStream, dealer: &Dealer) {
    let fd = channel.as_raw_fd();
    let received = monoio::time::timeout(RECEIVE_TIMEOUT, async {
        loop {
            match handoff::recv_fd(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => channel.readable(false).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    })
    .await;
    let taken = match received {
        Ok(Ok(Received::Descriptor(client))) => dealer.take(client),
        Ok(Ok(Received::Closed)) => return,
        Ok(Ok(Received::Refused(why))) => {
            tracing::debug!(%why, "hand-over refused");
            false
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "hand-over connection failed");
            return;
        }
        Err(_) => {
            tracing::debug!("hand-over connection sent nothing in time");
            return;
        }
    };
    // The lb waits for this answer before it lets its copy go or offers the client elsewhere.
    // If it is gone, a taken connection is still served: the lb never offers a connection to
    // another backend while this one holds the hand-over open unanswered.
    let _ = send_now(fd, &[if taken { ACCEPTED } else { REFUSED }]);
}

impl Dealer {
    /// Takes `client` (`true`) and deals it to the next core, or refuses it (`false`, closed).
    fn take(&self, client: OwnedFd) -> bool {
        let Some(kind) = handoff::connected_stream(client.as_fd()) else {
            tracing::debug!("hand-over refused: not a connected stream socket");
            return false;
        };
        if self.core.shutting_down() {
            return false;
        }
        // At the cap: refused, so the lb offers it to the other backend.
        let Some(slot) = self.cap.try_acquire() else {
            return false;
        };
        let adoption = Adoption {
            fd: client,
            kind,
            slot,
        };
        let index = self.next.get();
        self.next.set((index + 1) % self.cores.len());
        if index == self.core.id {
            adopt(&self.core, adoption);
        } else if let Err(flume::SendError(adoption)) = self.cores[index].send(adoption) {
            // That core has stopped (shutting down): serve it here rather than drop it.
            adopt(&self.core, adoption);
        }
        true
    }
}
