//! A processor's name as one core sees it ([`Address`]), looked up off the event loop: a
//! lookup blocks (`getaddrinfo`, seconds behind a slow DNS), so it runs on a thread of its
//! own and the core picks the answer up at a later connect, keeping the last address that
//! resolved meanwhile. One lookup per name per core at a time, at most one per
//! [`RESOLVE_EVERY`]. [`Resolver`] is the lookup itself: the system's, or a test's.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A name is looked up again at most this often (after a connect error, or while it has
/// never resolved).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);

type LookupFn = dyn Fn(&str) -> io::Result<SocketAddr> + Send + Sync;

/// Turns `host:port` into its first socket address. A lookup blocks (for seconds when DNS is
/// slow), so it runs at start or on a helper thread, never on a core's event loop.
#[derive(Clone)]
pub struct Resolver(Arc<LookupFn>);

impl Resolver {
    /// The system's resolver (`getaddrinfo`).
    pub fn system() -> Self {
        Self::new(|authority| {
            authority
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other(format!("{authority} resolves to nothing")))
        })
    }

    /// A resolver of one's own (tests: a slow or failing one).
    pub fn new(lookup: impl Fn(&str) -> io::Result<SocketAddr> + Send + Sync + 'static) -> Self {
        Resolver(Arc::new(lookup))
    }

    /// Looks `authority` up on this thread (blocking).
    pub fn resolve(&self, authority: &str) -> io::Result<SocketAddr> {
        (self.0)(authority)
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// One processor's name on one core: the address to connect to, never waited for.
#[derive(Debug)]
pub struct Address {
    authority: String,
    resolver: Resolver,
    /// The address the name resolved to last.
    last_good: Cell<Option<SocketAddr>>,
    /// A connect to `last_good` failed since it was learned: the name may point elsewhere
    /// now (a restarted container).
    stale: Cell<bool>,
    /// When the last lookup started.
    looked_up_at: Cell<Option<Instant>>,
    /// The answer of the lookup running now, if one is.
    pending: RefCell<Option<flume::Receiver<io::Result<SocketAddr>>>>,
}

impl Address {
    /// `known` is what the name resolved to at start, if it did.
    pub fn new(authority: String, resolver: Resolver, known: Option<SocketAddr>) -> Self {
        Address {
            authority,
            resolver,
            last_good: Cell::new(known),
            stale: Cell::new(false),
            looked_up_at: Cell::new(known.map(|_| Instant::now())),
            pending: RefCell::new(None),
        }
    }

    /// The address to connect to now: the last good one, or an error while the name has
    /// never resolved. Takes a finished lookup's answer and starts a lookup when one is due;
    /// never waits for one.
    pub fn current(&self) -> io::Result<SocketAddr> {
        self.collect();
        let due = (self.stale.get() || self.last_good.get().is_none())
            && self.pending.borrow().is_none()
            && self
                .looked_up_at
                .get()
                .is_none_or(|t| t.elapsed() >= RESOLVE_EVERY);
        if due {
            self.look_up();
        }
        self.last_good.get().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has not resolved yet", self.authority),
            )
        })
    }

    /// A connect to the current address failed: the name is looked up again when due.
    pub fn connect_failed(&self) {
        self.stale.set(true);
    }

    /// Takes the answer of a finished lookup; a failed one keeps the last good address.
    fn collect(&self) {
        let answer = match self.pending.borrow().as_ref().map(|rx| rx.try_recv()) {
            None | Some(Err(flume::TryRecvError::Empty)) => return,
            Some(Ok(answer)) => answer,
            Some(Err(flume::TryRecvError::Disconnected)) => {
                Err(io::Error::other("the lookup thread died"))
            }
        };
        self.pending.replace(None);
        match answer {
            Ok(addr) => {
                let old = self.last_good.replace(Some(addr));
                self.stale.set(false);
                if old != Some(addr) {
                    tracing::info!(name = %self.authority, %addr, "processor address resolved");
                }
            }
            Err(e) => tracing::debug!(
                name = %self.authority,
                error = %e,
                kept = ?self.last_good.get(),
                "processor lookup failed"
            ),
        }
    }

    /// Starts a lookup on a thread of its own (at most one per [`RESOLVE_EVERY`], so threads
    /// stay few even when a resolver hangs: that lookup just stays pending).
    fn look_up(&self) {
        self.looked_up_at.set(Some(Instant::now()));
        let (tx, rx) = flume::bounded(1);
        let (resolver, authority) = (self.resolver.clone(), self.authority.clone());
        let thread = std::thread::Builder::new()
            .name("rinha-resolve".into())
            .spawn(move || {
                let _ = tx.send(resolver.resolve(&authority));
            });
        match thread {
            Ok(_) => {
                self.pending.replace(Some(rx));
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a lookup thread"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A resolver that answers what `answer` holds after `delay`, counting its calls.
    fn scripted(
        delay: Duration,
    ) -> (
        Resolver,
        Arc<AtomicUsize>,
        Arc<Mutex<io::Result<SocketAddr>>>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(io::Result::Ok(addr(2))));
        let (c, a) = (calls.clone(), answer.clone());
        let resolver = Resolver::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            match &*a.lock().unwrap() {
                Ok(x) => Ok(*x),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            }
        });
        (resolver, calls, answer)
    }

    fn settle(a: &Address, within: Duration) {
        let deadline = Instant::now() + within;
        while a.pending.borrow().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            a.collect();
        }
    }

    #[test]
    fn a_slow_lookup_is_never_waited_for() {
        let (resolver, calls, _) = scripted(Duration::from_millis(500));
        let a = Address::new("p:1".into(), resolver, None);
        let asked = Instant::now();
        assert!(a.current().is_err());
        assert!(a.current().is_err());
        assert!(asked.elapsed() < Duration::from_millis(100));
        settle(&a, Duration::from_secs(5));
        assert_eq!(a.current().unwrap(), addr(2));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one lookup at a time");
    }

    #[test]
    fn lookups_are_throttled_and_the_last_good_address_is_kept() {
        let (resolver, calls, answer) = scripted(Duration::ZERO);
        let a = Address::new("p:1".into(), resolver, Some(addr(1)));
        // Known at start: nothing to look up until a connect fails.
        assert_eq!(a.current().unwrap(), addr(1));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // A connect fails right after start: the lookup waits for its turn, the old address
        // is used meanwhile, however often it is asked for.
        a.connect_failed();
        for _ in 0..1000 {
            assert_eq!(a.current().unwrap(), addr(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        std::thread::sleep(RESOLVE_EVERY);
        assert_eq!(a.current().unwrap(), addr(1));
        settle(&a, Duration::from_secs(5));
        assert_eq!(a.current().unwrap(), addr(2));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failed lookup keeps the address that last worked.
        *answer.lock().unwrap() = Err(io::Error::other("SERVFAIL"));
        a.connect_failed();
        std::thread::sleep(RESOLVE_EVERY);
        a.current().unwrap();
        settle(&a, Duration::from_secs(5));
        assert_eq!(a.current().unwrap(), addr(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
