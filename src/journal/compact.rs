//! Compaction: rewriting a core's journal as its live state, crash-safely.
//!
//! Steps: commit what is buffered; fold the committed records (read from the file); write
//! the live state to `core-<n>.journal.tmp` and fsync it; rename it over the journal; fsync
//! the directory; open, lock and map the new file, then preallocate it. Until the rename the
//! old file is whole (and the temp file is removed on the next open); after it, the new file
//! is whole; both replay to one state.
//!
//! A failure heals or is fatal, never lingers. Before the rename it changes nothing (the
//! temp file is removed; a purge, or the file doubling, tries again). A failed directory fsync after
//! it poisons the journal: its caller exits and the restart replays whichever file the
//! name holds. A new file that cannot be opened or mapped leaves the journal refusing
//! commits until [`Journal::heal`] opens it (the old mapping is kept until then, so nothing
//! is appended to the unlinked file); a preallocation that fails (a full disk) is left to
//! the next commit, which grows the file or fails alone, as on any full disk.
//!
//! The compaction the core runs under load is this one split in two (journal/background.rs):
//! a helper thread writes the temp file, the core finishes it. Its steps fail by the same
//! rule, through the same [`Journal::heal`].

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use memmap2::MmapMut;

use super::writer::{map, open_locked, release_floor, Journal, GROW_STEP};
use super::{dir, replay, JournalError};
use crate::store::SETTLED_HORIZON;

/// Where a simulated crash stops a compaction (tests only).
// Only tests stop early; production always runs to `Done`.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The temp file is written (`partial`: only a prefix of it), not renamed.
    TempWritten { partial: bool },
    /// Renamed over the journal, directory not yet synced.
    Renamed,
    /// Everything done.
    Done,
}

/// A compaction step that can fail (tests inject a failure at each, [`Journal::fail_at`]).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAt {
    /// Reading the committed records back.
    Scan,
    /// Writing or fsyncing the temp file.
    WriteTemp,
    /// Copying the records appended meanwhile after a background compaction's state
    /// (journal/background.rs; a compaction on the core has none).
    CopyTail,
    /// Renaming it over the journal.
    Rename,
    /// Fsyncing the directory after the rename.
    SyncDir,
    /// Opening and mapping the renamed file.
    Open,
    /// Preallocating room after its records.
    Preallocate,
}

impl Journal {
    /// Rewrites the file as its live state: one `folded` per millisecond of payments
    /// confirmed since the last purge and stamped before the settled horizon, one `confirmed`
    /// per younger one, one `accepted` (plus its last `attempt`) per unsettled payment.
    ///
    /// On error the journal is whole: unchanged (tried again at the next call), waiting to
    /// open its new file ([`Journal::heal`]), or poisoned ([`Journal::is_poisoned`]: the
    /// caller must exit so that a restart replays it).
    pub fn compact(&mut self) -> Result<(), JournalError> {
        self.compact_until(Step::Done)
    }

    pub(crate) fn compact_until(&mut self, stop: Step) -> Result<(), JournalError> {
        self.commit()?;
        if self.reopen.is_some() {
            // A compaction is already renamed in: open that file first.
            return self.heal();
        }
        let before = self.len;
        let tmp = dir::tmp_path(&self.dir, self.core);
        let written = self.write_temp(&tmp, before);
        let (len, live) = match written {
            Ok(w) => w,
            Err(e) => {
                // The journal is untouched; a partial temp file would only hold disk space.
                let _ = dir::remove_if_exists(&tmp);
                // Back off as after a compaction: `maybe_compact` waits for the file to
                // double (`wants_compaction`, off the core, for it to grow by an eighth),
                // not for the next tick, so a full disk is not met with a read of the whole
                // file (and a warning) five times a second.
                self.live_len = self.len;
                return Err(e);
            }
        };
        if let Step::TempWritten { partial } = stop {
            if partial {
                truncate(&tmp, len / 2)?;
            }
            return Ok(());
        }
        if let Err(e) = self
            .fault(FaultAt::Rename)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            let _ = dir::remove_if_exists(&tmp);
            self.live_len = self.len;
            return Err(JournalError::io(&self.path)(e));
        }
        // The old mapping now holds the unlinked old file: appending there would lose
        // records, so until the new file is mapped every commit fails.
        self.reopen = Some(len);
        if stop == Step::Renamed {
            return Ok(());
        }
        self.sync_dir_or_poison()?;
        self.heal()?;
        tracing::info!(
            path = %self.path.display(),
            before,
            after = len,
            live,
            "journal compacted"
        );
        Ok(())
    }

    /// Folds the committed records (settled payments past the horizon into their buckets)
    /// and writes them to `tmp`, fsynced; returns its length and the number of live payments.
    fn write_temp(&self, tmp: &Path, before: u64) -> Result<(u64, usize), JournalError> {
        self.fault(FaultAt::Scan)
            .map_err(JournalError::io(&self.path))?;
        // Read through the file, not the mapping: touching every page of the mapping would
        // make the whole journal resident in this process.
        let mut scan = replay::scan_file_for_compaction(&self.path, &self.file, before)?;
        scan.state
            .fold_before(crate::time::now_us() - SETTLED_HORIZON.as_micros() as i64);
        self.fault(FaultAt::WriteTemp)
            .map_err(JournalError::io(tmp))?;
        let head = dir::Head {
            file: &self.file,
            range: scan.buckets.clone(),
        };
        let len = dir::write_compacted(tmp, Some(head), &scan.state)?;
        Ok((len, scan.state.len()))
    }

    /// Opens the file a compaction renamed in, if one waits, and appends there from now on.
    /// Until it succeeds every commit fails (and tries this first); the refusals heal once
    /// it does. Then room is preallocated after the records; on a full disk that is left to
    /// the next commit, which grows the file or fails alone.
    pub fn heal(&mut self) -> Result<(), JournalError> {
        // The old file's descriptor and mapping go here, and with them its blocks: on a
        // full disk they are what the preallocation needs.
        self.open_renamed().map(drop)
    }

    /// [`Journal::heal`], returning the old file's descriptor and mapping (if it opened the
    /// new one) for the caller to drop: a background compaction drops them off the core.
    pub(super) fn open_renamed(&mut self) -> Result<Option<(File, MmapMut)>, JournalError> {
        let Some(len) = self.reopen else {
            return Ok(None);
        };
        let opened = self
            .fault(FaultAt::Open)
            .map_err(JournalError::io(&self.path))
            .and_then(|()| open_locked(&self.path))
            .and_then(|file| {
                let size = file.metadata().map_err(JournalError::io(&self.path))?.len();
                let map = map(&file).map_err(JournalError::io(&self.path))?;
                Ok((file, map, size))
            });
        let (file, map, size) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Out of descriptors, memory or space may pass; anything else will not.
                if !transient(&e) {
                    self.poisoned = true;
                }
                return Err(e);
            }
        };
        let old = (
            std::mem::replace(&mut self.file, file),
            std::mem::replace(&mut self.map, map),
        );
        self.cap = size.max(len);
        self.reopen = None;
        self.len = len;
        self.live_len = len;
        self.released = release_floor(len);
        if self.cap > len && self.cap >= GROW_STEP {
            // Preallocated already (by the compaction helper).
            return Ok(Some(old));
        }
        drop(old);
        let grown = self
            .fault(FaultAt::Preallocate)
            .and_then(|()| self.grow(len));
        if let Err(e) = grown {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "journal: no room preallocated after compaction; the next commit tries again"
            );
        }
        Ok(None)
    }

    /// Whether commits fail until [`Journal::heal`] opens the file a compaction renamed in.
    pub fn awaits_reopen(&self) -> bool {
        self.reopen.is_some()
    }

    /// Tests only: the next `times` passes through `at` fail with `errno`.
    #[cfg(test)]
    pub(crate) fn fail_at(&mut self, at: FaultAt, errno: i32, times: u32) {
        self.fault.set(Some((at, errno, times)));
    }

    /// Syncs the directory after a file was renamed in. A failure poisons the journal: the
    /// name may point at either file after a machine crash, and a retried fsync can report
    /// success for writes it lost, so only a restart (a replay of what the name holds) is
    /// sound.
    pub(super) fn sync_dir_or_poison(&mut self) -> Result<(), JournalError> {
        let synced = self
            .fault(FaultAt::SyncDir)
            .map_err(JournalError::io(&self.dir))
            .and_then(|()| dir::sync_dir(&self.dir));
        if synced.is_err() {
            self.poisoned = true;
        }
        synced
    }

    #[cfg(test)]
    pub(super) fn fault(&self, at: FaultAt) -> io::Result<()> {
        match self.fault.get() {
            Some((f, errno, times)) if f == at && times > 0 => {
                self.fault.set(Some((f, errno, times - 1)));
                Err(io::Error::from_raw_os_error(errno))
            }
            _ => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline]
    pub(super) fn fault(&self, _: FaultAt) -> io::Result<()> {
        Ok(())
    }
}

/// Whether an error may clear by itself (a resource the system runs short of for a while).
fn transient(e: &JournalError) -> bool {
    let JournalError::Io { source, .. } = e else {
        return false;
    };
    matches!(
        source.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EAGAIN
                | libc::EINTR
        )
    )
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .map_err(JournalError::io(path))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::journal::{Processor, Replay, SyncMode};
    use uuid::Uuid;

    /// A journal with history to compact away: purged payments, settled ones, and
    /// unsettled ones with and without a pin.
    fn busy(dir: &Path) -> (Journal, Replay) {
        busy_with(dir, SyncMode::None)
    }

    /// [`busy`] in `sync` mode.
    pub(in crate::journal) fn busy_with(dir: &Path, sync: SyncMode) -> (Journal, Replay) {
        let (mut j, _) = Journal::open(dir, 0, sync).unwrap();
        // Stamped now: younger than the settled horizon, kept whole (not folded).
        let t = crate::time::now_us();
        for n in 0..200u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, n as u64);
            j.attempt(id, Processor::Default, t + n as i64);
            if n % 5 != 0 {
                j.confirmed(id, Processor::Default, t + n as i64, n as u64);
            }
            if n == 99 {
                j.purged();
            }
            if n % 7 == 0 {
                j.dropped(id);
            }
        }
        j.accepted(Uuid::from_u128(1000), 1);
        j.commit().unwrap();
        drop(j);
        let (j, state) = Journal::open(dir, 0, sync).unwrap();
        (j, state)
    }

    #[test]
    fn compaction_preserves_state_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy(dir.path());
        let old_len = j.file_len();
        j.compact().unwrap();
        assert!(j.file_len() < old_len / 2, "{} vs {old_len}", j.file_len());
        // The handle appends to the new file.
        let t = crate::time::now_us();
        j.confirmed(Uuid::from_u128(1000), Processor::Fallback, t, 1);
        j.commit().unwrap();
        drop(j);
        let (_, after) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let mut expected = before.clone();
        expected.unsettled.retain(|u| u.id != Uuid::from_u128(1000));
        expected.confirmed.push(crate::journal::Confirmed {
            id: Uuid::from_u128(1000),
            processor: Processor::Fallback,
            requested_at_us: t,
            cents: 1,
        });
        assert_eq!(after, expected);
        assert!(!after.unsettled.is_empty());
        assert!(after.unsettled.iter().any(|u| u.pinned.is_some()));
    }

    #[test]
    fn a_crash_at_any_step_replays_to_the_same_state() {
        for stop in [
            Step::TempWritten { partial: true },
            Step::TempWritten { partial: false },
            Step::Renamed,
            Step::Done,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, before) = busy(dir.path());
            j.compact_until(stop).unwrap();
            // The process dies here: nothing else runs.
            drop(j);
            let (j, after) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
            assert_eq!(after, before, "crash after {stop:?}");
            assert!(!dir::tmp_path(dir.path(), 0).exists());
            drop(j);
            assert_eq!(crate::journal::replay_dir(dir.path()).unwrap(), before);
        }
    }

    /// What `dir` replays to, read by another process while this one runs and after it is
    /// gone (a restart).
    pub(in crate::journal) fn replays(dir: &Path, j: Journal) -> Replay {
        let live = crate::journal::replay_dir(dir).unwrap();
        drop(j);
        let (_, restarted) = Journal::open(dir, 0, SyncMode::None).unwrap();
        assert_eq!(live, restarted);
        restarted
    }

    /// `before` with payment `id` (cents 1) accepted after it.
    pub(in crate::journal) fn plus(before: &Replay, id: Uuid) -> Replay {
        let mut r = before.clone();
        r.unsettled.push(crate::journal::Unsettled {
            id,
            cents: 1,
            pinned: None,
        });
        r
    }

    /// A failure at every step of a compaction heals or is fatal, never lingers (issue 24,
    /// item 1): before the rename the journal is untouched and the next compaction works;
    /// a new file that cannot be opened for want of space is opened once space returns; a
    /// full disk at its preallocation fails no commit that fits; a failed directory fsync
    /// poisons the journal (the process exits) with the state on file whole.
    #[test]
    fn a_failure_at_every_compaction_step_heals_or_is_fatal() {
        use FaultAt::*;
        let after = Uuid::from_u128(5000);
        for at in [Scan, WriteTemp, Rename] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, before) = busy(dir.path());
            let old_len = j.file_len();
            j.fail_at(at, libc::ENOSPC, 1);
            assert!(j.compact().is_err(), "{at:?}");
            assert!(!j.is_poisoned() && !j.awaits_reopen(), "{at:?}");
            assert!(!dir::tmp_path(dir.path(), 0).exists(), "{at:?}");
            assert_eq!(j.file_len(), old_len, "{at:?}: untouched");
            j.set_compact_threshold(1);
            assert!(
                !j.maybe_compact().unwrap(),
                "{at:?}: backs off until it doubles"
            );
            j.compact().unwrap();
            assert!(j.file_len() < old_len / 2, "{at:?}: compacted on the retry");
            j.accepted(after, 1);
            j.commit().unwrap();
            assert_eq!(replays(dir.path(), j), plus(&before, after), "{at:?}");
        }

        // No descriptor or no memory to open the new file: every commit fails (and tries the
        // open again) until it works; then nothing is lost.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy(dir.path());
        j.fail_at(Open, libc::EMFILE, 2);
        assert!(j.compact().is_err());
        assert!(j.awaits_reopen() && !j.is_poisoned());
        j.accepted(Uuid::from_u128(4999), 1);
        assert!(j.commit().is_err(), "refused while the file is not open");
        j.accepted(after, 1);
        j.commit().unwrap();
        assert!(!j.awaits_reopen());
        assert_eq!(replays(dir.path(), j), plus(&before, after));

        // The case: a full disk at the preallocation. The file is open and mapped
        // with no room; the commit that needs room grows it once space returns.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, before) = busy(dir.path());
        j.fail_at(Preallocate, libc::ENOSPC, 1);
        j.compact().unwrap();
        assert_eq!(j.capacity(), j.file_len(), "no room preallocated");
        j.accepted(after, 1);
        j.commit().unwrap();
        assert!(j.capacity() > j.file_len());
        assert_eq!(replays(dir.path(), j), plus(&before, after));

        // Fatal: a failed directory fsync, or a new file that cannot be opened for a reason
        // that does not pass. The process exits; what it committed replays.
        for (at, errno) in [(SyncDir, libc::EIO), (Open, libc::EACCES)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, before) = busy(dir.path());
            j.fail_at(at, errno, 1);
            assert!(j.compact().is_err(), "{at:?}");
            assert!(j.is_poisoned(), "{at:?}");
            j.accepted(after, 1);
            assert!(matches!(j.commit(), Err(JournalError::Poisoned)), "{at:?}");
            assert_eq!(replays(dir.path(), j), before, "{at:?}");
        }
    }

    #[test]
    fn maybe_compact_waits_for_the_threshold_and_for_growth() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        j.set_compact_threshold(4096);
        let mut compactions = 0;
        for n in 0..2000u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, 1);
            let t = crate::time::now_us();
            j.attempt(id, Processor::Default, t);
            j.confirmed(id, Processor::Default, t, 1);
            j.commit().unwrap();
            if j.maybe_compact().unwrap() {
                compactions += 1;
            }
        }
        // Each compaction leaves 42 bytes per payment, so the live state soon exceeds the
        // threshold; the doubling rule keeps compactions logarithmic, not one per commit.
        assert!((2..=12).contains(&compactions), "{compactions}");
        drop(j);
        let (_, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        assert_eq!(r.confirmed.len(), 2000);
    }
}
