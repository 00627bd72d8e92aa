//! Compaction: rewriting a core's journal as its live state, crash-safely.
//!
//! Steps: commit what is buffered; fold the committed records (read from the file); write
//! the live state to `core-<n>.journal.tmp` and fsync it; rename it over the journal; fsync
//! the directory; open, lock, preallocate and map the new file. Until the rename the old
//! file is whole (and the temp file is removed on the next open); after it, the new file is
//! whole; both replay to one state.

use std::fs::OpenOptions;
use std::path::Path;

use super::writer::{open_mapped, release_floor, Journal};
use super::{dir, replay, JournalError};

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

impl Journal {
    /// Rewrites the file as its live state: one `confirmed` per payment recorded since the
    /// last purge, one `accepted` (plus its last `attempt`) per unsettled payment.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        self.compact_until(Step::Done)
    }

    pub(crate) fn compact_until(&mut self, stop: Step) -> Result<(), JournalError> {
        self.commit()?;
        let before = self.len;
        // Read through the file, not the mapping: touching every page of the mapping would
        // make the whole journal resident in this process.
        let scan = replay::scan_file(&self.path, &self.file, before)?;
        let tmp = dir::tmp_path(&self.dir, self.core);
        let len = dir::write_state(&tmp, &scan.state)?;
        if let Step::TempWritten { partial } = stop {
            if partial {
                truncate(&tmp, len / 2)?;
            }
            return Ok(());
        }
        std::fs::rename(&tmp, &self.path).map_err(JournalError::io(&self.path))?;
        // The old mapping now holds the unlinked old file: appending there would lose
        // records, so until the new file is mapped the journal is unusable.
        self.poisoned = true;
        if stop == Step::Renamed {
            return Ok(());
        }
        dir::sync_dir(&self.dir)?;
        let (file, map, cap) = open_mapped(&self.path, len)?;
        (self.file, self.map, self.cap) = (file, map, cap);
        self.released = release_floor(len);
        self.poisoned = false;
        tracing::info!(
            path = %self.path.display(),
            before,
            after = len,
            live = scan.state.len(),
            "journal compacted"
        );
        self.len = len;
        self.live_len = len;
        Ok(())
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .map_err(JournalError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Processor, Replay, SyncMode};
    use uuid::Uuid;

    /// A journal with history to compact away: purged payments, settled ones, and
    /// unsettled ones with and without a pin.
    fn busy(dir: &Path) -> (Journal, Replay) {
        let (mut j, _) = Journal::open(dir, 0, SyncMode::None).unwrap();
        for n in 0..200u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, n as u64);
            j.attempt(id, Processor::Default, n as i64);
            if n % 5 != 0 {
                j.confirmed(id, Processor::Default, n as i64, n as u64);
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
        let (j, state) = Journal::open(dir, 0, SyncMode::None).unwrap();
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
        j.confirmed(Uuid::from_u128(1000), Processor::Fallback, 3, 1);
        j.commit().unwrap();
        drop(j);
        let (_, after) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let mut expected = before.clone();
        expected.unsettled.retain(|u| u.id != Uuid::from_u128(1000));
        expected.confirmed.push(crate::journal::Confirmed {
            id: Uuid::from_u128(1000),
            processor: Processor::Fallback,
            requested_at_us: 3,
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

    #[test]
    fn maybe_compact_waits_for_the_threshold_and_for_growth() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        j.set_compact_threshold(4096);
        let mut compactions = 0;
        for n in 0..2000u128 {
            let id = Uuid::from_u128(n);
            j.accepted(id, 1);
            j.attempt(id, Processor::Default, 1);
            j.confirmed(id, Processor::Default, 1, 1);
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
