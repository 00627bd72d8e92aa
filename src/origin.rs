//! Where a connection came from, carried by the connection for its whole life: the one
//! check ([`Origin::is_internal`]) that decides whether it may ask for what only peers may
//! (`/internal/*`). The public port, whether the lb relays to `LISTEN` or hands the client's
//! socket over (`HANDOFF_LISTEN`), carries any client's bytes, so only the peer socket
//! (`PEER_LISTEN`) is trusted.

/// How a connection reached this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Accepted on `LISTEN`: a client, directly or relayed by the lb.
    Public,
    /// A client's socket passed over by the lb (`HANDOFF_LISTEN`).
    HandedOver,
    /// Accepted on `PEER_LISTEN`: another instance of this deployment.
    Peer,
}

impl Origin {
    /// Whether this connection may use the internal endpoints.
    pub fn is_internal(self) -> bool {
        self == Origin::Peer
    }
}
