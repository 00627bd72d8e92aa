//! The journal directory: file names, whole-directory replay, and rebalancing when the
//! number of cores changes between runs.
//!
//! Files: `core-<n>.journal` (one per core), `core-<n>.journal.tmp` (a compaction in
//! progress; removed on open), `rebalance.journal` (a full copy of the state that exists
//! only while [`rebalance`] redistributes it), `core-<n>.journal.damaged` (a journal found
//! damaged at open, kept for a human; never read). Any mix of these that a crash can leave
//! behind replays to the same state, because the directory merge dedupes by payment id.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::record::{encode, MAGIC, MAX_RECORD_LEN};
use super::replay;
use super::state::LiveState;
use super::{JournalError, Replay};

const REBALANCE_FILE: &str = "rebalance.journal";

pub fn journal_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}.journal"))
}

pub fn tmp_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}.journal.tmp"))
}

/// Where a journal found damaged at open is kept (the last one only).
pub fn damaged_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}.journal.damaged"))
}

/// The core a `core-<n>.journal` file name belongs to.
fn core_of_name(name: &str) -> Option<usize> {
    let n = name.strip_prefix("core-")?.strip_suffix(".journal")?;
    // `parse` alone would accept "+1"; require plain digits so names map one to one.
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub fn remove_if_exists(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(JournalError::io(path)(e)),
        _ => Ok(()),
    }
}

/// Makes renames, creations and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(JournalError::io(dir))
}

/// Writes `state` as a fresh journal at `path` (truncating it) and fsyncs it. Returns its
/// length. The records are encoded as they are written (never the whole file in memory).
pub fn write_state(path: &Path, state: &LiveState) -> Result<u64, JournalError> {
    write_compacted(path, None, state)
}

/// Where a compaction's new file takes its opening records from as they are: the bytes
/// `range` of the old journal `file` (the buckets a scan left in place,
/// [`replay::scan_file_for_compaction`]).
pub struct Head<'a> {
    pub file: &'a File,
    pub range: Range<u64>,
}

/// [`write_state`], with `head`'s records copied first when there is one (they are
/// records of the same format: the new file replays them before `state`'s).
pub fn write_compacted(
    path: &Path,
    head: Option<Head<'_>>,
    state: &LiveState,
) -> Result<u64, JournalError> {
    let io = || JournalError::io(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io())?;
    let mut out = BufWriter::with_capacity(64 << 10, file);
    out.write_all(&MAGIC).map_err(io())?;
    let mut len = MAGIC.len() as u64;
    if let Some(head) = head {
        len += copy_range(head, &mut out).map_err(io())?;
    }
    let mut record = Vec::with_capacity(MAX_RECORD_LEN);
    let mut failed = None;
    state.for_each_event(|event| {
        if failed.is_none() {
            record.clear();
            encode(&mut record, event);
            match out.write_all(&record) {
                Ok(()) => len += record.len() as u64,
                Err(e) => failed = Some(e),
            }
        }
    });
    if let Some(e) = failed {
        return Err(io()(e));
    }
    let file = out.into_inner().map_err(|e| io()(e.into_error()))?;
    file.sync_all().map_err(io())?;
    Ok(len)
}

/// Copies `head`'s bytes to `out` a megabyte at a time (positioned reads: the journal's
/// descriptor keeps its offset); returns how many.
fn copy_range(head: Head<'_>, out: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; (1 << 20).min(head.range.end - head.range.start) as usize];
    let mut at = head.range.start;
    while at < head.range.end {
        let n = buf.len().min((head.range.end - at) as usize);
        head.file.read_exact_at(&mut buf[..n], at)?;
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(head.range.end - head.range.start)
}

/// Writes `state` to `tmp`, then renames it over `path`: `path` holds either its old or its
/// new contents at every instant.
pub fn replace_with_state(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    state: &LiveState,
) -> Result<u64, JournalError> {
    let len = write_state(tmp, state)?;
    fs::rename(tmp, path).map_err(JournalError::io(path))?;
    sync_dir(dir)?;
    Ok(len)
}

/// The journal files of a directory.
#[derive(Debug, Default)]
struct Listing {
    /// `(core, path)` for each `core-<n>.journal`, by core.
    cores: Vec<(usize, PathBuf)>,
    /// The rebalance copy, if a rebalance was interrupted.
    rebalance: Option<PathBuf>,
    /// Temp files of interrupted compactions or rebalances: never read, only removed.
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, JournalError> {
    let mut cores = Vec::new();
    let mut rebalance = None;
    let mut temps = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(JournalError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(JournalError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(core) = core_of_name(name) {
            cores.push((core, entry.path()));
        } else if name == REBALANCE_FILE {
            rebalance = Some(entry.path());
        } else if name.ends_with(".journal.tmp") {
            temps.push(entry.path());
        }
    }
    cores.sort();
    Ok(Listing {
        cores,
        rebalance,
        temps,
    })
}

/// Merged live state of every journal in `dir`, read only (a torn tail is ignored, not cut).
fn merged_state(dir: &Path) -> Result<(LiveState, Vec<(usize, PathBuf)>), JournalError> {
    let Listing {
        cores, rebalance, ..
    } = list(dir)?;
    let mut state = LiveState::default();
    // An interrupted rebalance's copy holds every bucket, and some may be in the cores' new
    // files already: buckets hold no ids to tell copies apart, so only the copy's count.
    let copy_holds_buckets = rebalance.is_some();
    for path in cores.iter().map(|(_, p)| p).chain(rebalance.iter()) {
        let file = File::open(path).map_err(JournalError::io(path))?;
        let size = file.metadata().map_err(JournalError::io(path))?.len();
        let scan = replay::scan_file(path, &file, size)?;
        replay::report_damage(path, &scan);
        if scan.torn {
            tracing::warn!(path = %path.display(), offset = scan.good_len, "journal: torn last record ignored");
        }
        let is_copy = rebalance.as_ref() == Some(path);
        state.merge(if copy_holds_buckets && !is_copy {
            scan.state.without_folded()
        } else {
            scan.state
        });
    }
    Ok((state, cores))
}

/// The state of every journal in `dir` together, whatever number of cores wrote them.
pub fn replay_dir(dir: &Path) -> Result<Replay, JournalError> {
    Ok(merged_state(dir)?.0.into_replay())
}

/// Makes `dir` hold exactly `cores` journals, `core-0` .. `core-<cores-1>`, with the payments
/// of any other journals spread over them (by the low bits of the id). Call it once at start,
/// before any [`Journal::open`](super::Journal::open). Returns whether it rewrote anything.
///
/// Crash-safe: the whole state is first written to `rebalance.journal`; only then are the
/// old files removed and the new ones written; the copy goes last. A run interrupted at any
/// point is finished by the next call.
pub fn rebalance(dir: &Path, cores: usize) -> Result<bool, JournalError> {
    let cores = cores.max(1);
    let listing = list(dir)?;
    for tmp in &listing.temps {
        remove_if_exists(tmp)?;
    }
    // Growing needs no rewrite: the new cores start with empty journals.
    if listing.rebalance.is_none() && listing.cores.iter().all(|(core, _)| *core < cores) {
        return Ok(false);
    }
    let leftover = listing.rebalance;
    let (state, existing) = merged_state(dir)?;
    let copy = dir.join(REBALANCE_FILE);
    if leftover.is_none() {
        let tmp = dir.join(format!("{REBALANCE_FILE}.tmp"));
        replace_with_state(dir, &tmp, &copy, &state)?;
    }
    for (_, path) in &existing {
        remove_if_exists(path)?;
    }
    sync_dir(dir)?;
    for core in 0..cores {
        let share = state.filtered(|id| core_for(id, cores) == core, core == 0);
        replace_with_state(dir, &tmp_path(dir, core), &journal_path(dir, core), &share)?;
    }
    remove_if_exists(&copy)?;
    sync_dir(dir)?;
    tracing::info!(
        dir = %dir.display(),
        from = existing.len(),
        to = cores,
        payments = state.len(),
        "journal: rebalanced"
    );
    Ok(true)
}

fn core_for(id: &Uuid, cores: usize) -> usize {
    (id.as_u128() % cores as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, Processor, SyncMode};

    fn sorted(mut r: Replay) -> Replay {
        r.confirmed.sort_by_key(|c| c.id);
        r.unsettled.sort_by_key(|u| u.id);
        r
    }

    /// Three cores' worth of journals with confirmed, pinned and unpinned payments.
    fn three_cores(dir: &Path) {
        for core in 0..3u128 {
            let (mut j, _) = Journal::open(dir, core as usize, SyncMode::None).unwrap();
            for n in 0..10u128 {
                let id = Uuid::from_u128(core * 100 + n);
                j.accepted(id, n as u64 + 1);
                if n % 3 != 0 {
                    j.attempt(id, Processor::Fallback, n as i64);
                }
                if n % 2 == 0 {
                    j.confirmed(id, Processor::Default, n as i64, n as u64 + 1);
                }
            }
            j.commit().unwrap();
            if core == 1 {
                // Its confirmed payments, stamped long ago, become buckets, which hold no id.
                j.compact().unwrap();
            }
        }
    }

    fn share_of(state: &LiveState, core: usize) -> LiveState {
        state.filtered(|id| core_for(id, 2) == core, core == 0)
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(core_of_name("core-12.journal"), Some(12));
        assert_eq!(core_of_name("core-+1.journal"), None);
        assert_eq!(core_of_name("core-1.journal.tmp"), None);
        assert_eq!(core_of_name("core-.journal"), None);
    }

    #[test]
    fn replay_dir_merges_every_core() {
        let dir = tempfile::tempdir().unwrap();
        three_cores(dir.path());
        let r = replay_dir(dir.path()).unwrap();
        // Core 1's five confirmed payments are folded, one bucket per stamp.
        assert_eq!(r.confirmed.len(), 10);
        assert_eq!(r.folded.len(), 5);
        assert_eq!(r.unsettled.len(), 15);
        assert_eq!(
            replay_dir(&dir.path().join("absent")).unwrap(),
            Replay::default()
        );
    }

    #[test]
    fn rebalance_to_fewer_cores_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        three_cores(dir.path());
        let before = sorted(replay_dir(dir.path()).unwrap());
        assert!(!rebalance(dir.path(), 3).unwrap());
        assert!(rebalance(dir.path(), 2).unwrap());
        let listing = list(dir.path()).unwrap();
        let cores: Vec<usize> = listing.cores.iter().map(|c| c.0).collect();
        assert_eq!(cores, vec![0, 1]);
        assert!(listing.rebalance.is_none());
        let mut together = Replay::default();
        for core in 0..2 {
            let (_, r) = Journal::open(dir.path(), core, SyncMode::None).unwrap();
            assert!(r.confirmed.iter().all(|c| core_for(&c.id, 2) == core));
            together.confirmed.extend(r.confirmed);
            together.unsettled.extend(r.unsettled);
            together.folded.extend(r.folded);
        }
        assert!(!before.folded.is_empty());
        assert_eq!(sorted(together), before);
        assert!(!rebalance(dir.path(), 2).unwrap());
    }

    #[test]
    fn interrupted_rebalance_is_finished_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        three_cores(dir.path());
        let before = sorted(replay_dir(dir.path()).unwrap());
        // Crash after the copy was written and one old file removed.
        let (state, _) = merged_state(dir.path()).unwrap();
        write_state(&dir.path().join(REBALANCE_FILE), &state).unwrap();
        fs::remove_file(journal_path(dir.path(), 2)).unwrap();
        assert_eq!(sorted(replay_dir(dir.path()).unwrap()), before);
        // Crash while the next new file was being written.
        write_state(&tmp_path(dir.path(), 1), &share_of(&state, 1)).unwrap();
        // Crash after one new file replaced an old one.
        write_state(&journal_path(dir.path(), 0), &share_of(&state, 0)).unwrap();
        assert_eq!(sorted(replay_dir(dir.path()).unwrap()), before);
        assert!(rebalance(dir.path(), 2).unwrap());
        let listing = list(dir.path()).unwrap();
        assert!(listing.rebalance.is_none());
        assert!(listing.temps.is_empty());
        assert_eq!(sorted(replay_dir(dir.path()).unwrap()), before);
    }
}
