//! [`Journal`]: one core's journal file, its append buffer and commit.
//!
//! The file is preallocated ahead of its records (`fallocate`: the blocks are reserved, so
//! a full disk is an error at a commit, never a `SIGBUS` in the middle of a copy) and mapped
//! shared into memory; past the last record it holds zeros, which replay reads as the end.
//!
//! The append methods only encode into a reusable buffer (no allocation, no syscall, no
//! lock). [`Journal::commit`] copies that buffer into the mapping: the bytes are then in the
//! kernel's page cache, where a `write(2)` would have put them, and survive a crash of the
//! process just the same, without a syscall. With [`SyncMode::Batch`] the commit then
//! `msync`s the pages it touched (a mapping's `fdatasync`). When the records reach the end
//! of the file it is extended (at least doubled, in whole [`GROW_STEP`]s) and mapped again.
//! Pages of records already written are unmapped every [`RELEASE_STEP`] (they stay in the
//! page cache): a mapping keeps every page it touched resident in the process otherwise,
//! and the journal would grow the server's RSS by its whole size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, UncheckedAdvice};
use uuid::Uuid;

use super::record::{encode, Event, MAGIC, MAX_RECORD_LEN};
use super::state::LiveState;
use super::{dir, replay, Confirmed, JournalError, Processor, Replay, SyncMode};

/// File size past which [`Journal::maybe_compact`] rewrites the file as its live state.
pub const DEFAULT_COMPACT_THRESHOLD: u64 = 8 << 20;
/// The smallest file, and the granule it grows by (about 10,000 payments).
pub const GROW_STEP: u64 = 1 << 20;
/// Written records are unmapped in runs of this many bytes (a multiple of every page size).
pub const RELEASE_STEP: u64 = 256 << 10;

/// One core's journal. Not shared between threads: each runtime owns its own.
#[derive(Debug)]
pub struct Journal {
    pub(super) dir: PathBuf,
    pub(super) core: usize,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// The whole file, mapped shared: records are committed by copying them here.
    pub(super) map: MmapMut,
    /// Bytes of the file that are preallocated (and mapped); records fit below this.
    pub(super) cap: u64,
    pub(super) buf: Vec<u8>,
    pub(super) sync: SyncMode,
    /// Bytes committed: the magic and every whole record. Zeros follow, up to `cap`.
    pub(super) len: u64,
    /// The mapping below this offset was released (a multiple of [`RELEASE_STEP`]).
    pub(super) released: u64,
    pub(super) compact_threshold: u64,
    /// Bytes of records right after the last compaction (or open). Compaction waits until
    /// they have doubled past it, so a live state larger than the threshold is not
    /// rewritten on every quiet moment.
    pub(super) live_len: u64,
    /// Set when a failed sync, or a compaction cut short, left the file in a state we
    /// cannot vouch for: the process must exit and replay it.
    pub(super) poisoned: bool,
    /// A compaction renamed its file in (whose records end here) and could not open it
    /// yet: commits fail until [`Journal::heal`] does (journal/compact.rs).
    pub(super) reopen: Option<u64>,
    /// The helper that syncs the directory after a background compaction's rename
    /// (`JOURNAL_SYNC=none`) and drops the old file: [`Journal::settle`] checks its result.
    pub(super) settling: Option<crate::helper::Helper<Result<(), JournalError>>>,
    /// Tests only: the next syncs fail, as on a disk that reports a write error.
    #[cfg(test)]
    pub(super) fail_syncs: bool,
    /// Tests only: a compaction step that fails, with this errno, this many more times.
    #[cfg(test)]
    pub(super) fault: std::cell::Cell<Option<(super::compact::FaultAt, i32, u32)>>,
}

impl Journal {
    /// Opens (or creates) `dir/core-<core>.journal` and replays it.
    ///
    /// A torn last record is cut off (with a warning) so that new records follow good ones;
    /// a leftover compaction temp file is removed (the journal it was meant to replace is
    /// still whole). Bytes between records that do not verify (a page a host crash left
    /// unwritten, a damaged disk) are skipped, every record that verifies is kept, and the
    /// file is rewritten as that state, the damaged one kept as `core-<n>.journal.damaged`
    /// (errors in the log say what was skipped).
    pub fn open(
        dir: &Path,
        core: usize,
        sync: SyncMode,
    ) -> Result<(Journal, Replay), JournalError> {
        let (journal, state) = Journal::open_state(dir, core, sync)?;
        Ok((journal, state.into_replay()))
    }

    /// [`Journal::open`], with the replayed state as it was folded: what the server
    /// consumes ([`LiveState::into_ordered`]), without a copy of it as lists.
    pub fn open_state(
        dir: &Path,
        core: usize,
        sync: SyncMode,
    ) -> Result<(Journal, LiveState), JournalError> {
        std::fs::create_dir_all(dir).map_err(JournalError::io(dir))?;
        dir::remove_if_exists(&dir::tmp_path(dir, core))?;
        let path = dir::journal_path(dir, core);
        let io = || JournalError::io(&path);
        let mut file = open_locked(&path)?;
        let size = file.metadata().map_err(io())?.len();
        let scan = replay::scan_file(&path, &file, size)?;
        let mut len = scan.good_len;
        if scan.damaged() {
            replay::report_damage(&path, &scan);
            file = rewrite_damaged(dir, core, &path, &scan.state, file)?;
            len = file.metadata().map_err(io())?.len();
        } else if len == 0 {
            // New file, or a crash while it was being created: start it over.
            file.set_len(0).map_err(io())?;
            file.write_all_at(&MAGIC, 0).map_err(io())?;
            file.sync_all().map_err(io())?;
            dir::sync_dir(dir)?;
            len = MAGIC.len() as u64;
        } else if scan.torn {
            tracing::warn!(
                path = %path.display(),
                offset = len,
                "journal: torn last record cut off"
            );
            // Cut to the good part; the preallocation fills the rest with zeros again.
            file.set_len(len).map_err(io())?;
        }
        let (map, cap) = prepare(&file, len).map_err(io())?;
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
            map,
            cap,
            buf: Vec::with_capacity(64 * MAX_RECORD_LEN),
            sync,
            len,
            released: release_floor(len),
            compact_threshold: DEFAULT_COMPACT_THRESHOLD,
            // Unknown until the first compaction: a file already past the threshold at
            // start is compacted at the first quiet moment.
            live_len: 0,
            poisoned: false,
            reopen: None,
            settling: None,
            #[cfg(test)]
            fail_syncs: false,
            #[cfg(test)]
            fault: std::cell::Cell::new(None),
        };
        Ok((journal, scan.state))
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

    /// Everything was purged: replay forgets every payment before this, settled or not.
    pub fn purged(&mut self) {
        encode(&mut self.buf, &Event::Purged);
    }

    /// Bytes appended and not yet committed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes committed: the magic and every whole record (the file is larger: preallocated).
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Bytes the file holds, committed records and preallocated zeros.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// Copies every appended record into the mapped file (and `msync`s them in batch mode).
    ///
    /// On error the appended records are discarded (the caller must not answer 2XX for
    /// them): a file that cannot grow (a full disk) fails this commit, and the next one
    /// tries again. A failed sync takes the commit's records back out of the file (they
    /// must never replay) and leaves the page cache in a state we cannot vouch for: the
    /// journal is poisoned and every later commit fails.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            self.buf.clear();
            return Err(JournalError::Poisoned);
        }
        if self.reopen.is_some() {
            if let Err(e) = self.heal() {
                self.buf.clear();
                return Err(e);
            }
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let start = self.len;
        let end = start + self.buf.len() as u64;
        if end > self.cap {
            if let Err(e) = self.grow(end) {
                self.buf.clear();
                return Err(JournalError::io(&self.path)(e));
            }
        }
        self.map[start as usize..end as usize].copy_from_slice(&self.buf);
        self.buf.clear();
        if self.sync == SyncMode::Batch {
            let synced = self.sync_range(start, end);
            if let Err(e) = synced {
                self.poisoned = true;
                self.unwrite(start, end);
                return Err(JournalError::io(&self.path)(e));
            }
        }
        self.len = end;
        self.release_written();
        Ok(())
    }

    /// Takes the records of a commit whose sync failed back out of the file: their waiters
    /// are told it failed (intake answers 503, a sender does not send), so a later replay
    /// must not find them, though the copy put them in the page cache. Zeros over them, then
    /// the file cut at `start` (which also frees whatever blocks the disk did take). The
    /// mapping past `start` is never touched again: the journal is poisoned.
    fn unwrite(&mut self, start: u64, end: u64) {
        self.map[start as usize..end as usize].fill(0);
        let cut = self.file.set_len(start);
        match cut {
            Ok(()) => tracing::error!(
                path = %self.path.display(),
                offset = start,
                bytes = end - start,
                "journal: sync failed; the commit's records were taken out of the file"
            ),
            Err(e) => tracing::error!(
                path = %self.path.display(),
                offset = start,
                error = %e,
                "journal: sync failed and the file cannot be cut; its records are zeros in the page cache only"
            ),
        }
    }

    /// Whether every commit now fails for good (a sync failed, or a compaction could not
    /// finish): the process must exit, and its restart replays the file.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// `msync`s the mapping's bytes `start..end` (memmap2 widens the range to whole pages).
    fn sync_range(&self, start: u64, end: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.map.flush_range(start as usize, (end - start) as usize)
    }

    /// For tests of the journal's users: every later sync fails (`EIO`), as on a disk that
    /// reports a write error.
    #[cfg(test)]
    pub(crate) fn fail_syncs_for_test(&mut self) {
        self.fail_syncs = true;
    }

    /// Unmaps the pages of records written before the last whole [`RELEASE_STEP`].
    fn release_written(&mut self) {
        let upto = release_floor(self.len);
        if upto == self.released {
            return;
        }
        let (from, len) = (self.released as usize, (upto - self.released) as usize);
        // SAFETY: nothing borrows the mapping below `upto` (records are copied in, never
        // referenced). On a shared file mapping `MADV_DONTNEED` drops only this process's
        // page-table entries: the pages, dirty ones included, stay in the page cache and are
        // written back as usual; a later read of the range maps the same bytes again.
        // A failure leaves the pages mapped: more RSS, nothing else, so it is not retried.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, from, len)
        };
        self.released = upto;
    }

    /// Extends the file to hold `needed` bytes and maps it again.
    pub(super) fn grow(&mut self, needed: u64) -> io::Result<()> {
        let cap = preallocate(&self.file, self.cap, needed)?;
        if self.sync == SyncMode::Batch {
            // The new size must be on disk before records that lie past the old one.
            self.file.sync_all()?;
        }
        self.map = map(&self.file)?;
        self.cap = cap;
        // The new mapping has touched nothing yet.
        self.released = release_floor(self.len);
        Ok(())
    }

    /// For tests of the journal's users: the file is full and cannot grow (its handle is
    /// now read-only, so `fallocate` fails), as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_writes_for_test(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new().read(true).open(&self.path)?;
        self.cap = self.len;
        Ok(())
    }

    /// Compacts if the file has passed the threshold (and doubled since the last
    /// compaction). Meant for quiet moments: it reads and rewrites the whole file. Returns
    /// whether it compacted.
    pub fn maybe_compact(&mut self) -> Result<bool, JournalError> {
        let size = self.len + self.buf.len() as u64;
        if self.poisoned || size < self.compact_threshold.max(2 * self.live_len) {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }
}

/// Replaces the damaged journal at `path` (open and locked as `damaged`) by a file holding
/// `state`, and returns the new file, locked. The damaged file stays beside it as evidence
/// (`core-<n>.journal.damaged`, a link made before the rename, so `path` exists throughout).
fn rewrite_damaged(
    dir: &Path,
    core: usize,
    path: &Path,
    state: &LiveState,
    damaged: File,
) -> Result<File, JournalError> {
    let aside = dir::damaged_path(dir, core);
    dir::remove_if_exists(&aside)?;
    std::fs::hard_link(path, &aside).map_err(JournalError::io(&aside))?;
    let len = dir::replace_with_state(dir, &dir::tmp_path(dir, core), path, state)?;
    let file = open_locked(path)?;
    drop(damaged);
    tracing::warn!(
        path = %path.display(),
        damaged = %aside.display(),
        len,
        "journal: rewritten without the damage"
    );
    Ok(file)
}

/// Opens the journal at `path` read-write (creating it), and locks it: two processes
/// appending to one file would interleave records, and a mapped file must not change
/// under us (see [`map`]).
pub(super) fn open_locked(path: &Path) -> Result<File, JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(JournalError::io(path))?;
    // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            JournalError::Locked {
                path: path.to_owned(),
            }
        } else {
            JournalError::io(path)(e)
        });
    }
    Ok(file)
}

/// Preallocates `file` (records end at `len`), puts its size on disk, and maps it.
fn prepare(file: &File, len: u64) -> io::Result<(MmapMut, u64)> {
    let size = file.metadata()?.len();
    let cap = preallocate(file, size, len)?;
    if cap != size {
        file.sync_all()?;
    }
    Ok((map(file)?, cap))
}

/// Makes `file` (now `size` bytes) hold more than `needed` bytes, with its blocks reserved,
/// and returns its new size: unchanged if large enough, else at least doubled and rounded
/// up to whole [`GROW_STEP`]s. A file with no room left (`size == needed`: written by a
/// compaction, or cut back to its last good record) grows.
pub(super) fn preallocate(file: &File, size: u64, needed: u64) -> io::Result<u64> {
    if size > needed && size >= GROW_STEP {
        return Ok(size);
    }
    let new = (needed + 1)
        .max(size.saturating_mul(2))
        .max(GROW_STEP)
        .next_multiple_of(GROW_STEP);
    let len =
        libc::off_t::try_from(new).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        return Ok(new);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // A filesystem without `fallocate`: a sparse extension still works, but a full disk
        // would then show as `SIGBUS` when a page is first written.
        file.set_len(new)?;
        return Ok(new);
    }
    Err(e)
}

/// Where the releasable part of a mapping whose records end at `len` ends.
pub(super) fn release_floor(len: u64) -> u64 {
    len - len % RELEASE_STEP
}

/// Maps the whole of `file` shared, read-write.
pub(super) fn map(file: &File) -> io::Result<MmapMut> {
    // SAFETY: a mapping is undefined behaviour only if the file shrinks or changes under
    // it from elsewhere. The file is locked to this process ([`open_locked`]) and to one
    // `Journal` (one file per core); it only grows, through `Journal::grow`, which maps it
    // again; compaction renames a new file in and maps that.
    unsafe { MmapMut::map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's bytes as another process would read them (through the page cache).
    fn on_file(j: &Journal) -> Vec<u8> {
        std::fs::read(j.path()).unwrap()
    }

    #[test]
    fn commit_appends_only_whole_batches_and_clears_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replay) = Journal::open(dir.path(), 3, SyncMode::Batch).unwrap();
        assert_eq!(replay, Replay::default());
        assert_eq!(j.file_len(), 8);
        assert_eq!(j.capacity(), GROW_STEP);
        j.accepted(Uuid::from_u128(1), 10);
        j.attempt(Uuid::from_u128(1), Processor::Default, 5);
        assert_eq!(j.pending(), 33 + 34);
        let file = on_file(&j);
        assert_eq!(file.len() as u64, GROW_STEP, "preallocated");
        assert_eq!(&file[..8], &MAGIC);
        assert!(
            file[8..].iter().all(|&b| b == 0),
            "nothing before the commit"
        );
        j.commit().unwrap();
        assert_eq!(j.pending(), 0);
        assert_eq!(j.file_len(), 8 + 33 + 34);
        let file = on_file(&j);
        assert_eq!(replay::scan(j.path(), &file).unwrap().records, 2);
        assert!(file[8 + 33 + 34..].iter().all(|&b| b == 0));
        j.commit().unwrap();
        assert_eq!(j.file_len(), 8 + 33 + 34);
        assert!(j.path().ends_with("core-3.journal"));
    }

    #[test]
    fn the_file_grows_by_doubling_and_keeps_every_record() {
        for sync in [SyncMode::None, SyncMode::Batch] {
            let dir = tempfile::tempdir().unwrap();
            let (mut j, _) = Journal::open(dir.path(), 0, sync).unwrap();
            // 40,000 payments of 33 bytes: past one step, then past two.
            for n in 0..40_000u128 {
                j.accepted(Uuid::from_u128(n), 1);
                if n % 100 == 99 {
                    j.commit().unwrap();
                }
            }
            j.commit().unwrap();
            assert_eq!(j.file_len(), 8 + 40_000 * 33);
            assert_eq!(j.capacity(), 2 * GROW_STEP, "{sync:?}");
            assert_eq!(on_file(&j).len() as u64, 2 * GROW_STEP);
            drop(j);
            let (j, r) = Journal::open(dir.path(), 0, sync).unwrap();
            assert_eq!(r.unsettled.len(), 40_000, "{sync:?}");
            assert_eq!(j.file_len(), 8 + 40_000 * 33);
            assert_eq!(j.capacity(), 2 * GROW_STEP, "reopening keeps the size");
        }
    }

    /// Resident KiB of this process's mappings of `path` (`/proc/self/smaps`).
    fn mapped_rss_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if first.contains('-') && first.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()) {
                // A mapping's header line: address range, perms, offset, dev, inode, path.
                ours = fields.nth(4).is_some_and(|p| Path::new(p) == path);
            } else if ours && first == "Rss:" {
                kib += fields.next().unwrap().parse::<u64>().unwrap();
            }
        }
        kib
    }

    #[test]
    fn written_records_do_not_stay_in_the_process_rss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let path = std::fs::canonicalize(j.path()).unwrap();
        // 30,000 records: 990 KB written, every page touched; then 10,000 more, which grow
        // the file (and map it anew).
        let mut n = 0u128;
        for (upto, cap) in [(30_000u128, GROW_STEP), (40_000, 2 * GROW_STEP)] {
            while n < upto {
                j.accepted(Uuid::from_u128(n), 1);
                j.commit().unwrap();
                n += 1;
            }
            assert_eq!(j.capacity(), cap);
            let rss = mapped_rss_kib(&path);
            assert!(rss > 0, "the mapping is found in smaps");
            assert!(
                rss <= RELEASE_STEP >> 10,
                "{rss} KiB of the {} KB written still resident",
                j.file_len() / 1000
            );
        }
        drop(j);
        let (_, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        assert_eq!(
            r.unsettled.len(),
            40_000,
            "released pages kept their records"
        );
    }

    #[test]
    fn a_file_that_cannot_grow_fails_the_commit_not_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        j.accepted(Uuid::from_u128(1), 1);
        j.commit().unwrap();
        let good = j.file_len();
        j.fail_writes_for_test().unwrap();
        j.accepted(Uuid::from_u128(2), 1);
        assert!(matches!(j.commit(), Err(JournalError::Io { .. })));
        assert_eq!((j.pending(), j.file_len()), (0, good));
        assert!(!j.poisoned, "a full disk may clear");
        drop(j);
        let (_, r) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let ids: Vec<_> = r.unsettled.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1)]);
    }

    /// A commit whose `msync` failed was answered as failed (intake 503, no send), yet the
    /// copy had put its records in the page cache: they must never replay (issue 16, item 3).
    #[test]
    fn a_failed_sync_leaves_no_record_of_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0, SyncMode::Batch).unwrap();
        j.accepted(Uuid::from_u128(1), 1);
        j.commit().unwrap();
        let good = j.file_len();
        j.fail_syncs_for_test();
        j.accepted(Uuid::from_u128(2), 2);
        j.attempt(Uuid::from_u128(1), Processor::Default, 7);
        assert!(matches!(j.commit(), Err(JournalError::Io { .. })));
        assert!(j.poisoned);
        assert!(matches!(j.commit(), Err(JournalError::Poisoned)));
        // What the next start reads, while this process still runs and after it is gone.
        let expected = vec![crate::journal::Unsettled {
            id: Uuid::from_u128(1),
            cents: 1,
            pinned: None,
        }];
        assert_eq!(
            crate::journal::replay_dir(dir.path()).unwrap().unsettled,
            expected
        );
        assert!(on_file(&j)[good as usize..].iter().all(|&b| b == 0));
        drop(j);
        let (_, r) = Journal::open(dir.path(), 0, SyncMode::Batch).unwrap();
        assert_eq!(r.unsettled, expected);
    }

    #[test]
    fn a_second_handle_on_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 0, SyncMode::None).unwrap();
        let err = Journal::open(dir.path(), 0, SyncMode::None).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        assert!(
            Journal::open(dir.path(), 1, SyncMode::None).is_ok(),
            "another core's file"
        );
        drop(j);
        assert!(
            Journal::open(dir.path(), 0, SyncMode::None).is_ok(),
            "released on close"
        );
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
