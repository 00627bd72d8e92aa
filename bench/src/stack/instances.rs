//! Where the stack's backends listen and how they reach each other: the contest's two on unix
//! sockets in the stack's directory (the default), or `--instances N` on TCP loopback
//! addresses, backend `n` on `127.0.0.<n+1>:<--backend-port>` (its peer socket on the next
//! port), each with a static `PEERS` list naming the others' peer sockets and the lb relaying to all of them (a hand-over socket cannot
//! travel between machines, which is what N instances stand for).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use super::{Addr, LbMode, StackOpts};

/// The most instances `--instances` starts: one per address of 127.0.0.2-127.0.0.9.
pub const MAX_INSTANCES: usize = 8;

/// One backend of the stack, before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// `backend-<n>`, from 1.
    pub name: String,
    pub listen: Addr,
    /// Where its peers ask for its part of a summary (`PEER_LISTEN`).
    pub peer: Addr,
    /// Its hand-over socket, in hand-over mode.
    pub handoff: Option<Addr>,
}

/// The backends `opts` asks for, and whether the lb hands over (else it relays).
pub fn plan(dir: &Path, opts: &StackOpts) -> (Vec<Planned>, LbMode) {
    match opts.instances {
        None => {
            let backends = (1..=2)
                .map(|n| Planned {
                    name: format!("backend-{n}"),
                    listen: Addr::Unix(dir.join(format!("backend-{n}.sock"))),
                    peer: Addr::Unix(dir.join(format!("backend-{n}.peer.sock"))),
                    handoff: (opts.lb_mode == LbMode::Handoff)
                        .then(|| Addr::Unix(dir.join(format!("backend-{n}.handoff.sock")))),
                })
                .collect();
            (backends, opts.lb_mode)
        }
        Some(count) => {
            let backends = (1..=usize::from(count).clamp(1, MAX_INSTANCES))
                .map(|n| Planned {
                    name: format!("backend-{n}"),
                    listen: Addr::At(SocketAddrV4::new(
                        Ipv4Addr::new(127, 0, 0, n as u8 + 1),
                        opts.backend_port,
                    )),
                    peer: Addr::At(SocketAddrV4::new(
                        Ipv4Addr::new(127, 0, 0, n as u8 + 1),
                        opts.backend_port + 1,
                    )),
                    handoff: None,
                })
                .collect();
            (backends, LbMode::Relay)
        }
    }
}

/// How a backend or the lb names `addr` in `LISTEN`, `PEERS` and `BACKENDS`.
pub fn endpoint(addr: &Addr) -> String {
    match addr {
        Addr::Tcp(port) => format!("127.0.0.1:{port}"),
        Addr::At(a) => a.to_string(),
        Addr::Unix(path) => format!("unix:{}", path.display()),
    }
}

/// The `PEERS` of backend `i` of `backends`: every other one.
pub fn peers(backends: &[Planned], i: usize) -> String {
    backends
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, b)| endpoint(&b.peer))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_instances_listen_on_their_own_loopback_address_and_name_the_others() {
        let opts: StackOpts =
            crate::parse_flags("stack", ["--instances", "3", "--backend-port", "27300"])
                .expect("flags");
        let (backends, mode) = plan(Path::new("/s"), &opts);
        assert_eq!(mode, LbMode::Relay);
        let listen: Vec<String> = backends.iter().map(|b| endpoint(&b.listen)).collect();
        assert_eq!(
            listen,
            ["127.0.0.2:27300", "127.0.0.3:27300", "127.0.0.4:27300"]
        );
        assert_eq!(peers(&backends, 1), "127.0.0.2:27301,127.0.0.4:27301");
        assert!(backends.iter().all(|b| b.handoff.is_none()));

        let two: StackOpts = crate::parse_flags("stack", ["--lb-mode", "handoff"]).unwrap();
        let (backends, mode) = plan(Path::new("/s"), &two);
        assert_eq!(mode, LbMode::Handoff);
        assert_eq!(peers(&backends, 0), "unix:/s/backend-2.peer.sock");
        assert_eq!(
            backends[1].handoff,
            Some(Addr::Unix("/s/backend-2.handoff.sock".into()))
        );
    }
}
