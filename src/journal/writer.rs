//! [`Journal`]: one core's journal file, its append buffer and group commit.
//!
//! The append methods only encode into a reusable buffer (no allocation, no syscall, no
//! lock); [`Journal::commit`] writes the whole buffer with one `write` on an `O_APPEND`
//! file and, with [`SyncMode::Batch`], one `fdatasync`. Blocking is deliberate: the write
//! lands in the page cache, and the caller holds its answers until the commit returns.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::record::{encode, Event, MAGIC, MAX_RECORD_LEN};
use super::{dir, replay, Confirmed, JournalError, Processor, Replay, SyncMode};

/// File size past which [`Journal::maybe_compact`] rewrites the file as its live state.
pub const DEFAULT_COMPACT_THRESHOLD: u64 = 8 << 20;

/// One core's journal. Not shared between threads: each runtime owns its own.
#[derive(Debug)]
pub struct Journal {
    pub(super) dir: PathBuf,
    pub(super) core: usize,
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) buf: Vec<u8>,
    pub(super) sync: SyncMode,
    /// Bytes committed to the file.
    pub(super) len: u64,
    pub(super) compact_threshold: u64,
    /// File size right after the last compaction (or open). Compaction waits until the file
    /// has doubled past it, so a live state larger than the threshold is not rewritten on
    /// every quiet moment.
    pub(super) live_len: u64,
    /// Set when a failed write or sync left the file in a state we cannot vouch for.
    pub(super) poisoned: bool,
}

impl Journal {
    /// Opens (or creates) `dir/core-<core>.journal` and replays it.
    ///
    /// A torn last record is cut off (with a warning) so that new records follow good ones;
    /// a leftover compaction temp file is removed (the journal it was meant to replace is
    /// still whole). Corruption before the last record is an error.
    pub fn open(
        dir: &Path,
        core: usize,
        sync: SyncMode,
    ) -> Result<(Journal, Replay), JournalError> {
        std::fs::create_dir_all(dir).map_err(JournalError::io(dir))?;
        dir::remove_if_exists(&dir::tmp_path(dir, core))?;
        let path = dir::journal_path(dir, core);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(JournalError::io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(JournalError::io(&path))?;
        let scan = replay::scan(&path, &bytes)?;
        let mut len = scan.good_len;
        if len == 0 {
            // New file, or a crash while it was being created: start it over.
            file.set_len(0).map_err(JournalError::io(&path))?;
            file.write_all(&MAGIC).map_err(JournalError::io(&path))?;
            file.sync_all().map_err(JournalError::io(&path))?;
            dir::sync_dir(dir)?;
            len = MAGIC.len() as u64;
        } else if len < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                offset = len,
                bytes = bytes.len() as u64 - len,
                "journal: torn last record cut off"
            );
            file.set_len(len).map_err(JournalError::io(&path))?;
            file.sync_all().map_err(JournalError::io(&path))?;
        }
        tracing::info!(
            path = %path.display(),
            records = scan.records,
            live = scan.state.len(),
            "journal opened"
        );
        let journal = Journal {
            dir: dir.to_owned(),
            core,
            path,
            file,
            buf: Vec::with_capacity(64 * MAX_RECORD_LEN),
            sync,
            len,
            compact_threshold: DEFAULT_COMPACT_THRESHOLD,
            // Unknown until the first compaction: a file already past the threshold at
            // start is compacted at the first quiet moment.
            live_len: 0,
            poisoned: false,
        };
        Ok((journal, scan.state.to_replay()))
    }

    /// Sets the size past which [`Journal::maybe_compact`] compacts.
    pub fn set_compact_threshold(&mut self, bytes: u64) {
        self.compact_threshold = bytes;
    }

    /// A payment we will answer 2XX for once the next commit returns.
    pub fn accepted(&mut self, id: Uuid, cents: u64) {
        encode(&mut self.buf, &Event::Accepted { id, cents });
    }

    /// We are about to send `id` to `processor` with this `requestedAt`.
    pub fn attempt(&mut self, id: Uuid, processor: Processor, requested_at_us: i64) {
        encode(
            &mut self.buf,
            &Event::Attempt {
                id,
                processor,
                requested_at_us,
            },
        );
    }

    /// `processor` stored the payment: the record the shard counts.
    pub fn confirmed(&mut self, id: Uuid, processor: Processor, requested_at_us: i64, cents: u64) {
        encode(
            &mut self.buf,
            &Event::Confirmed(Confirmed {
                id,
                processor,
                requested_at_us,
                cents,
            }),
        );
    }

    /// The payment was settled without being recorded (e.g. a 422 on a first attempt).
    pub fn dropped(&mut self, id: Uuid) {
        encode(&mut self.buf, &Event::Dropped { id });
    }

    /// The summary was purged: replay forgets every payment confirmed before this.
    pub fn purged(&mut self) {
        encode(&mut self.buf, &Event::Purged);
    }

    /// Bytes appended and not yet committed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes committed to the file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes every appended record with one `write` (and one `fdatasync` in batch mode).
    ///
    /// On error the appended records are discarded (the caller must not answer 2XX for them)
    /// and the file is cut back to the last commit; if even that fails, or the sync failed
    /// (the page cache state is then unknown), the journal is poisoned and every later
    /// commit fails.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            self.buf.clear();
            return Err(JournalError::Poisoned);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buf);
        let result = match written {
            Ok(()) => match self.sync {
                SyncMode::None => Ok(()),
                SyncMode::Batch => self.file.sync_data().inspect_err(|_| self.poisoned = true),
            },
            Err(e) => {
                if self.file.set_len(self.len).is_err() {
                    self.poisoned = true;
                }
                Err(e)
            }
        };
        let appended = self.buf.len() as u64;
        self.buf.clear();
        result.map_err(JournalError::io(&self.path))?;
        self.len += appended;
        Ok(())
    }

    /// For tests of the journal's users: every later write fails, as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_writes_for_test(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new().read(true).open(&self.path)?;
        Ok(())
    }

    /// Compacts if the file has passed the threshold (and doubled since the last
    /// compaction). Meant for quiet moments: it reads and rewrites the whole file. Returns
    /// whether it compacted.
    pub fn maybe_compact(&mut self) -> Result<bool, JournalError> {
        let size = self.len + self.buf.len() as u64;
        if size < self.compact_threshold.max(2 * self.live_len) {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_appends_only_whole_batches_and_clears_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replay) = Journal::open(dir.path(), 3, SyncMode::Batch).unwrap();
        assert_eq!(replay, Replay::default());
        assert_eq!(j.file_len(), 8);
        j.accepted(Uuid::from_u128(1), 10);
        j.attempt(Uuid::from_u128(1), Processor::Default, 5);
        assert_eq!(j.pending(), 33 + 34);
        assert_eq!(std::fs::metadata(j.path()).unwrap().len(), 8);
        j.commit().unwrap();
        assert_eq!(j.pending(), 0);
        assert_eq!(j.file_len(), 8 + 33 + 34);
        assert_eq!(std::fs::metadata(j.path()).unwrap().len(), 8 + 33 + 34);
        j.commit().unwrap();
        assert_eq!(j.file_len(), 8 + 33 + 34);
        assert!(j.path().ends_with("core-3.journal"));
    }

    #[test]
    fn poisoned_journal_refuses_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        j.poisoned = true;
        j.purged();
        assert!(matches!(j.commit(), Err(JournalError::Poisoned)));
        assert_eq!(j.pending(), 0);
    }

    #[test]
    fn appending_does_not_reallocate_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let before = j.buf.as_ptr();
        for n in 0..20 {
            j.accepted(Uuid::from_u128(n), 1);
            j.attempt(Uuid::from_u128(n), Processor::Fallback, 1);
            j.confirmed(Uuid::from_u128(n), Processor::Fallback, 1, 1);
        }
        j.commit().unwrap();
        assert_eq!(j.buf.as_ptr(), before);
    }

    #[test]
    fn sync_mode_parses() {
        assert_eq!("none".parse::<SyncMode>().unwrap(), SyncMode::None);
        assert_eq!("batch".parse::<SyncMode>().unwrap(), SyncMode::Batch);
        assert!("always".parse::<SyncMode>().is_err());
    }
}
