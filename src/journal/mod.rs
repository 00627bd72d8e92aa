//! The per-core journal: what a core accepted and what the processors confirmed, on disk.
//!
//! Each monoio runtime owns one append-only file, `DATA_DIR/core-<n>.journal`; nothing is
//! shared between threads, so nothing is locked in memory (the file is `flock`ed against a
//! second process). Events are appended to an in-memory buffer and [`Journal::commit`]
//! copies them into the file, which is preallocated and mapped (no syscall), followed by one
//! `msync` when [`SyncMode::Batch`] is set. The server answers a `POST /payments` only
//! after the commit that holds its `accepted` record.
//!
//! # Layout
//! - [`record`]: the binary record format and its checksum;
//! - [`state`]: the fold of events into the live state (what replay returns), one packed
//!   entry per payment (`slot.rs`);
//! - [`writer`]: [`Journal`], the append buffer and the mapped, preallocated file;
//! - [`replay`]: reading a file back in chunks, skipping what does not verify;
//! - [`compact`]: rewriting a file as its live state, crash-safely;
//! - [`background`]: the same off the core: a helper thread writes the state, the core
//!   only switches files;
//! - [`commit`]: the journal as one core uses it ([`commit::GroupCommit`]): when a record is
//!   on file, one commit per turn of the event loop in batch mode, and the replay put back;
//! - [`dir`]: the directory: file names, [`replay_dir`] and [`rebalance`] when the number of
//!   cores changes between runs.
//!
//! # Use
//! ```text
//! at start, once:  journal::rebalance(dir, workers)?        // if the core count shrank
//! per core:        let (mut j, state) = Journal::open_state(dir, core, sync)?;
//!                  state.into_ordered(): confirmed -> the shard, unsettled -> the queue (a
//!                  pinned one is looked up at its processor before any re-send)
//! per read batch:  j.accepted(..) for each payment; j.commit()?; then answer
//! per processing:  j.attempt(..) before sending; j.confirmed(..) / j.dropped(..) after;
//!                  j.commit()? once per batch
//! purge:           j.purged(); j.commit()?; j.compact()?   // replay forgets all before it
//! when grown:      let bg = j.start_compaction()?; then, once it is_finished(), until None:
//!                  bg = j.finish_compaction(bg)?
//! at shutdown:     j.maybe_compact()?
//! ```
//! A commit error means those records are not durable: answer them with an error. Stop
//! accepting while [`Journal::awaits_reopen`] (a compaction's new file not open yet; each
//! commit and [`Journal::heal`] try again), and exit once [`Journal::is_poisoned`]: it never
//! commits again, and a restart replays it.
//!
//! # File format
//! A file starts with the 8-byte magic `RNHJRNL1` (the `1` is the format version), then
//! records, all integers little-endian, then zeros to the end of the preallocated size:
//!
//! ```text
//! offset  size  field
//! 0       4     len: u32, bytes of kind + payload (1 + payload size)
//! 4       4     crc: u32, CRC-32 (IEEE) of the len field and kind + payload
//! 8       1     kind: 1 accepted, 2 attempt, 3 confirmed, 4 dropped, 5 purged, 6 folded
//! 9       ..    payload, fixed per kind:
//!               accepted   id[16] cents:u64                                 (24 bytes)
//!               attempt    id[16] processor:u8 requested_at_us:i64          (25 bytes)
//!               confirmed  id[16] processor:u8 requested_at_us:i64 cents:u64 (33 bytes)
//!               dropped    id[16]                                           (16 bytes)
//!               purged     -                                                (0 bytes)
//!               folded     at_us:i64 requests:u64[2] cents:u64[2]           (40 bytes)
//! ```
//! `id` is the UUID's 16 bytes in RFC order; `processor` is 0 (default) or 1 (fallback).
//! A payment that goes accepted, attempt, confirmed costs 106 bytes. `folded` is written by
//! compaction only: the confirmed payments stamped `at_us` (per processor: default, fallback)
//! whose stamp was older than the settled horizon ([`crate::store::SETTLED_HORIZON`]), one
//! record per millisecond instead of one per payment. Files without it (written before it
//! existed) read as before.
//!
//! # Replay semantics
//! Per payment id: `accepted` makes it unsettled (a repeated `accepted` is ignored);
//! `attempt` pins an unsettled payment to a processor (the last attempt wins);
//! `confirmed` settles it as recorded (a later `confirmed` is ignored: no double count);
//! `dropped` forgets an unsettled payment (its id may be accepted again); `purged` forgets
//! every payment before it, confirmed or not. A confirmed payment ignores every event until
//! a purge forgets it; `attempt` and `dropped` for an unknown id are ignored. `folded` adds
//! its payments to the bucket of its `at_us` (their ids are not kept: idempotency for them
//! ended with the horizon).
//!
//! Bytes that fail the length or CRC check are skipped until a record verifies again: every
//! record that verifies is kept. Bytes after the last record are a torn tail (a crash in
//! the middle of a write), cut off with a warning; bytes between records (a page a host
//! crash left unwritten, a damaged disk) are logged as errors, and the file is rewritten
//! without them at open.

pub mod background;
pub mod commit;
pub mod compact;
pub mod dir;
pub mod record;
pub mod replay;
mod slot;
pub mod state;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use dir::{rebalance, replay_dir};
pub use writer::{Journal, DEFAULT_COMPACT_THRESHOLD};

/// The payment processor an attempt went to or a confirmation came from (on file as one
/// byte, [`record`]).
pub use crate::processor::Processor;

/// Whether a commit waits for the disk.
///
/// `None` survives a crash of the process (the kernel holds the page cache) but not of the
/// machine; `Batch` survives both, at the cost of one `msync` per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    #[default]
    None,
    Batch,
}

impl std::str::FromStr for SyncMode {
    type Err = JournalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(SyncMode::None),
            "batch" => Ok(SyncMode::Batch),
            other => Err(JournalError::BadSyncMode(other.to_owned())),
        }
    }
}

/// A payment a processor stored: the record a store shard counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    pub id: uuid::Uuid,
    pub processor: Processor,
    pub requested_at_us: i64,
    pub cents: u64,
}

/// A payment we accepted and have not settled: it goes back to the queue.
///
/// `pinned` is the processor and `requestedAt` of the last attempt: that processor may have
/// stored it, so the payment must be resolved there before any re-send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled {
    pub id: uuid::Uuid,
    pub cents: u64,
    pub pinned: Option<(Processor, i64)>,
}

/// What a journal (or a directory of journals) replays to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Recorded payments since the last purge, in the order they were confirmed.
    pub confirmed: Vec<Confirmed>,
    /// Accepted, not yet settled payments, in the order they were accepted.
    pub unsettled: Vec<Unsettled>,
    /// Folded payments: one bucket per `requestedAt`, in time order.
    pub folded: Vec<(i64, crate::store::Bucket)>,
}

/// Why the journal cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("JOURNAL_SYNC must be `none` or `batch`, not `{0}`")]
    BadSyncMode(String),
    #[error("{path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a journal (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: locked by another process (two instances share one DATA_DIR?)")]
    Locked { path: PathBuf },
    #[error("journal unusable after a failed sync or compaction")]
    Poisoned,
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> JournalError {
        let path = path.into();
        move |source| JournalError::Io { path, source }
    }
}
