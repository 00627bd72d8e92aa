//! The backend set of one worker: round-robin over the backends, skipping the ones marked down.
//!
//! A backend whose connect fails (refused, missing socket, timeout) is marked down and not
//! tried again until its backoff runs out (100 ms, doubling per consecutive failure, at most
//! 2 s); the client that hit it is handed to the next backend. A successful connect clears
//! the mark. The set belongs to one worker runtime (`Cell`, no locks); each worker learns a
//! backend's failure on its own, which costs one refused connect per worker.
//!
//! Backends found in the background (`dns:` names, `HANDOFF_DIR`: `rinha_sys::discovery`)
//! join the listed ones: the set compares its copy of the discovery's snapshot with the
//! current one at each client (one atomic load) and rebuilds its list only when it changed,
//! keeping the health of the backends that stay. A failed connect asks for a new lookup.
//!
//! A backend that takes clients and answers none (frozen: its kernel still accepts) is
//! stalled, not down: in relay mode its [`Exchanges`] say so (`stall`), in hand-over mode an
//! unanswered hand-over does, and new clients then go to the others. A stalled backend is
//! still offered a client when every other one is down or stalled: a client waiting on it
//! beats a client refused.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rinha_sys::discovery::{Snapshot, Watch};

use monoio::net::{TcpStream, UnixStream};

use crate::config::BackendAddr;
use crate::stall::{Change, Exchanges, CHECKS};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A connected backend stream.
pub enum BackendStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Set while the backend is down: not tried before this instant.
    retry_at: Option<Instant>,
    /// Consecutive failed connects (or unanswered hand-overs); sizes the next backoff.
    failures: u32,
    /// The last hand-over went unanswered: stalled rather than down. Until `retry_at` it gets
    /// a client only when no other backend takes it; then one client probes it.
    unanswered: bool,
}

struct Backend {
    addr: BackendAddr,
    health: Cell<Health>,
    /// What this worker's relays to it report; shared with them, kept across rebuilds.
    exchanges: Rc<Exchanges>,
}

/// Whether a backend may be offered a client now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Up,
    /// Offered only when no backend that is up takes the client.
    Stalled,
    Down,
}

/// What a backend did with the client it was offered.
#[derive(Debug)]
pub enum Offered<T> {
    /// It has it and said so (a connect, a hand-over answered `+`).
    Taken(T),
    /// It has it and did not answer (hand-over): it keeps it, never offered to another, and
    /// counts as stalled.
    Unanswered(T),
}

/// The backends one worker balances over.
pub struct BackendSet {
    /// The listed backends (`dns:` entries stand for what the discovery finds).
    fixed: Vec<BackendAddr>,
    /// The discovery, if some backends are found in the background, and the snapshot the
    /// list was last built from.
    found: Option<RefCell<(Watch, Arc<Snapshot>)>>,
    /// Replaced (never changed in place) when the discovery's snapshot changes, so a client
    /// being placed keeps the list it started with.
    backends: RefCell<Rc<Vec<Backend>>>,
    next: Cell<usize>,
    connect_timeout: Duration,
}

/// Backoff after `failures` consecutive failed connects (`failures >= 1`).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

impl BackendSet {
    /// A set over `addrs`; `first` staggers the round-robin start between workers.
    pub fn new(addrs: &[BackendAddr], first: usize, connect_timeout: Duration) -> Self {
        Self::with_discovery(addrs, None, first, connect_timeout)
    }

    /// A set over `addrs` and what `watch` finds.
    pub fn with_discovery(
        addrs: &[BackendAddr],
        mut watch: Option<Watch>,
        first: usize,
        connect_timeout: Duration,
    ) -> Self {
        let snapshot = watch.as_mut().map(|w| w.current().clone());
        let backends = build(addrs, snapshot.as_deref(), &[]);
        let next = first % backends.len().max(1);
        BackendSet {
            fixed: addrs.to_vec(),
            found: watch.zip(snapshot).map(RefCell::new),
            backends: RefCell::new(Rc::new(backends)),
            next: Cell::new(next),
            connect_timeout,
        }
    }

    /// The list as of now: rebuilt first if the discovery found another set.
    fn list(&self) -> Rc<Vec<Backend>> {
        if let Some(found) = &self.found {
            let mut found = found.borrow_mut();
            let (watch, seen) = &mut *found;
            if !Arc::ptr_eq(watch.current(), seen) {
                *seen = watch.current().clone();
                let old = self.backends.borrow().clone();
                let new = build(&self.fixed, Some(seen), &old);
                *self.backends.borrow_mut() = Rc::new(new);
            }
        }
        self.backends.borrow().clone()
    }

    /// Index of the backend the next client starts at, advancing the round-robin.
    fn take_turn(&self, count: usize) -> usize {
        let start = self.next.get() % count.max(1);
        self.next.set((start + 1) % count.max(1));
        start
    }

    /// Whether backend `index` may be tried at `now`.
    pub fn is_up(&self, index: usize, now: Instant) -> bool {
        is_up(&self.backends.borrow()[index], now)
    }

    #[cfg(test)]
    fn mark_down(&self, index: usize, error: &io::Error) {
        mark_down(&self.backends.borrow()[index], error);
        if let Some(found) = &self.found {
            found.borrow().0.refresh();
        }
    }

    #[cfg(test)]
    fn mark_up(&self, index: usize) {
        mark_up(&self.backends.borrow()[index]);
    }
}

/// The backends of `fixed` (each `dns:` entry replaced by the addresses `found` holds) and
/// the hand-over sockets `found` holds, with the health `old` had for each that stays.
fn build(fixed: &[BackendAddr], found: Option<&Snapshot>, old: &[Backend]) -> Vec<Backend> {
    let mut addrs = Vec::new();
    for addr in fixed {
        match addr {
            BackendAddr::Dns(_) => {}
            _ => addrs.push(addr.clone()),
        }
    }
    if let Some(found) = found {
        if fixed.iter().any(|a| matches!(a, BackendAddr::Dns(_))) {
            addrs.extend(found.addrs.iter().map(|a| BackendAddr::Tcp(*a)));
        }
        addrs.extend(found.sockets.iter().map(|p| BackendAddr::Unix(p.clone())));
    }
    addrs
        .into_iter()
        .map(|addr| match old.iter().find(|b| b.addr == addr) {
            Some(b) => Backend {
                addr,
                health: Cell::new(b.health.get()),
                exchanges: b.exchanges.clone(),
            },
            None => Backend {
                addr,
                health: Cell::new(Health::default()),
                exchanges: Rc::default(),
            },
        })
        .collect()
}

fn is_up(backend: &Backend, now: Instant) -> bool {
    match backend.health.get().retry_at {
        None => true,
        Some(retry_at) => now >= retry_at,
    }
}

fn standing(backend: &Backend, now: Instant) -> Standing {
    let health = backend.health.get();
    match (is_up(backend, now), health.unanswered) {
        (true, _) if backend.exchanges.is_stalled() => Standing::Stalled,
        (true, _) => Standing::Up,
        (false, true) => Standing::Stalled,
        (false, false) => Standing::Down,
    }
}

fn mark_down(backend: &Backend, error: &io::Error) {
    let mut health = backend.health.get();
    let was_up = health.retry_at.is_none();
    health.failures = health.failures.saturating_add(1);
    let wait = backoff(health.failures);
    health.retry_at = Some(Instant::now() + wait);
    health.unanswered = false;
    backend.health.set(health);
    if was_up {
        tracing::warn!(backend = %backend.addr, %error, retry_in_ms = wait.as_millis() as u64, "backend down");
    } else {
        tracing::debug!(backend = %backend.addr, %error, retry_in_ms = wait.as_millis() as u64, "backend still down");
    }
}

/// A hand-over went unanswered: the backend has the client (it is never offered to another)
/// and the next clients go elsewhere until its backoff runs out.
fn mark_unanswered(backend: &Backend, wait_ms: u64) {
    let mut health = backend.health.get();
    let was_unanswered = health.unanswered;
    health.failures = health.failures.saturating_add(1);
    let wait = backoff(health.failures);
    health.retry_at = Some(Instant::now() + wait);
    health.unanswered = true;
    backend.health.set(health);
    if !was_unanswered {
        tracing::warn!(backend = %backend.addr, wait_ms, retry_in_ms = wait.as_millis() as u64, "backend stalled: a hand-over went unanswered; new clients go elsewhere");
    }
}

/// A client is offered to a backend whose last hand-over went unanswered (its backoff ran
/// out, or nothing else took the client): no other client follows it there until this one is
/// answered or `wait` passes, and a backoff after that.
fn probe(backend: &Backend, wait: Duration) {
    let mut health = backend.health.get();
    if health.unanswered {
        health.retry_at = Some(Instant::now() + wait + backoff(health.failures));
        backend.health.set(health);
    }
}

fn mark_up(backend: &Backend) {
    if backend.health.get().retry_at.is_some() {
        tracing::info!(backend = %backend.addr, "backend up again");
    }
    backend.health.set(Health::default());
}

impl BackendSet {
    /// Connects to the next backend in round-robin order, skipping down and stalled ones
    /// and marking the ones that fail; with it, the exchanges its relay reports to. `None`
    /// when every backend is down or failed.
    pub async fn connect(&self) -> Option<(BackendStream, Rc<Exchanges>)> {
        self.place(|stream| std::future::ready(Ok(Offered::Taken(stream))))
            .await
    }

    /// Like [`BackendSet::connect`], and each backend that connects is then given to `offer`:
    /// an error from it marks that backend down as a failed connect does, and the next one is
    /// tried (hand-over mode: a backend that refuses the client); [`Offered::Unanswered`]
    /// marks it stalled. `None` when every backend is down or failed.
    pub async fn offer<T, F, Fut>(&self, offer: F) -> Option<T>
    where
        F: FnMut(BackendStream) -> Fut,
        Fut: Future<Output = io::Result<Offered<T>>>,
    {
        self.place(offer).await.map(|(taken, _)| taken)
    }

    async fn place<T, F, Fut>(&self, mut offer: F) -> Option<(T, Rc<Exchanges>)>
    where
        F: FnMut(BackendStream) -> Fut,
        Fut: Future<Output = io::Result<Offered<T>>>,
    {
        let backends = self.list();
        let count = backends.len();
        if count == 0 {
            // Nothing found yet (the lb started first): look again now, not a period later.
            if let Some(found) = &self.found {
                found.borrow().0.refresh();
            }
        }
        let start = self.take_turn(count);
        let now = Instant::now();
        // The backends that are up first; the stalled ones only if none of those took it.
        for pass in [Standing::Up, Standing::Stalled] {
            for step in 0..count {
                let backend = &backends[(start + step) % count];
                if standing(backend, now) != pass {
                    continue;
                }
                probe(backend, self.connect_timeout);
                let offered = match self.connect_one(&backend.addr).await {
                    Ok(stream) => offer(stream).await,
                    Err(error) => Err(error),
                };
                match offered {
                    Ok(Offered::Taken(taken)) => {
                        mark_up(backend);
                        return Some((taken, backend.exchanges.clone()));
                    }
                    Ok(Offered::Unanswered(kept)) => {
                        mark_unanswered(backend, self.connect_timeout.as_millis() as u64);
                        return Some((kept, backend.exchanges.clone()));
                    }
                    Err(error) => {
                        mark_down(backend, &error);
                        if let Some(found) = &self.found {
                            found.borrow().0.refresh();
                        }
                    }
                }
            }
        }
        None
    }

    /// Relay mode: looks at every backend's [`Exchanges`] `CHECKS` times per `stall`, for the
    /// life of the worker (its one timer for this; the relays read no clock).
    pub async fn watch_stalls(&self, stall: Duration) {
        let tick = stall / CHECKS;
        let stall_ms = stall.as_millis() as u64;
        loop {
            monoio::time::sleep(tick).await;
            for backend in self.list().iter() {
                match backend.exchanges.check() {
                    None => {}
                    Some(Change::Stalled) => {
                        tracing::warn!(backend = %backend.addr, stall_ms, "backend stalled: bytes sent to it, none back; new clients go elsewhere")
                    }
                    Some(Change::Answered) => {
                        tracing::info!(backend = %backend.addr, "stalled backend answers again")
                    }
                    Some(Change::Cleared) => {
                        tracing::info!(backend = %backend.addr, "nothing waits on the stalled backend any more; the next client tries it")
                    }
                }
            }
        }
    }

    /// How long a connect (and, in hand-over mode, the backend's answer) may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    async fn connect_one(&self, addr: &BackendAddr) -> io::Result<BackendStream> {
        let attempt = async {
            match addr {
                BackendAddr::Unix(path) => UnixStream::connect(path).await.map(BackendStream::Unix),
                BackendAddr::Tcp(addr) => {
                    let stream = TcpStream::connect_addr(*addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(BackendStream::Tcp(stream))
                }
                BackendAddr::Dns(name) => Err(io::Error::other(format!("{name} unexpanded"))),
            }
        };
        match monoio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend connect timed out",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn turns_rotate_from_the_worker_offset() {
        let addrs = vec![
            BackendAddr::Unix("/a".into()),
            BackendAddr::Unix("/b".into()),
            BackendAddr::Unix("/c".into()),
        ];
        let set = BackendSet::new(&addrs, 4, Duration::from_millis(10));
        let turns: Vec<usize> = (0..4).map(|_| set.take_turn(3)).collect();
        assert_eq!(turns, vec![1, 2, 0, 1]);
    }

    #[test]
    fn down_backend_waits_for_its_backoff() {
        let addrs = vec![BackendAddr::Unix("/a".into())];
        let set = BackendSet::new(&addrs, 0, Duration::from_millis(10));
        let now = Instant::now();
        assert!(set.is_up(0, now));
        set.mark_down(0, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!set.is_up(0, Instant::now()));
        assert!(set.is_up(0, Instant::now() + BACKOFF_FIRST));
        set.mark_up(0);
        assert!(set.is_up(0, Instant::now()));
    }

    #[test]
    fn refused_backend_is_skipped_for_the_next() {
        let dir = std::env::temp_dir().join(format!("rinha-lb-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("live.sock");
        let _ = std::fs::remove_file(&live);
        let listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let addrs = vec![
            BackendAddr::Unix(dir.join("missing.sock")),
            BackendAddr::Unix(live.clone()),
        ];
        let set = BackendSet::new(&addrs, 0, Duration::from_millis(200));
        let connected = rinha_sys::driver::Driver::Epoll
            .block_on(async { set.connect().await.is_some() })
            .unwrap();
        assert!(connected);
        assert!(listener.accept().is_ok());
        assert!(
            !set.is_up(0, Instant::now()),
            "the refusing backend is marked down"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dns_backends_follow_their_records() {
        use rinha_sys::discovery::{Discovery, DnsName, Lookup, Own, Sources};
        use std::net::SocketAddr;
        use std::sync::Mutex;
        // One port on two loopback addresses, as a scaled service's replicas have.
        let at = |last: u8| SocketAddr::from(([127, 0, 0, last], 25201));
        let listeners = [at(2), at(3)].map(|a| std::net::TcpListener::bind(a).unwrap());
        let records = Arc::new(Mutex::new(vec![at(2), at(3)]));
        let r = records.clone();
        let lookup = Lookup::new(move |_| Ok(r.lock().unwrap().clone()));
        let name = DnsName::parse("dns:backend:25201").unwrap().unwrap();
        let sources = Sources::names(vec![name.clone()], lookup, Own::Nobody);
        let watch = Discovery::start(sources, Duration::from_secs(3600)).unwrap();
        let set = BackendSet::with_discovery(
            &[BackendAddr::Dns(name)],
            Some(watch),
            0,
            Duration::from_millis(500),
        );
        let peer_of = |set: &BackendSet| {
            rinha_sys::driver::Driver::Epoll
                .block_on(async {
                    match set.connect().await {
                        Some((BackendStream::Tcp(s), _)) => s.peer_addr().unwrap(),
                        _ => panic!("no backend"),
                    }
                })
                .unwrap()
        };
        assert_eq!([peer_of(&set), peer_of(&set)], [at(2), at(3)]);
        // .2 leaves the records (and stops listening): the next lookup drops it.
        *records.lock().unwrap() = vec![at(3)];
        drop(listeners);
        let _back = std::net::TcpListener::bind(at(3)).unwrap();
        set.found.as_ref().unwrap().borrow().0.refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while set.list().len() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(set.list().len(), 1);
        assert_eq!([peer_of(&set), peer_of(&set)], [at(3), at(3)]);
    }
}
