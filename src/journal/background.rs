//! Compaction off the core: the reading, folding and writing of a compaction run on a helper
//! thread (`rinha-compact`) while the core keeps appending to its journal; the core only
//! finishes it: copies the records appended meanwhile after the new file's state, renames it
//! in and maps it. That last step is proportional to those few records, not to the journal,
//! so a long life's journal (its buckets grow with it) never holds the core for the time it
//! takes to rewrite it (measured: docs/reliability.md, "Memory").
//!
//! Crash-safe as [`super::compact`] is: until the rename the old file is whole; the new one
//! holds the old one's state up to where the helper read, then the very records that
//! followed, so both replay to one state.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::compact::FaultAt;
use super::writer::{preallocate, Journal};
use super::{dir, replay, JournalError, SyncMode};
use crate::helper::Helper;
use crate::store::SETTLED_HORIZON;

/// Records committed while the helper worked that the core copies itself when it finishes;
/// more are first copied by a helper ([`Journal::finish_compaction`]).
const CATCH_UP: u64 = 64 << 10;

/// A compaction whose state is being written by the helper thread.
#[derive(Debug)]
pub struct Background {
    /// Bytes of the journal the helper folds; what follows is copied at the finish.
    before: u64,
    helper: Helper<Result<Written, JournalError>>,
}

/// What the helper wrote: the temp file's length and the payments it holds.
#[derive(Debug, Clone, Copy)]
struct Written {
    len: u64,
    live: usize,
}

/// Where a finish stands once the records appended meanwhile are dealt with.
enum Tail {
    /// Copied after the helper's state: the temp file is whole.
    Copied(Written),
    /// Too many for the core: a helper copies them first.
    CatchingUp(Background),
}

impl Background {
    /// Whether the helper is done ([`Journal::finish_compaction`] will not wait).
    pub fn is_finished(&self) -> bool {
        self.helper.is_finished()
    }
}

impl Journal {
    /// Starts a compaction of what is committed now on a helper thread; the journal stays
    /// usable meanwhile. Finish it with [`Journal::finish_compaction`] (or drop it with
    /// [`Journal::abandon_compaction`]).
    ///
    /// A failure here, or of the helper's work (reported by the finish), changes nothing:
    /// the temp file is removed and the next try waits for the journal to grow.
    pub fn start_compaction(&mut self) -> Result<Background, JournalError> {
        let started = self.spawn_compaction();
        started.map_err(|e| self.compaction_failed(e))
    }

    fn spawn_compaction(&mut self) -> Result<Background, JournalError> {
        self.commit()?;
        let before = self.len;
        let (path, tmp) = (self.path.clone(), dir::tmp_path(&self.dir, self.core));
        let cutoff_us = crate::time::now_us() - SETTLED_HORIZON.as_micros() as i64;
        // The helper cannot reach the journal's fault hook (tests): it takes its verdicts.
        let faults =
            [FaultAt::Scan, FaultAt::WriteTemp, FaultAt::Preallocate].map(|at| self.fault(at));
        let helper = Helper::spawn("rinha-compact", move || {
                let [scan_fault, write_fault, room_fault] = faults;
                scan_fault.map_err(JournalError::io(&path))?;
                // Its own descriptor: the core's may be replaced while this one reads.
                let file = File::open(&path).map_err(JournalError::io(&path))?;
                let mut scan = replay::scan_file_for_compaction(&path, &file, before)?;
                scan.state.fold_before(cutoff_us);
                write_fault.map_err(JournalError::io(&tmp))?;
                let head = dir::Head {
                    file: &file,
                    range: scan.buckets.clone(),
                };
                let len = dir::write_compacted(&tmp, Some(head), &scan.state)?;
                // Its room too (and that on disk), so that mapping it on the core costs no
                // `fallocate` and no `fsync` of a file this large. On a full disk there is
                // none: as after a compaction on the core, the next commit grows the file.
                let io = JournalError::io(&tmp);
                let file = OpenOptions::new().write(true).open(&tmp).map_err(io)?;
                let room = room_fault.and_then(|()| preallocate(&file, len, len));
                if let Err(e) = room {
                    tracing::warn!(
                        path = %tmp.display(),
                        error = %e,
                        "journal: no room preallocated for the compacted file; the next commit tries again"
                    );
                }
                file.sync_all().map_err(JournalError::io(&tmp))?;
                Ok(Written {
                    len,
                    live: scan.state.len(),
                })
            })
            .map_err(JournalError::io(&self.path))?;
        Ok(Background { before, helper })
    }

    /// Finishes a compaction the helper is done with (it waits for the helper otherwise):
    /// the records committed since it started are copied after its state, then the file is
    /// renamed in and mapped, as [`Journal::compact`] does. If more than `CATCH_UP` (64 KiB) bytes
    /// were committed meanwhile, a helper copies them first and this returns it: finish
    /// that one in turn, so the core copies only what came during the last copy.
    ///
    /// A failure heals or is fatal as in [`Journal::compact`] (journal/compact.rs): before
    /// the rename (the helper's work included) the journal is unchanged; a failed directory
    /// fsync poisons it (with `JOURNAL_SYNC=none` that fsync runs off the core, and
    /// [`Journal::settle`] reports it); a renamed file that cannot be opened waits for
    /// [`Journal::heal`], or poisons the journal if it never will open.
    pub fn finish_compaction(
        &mut self,
        bg: Background,
    ) -> Result<Option<Background>, JournalError> {
        let before = bg.before;
        let tmp = dir::tmp_path(&self.dir, self.core);
        let written = match self.write_tail(bg, &tmp) {
            Ok(Tail::Copied(written)) => written,
            Ok(Tail::CatchingUp(next)) => return Ok(Some(next)),
            Err(e) => return Err(self.compaction_failed(e)),
        };
        let len = written.len;
        if let Err(e) = self
            .fault(FaultAt::Rename)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            return Err(self.compaction_failed(JournalError::io(&self.path)(e)));
        }
        // As in `compact`: the old mapping now holds the unlinked old file, so until the new
        // file is mapped every commit fails.
        self.reopen = Some(len);
        let batch = self.sync == SyncMode::Batch;
        if batch {
            self.sync_dir_or_poison()?;
        }
        // Preallocated by the helper: nothing to grow here (unless the disk was full).
        let old = self.open_renamed()?;
        // Unmapping the old file and closing the last descriptor of it (unlinked: the kernel
        // frees its blocks then) take milliseconds for a large one: not on the core. Nor, with
        // `JOURNAL_SYNC=none`, the directory's sync: until it is done a machine crash may
        // bring the old file back, without what was appended since, which that mode may
        // lose in a machine crash anyway. Its failure poisons the journal all the same, once
        // [`Journal::settle`] sees it.
        let sync = (!batch).then(|| (self.dir.clone(), self.fault(FaultAt::SyncDir)));
        let spawned = Helper::spawn("rinha-compact", move || {
            let synced = match sync {
                Some((dir, fault)) => fault
                    .map_err(JournalError::io(&dir))
                    .and_then(|()| dir::sync_dir(&dir)),
                None => Ok(()),
            };
            drop(old);
            synced
        });
        match spawned {
            Ok(helper) => self.settling = Some(helper),
            Err(e) if !batch => {
                // No helper (the old file went with the closure, on the core): sync here.
                tracing::warn!(error = %e, "journal: no helper thread; the core syncs the directory");
                if let Err(e) = dir::sync_dir(&self.dir) {
                    self.poisoned = true;
                    return Err(e);
                }
            }
            Err(_) => {}
        }
        tracing::info!(
            path = %self.path.display(),
            before,
            after = len,
            live = written.live,
            "journal compacted"
        );
        Ok(None)
    }

    /// Waits for the helper's state, then copies the records committed since after it (or
    /// has a helper do so, if there are more than `CATCH_UP`).
    fn write_tail(&mut self, bg: Background, tmp: &Path) -> Result<Tail, JournalError> {
        let written = join(bg.helper, &self.path)?;
        self.commit()?;
        if self.len - bg.before > CATCH_UP {
            return self.catch_up(bg.before, written).map(Tail::CatchingUp);
        }
        let tail = &self.map[bg.before as usize..self.len as usize];
        self.fault(FaultAt::CopyTail)
            .map_err(JournalError::io(tmp))?;
        let file = OpenOptions::new()
            .write(true)
            .open(tmp)
            .map_err(JournalError::io(tmp))?;
        file.write_all_at(tail, written.len)
            .map_err(JournalError::io(tmp))?;
        if self.sync == SyncMode::Batch {
            // Those records were synced in the old file: so are they in the new one.
            file.sync_data().map_err(JournalError::io(tmp))?;
        }
        Ok(Tail::Copied(Written {
            len: written.len + tail.len() as u64,
            live: written.live,
        }))
    }

    /// A helper copies the records committed from `from` up to now after `written`.
    fn catch_up(&mut self, from: u64, written: Written) -> Result<Background, JournalError> {
        let (path, tmp) = (self.path.clone(), dir::tmp_path(&self.dir, self.core));
        let (to, batch) = (self.len, self.sync == SyncMode::Batch);
        let fault = self.fault(FaultAt::CopyTail);
        let helper = Helper::spawn("rinha-compact", move || {
            fault.map_err(JournalError::io(&tmp))?;
            // What the core copied into its mapping is in the page cache: a read sees it.
            let src = File::open(&path).map_err(JournalError::io(&path))?;
            let mut bytes = vec![0u8; (to - from) as usize];
            src.read_exact_at(&mut bytes, from)
                .map_err(JournalError::io(&path))?;
            let dst = OpenOptions::new()
                .write(true)
                .open(&tmp)
                .map_err(JournalError::io(&tmp))?;
            dst.write_all_at(&bytes, written.len)
                .map_err(JournalError::io(&tmp))?;
            if batch {
                dst.sync_data().map_err(JournalError::io(&tmp))?;
            }
            Ok(Written {
                len: written.len + bytes.len() as u64,
                live: written.live,
            })
        })
        .map_err(JournalError::io(&self.path))?;
        Ok(Background { before: to, helper })
    }

    /// A compaction that failed before its rename: the journal is unchanged; what the
    /// helper wrote is removed, and the next one waits for the journal to grow again (as
    /// after a compaction), not for the next tick, so a full disk is not met with a read of
    /// the whole file five times a second.
    fn compaction_failed(&mut self, e: JournalError) -> JournalError {
        let _ = dir::remove_if_exists(&dir::tmp_path(&self.dir, self.core));
        self.live_len = self.len;
        e
    }

    /// Reports the helper's directory sync after the last background compaction's rename
    /// (`JOURNAL_SYNC=none`) once it is done: a failure poisons the journal, as a failed
    /// directory fsync on the core does (the caller must exit).
    pub fn settle(&mut self) -> Result<(), JournalError> {
        match self.settling.take() {
            Some(helper) if helper.is_finished() => {
                let synced = join(helper, &self.dir);
                if synced.is_err() {
                    self.poisoned = true;
                }
                synced
            }
            pending => {
                self.settling = pending;
                Ok(())
            }
        }
    }

    /// Drops a compaction: waits for the helper, then removes what it wrote (a purge
    /// compacts at once, and its state replaces everything the helper read).
    pub fn abandon_compaction(&mut self, bg: Background) {
        let _ = bg.helper.take();
        let _ = dir::remove_if_exists(&dir::tmp_path(&self.dir, self.core));
    }

    /// Whether the file has grown enough to compact: by the threshold past its last
    /// compacted size, and by an eighth of it. Not [`Journal::maybe_compact`]'s doubling: a
    /// long life's compacted size is mostly buckets, and the helper holds every payment
    /// appended since (~50 bytes each), so it must not wait for as many as there are buckets.
    /// Each compaction then writes ~9 times what was appended. Never while the journal is
    /// poisoned, waits to open a renamed file, or the last one's directory sync is pending.
    pub fn wants_compaction(&self) -> bool {
        let grown = self.len.saturating_sub(self.live_len);
        !self.poisoned
            && self.reopen.is_none()
            && self.settling.is_none()
            && self.len >= self.compact_threshold
            && grown >= self.live_len / 8
    }
}

fn join<T: Send + Sync + 'static>(
    helper: Helper<Result<T, JournalError>>,
    path: &Path,
) -> Result<T, JournalError> {
    helper.take().unwrap_or_else(|| {
        Err(JournalError::io(path)(io::Error::other(
            "compaction helper panicked",
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::compact::tests::{busy_with, plus, replays};
    use crate::journal::Processor;
    use std::time::{Duration, Instant};
    use uuid::Uuid;

    /// A background compaction from start to finish, with `meanwhile` accepted while the
    /// helper works (a tail for the core to copy).
    fn compact(j: &mut Journal, meanwhile: Uuid) -> Result<(), JournalError> {
        let bg = j.start_compaction()?;
        j.accepted(meanwhile, 1);
        j.commit().unwrap();
        let mut bg = Some(bg);
        while let Some(b) = bg.take() {
            bg = j.finish_compaction(b)?;
        }
        Ok(())
    }

    /// The background compaction's steps fail as the core's do (issue 24, item 1, with
    /// item 9's compaction off the core): before the rename (the helper's reading, writing,
    /// the copy of what was appended meanwhile, the rename) the journal is untouched, backs
    /// off and the next one works; a new file that cannot be opened for want of descriptors
    /// is opened by a later commit; a full disk at the helper's preallocation fails no
    /// commit that fits; a failed directory fsync (on the core, or off it with
    /// `JOURNAL_SYNC=none`) or a new file that will never open poisons the journal, with
    /// the state on file whole.
    #[test]
    fn a_failure_at_every_background_step_heals_or_is_fatal() {
        use FaultAt::*;
        let (meanwhile, after) = (Uuid::from_u128(4000), Uuid::from_u128(5000));
        let tmp = |dir: &tempfile::TempDir| dir::tmp_path(dir.path(), 0);
        for at in [Scan, WriteTemp, CopyTail, Rename] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, before) = busy_with(dir.path(), SyncMode::Batch);
            let old_len = j.file_len();
            j.set_compact_threshold(1);
            j.fail_at(at, libc::ENOSPC, 1);
            assert!(compact(&mut j, meanwhile).is_err(), "{at:?}");
            assert!(!j.is_poisoned() && !j.awaits_reopen(), "{at:?}");
            assert!(!tmp(&dir).exists(), "{at:?}");
            assert!(j.file_len() > old_len, "{at:?}: the old file, appended to");
            assert!(!j.wants_compaction(), "{at:?}: backs off until it grows");
            j.start_compaction()
                .and_then(|bg| j.finish_compaction(bg))
                .unwrap();
            assert!(j.file_len() < old_len / 2, "{at:?}: compacted on the retry");
            j.accepted(after, 1);
            j.commit().unwrap();
            let expected = plus(&plus(&before, meanwhile), after);
            assert_eq!(replays(dir.path(), j), expected, "{at:?}");
        }

        // No descriptor to open the new file: every commit fails (and tries again) until
        // one works; then nothing is lost.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy_with(dir.path(), SyncMode::Batch);
        j.fail_at(Open, libc::EMFILE, 2);
        assert!(compact(&mut j, meanwhile).is_err());
        assert!(j.awaits_reopen() && !j.is_poisoned());
        assert!(!j.wants_compaction(), "not while a file waits to be opened");
        j.accepted(Uuid::from_u128(4999), 1);
        assert!(j.commit().is_err(), "refused while the file is not open");
        j.accepted(after, 1);
        j.commit().unwrap();
        assert!(!j.awaits_reopen());
        assert_eq!(
            replays(dir.path(), j),
            plus(&plus(&before, meanwhile), after)
        );

        // A full disk at the helper's preallocation, and again at the core's: the file is
        // open with no room; the commit that needs room grows it once space returns.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy_with(dir.path(), SyncMode::Batch);
        j.fail_at(Preallocate, libc::ENOSPC, 2);
        compact(&mut j, meanwhile).unwrap();
        assert_eq!(j.capacity(), j.file_len(), "no room preallocated");
        j.accepted(after, 1);
        j.commit().unwrap();
        assert!(j.capacity() > j.file_len());
        assert_eq!(
            replays(dir.path(), j),
            plus(&plus(&before, meanwhile), after)
        );

        // Fatal: a failed directory fsync on the core (batch), or a new file that cannot be
        // opened for a reason that does not pass. The process exits; what it committed
        // replays.
        for (at, errno) in [(SyncDir, libc::EIO), (Open, libc::EACCES)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, before) = busy_with(dir.path(), SyncMode::Batch);
            j.fail_at(at, errno, 1);
            assert!(compact(&mut j, meanwhile).is_err(), "{at:?}");
            assert!(j.is_poisoned(), "{at:?}");
            j.accepted(after, 1);
            assert!(matches!(j.commit(), Err(JournalError::Poisoned)), "{at:?}");
            assert_eq!(replays(dir.path(), j), plus(&before, meanwhile), "{at:?}");
        }

        // Fatal too with `JOURNAL_SYNC=none`, where the directory fsync runs off the core:
        // the finish succeeds, and `settle` reports the failure once the helper is done.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy_with(dir.path(), SyncMode::None);
        j.fail_at(SyncDir, libc::EIO, 1);
        compact(&mut j, meanwhile).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while j.settle().is_ok() {
            assert!(Instant::now() < deadline, "the helper never reported");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(j.is_poisoned());
        assert!(matches!(j.commit(), Err(JournalError::Poisoned)));
        assert_eq!(replays(dir.path(), j), plus(&before, meanwhile));
    }

    /// Records appended while the helper writes land after its state: a restart replays
    /// every one of them, and the journal keeps appending to the new file.
    #[test]
    fn records_appended_meanwhile_survive_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let now = crate::time::now_us();
        let old = now - 2 * SETTLED_HORIZON.as_micros() as i64;
        for n in 0..5000u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, 10);
            j.attempt(id, Processor::Default, old + n as i64 * 1000);
            j.confirmed(id, Processor::Default, old + n as i64 * 1000, 10);
        }
        let bg = j.start_compaction().unwrap();
        for n in 5000..5100u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, 20);
            if n % 2 == 0 {
                j.confirmed(id, Processor::Fallback, now, 20);
            }
        }
        // More than the core copies itself: a helper catches up first.
        for n in 6000..8000u128 {
            j.accepted(Uuid::from_u128(n), 30);
        }
        j.commit().unwrap();
        let grown = j.file_len();
        let mut bg = Some(bg);
        let mut rounds = 0;
        while let Some(b) = bg.take() {
            bg = j.finish_compaction(b).unwrap();
            rounds += 1;
            if rounds == 1 {
                // Appended during the catch-up: the core copies these.
                j.accepted(Uuid::from_u128(8000), 40);
                j.commit().unwrap();
            }
        }
        assert_eq!(rounds, 2);
        assert!(j.file_len() < grown, "{} vs {grown}", j.file_len());
        j.accepted(Uuid::from_u128(9999), 1);
        j.commit().unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        assert_eq!(r.folded.len(), 5000);
        assert_eq!(r.confirmed.len(), 50);
        assert_eq!(r.unsettled.len(), 2052);
    }
}
