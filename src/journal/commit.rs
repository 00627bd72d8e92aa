//! The journal as one core uses it: when a record is on file.
//!
//! Intake and the senders append records to the core's [`Journal`] and, when the record
//! must be on file before they go on (an `accepted` before its 202, an `attempt` before its
//! send, a `purged` before its 200), wait for [`GroupCommit::committed`].
//!
//! With `JOURNAL_SYNC=none` a commit is a copy into the mapped file (journal/writer.rs), as
//! durable against a crash of the process as it will ever be and costing no syscall, so
//! every record is committed the moment it is appended and nobody waits.
//!
//! With `JOURNAL_SYNC=batch` a commit waits for the disk, so it is shared: one task per
//! core, the [`committer`], woken by the first record of a batch, first lets every other
//! task that is ready in this turn of the event loop append its own, then commits them all
//! with one `msync`. Under load a commit carries the records of every connection served in
//! that turn, not one each. `confirmed` and `dropped` do not wait and do not wake the
//! committer: they ride along with the next commit, or are committed on their own after at
//! most `IDLE_CHECK`. If one is lost in a machine crash, the payment replays as pinned to
//! the processor of its last attempt and is resolved there by a lookup, which finds the
//! same outcome.
//!
//! A commit failure fails only the waiters of that commit (intake answers 503 for those
//! payments, which were never queued; a sender puts its payment back). A poisoned journal
//! fails every later commit: intake then refuses payments (one error log).
//!
//! At start, [`restore`] puts the replayed journal back into the core's shard and queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use uuid::Uuid;

use crate::processor::Processor;
use crate::queue::{Queue, Queued};
use crate::store::Shard;

use super::state::{Live, LiveState};
use super::{Journal, JournalError, SyncMode};

/// How many failed commit generations are remembered (a waiter looks its own up on the turn
/// after the commit, so a handful would do).
const FAILED_KEPT: usize = 256;
/// How long the committer waits for a waited-on record before it writes the records nobody
/// waits for (`confirmed`, `dropped`) on their own, and looks for a quiet moment to compact.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Why a record is not durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("journal commit failed")]
pub struct NotDurable;

/// One core's journal and its group-commit state.
#[derive(Debug)]
pub struct GroupCommit {
    journal: RefCell<Journal>,
    /// Commit every record as it is appended (`JOURNAL_SYNC=none`: a commit is a copy).
    inline: bool,
    /// Generation the records appended now belong to.
    open_gen: Cell<u64>,
    /// Last generation written (or failed).
    done_gen: Cell<u64>,
    /// Recent generations whose commit failed.
    failed: RefCell<VecDeque<u64>>,
    /// Tasks waiting for a commit.
    waiters: RefCell<Vec<Waker>>,
    /// The committer, parked until a record is appended.
    committer: RefCell<Option<Waker>>,
    dirty: Cell<bool>,
    /// Records nobody waits for are appended and not written yet.
    lazy: Cell<bool>,
    poisoned_logged: Cell<bool>,
    /// Commits made (in batch mode each one `msync`).
    commits: Cell<u64>,
}

impl GroupCommit {
    pub fn new(journal: Journal) -> Self {
        GroupCommit {
            inline: journal.sync_mode() == SyncMode::None,
            journal: RefCell::new(journal),
            open_gen: Cell::new(1),
            done_gen: Cell::new(0),
            failed: RefCell::new(VecDeque::new()),
            waiters: RefCell::new(Vec::new()),
            committer: RefCell::new(None),
            dirty: Cell::new(false),
            lazy: Cell::new(false),
            poisoned_logged: Cell::new(false),
            commits: Cell::new(0),
        }
    }

    /// The journal itself, for tests that damage it.
    #[cfg(test)]
    pub(crate) fn journal_for_test(&self) -> std::cell::RefMut<'_, Journal> {
        self.journal.borrow_mut()
    }

    /// Whether the journal refuses every commit (intake must refuse payments).
    pub fn poisoned(&self) -> bool {
        self.journal.borrow().is_poisoned()
    }

    /// Appends an `accepted` record; wait for [`GroupCommit::committed`] before answering.
    pub fn accepted(&self, id: Uuid, cents: u64) -> u64 {
        self.journal.borrow_mut().accepted(id, cents);
        self.mark()
    }

    /// Appends an `attempt` record; wait for [`GroupCommit::committed`] before sending.
    pub fn attempt(&self, id: Uuid, processor: Processor, requested_at_us: i64) -> u64 {
        self.journal
            .borrow_mut()
            .attempt(id, processor, requested_at_us);
        self.mark()
    }

    /// Appends a `confirmed` record (nobody waits; in batch mode it rides with the next
    /// commit).
    pub fn confirmed(&self, id: Uuid, processor: Processor, requested_at_us: i64, cents: u64) {
        self.journal
            .borrow_mut()
            .confirmed(id, processor, requested_at_us, cents);
        self.mark_lazy();
    }

    /// Appends a `dropped` record (nobody waits; in batch mode it rides with the next commit).
    pub fn dropped(&self, id: Uuid) {
        self.journal.borrow_mut().dropped(id);
        self.mark_lazy();
    }

    /// Appends a `purged` record; wait for [`GroupCommit::committed`] before answering.
    pub fn purged(&self) -> u64 {
        self.journal.borrow_mut().purged();
        self.mark()
    }

    /// Waits until the commit of generation `gen` is done; `Err` if it failed.
    pub async fn committed(&self, gen: u64) -> Result<(), NotDurable> {
        poll_fn(|cx| {
            if self.done_gen.get() >= gen {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if self.failed.borrow().contains(&gen) {
            Err(NotDurable)
        } else {
            Ok(())
        }
    }

    /// Writes whatever is appended now (used by the committer and at shutdown).
    pub fn commit_now(&self) {
        let gen = self.open_gen.get();
        self.open_gen.set(gen + 1);
        self.dirty.set(false);
        self.lazy.set(false);
        self.commits.set(self.commits.get() + 1);
        let result = self.journal.borrow_mut().commit();
        if let Err(e) = result {
            self.note_failure(gen, &e);
        }
        self.done_gen.set(gen);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Commits made so far.
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    /// Rewrites the journal as its live state now (after a purge: next to nothing), unless
    /// records wait for a commit (they would be committed outside their generation).
    pub fn compact_now(&self) {
        if self.dirty.get() || self.lazy.get() {
            return;
        }
        if let Err(e) = self.journal.borrow_mut().compact() {
            tracing::warn!(error = %e, "journal compaction failed");
        }
    }

    /// Compacts if the journal has grown enough (call only when no payment is pending).
    pub fn maybe_compact(&self) {
        if self.dirty.get() || self.lazy.get() {
            return;
        }
        if let Err(e) = self.journal.borrow_mut().maybe_compact() {
            tracing::warn!(error = %e, "journal compaction failed");
        }
    }

    fn note_failure(&self, gen: u64, e: &JournalError) {
        let mut failed = self.failed.borrow_mut();
        if failed.len() == FAILED_KEPT {
            failed.pop_front();
        }
        failed.push_back(gen);
        if self.journal.borrow().is_poisoned() {
            if !self.poisoned_logged.replace(true) {
                tracing::error!(error = %e, "journal unusable: refusing new payments (503) until restart");
            }
        } else {
            tracing::warn!(error = %e, "journal commit failed; its payments were refused");
        }
    }

    /// Marks the open generation as holding records and wakes the committer (inline: commits
    /// it).
    fn mark(&self) -> u64 {
        let gen = self.open_gen.get();
        if self.inline {
            self.commit_now();
            return gen;
        }
        if !self.dirty.replace(true) {
            if let Some(w) = self.committer.borrow_mut().take() {
                w.wake();
            }
        }
        gen
    }

    /// Notes a record nobody waits for (inline: commits it).
    fn mark_lazy(&self) {
        if self.inline {
            self.commit_now();
        } else {
            self.lazy.set(true);
        }
    }

    /// Waits until a waited-on record is appended.
    async fn wait_dirty(&self) {
        poll_fn(|cx| {
            if self.dirty.get() {
                Poll::Ready(())
            } else {
                *self.committer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The commit task of one core (see the module doc), and its idle ticker, which compacts
/// when `quiet()` (nothing queued or in flight).
pub async fn committer(durable: Rc<GroupCommit>, quiet: impl Fn() -> bool + 'static) {
    let d = durable.clone();
    monoio::spawn(async move { idle_ticker(&d, quiet).await });
    commit_loop(&durable).await;
}

/// Commits once per turn of the event loop that appended a waited-on record.
///
/// No explicit yield before the commit: the first `mark()` of a turn pushes this task to
/// the back of the run queue, behind every task the same driver poll woke, so those
/// append their records first. No timer either: under load, arming one per commit costs
/// more than the commit.
async fn commit_loop(durable: &GroupCommit) {
    loop {
        durable.wait_dirty().await;
        durable.commit_now();
    }
}

/// Every `IDLE_CHECK`: writes the records nobody waits for if no commit took them, and
/// compacts when `quiet()` (nothing queued or in flight). Below the size threshold the
/// compaction check is one comparison.
async fn idle_ticker(durable: &GroupCommit, quiet: impl Fn() -> bool) {
    loop {
        monoio::time::sleep(IDLE_CHECK).await;
        if durable.lazy.get() && !durable.dirty.get() {
            durable.commit_now();
        }
        if quiet() {
            durable.maybe_compact();
        }
    }
}

/// Puts a core's replayed journal back, consuming it in order: confirmed payments into the
/// shard, unsettled ones into the queue (a pinned one first resolved at its processor, never
/// re-sent blindly), every id into the shard's accepted ids. The fold's table is freed
/// before the first payment is put back ([`LiveState::into_ordered`]).
pub fn restore(core: usize, shard: &Shard, queue: &Queue, state: LiveState) {
    let (mut confirmed, mut unsettled, mut pinned) = (0usize, 0usize, 0usize);
    for live in state.into_ordered() {
        match live {
            Live::Confirmed(c) => {
                confirmed += 1;
                shard.ids.insert(c.id, c.cents);
                shard.restore(c.requested_at_us, c.cents, c.processor);
            }
            Live::Unsettled(u) => {
                unsettled += 1;
                shard.ids.insert(u.id, u.cents);
                queue.admit(match u.pinned {
                    Some((p, requested_at_us)) => {
                        pinned += 1;
                        let attempt = shard.begin_attempt(requested_at_us, p);
                        Queued::replayed_pinned(u.id, u.cents, p, attempt, requested_at_us)
                    }
                    None => Queued::new(u.id, u.cents),
                });
            }
        }
    }
    tracing::info!(core, confirmed, unsettled, pinned, "journal replayed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SyncMode;

    fn rt<F: std::future::Future<Output = ()>>(f: F) {
        monoio::start::<monoio::time::TimeDriver<monoio::LegacyDriver>, _>(f)
    }

    /// Runs the core's committer and idle ticker for `d`, as the runtime does.
    fn start_committer(d: &Rc<GroupCommit>) {
        let c = d.clone();
        monoio::spawn(async move { commit_loop(&c).await });
        let c = d.clone();
        monoio::spawn(async move { idle_ticker(&c, || false).await });
    }

    fn durable(dir: &std::path::Path, sync: SyncMode) -> Rc<GroupCommit> {
        let (j, _) = Journal::open(dir, 0, sync).unwrap();
        Rc::new(GroupCommit::new(j))
    }

    #[test]
    fn without_sync_every_record_is_on_file_when_appended() {
        let dir = tempfile::tempdir().unwrap();
        let d = durable(dir.path(), SyncMode::None);
        rt(async {
            start_committer(&d);
            let gen = d.accepted(Uuid::from_u128(1), 100);
            assert_eq!(d.commits(), 1, "committed before any await");
            assert_eq!(d.committed(gen).await, Ok(()));
            d.attempt(Uuid::from_u128(1), Processor::Default, 5);
            d.confirmed(Uuid::from_u128(1), Processor::Default, 5, 100);
            d.accepted(Uuid::from_u128(2), 100);
            assert_eq!(d.commits(), 4);
            // What another process reads now is what a crash would leave.
            let path = d.journal.borrow().path().to_owned();
            let bytes = std::fs::read(&path).unwrap();
            let replay = crate::journal::replay::scan(&path, &bytes)
                .unwrap()
                .state
                .to_replay();
            assert_eq!(replay.confirmed.len(), 1);
            assert_eq!(replay.unsettled.len(), 1);
        });
    }

    #[test]
    fn one_commit_carries_every_task_of_the_turn() {
        let dir = tempfile::tempdir().unwrap();
        let d = durable(dir.path(), SyncMode::Batch);
        rt(async {
            start_committer(&d);
            let tasks: Vec<_> = (0..20u128)
                .map(|n| {
                    let d = d.clone();
                    monoio::spawn(async move {
                        let gen = d.accepted(Uuid::from_u128(n), 100);
                        d.committed(gen).await
                    })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await, Ok(()));
            }
            assert_eq!(d.commits(), 1);
            // A confirmation alone waits for the idle flush; a later waited-on record takes
            // it along.
            d.confirmed(Uuid::from_u128(0), Processor::Default, 5, 100);
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(d.commits(), 1);
            assert_eq!(
                d.committed(d.accepted(Uuid::from_u128(100), 1)).await,
                Ok(())
            );
            assert_eq!(d.commits(), 2);
            d.dropped(Uuid::from_u128(1));
            monoio::time::sleep(IDLE_CHECK * 2).await;
            assert_eq!(d.commits(), 3, "written on its own when idle");
        });
        drop(d);
        // The runtime leaks its parked tasks (and their handles on the journal): read the
        // directory without taking the journal's lock.
        let replay = crate::journal::replay_dir(dir.path()).unwrap();
        assert_eq!(replay.unsettled.len(), 19);
        assert_eq!(replay.confirmed.len(), 1, "carried by the later commit");
    }

    #[test]
    fn a_failed_commit_fails_its_waiters_only() {
        for sync in [SyncMode::None, SyncMode::Batch] {
            let dir = tempfile::tempdir().unwrap();
            let d = durable(dir.path(), sync);
            rt(async {
                start_committer(&d);
                assert_eq!(d.committed(d.accepted(Uuid::from_u128(1), 1)).await, Ok(()));
                d.journal.borrow_mut().fail_writes_for_test().unwrap();
                let gen = d.accepted(Uuid::from_u128(2), 1);
                assert_eq!(d.committed(gen).await, Err(NotDurable), "{sync:?}");
                let gen = d.accepted(Uuid::from_u128(3), 1);
                assert_eq!(d.committed(gen).await, Err(NotDurable), "{sync:?}");
                assert!(!d.poisoned(), "a full disk may clear: {sync:?}");
            });
            drop(d);
            let replay = crate::journal::replay_dir(dir.path()).unwrap();
            let ids: Vec<_> = replay.unsettled.iter().map(|u| u.id).collect();
            assert_eq!(ids, vec![Uuid::from_u128(1)]);
        }
    }

    /// Intake answered 503 for the payments of a commit whose `msync` failed: a restart must
    /// not replay them (issue 16, item 3).
    #[test]
    fn payments_refused_on_a_failed_sync_never_replay() {
        let dir = tempfile::tempdir().unwrap();
        let d = durable(dir.path(), SyncMode::Batch);
        rt(async {
            start_committer(&d);
            assert_eq!(d.committed(d.accepted(Uuid::from_u128(1), 1)).await, Ok(()));
            d.journal.borrow_mut().fail_syncs_for_test();
            let gen = d.accepted(Uuid::from_u128(2), 1);
            assert_eq!(d.committed(gen).await, Err(NotDurable));
            assert!(d.poisoned());
        });
        let replay = crate::journal::replay_dir(dir.path()).unwrap();
        let ids: Vec<_> = replay.unsettled.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1)]);
    }

    #[test]
    fn a_poisoned_journal_refuses_intake() {
        let dir = tempfile::tempdir().unwrap();
        let d = durable(dir.path(), SyncMode::None);
        rt(async {
            start_committer(&d);
            assert_eq!(d.committed(d.accepted(Uuid::from_u128(1), 1)).await, Ok(()));
            // A compaction that renamed its file in and could not map it.
            let stop = crate::journal::compact::Step::Renamed;
            d.journal.borrow_mut().compact_until(stop).unwrap();
            let gen = d.accepted(Uuid::from_u128(2), 1);
            assert_eq!(d.committed(gen).await, Err(NotDurable));
            assert!(d.poisoned());
        });
    }
}
