//! The other instances as this one knows them: the static `PEERS`, and the `dns:` ones
//! [`rinha_sys::discovery`] finds. The summary aggregator asks every replica it has seen,
//! not only those the records list now ([`Replicas::to_ask`]: a replica that died left the
//! records, and its payments did not leave the totals); each core resizes its share of
//! `MAX_IN_FLIGHT` to the replicas present ([`follow_share`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rinha_sys::discovery::Watch;

use crate::config::Endpoint;

/// The peers of the summary aggregator (its thread only).
#[derive(Debug)]
pub struct Replicas {
    fixed: Vec<Endpoint>,
    watch: Option<RefCell<Watch>>,
    /// Every discovered replica, with when the records last listed it ([`Self::observe`]).
    seen: RefCell<BTreeMap<SocketAddr, Instant>>,
    forget_after: Duration,
}

/// How often the aggregator's thread notes which replicas the records list
/// ([`Replicas::observe`]), summaries or not: a replica's absence is timed from when it
/// left, not from the last summary.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(500);

impl Replicas {
    pub fn new(fixed: Vec<Endpoint>, watch: Option<Watch>, forget_after: Duration) -> Self {
        Replicas {
            fixed,
            watch: watch.map(RefCell::new),
            seen: RefCell::new(BTreeMap::new()),
            forget_after,
        }
    }

    /// The static peers only (tests of one instance, and peers given as a list).
    pub fn fixed(fixed: Vec<Endpoint>) -> Self {
        Self::new(fixed, None, Duration::ZERO)
    }

    /// Whom a summary or a purge must hear from: the static peers, every replica the records
    /// list now, and every one they listed within `PEER_FORGET_MS` (gone from the records:
    /// dead, restarting or cut off; a summary without it would leave its payments out, so
    /// it fails instead until it answers or is forgotten).
    pub fn to_ask(&self) -> Vec<Endpoint> {
        self.observe();
        let mut ask = self.fixed.clone();
        for addr in self.seen.borrow().keys() {
            let peer = Endpoint::Tcp(addr.to_string());
            // Listed and found both: asked once, or its payments would count twice.
            if !ask.contains(&peer) {
                ask.push(peer);
            }
        }
        ask
    }

    /// Notes the replicas the records list now, and forgets those absent for
    /// `PEER_FORGET_MS`.
    pub fn observe(&self) {
        let Some(watch) = &self.watch else {
            return;
        };
        let now = Instant::now();
        let mut seen = self.seen.borrow_mut();
        for addr in &watch.borrow_mut().current().addrs {
            seen.insert(*addr, now);
        }
        seen.retain(|addr, listed| {
            let keep = now.saturating_duration_since(*listed) < self.forget_after;
            if !keep {
                tracing::warn!(peer = %addr, "replica forgotten: gone from the records for PEER_FORGET_MS; summaries leave it out");
            }
            keep
        });
    }

    /// Whether some replicas come from the records (then [`Self::observe`] runs on a period).
    pub fn discovered(&self) -> bool {
        self.watch.is_some()
    }

    /// A call to a replica failed: look the names up again now (it may have moved).
    pub fn call_failed(&self) {
        if let Some(watch) = &self.watch {
            watch.borrow().refresh();
        }
    }
}

/// Follows the instances present (this one, `fixed` static peers, the replicas the records
/// list now), checking every `every`, and calls `resize` with their count when it changes:
/// each core's share of `MAX_IN_FLIGHT` ([`crate::config::lane_cap_for`]). The first call
/// happens before the first await, so senders spawned after start under it.
pub async fn follow_share(mut watch: Watch, fixed: usize, every: Duration, resize: impl Fn(usize)) {
    let mut instances = 0;
    loop {
        let now = 1 + fixed + watch.current().addrs.len();
        if now != instances {
            instances = now;
            resize(instances);
        }
        monoio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rinha_sys::discovery::{Discovery, DnsName, Lookup, Own, Sources};
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_replica_is_asked_until_it_has_been_absent_for_the_forget_time() {
        let at = |last: u8| SocketAddr::from(([127, 0, 0, last], 25301));
        let records = Arc::new(Mutex::new(vec![at(2), at(3)]));
        let r = records.clone();
        let lookup = Lookup::new(move |_| Ok(r.lock().unwrap().clone()));
        let name = DnsName::parse("dns:replicas:25301").unwrap().unwrap();
        let sources = Sources::names(vec![name], lookup, Own::Nobody);
        let mut watch = Discovery::start(sources, Duration::from_secs(3600)).unwrap();
        let fixed = vec![Endpoint::Tcp(at(2).to_string())];
        let forget = Duration::from_millis(300);
        let replicas = Replicas::new(fixed, Some(watch.clone()), forget);
        // Listed statically and found: asked once.
        assert_eq!(replicas.to_ask().len(), 2);
        *records.lock().unwrap() = vec![at(2)];
        watch.refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while watch.current().addrs.len() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Gone from the records: still asked, until the forget time has passed.
        assert_eq!(replicas.to_ask().len(), 2);
        std::thread::sleep(forget);
        assert_eq!(replicas.to_ask(), [Endpoint::Tcp(at(2).to_string())]);
    }
}
