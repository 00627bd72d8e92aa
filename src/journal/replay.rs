//! Reading a journal file back: the magic, every record, and what lies between them.
//!
//! The records end where zeros begin: the writer preallocates the file, so every journal
//! has a zero tail. Anything that does not decode is skipped byte by byte until a record
//! verifies again (a record never starts with a zero byte, so a run of zeros is skipped at
//! once): every record that verifies is kept, wherever it is. Bytes skipped with no record
//! after them are the end of the journal: zeros, or a torn last record (a crash in the
//! middle of a copy). Bytes skipped between records are damage (a host crash writes pages
//! back in any order, so a page in the middle can be zeros while later ones hold records):
//! each such region is reported, and [`Journal::open`](super::Journal::open) rewrites the
//! file without it.
//!
//! A file is read in chunks ([`scan_file`]), never whole: replay holds the live state, not
//! the file.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, Event, MAGIC, MAX_RECORD_LEN};
use super::state::LiveState;
use super::JournalError;

/// Bytes read at a time by [`scan_file`].
const CHUNK: usize = 1 << 20;
/// Skipped regions kept for the log; more are only counted.
const SKIPPED_KEPT: usize = 16;

/// Bytes between two records that are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Where the region starts in the file.
    pub offset: u64,
    pub len: u64,
    /// Whether every byte of it is zero (a page never written back).
    pub zeros: bool,
}

/// The outcome of reading one file.
#[derive(Debug)]
pub struct FileScan {
    pub state: LiveState,
    /// Bytes up to the end of the last valid record; 0 when the file holds no record and
    /// no magic (it was being created, or it is zeros).
    pub good_len: u64,
    /// Valid records read.
    pub records: u64,
    /// Whether bytes other than zeros follow the last record (a torn last record).
    pub torn: bool,
    /// The first regions skipped between records (at most 16), in file order.
    pub skipped: Vec<Skipped>,
    /// How many regions were skipped between records, and their bytes in all.
    pub skipped_regions: u64,
    pub skipped_bytes: u64,
    /// The bytes of the `folded` records that open the file, left unread for a compaction
    /// to copy as they are ([`scan_file_for_compaction`]); empty otherwise.
    pub buckets: Range<u64>,
}

impl FileScan {
    fn empty() -> FileScan {
        FileScan {
            state: LiveState::default(),
            good_len: 0,
            records: 0,
            torn: false,
            skipped: Vec::new(),
            skipped_regions: 0,
            skipped_bytes: 0,
            buckets: 0..0,
        }
    }

    /// Whether anything was skipped between records (the file needs rewriting).
    pub fn damaged(&self) -> bool {
        self.skipped_regions > 0
    }
}

/// Folds the bytes of the journal at `path` into its live state.
pub fn scan(path: &Path, bytes: &[u8]) -> Result<FileScan, JournalError> {
    let head = MAGIC.len().min(bytes.len());
    let Some(mut scanner) = Scanner::start(path, &bytes[..head])? else {
        return Ok(FileScan::empty());
    };
    scanner.feed(&bytes[head..], head as u64, true);
    Ok(scanner.finish())
}

/// Folds the first `limit` bytes of the journal file `file` (at `path`), reading it in
/// chunks of 1 MiB.
pub fn scan_file(path: &Path, file: &File, limit: u64) -> Result<FileScan, JournalError> {
    scan_file_with(path, file, limit, false)
}

/// [`scan_file`] for a compaction: the `folded` records that open the file (the buckets the
/// last compaction wrote, in time order: most of a long life's journal) are not folded into
/// the state but left where they are, [`FileScan::buckets`], for the new file to copy whole.
/// So a compaction holds only what was appended since the last one, never a second copy of
/// every bucket the core holds. A purge after them drops them; `folded` records anywhere
/// else (or after damage) are folded in as [`scan_file`] does.
pub fn scan_file_for_compaction(
    path: &Path,
    file: &File,
    limit: u64,
) -> Result<FileScan, JournalError> {
    scan_file_with(path, file, limit, true)
}

fn scan_file_with(
    path: &Path,
    file: &File,
    limit: u64,
    pass_buckets: bool,
) -> Result<FileScan, JournalError> {
    let io = || JournalError::io(path);
    let mut buf = vec![0u8; CHUNK + MAX_RECORD_LEN];
    let first = read_at(file, &mut buf[..MAGIC.len()], 0, limit).map_err(io())?;
    let Some(mut scanner) = Scanner::start(path, &buf[..first])? else {
        return Ok(FileScan::empty());
    };
    scanner.passing = pass_buckets && scanner.gap.is_none();
    // `buf[..held]` holds the file from offset `base`; each round tops it up and feeds it.
    let (mut base, mut held) = (first as u64, 0usize);
    loop {
        let read = read_at(file, &mut buf[held..], base + held as u64, limit).map_err(io())?;
        held += read;
        let last = read == 0 || base + held as u64 >= limit;
        let used = scanner.feed(&buf[..held], base, last);
        if last {
            break;
        }
        // What is left is shorter than a record: move it to the front and read on.
        buf.copy_within(used..held, 0);
        base += used as u64;
        held -= used;
    }
    Ok(scanner.finish())
}

/// Reads into `buf` from `offset`, never past `limit`; returns the bytes read (0 at the end).
fn read_at(file: &File, buf: &mut [u8], offset: u64, limit: u64) -> std::io::Result<usize> {
    let want = buf.len().min(limit.saturating_sub(offset) as usize);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..want], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A region being skipped: where it began and whether it held anything but zeros.
#[derive(Debug, Clone, Copy)]
struct Gap {
    start: u64,
    nonzero: bool,
}

/// The fold of a file fed in order, one piece at a time.
struct Scanner {
    scan: FileScan,
    gap: Option<Gap>,
    /// Whether `folded` records extend [`FileScan::buckets`] rather than the state: only
    /// while every record so far was one, right after the magic, with nothing skipped.
    passing: bool,
}

impl Scanner {
    /// Checks the magic (`head`: the file's first bytes, up to 8). `None`: a file being
    /// created (a prefix of the magic, or nothing), which holds nothing. A zeroed magic is
    /// a lost first page: the records after it are looked for.
    fn start(path: &Path, head: &[u8]) -> Result<Option<Scanner>, JournalError> {
        let mut scanner = Scanner {
            scan: FileScan::empty(),
            gap: None,
            passing: false,
        };
        if head.len() < MAGIC.len() {
            return if MAGIC.starts_with(head) || head.iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(JournalError::BadMagic {
                    path: path.to_owned(),
                })
            };
        }
        if head == MAGIC {
            scanner.scan.good_len = MAGIC.len() as u64;
        } else if head.iter().all(|&b| b == 0) || MAGIC.starts_with(trim_zeros(head)) {
            scanner.gap = Some(Gap {
                start: 0,
                nonzero: head.iter().any(|&b| b != 0),
            });
        } else {
            return Err(JournalError::BadMagic {
                path: path.to_owned(),
            });
        }
        Ok(Some(scanner))
    }

    /// Folds the records of `bytes`, which start at file offset `base`; returns how many
    /// bytes it used. Unless `last`, it stops short of the end where a record might not be
    /// whole yet, and the caller feeds those bytes again with what follows.
    fn feed(&mut self, bytes: &[u8], base: u64, last: bool) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == 0 {
                // Every record's first byte is the low byte of a length between 1 and
                // 255: nothing starts inside a run of zeros.
                let run = bytes[at..].iter().position(|&b| b != 0);
                self.skip(base + at as u64, false);
                at += run.unwrap_or(bytes.len() - at);
                continue;
            }
            if !last && bytes.len() - at < MAX_RECORD_LEN {
                break;
            }
            match record::decode(&bytes[at..]) {
                Some((event, len)) => {
                    let start = base + at as u64;
                    self.resume(start);
                    let end = start + len as u64;
                    if self.pass(&event, start) {
                        self.scan.buckets.end = end;
                    } else {
                        self.scan.state.apply(&event);
                    }
                    self.scan.records += 1;
                    at += len;
                    self.scan.good_len = end;
                }
                None => {
                    self.skip(base + at as u64, true);
                    at += 1;
                }
            }
        }
        at
    }

    /// Whether the record at `start` is one more of the `folded` records that open the file
    /// (left in place, [`scan_file_for_compaction`]). A purge forgets those as it forgets
    /// everything before it.
    fn pass(&mut self, event: &Event, start: u64) -> bool {
        if matches!(event, Event::Purged) {
            self.scan.buckets = 0..0;
        }
        // Nothing was skipped while passing (`skip` ends it): the records are contiguous.
        self.passing &= matches!(event, Event::Folded { .. });
        if self.passing && self.scan.buckets.is_empty() {
            self.scan.buckets = start..start;
        }
        self.passing
    }

    fn skip(&mut self, at: u64, nonzero: bool) {
        self.passing = false;
        let gap = self.gap.get_or_insert(Gap { start: at, nonzero });
        gap.nonzero |= nonzero;
    }

    /// A record starts at `at`: the region skipped before it, if any, was damage.
    fn resume(&mut self, at: u64) {
        if let Some(gap) = self.gap.take() {
            let s = &mut self.scan;
            let len = at - gap.start;
            s.skipped_regions += 1;
            s.skipped_bytes += len;
            if s.skipped.len() < SKIPPED_KEPT {
                s.skipped.push(Skipped {
                    offset: gap.start,
                    len,
                    zeros: !gap.nonzero,
                });
            }
        }
    }

    /// What was skipped after the last record is the end: zeros, or a torn record.
    fn finish(mut self) -> FileScan {
        self.scan.torn = self.gap.is_some_and(|g| g.nonzero) && self.scan.good_len > 0;
        self.scan
    }
}

/// Says loudly what a scan skipped between records (payments whose records were there are
/// lost or replay in an earlier state): one error per region (the first few), then the sum.
pub fn report_damage(path: &Path, scan: &FileScan) {
    if !scan.damaged() {
        return;
    }
    for s in &scan.skipped {
        tracing::error!(
            path = %path.display(),
            offset = s.offset,
            bytes = s.len,
            zeros = s.zeros,
            "journal: skipped bytes between records that do not verify"
        );
    }
    tracing::error!(
        path = %path.display(),
        regions = scan.skipped_regions,
        bytes = scan.skipped_bytes,
        kept = scan.records,
        "journal: damaged (a host crash, or the disk); every record that verifies is kept"
    );
}

/// `bytes` without its trailing zeros.
fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{encode, Event};
    use uuid::Uuid;

    fn file(events: &[Event]) -> Vec<u8> {
        let mut buf = MAGIC.to_vec();
        events.iter().for_each(|e| encode(&mut buf, e));
        buf
    }

    #[test]
    fn empty_and_torn_magic_are_an_empty_journal() {
        let p = Path::new("x");
        for cut in 0..MAGIC.len() {
            let s = scan(p, &MAGIC[..cut]).unwrap();
            assert_eq!((s.good_len, s.records), (0, 0));
        }
        assert_eq!(scan(p, &[0; 40]).unwrap().good_len, 0);
        assert_eq!(scan(p, &MAGIC).unwrap().good_len, 8);
    }

    #[test]
    fn foreign_file_is_bad_magic() {
        let err = scan(Path::new("x"), b"hello world").unwrap_err();
        assert!(matches!(err, JournalError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn trailing_zeros_are_the_end_and_anything_else_a_torn_tail() {
        let mut bytes = file(&[Event::Accepted {
            id: Uuid::from_u128(1),
            cents: 1,
        }]);
        let good = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.good_len, s.records, s.torn), (good as u64, 1, false));
        // Half of a record copied before a crash, zeros after it.
        let mut half = Vec::new();
        encode(&mut half, &Event::Purged);
        bytes[good..good + 5].copy_from_slice(&half[..5]);
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.good_len, s.records, s.torn), (good as u64, 1, true));
    }

    #[test]
    fn garbage_between_records_is_skipped_and_named() {
        let a = |n| Event::Accepted {
            id: Uuid::from_u128(n),
            cents: 1,
        };
        let mut bytes = file(&[a(1), a(2), a(3)]);
        // Damage the second record's payload: the third is still valid after it.
        bytes[8 + 33 + 12] ^= 0xff;
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!(
            (s.records, s.good_len, s.torn),
            (2, bytes.len() as u64, false)
        );
        let skipped = Skipped {
            offset: 8 + 33,
            len: 33,
            zeros: false,
        };
        assert_eq!(s.skipped, vec![skipped]);
        assert_eq!((s.skipped_regions, s.skipped_bytes), (1, 33));
        let ids: Vec<_> = s.state.to_replay().unsettled.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1), Uuid::from_u128(3)]);
    }

    #[test]
    fn a_zeroed_magic_is_a_lost_first_page() {
        let a = Event::Accepted {
            id: Uuid::from_u128(1),
            cents: 1,
        };
        let mut bytes = file(&[a, a]);
        bytes[..8 + 33].fill(0);
        let s = scan(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.records, s.good_len), (1, bytes.len() as u64));
        assert_eq!(s.skipped[0].offset, 0);
        assert!(s.skipped[0].zeros && s.damaged());
    }

    /// A compaction's scan leaves the buckets that open the file where they are (its state
    /// never holds them: a long life's compaction would hold a second copy of every
    /// bucket), folds in any other bucket, and forgets them all at a purge.
    #[test]
    fn a_compaction_scan_leaves_the_opening_buckets_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let bucket = |at_us| Event::Folded {
            at_us,
            bucket: crate::store::Bucket {
                requests: [1, 0],
                cents: [5, 0],
            },
        };
        let a = Event::Accepted {
            id: Uuid::from_u128(1),
            cents: 1,
        };
        let scan_of = |events: &[Event]| {
            std::fs::write(&path, file(events)).unwrap();
            let f = File::open(&path).unwrap();
            scan_file_for_compaction(&path, &f, u64::MAX).unwrap()
        };
        let mut one = Vec::new();
        encode(&mut one, &bucket(0));
        let len = one.len() as u64;

        let s = scan_of(&[bucket(1), bucket(2), bucket(3), a, bucket(0)]);
        assert_eq!(s.buckets, 8..8 + 3 * len);
        assert_eq!((s.records, s.state.folded_len(), s.state.len()), (5, 1, 1));
        // What the range holds is those three buckets, as the plain scan reads them.
        let whole = std::fs::read(&path).unwrap();
        let head = [
            &MAGIC[..],
            &whole[s.buckets.start as usize..s.buckets.end as usize],
        ];
        let plain = scan(&path, &head.concat()).unwrap();
        assert_eq!(plain.state.folded_len(), 3);

        let s = scan_of(&[bucket(1), bucket(2), a, Event::Purged, bucket(3)]);
        assert!(s.buckets.is_empty(), "{:?}", s.buckets);
        assert_eq!((s.state.folded_len(), s.state.len()), (1, 0));

        // Damage ends the run: what follows it is folded in (and the damage reported).
        let mut bytes = file(&[bucket(1), bucket(2), bucket(3)]);
        bytes[8 + len as usize + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        let s = scan_file_for_compaction(&path, &f, u64::MAX).unwrap();
        assert_eq!(s.buckets, 8..8 + len);
        assert_eq!(s.state.folded_len(), 1);
        assert!(s.damaged());
    }

    /// Every chunk boundary falls somewhere inside some record: the file read in chunks
    /// folds to what the whole slice folds to.
    #[test]
    fn reading_in_chunks_is_reading_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut events = Vec::new();
        for n in 0..80_000u128 {
            let id = Uuid::from_u128(n);
            events.push(Event::Accepted { id, cents: 1 });
            if n % 3 == 0 {
                events.push(Event::Dropped { id });
            }
        }
        let mut bytes = file(&events);
        let records = bytes.len();
        // A damaged stretch across the first chunk boundary, then a zero tail.
        bytes[CHUNK - 100..CHUNK + 100].fill(0x5a);
        bytes.extend_from_slice(&[0; 5000]);
        std::fs::write(&path, &bytes).unwrap();
        let whole = scan(&path, &bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let chunked = scan_file(&path, &f, bytes.len() as u64).unwrap();
        assert_eq!(chunked.good_len, records as u64);
        assert_eq!(
            (chunked.records, chunked.skipped.clone(), chunked.torn),
            (whole.records, whole.skipped.clone(), whole.torn)
        );
        assert_eq!(chunked.state.to_replay(), whole.state.to_replay());
        assert_eq!(whole.skipped.len(), 1);
        // A limit short of the end reads only that far.
        // (The first two records: accepted, then dropped, 33 and 25 bytes.)
        let short = scan_file(&path, &f, 8 + 33 + 25 + 20).unwrap();
        assert_eq!(
            (short.records, short.good_len, short.torn),
            (2, 8 + 33 + 25, true)
        );
    }
}
