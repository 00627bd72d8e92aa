//! Replicas found through the engine's DNS (`dns:name:port`: every A/AAAA record of `name`,
//! what Docker's embedded DNS answers for a scaled service and a Kubernetes headless Service
//! for its pods). A [`Discovery`] resolves on a thread of its own, on a period and when a
//! caller reports a failed call, and publishes a read-only [`Snapshot`]; readers hold a
//! [`Watch`] whose [`Watch::current`] costs one atomic load unless the set changed (the
//! pingora way: the hot path reads, the background rebuilds). An instance's own addresses
//! ([`Own`]) are left out, so a replica never lists itself. The same thread can watch a
//! directory of hand-over sockets (`HANDOFF_DIR`: replicas on one host, [`Sources::dir`]).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often names are resolved again when nothing asks sooner (`DISCOVERY_EVERY_MS`'s
/// default in both servers).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(2);

/// A refresh asked for after a failed call waits at least this long after the last lookup,
/// so a flapping replica cannot make the thread resolve in a loop.
pub const MIN_GAP: Duration = Duration::from_millis(200);

/// Why a `dns:` entry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("`{0}` is not `dns:name:port`")]
    Unparsable(String),
    #[error("cannot start the discovery thread: {0}")]
    Thread(io::Error),
}

/// One `dns:name:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub host: String,
    pub port: u16,
}

impl DnsName {
    /// `Some` for a `dns:` entry (parsed or refused), `None` for anything else.
    pub fn parse(text: &str) -> Option<Result<Self, DiscoveryError>> {
        let rest = text.trim().strip_prefix("dns:")?;
        let bad = || DiscoveryError::Unparsable(text.trim().to_owned());
        Some(match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => port
                .parse()
                .map(|port| DnsName {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port,
                })
                .map_err(|_| bad()),
            _ => Err(bad()),
        })
    }
}

impl std::fmt::Display for DnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dns:{}:{}", self.host, self.port)
    }
}

type LookupFn = dyn Fn(&DnsName) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// Turns a name into every address it stands for. Blocking: run on the discovery thread.
#[derive(Clone)]
pub struct Lookup(Arc<LookupFn>);

impl Lookup {
    /// The system's resolver (`getaddrinfo`: every A and AAAA record).
    pub fn system() -> Self {
        Self::new(|name| Ok((name.host.as_str(), name.port).to_socket_addrs()?.collect()))
    }

    /// A lookup of one's own (tests: a name whose records the test changes).
    pub fn new(
        f: impl Fn(&DnsName) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        Lookup(Arc::new(f))
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup")
    }
}

/// What an instance knows of its own addresses, to skip itself in its peers' records.
#[derive(Debug, Clone, Copy)]
pub enum Own {
    /// Nothing to skip (the load balancer is not one of its backends).
    Nobody,
    /// The address this instance listens on: an exact match when bound to one address, any
    /// address of this machine's interfaces (getifaddrs) at that port when bound to all.
    Listening(SocketAddr),
}

impl Own {
    fn skips(&self, addr: &SocketAddr, interfaces: &[IpAddr]) -> bool {
        match *self {
            Own::Nobody => false,
            Own::Listening(me) if me.ip().is_unspecified() => {
                addr.port() == me.port()
                    && (addr.ip().is_loopback() || interfaces.contains(&addr.ip()))
            }
            Own::Listening(me) => *addr == me,
        }
    }
}

/// The replicas as the last lookup found them: sorted, without duplicates or this instance.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every address the names stand for.
    pub addrs: Vec<SocketAddr>,
    /// Every hand-over socket (`*.handoff.sock`) in the watched directory.
    pub sockets: Vec<PathBuf>,
}

/// What a [`Discovery`] watches.
#[derive(Debug, Clone)]
pub struct Sources {
    pub names: Vec<DnsName>,
    pub lookup: Lookup,
    pub own: Own,
    /// A directory whose `*.handoff.sock` files are replicas (one host, `--scale`).
    pub dir: Option<PathBuf>,
}

impl Sources {
    /// The `dns:` names, looked up by `lookup`, skipping `own`.
    pub fn names(names: Vec<DnsName>, lookup: Lookup, own: Own) -> Self {
        Sources {
            names,
            lookup,
            own,
            dir: None,
        }
    }

    /// The hand-over sockets in `dir`.
    pub fn dir(dir: PathBuf) -> Self {
        Sources {
            names: Vec::new(),
            lookup: Lookup::system(),
            own: Own::Nobody,
            dir: Some(dir),
        }
    }

    /// Looks everything up once (blocking); `None` when a lookup failed (the last set stays).
    fn find(&self) -> Option<Snapshot> {
        let interfaces = if self.names.is_empty() {
            Vec::new()
        } else {
            interface_addrs()
        };
        let mut addrs = Vec::new();
        for name in &self.names {
            match (self.lookup.0)(name) {
                Ok(found) => addrs.extend(found),
                Err(e) => {
                    tracing::debug!(%name, error = %e, "lookup failed; keeping the last set");
                    return None;
                }
            }
        }
        addrs.retain(|a| !self.own.skips(a, &interfaces));
        addrs.sort();
        addrs.dedup();
        let sockets = match &self.dir {
            Some(dir) => match handoff_sockets(dir) {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot read the socket directory");
                    return None;
                }
            },
            None => Vec::new(),
        };
        Some(Snapshot { addrs, sockets })
    }
}

/// The suffix of a hand-over socket's name in `HANDOFF_DIR`.
pub const HANDOFF_SUFFIX: &str = ".handoff.sock";

/// Every `*.handoff.sock` in `dir`, sorted.
pub fn handoff_sockets(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(HANDOFF_SUFFIX))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

#[derive(Debug)]
struct Shared {
    /// Bumped on every change of `current`: what readers compare against their copy.
    generation: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
    /// Set by [`Watch::refresh`]; the thread waits on `wake` for it or its period.
    asked: Mutex<bool>,
    wake: Condvar,
}

/// A reader's view of a [`Discovery`]: cheap to clone, one per thread or core.
#[derive(Debug, Clone)]
pub struct Watch {
    shared: Arc<Shared>,
    seen: u64,
    snapshot: Arc<Snapshot>,
}

impl Watch {
    /// The replicas now: the copy held unless the discovery published a newer one (one
    /// atomic load; the lock only when it did).
    pub fn current(&mut self) -> &Arc<Snapshot> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.snapshot = self.shared.current.lock().expect("discovery lock").clone();
            self.seen = generation;
        }
        &self.snapshot
    }

    /// Asks for a lookup now (a call to a replica failed: it may be gone, or moved); never
    /// waits for it.
    pub fn refresh(&self) {
        *self.shared.asked.lock().expect("discovery lock") = true;
        self.shared.wake.notify_one();
    }

    /// Publishes `snapshot` as the current set (the discovery thread, and tests).
    fn publish(shared: &Shared, snapshot: Snapshot) -> bool {
        let mut current = shared.current.lock().expect("discovery lock");
        if **current == snapshot {
            return false;
        }
        *current = Arc::new(snapshot);
        shared.generation.fetch_add(1, Ordering::Release);
        true
    }
}

/// The discovery of a list of names: resolves them all on its thread, forever (the thread
/// ends with the process).
#[derive(Debug)]
pub struct Discovery;

impl Discovery {
    /// Looks `sources` up once here (so the first snapshot is whole at start, or empty
    /// when nothing answers), then every `every` and on [`Watch::refresh`] on a thread named
    /// `rinha-discovery`. A failed lookup keeps the last set it found.
    pub fn start(sources: Sources, every: Duration) -> Result<Watch, DiscoveryError> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Snapshot::default())),
            asked: Mutex::new(false),
            wake: Condvar::new(),
        });
        let publish = |shared: &Shared, found: Option<Snapshot>| {
            if let Some(snapshot) = found {
                let (addrs, sockets) = (snapshot.addrs.clone(), snapshot.sockets.clone());
                if Watch::publish(shared, snapshot) {
                    tracing::info!(?addrs, ?sockets, "discovered replicas");
                }
            }
        };
        publish(&shared, sources.find());
        let bg = shared.clone();
        std::thread::Builder::new()
            .name("rinha-discovery".into())
            .spawn(move || {
                let mut looked_up = Instant::now();
                loop {
                    let mut asked = bg.asked.lock().expect("discovery lock");
                    let due = looked_up + every;
                    while !*asked && Instant::now() < due {
                        let wait = due.saturating_duration_since(Instant::now());
                        asked = bg.wake.wait_timeout(asked, wait).expect("discovery lock").0;
                    }
                    *asked = false;
                    drop(asked);
                    let gap = looked_up + MIN_GAP;
                    std::thread::sleep(gap.saturating_duration_since(Instant::now()));
                    looked_up = Instant::now();
                    publish(&bg, sources.find());
                }
            })
            .map_err(DiscoveryError::Thread)?;
        let snapshot = shared.current.lock().expect("discovery lock").clone();
        let seen = shared.generation.load(Ordering::Acquire);
        Ok(Watch {
            shared,
            seen,
            snapshot,
        })
    }
}

/// The addresses of this machine's interfaces (getifaddrs); empty when it fails.
pub fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocated, freed below with
    // freeifaddrs; on failure it returns -1 and `head` is not used.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points to a sockaddr whose family says its real type.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.push(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ));
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn dns_entries_parse() {
        let n = DnsName::parse("dns:backend:9998").unwrap().unwrap();
        assert_eq!((n.host.as_str(), n.port), ("backend", 9998));
        assert_eq!(n.to_string(), "dns:backend:9998");
        assert!(DnsName::parse("backend:9998").is_none());
        assert!(DnsName::parse("dns:backend").unwrap().is_err());
        assert!(DnsName::parse("dns::1").unwrap().is_err());
    }

    #[test]
    fn an_instance_skips_itself() {
        let interfaces = interface_addrs();
        assert!(interfaces.iter().any(IpAddr::is_loopback), "{interfaces:?}");
        let exact = Own::Listening(a(2, 9));
        assert!(exact.skips(&a(2, 9), &interfaces));
        assert!(!exact.skips(&a(3, 9), &interfaces));
        let any = Own::Listening("0.0.0.0:9".parse().unwrap());
        assert!(any.skips(&a(1, 9), &interfaces));
        assert!(!any.skips(&a(1, 10), &interfaces));
        assert!(!any.skips(&"192.0.2.7:9".parse().unwrap(), &interfaces));
        assert!(!Own::Nobody.skips(&a(1, 9), &interfaces));
    }

    #[test]
    fn records_that_change_are_published_and_a_failed_lookup_keeps_the_last() {
        let records = Arc::new(Mutex::new(Ok(vec![a(3, 9), a(2, 9), a(1, 9), a(2, 9)])));
        let r = records.clone();
        let lookup = Lookup::new(move |_| match &*r.lock().unwrap() {
            Ok(v) => Ok(v.clone()),
            Err(()) => Err(io::Error::other("SERVFAIL")),
        });
        let name = DnsName::parse("dns:backend:9").unwrap().unwrap();
        let every = Duration::from_secs(3600);
        let sources = Sources::names(vec![name], lookup, Own::Listening(a(1, 9)));
        let mut w = Discovery::start(sources, every).unwrap();
        // Sorted, deduplicated, without itself, at start.
        assert_eq!(w.current().addrs, [a(2, 9), a(3, 9)]);
        // A replica leaves: seen at the next refresh, not before the period otherwise.
        *records.lock().unwrap() = Ok(vec![a(1, 9), a(3, 9)]);
        assert_eq!(w.current().addrs, [a(2, 9), a(3, 9)]);
        w.refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.current().addrs != [a(3, 9)] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.current().addrs, [a(3, 9)]);
        // The DNS fails: the last set stays.
        *records.lock().unwrap() = Err(());
        w.refresh();
        std::thread::sleep(MIN_GAP * 3);
        assert_eq!(w.current().addrs, [a(3, 9)]);
    }

    #[test]
    fn handoff_sockets_in_a_directory_are_found() {
        let dir = std::env::temp_dir().join(format!("rinha-discovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.handoff.sock", "a.handoff.sock", "a.sock", "notes"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let mut w = Discovery::start(Sources::dir(dir.clone()), Duration::from_secs(3600)).unwrap();
        let names = |w: &mut Watch| -> Vec<String> {
            let s = w.current();
            s.sockets
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into())
                .collect()
        };
        assert_eq!(names(&mut w), ["a.handoff.sock", "b.handoff.sock"]);
        std::fs::remove_file(dir.join("a.handoff.sock")).unwrap();
        w.refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while names(&mut w).len() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(names(&mut w), ["b.handoff.sock"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
