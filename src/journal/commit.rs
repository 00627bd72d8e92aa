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
//! payments, which were never queued; a sender puts its payment back). A journal waiting to
//! open the file its compaction renamed in refuses commits (intake answers 503) until the
//! idle ticker or a commit opens it. A poisoned journal can never commit again: the process
//! exits ([`EXIT_JOURNAL`]) so that its restart replays the file, rather than stay up
//! answering 503 with its queue stranded.
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

use super::background::Background;
use super::state::{Live, LiveState};
use super::{Journal, JournalError, SyncMode};

/// How many failed commit generations are remembered (a waiter looks its own up on the turn
/// after the commit, so a handful would do).
const FAILED_KEPT: usize = 256;
/// How long the committer waits for a waited-on record before it writes the records nobody
/// waits for (`confirmed`, `dropped`) on their own, opens a compacted file still waiting to
/// be opened, and tends the compaction off the core.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// The exit code of a process whose journal is poisoned (`main` documents it).
pub const EXIT_JOURNAL: i32 = 3;

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
    /// What a poisoned journal does to the process: [`exit_poisoned`], except in tests.
    on_poisoned: fn(&JournalError),
    /// Commits made (in batch mode each one `msync`).
    commits: Cell<u64>,
    /// Record bytes those commits wrote.
    bytes: Cell<u64>,
    /// A compaction whose new file a helper thread is writing (`background.rs`).
    compacting: RefCell<Option<Background>>,
}

/// Logs why the journal is unusable and exits with [`EXIT_JOURNAL`]: every record it
/// committed is on file, and the restart replays them (compose restarts on exit).
pub fn exit_poisoned(e: &JournalError) {
    tracing::error!(error = %e, "journal unusable: exiting so that a restart replays it");
    std::process::exit(EXIT_JOURNAL);
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
            on_poisoned: exit_poisoned,
            commits: Cell::new(0),
            bytes: Cell::new(0),
            compacting: RefCell::new(None),
        }
    }

    /// Tests only: `hook` runs instead of the exit when the journal is poisoned.
    #[cfg(test)]
    pub(crate) fn on_poisoned_for_test(mut self, hook: fn(&JournalError)) -> Self {
        self.on_poisoned = hook;
        self
    }

    /// The journal itself, for tests that damage it.
    #[cfg(test)]
    pub(crate) fn journal_for_test(&self) -> std::cell::RefMut<'_, Journal> {
        self.journal.borrow_mut()
    }

    /// Whether the journal refuses commits now (intake must refuse payments): poisoned (the
    /// process is exiting), or waiting to open the file its compaction renamed in.
    pub fn poisoned(&self) -> bool {
        let j = self.journal.borrow();
        j.is_poisoned() || j.awaits_reopen()
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
        let pending = self.journal.borrow().pending() as u64;
        let result = self.journal.borrow_mut().commit();
        match result {
            Ok(()) => self.bytes.set(self.bytes.get() + pending),
            Err(e) => self.note_failure(gen, &e),
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

    /// Record bytes committed so far (a failed commit's are not).
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Rewrites the journal as its live state now (after a purge: next to nothing), unless
    /// records wait for a commit (they would be committed outside their generation).
    pub fn compact_now(&self) {
        if self.dirty.get() || self.lazy.get() {
            return;
        }
        self.abandon_compaction();
        let result = self.journal.borrow_mut().compact();
        self.compacted(result);
    }

    /// Compacts if the journal has grown enough (call only when no payment is pending).
    pub fn maybe_compact(&self) {
        if self.dirty.get() || self.lazy.get() {
            return;
        }
        self.abandon_compaction();
        let result = self.journal.borrow_mut().maybe_compact().map(drop);
        self.compacted(result);
    }

    /// Opens the file a compaction renamed in, if one waits (the idle ticker's retry).
    /// One the helper's compaction renamed in is opened here too.
    pub fn heal(&self) {
        let result = self.journal.borrow_mut().heal();
        match result {
            Ok(()) => {}
            Err(e) if self.journal.borrow().is_poisoned() => (self.on_poisoned)(&e),
            Err(e) => tracing::debug!(error = %e, "journal: compacted file still not open"),
        }
    }

    /// The heal-or-exit rule for a compaction step that failed, on the core or off it: a
    /// poisoned journal exits ([`exit_poisoned`]); one waiting to open its new file refuses
    /// payments until [`GroupCommit::heal`] (or a commit) opens it; an unchanged one tries
    /// again once it has grown.
    fn compacted(&self, result: Result<(), JournalError>) {
        let Err(e) = result else { return };
        let (poisoned, waits) = {
            let j = self.journal.borrow();
            (j.is_poisoned(), j.awaits_reopen())
        };
        if poisoned {
            (self.on_poisoned)(&e);
        } else if waits {
            tracing::error!(error = %e, "journal compacted but its new file cannot be opened: refusing payments (503) until it can");
        } else {
            tracing::warn!(error = %e, "journal compaction failed; the journal is unchanged");
        }
    }

    /// Starts a compaction on the helper thread once the file has grown enough, and finishes
    /// it on the core once the helper is done (and no record waits for a commit): the core
    /// never reads or rewrites the whole file itself. Returns whether one finished.
    ///
    /// Every failure, of the helper's work or of the finish on the core, goes through the
    /// heal-or-exit rule of [`Journal::compact`]: see `compacted`.
    pub fn tend_compaction(&self) -> bool {
        // The helper's directory sync of the last finish (`JOURNAL_SYNC=none`), if done.
        let settled = self.journal.borrow_mut().settle();
        self.compacted(settled);
        if self.dirty.get() || self.lazy.get() {
            return false;
        }
        let mut compacting = self.compacting.borrow_mut();
        let mut finished = false;
        let result = match compacting.take() {
            Some(bg) if bg.is_finished() => match self.journal.borrow_mut().finish_compaction(bg) {
                Ok(None) => {
                    finished = true;
                    Ok(())
                }
                Ok(Some(catching_up)) => {
                    *compacting = Some(catching_up);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Some(bg) => {
                *compacting = Some(bg);
                Ok(())
            }
            None => {
                let mut journal = self.journal.borrow_mut();
                if journal.wants_compaction() {
                    journal.start_compaction().map(|bg| *compacting = Some(bg))
                } else {
                    Ok(())
                }
            }
        };
        drop(compacting);
        self.compacted(result);
        finished
    }

    /// Drops a compaction the helper is writing (waits for it): a compaction on the core
    /// replaces it.
    fn abandon_compaction(&self) {
        if let Some(bg) = self.compacting.borrow_mut().take() {
            self.journal.borrow_mut().abandon_compaction(bg);
        }
    }

    fn note_failure(&self, gen: u64, e: &JournalError) {
        let mut failed = self.failed.borrow_mut();
        if failed.len() == FAILED_KEPT {
            failed.pop_front();
        }
        failed.push_back(gen);
        if self.journal.borrow().is_poisoned() {
            (self.on_poisoned)(e);
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

/// The commit task of one core (see the module doc), and its idle ticker, which tends the
/// compaction ([`GroupCommit::tend_compaction`]).
pub async fn committer(durable: Rc<GroupCommit>) {
    let d = durable.clone();
    monoio::spawn(async move { idle_ticker(&d).await });
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

/// Every `IDLE_CHECK`: writes the records nobody waits for if no commit took them, opens a
/// compacted file still waiting to be opened (intake refuses payments until then, so no
/// commit would), and tends the compaction (under load too: the helper thread does the
/// work). Below the size threshold that is one comparison.
async fn idle_ticker(durable: &GroupCommit) {
    loop {
        monoio::time::sleep(IDLE_CHECK).await;
        if durable.lazy.get() && !durable.dirty.get() {
            durable.commit_now();
        }
        durable.heal();
        durable.tend_compaction();
    }
}

/// Puts a core's replayed journal back, consuming it in order: confirmed payments into the
/// shard, unsettled ones into the queue (a pinned one first resolved at its processor, never
/// re-sent blindly), every id into the shard's accepted ids. The fold's table is freed
/// before the first payment is put back ([`LiveState::into_ordered`]).
pub fn restore(core: usize, shard: &Shard, queue: &Queue, mut state: LiveState) {
    let (mut confirmed, mut unsettled, mut pinned) = (0usize, 0usize, 0usize);
    let folded = state.take_folded();
    let buckets = folded.len();
    shard.restore_folded(folded);
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
    tracing::info!(
        core,
        confirmed,
        unsettled,
        pinned,
        buckets,
        "journal replayed"
    );
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
        monoio::spawn(async move { idle_ticker(&c).await });
    }

    thread_local! {
        /// How often this thread's journals were found poisoned (where the process exits).
        static EXITS: Cell<u32> = const { Cell::new(0) };
    }

    fn count_exit(_: &JournalError) {
        EXITS.with(|n| n.set(n.get() + 1));
    }

    fn durable(dir: &std::path::Path, sync: SyncMode) -> Rc<GroupCommit> {
        let (j, _) = Journal::open(dir, 0, sync).unwrap();
        Rc::new(GroupCommit::new(j).on_poisoned_for_test(count_exit))
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
            assert_eq!(EXITS.with(Cell::get), 1, "the process exits");
        });
        let replay = crate::journal::replay_dir(dir.path()).unwrap();
        let ids: Vec<_> = replay.unsettled.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1)]);
    }

    /// A compaction renamed its file in and could not open it (issue 24, item 1): intake is
    /// refused meanwhile, and the idle ticker opens it without any payment or restart.
    #[test]
    fn a_background_compaction_that_fails_heals_or_exits() {
        use crate::journal::compact::FaultAt;
        // Tends the compaction until `done` holds (the helper runs on its own thread).
        let tend_until = |d: &GroupCommit, done: &dyn Fn(&GroupCommit) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !done(d) {
                assert!(std::time::Instant::now() < deadline, "never done");
                d.tend_compaction();
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let exits = || EXITS.with(Cell::get);
        let before = exits();
        for (at, errno, fatal) in [
            (FaultAt::Open, libc::EMFILE, false),
            (FaultAt::SyncDir, libc::EIO, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let d = durable(dir.path(), SyncMode::Batch);
            d.accepted(Uuid::from_u128(1), 1);
            d.commit_now();
            {
                let mut j = d.journal_for_test();
                j.set_compact_threshold(1);
                j.fail_at(at, errno, 1);
            }
            let failed = |d: &GroupCommit| {
                let j = d.journal.borrow();
                j.awaits_reopen() || j.is_poisoned()
            };
            tend_until(&d, &failed);
            if fatal {
                assert_eq!(exits(), before + 1, "{at:?}: exits");
                assert!(d.poisoned());
            } else {
                assert_eq!(exits(), before, "{at:?}: does not exit");
                d.heal();
                assert!(!d.journal.borrow().awaits_reopen(), "{at:?}: healed");
            }
            let replay = crate::journal::replay_dir(dir.path()).unwrap();
            assert_eq!(replay.unsettled.len(), 1, "{at:?}");
        }
    }

    #[test]
    fn a_journal_waiting_for_its_compacted_file_heals_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let d = durable(dir.path(), SyncMode::None);
        rt(async {
            start_committer(&d);
            assert_eq!(d.committed(d.accepted(Uuid::from_u128(1), 1)).await, Ok(()));
            let stop = crate::journal::compact::Step::Renamed;
            d.journal.borrow_mut().compact_until(stop).unwrap();
            assert!(d.poisoned(), "refuses commits until the new file is open");
            monoio::time::sleep(IDLE_CHECK * 2).await;
            assert!(!d.poisoned(), "healed by the idle ticker");
            assert_eq!(d.committed(d.accepted(Uuid::from_u128(2), 1)).await, Ok(()));
            assert_eq!(EXITS.with(Cell::get), 0);
        });
        let replay = crate::journal::replay_dir(dir.path()).unwrap();
        let ids: Vec<_> = replay.unsettled.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
    }
}
