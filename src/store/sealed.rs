//! Sealed buckets, packed: the folded payments of a core in `requestedAt` order, ~7 bytes a
//! bucket instead of 40, so a long life's buckets (one per millisecond stamped) stay small.
//!
//! Buckets are appended in time order and never change. They are varint-encoded in blocks
//! of 64 (`BLOCK`): each block keeps its first `requestedAt` and the running totals before it,
//! so the totals up to any moment are a binary search over the blocks and at most
//! `BLOCK` decodes. The bytes live in 64 KiB pages (a block never spans two), and the
//! blocks in chunks of `CHUNK`, so that growing never copies either: a `Vec` of a long
//! life's blocks would copy megabytes in one fold step each time it doubled.
//!
//! With a journal, a page or chunk that is full moves to the core's spill file
//! ([`super::spill`]) and is read back through its mapping: the heap keeps one page, one
//! chunk and a few bytes per 64 KiB spilled, however long the life. A spill that fails (a
//! full disk) keeps them on the heap, and the next full page tries again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::folded::Bucket;
use super::spill::{self, SpillFile};

/// Buckets per block.
const BLOCK: usize = 64;
/// Bytes per page.
const PAGE: usize = 64 << 10;
/// Blocks per chunk (56 KiB).
const CHUNK: usize = 1024;
/// The most one bucket takes encoded: five varints of at most 10 bytes.
const MAX_ENTRY: usize = 50;

/// Laid out without padding (`repr(C)`, integers only, `_pad` filling the tail), so a full
/// chunk is written to the spill file as its bytes and read back in place.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Block {
    first_at_us: i64,
    /// Running totals of every bucket before this block.
    before: Bucket,
    page: u32,
    offset: u32,
    len: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<Block>() == 8 + 32 + 4 * 4);

/// A page of bytes or a chunk of blocks: on the heap while it fills (and while the spill
/// file refuses it), then in the spill file.
#[derive(Debug, Clone)]
enum Slab<T> {
    Held(Vec<T>),
    /// `len` items at `at` in the spill file.
    Spilled {
        at: u64,
        len: usize,
    },
}

impl<T> Slab<T> {
    fn held_mut(&mut self) -> &mut Vec<T> {
        match self {
            Slab::Held(v) => v,
            // Only full pages and chunks spill, never the last one, which is the one written.
            Slab::Spilled { .. } => unreachable!("the last page and chunk stay on the heap"),
        }
    }
}

/// The sealed buckets of one core.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Every chunk but the last holds `CHUNK` blocks; none is ever reallocated.
    chunks: Vec<Slab<Block>>,
    pages: Vec<Slab<u8>>,
    spill: Spill,
    total: Bucket,
    last_at_us: Option<i64>,
    buckets: usize,
}

/// Where full pages and chunks go, and how far they went.
#[derive(Debug, Clone)]
struct Spill {
    /// Where the file is made at the first full page; `None` when memory only, or once it
    /// could not be made.
    dir: Option<PathBuf>,
    /// Shared by a clone (a rebalance's copy): both only append to it.
    file: Option<Arc<SpillFile>>,
    /// The pages and chunks before these were spilled (or are a clone's, held).
    pages: usize,
    chunks: usize,
    /// The last append failed, and said so: said again only after one succeeds.
    failing: bool,
}

impl Default for Sealed {
    /// Spilling into the process's `DATA_DIR`, if it has one ([`spill::keep_in`]).
    fn default() -> Self {
        Sealed::new(spill::dir())
    }
}

impl Sealed {
    /// Empty, spilling full pages and chunks into a file made in `dir` (`None`: never).
    pub fn new(dir: Option<&Path>) -> Self {
        Sealed {
            chunks: Vec::new(),
            pages: Vec::new(),
            spill: Spill {
                dir: dir.map(Path::to_path_buf),
                file: None,
                pages: 0,
                chunks: 0,
                failing: false,
            },
            total: Bucket::default(),
            last_at_us: None,
            buckets: 0,
        }
    }

    /// The last bucket's `requestedAt`: only later ones may be appended.
    pub fn last_at_us(&self) -> Option<i64> {
        self.last_at_us
    }

    /// Appends the bucket of `at_us`, which must come after [`Sealed::last_at_us`].
    pub fn push(&mut self, at_us: i64, bucket: &Bucket) {
        debug_assert!(self.last_at_us.is_none_or(|l| at_us > l));
        let new_block = self.last_block().is_none_or(|b| b.len as usize == BLOCK);
        let mut full = false;
        let prev = if new_block {
            let room = match self.pages.last() {
                Some(Slab::Held(p)) => p.capacity() - p.len(),
                _ => 0,
            };
            if room < BLOCK * MAX_ENTRY {
                self.pages.push(Slab::Held(Vec::with_capacity(PAGE)));
                full = self.pages.len() > 1;
            }
            let page = self.pages.len() - 1;
            let offset = self.pages[page].held_mut().len() as u32;
            let chunk_full = match self.chunks.last_mut() {
                None => true,
                Some(c) => c.held_mut().len() == CHUNK,
            };
            if chunk_full {
                self.chunks.push(Slab::Held(Vec::with_capacity(CHUNK)));
                full |= self.chunks.len() > 1;
            }
            let before = self.total;
            self.last_chunk_mut().push(Block {
                first_at_us: at_us,
                before,
                page: page as u32,
                offset,
                len: 0,
                _pad: 0,
            });
            at_us
        } else {
            self.last_at_us.unwrap_or(at_us)
        };
        let page = self
            .pages
            .last_mut()
            .expect("a block has a page")
            .held_mut();
        // Stamps are whole milliseconds: a delta in them takes a byte or two.
        let delta = (at_us - prev) as u64;
        let tagged = if delta % 1000 == 0 {
            (delta / 1000) << 1
        } else {
            (delta << 1) | 1
        };
        put(page, tagged);
        for n in bucket.requests.iter().chain(&bucket.cents) {
            put(page, *n);
        }
        if let Some(b) = self.last_chunk_mut().last_mut() {
            b.len += 1;
        }
        self.total.add(bucket);
        self.last_at_us = Some(at_us);
        self.buckets += 1;
        if full {
            self.spill_full();
        }
    }

    fn last_block(&self) -> Option<&Block> {
        match self.chunks.last()? {
            Slab::Held(c) => c.last(),
            Slab::Spilled { .. } => unreachable!("the last chunk stays on the heap"),
        }
    }

    fn last_chunk_mut(&mut self) -> &mut Vec<Block> {
        self.chunks
            .last_mut()
            .expect("a block has a chunk")
            .held_mut()
    }

    /// Moves the full pages and chunks not spilled yet to the spill file, oldest first,
    /// stopping at the first refusal (they stay on the heap; the next full page tries again).
    fn spill_full(&mut self) {
        let Some(file) = self.spill.file() else {
            return;
        };
        let result = spill_slabs(&mut self.pages, &mut self.spill.pages, &file)
            .and_then(|()| spill_slabs(&mut self.chunks, &mut self.spill.chunks, &file));
        self.spill.outcome(result);
    }

    /// Page `i`'s bytes.
    fn page(&self, i: usize) -> &[u8] {
        self.slab(&self.pages[i])
    }

    /// Chunk `i`'s blocks.
    fn chunk(&self, i: usize) -> &[Block] {
        self.slab(&self.chunks[i])
    }

    /// What `slab` holds, on the heap or read back from the spill file.
    fn slab<'a, T: Spillable>(&'a self, slab: &'a Slab<T>) -> &'a [T] {
        match slab {
            Slab::Held(held) => held,
            Slab::Spilled { at, len } => {
                T::from_bytes(self.spilled().bytes(*at, len * std::mem::size_of::<T>()))
            }
        }
    }

    fn spilled(&self) -> &SpillFile {
        self.spill
            .file
            .as_deref()
            .expect("a spilled slab has a file")
    }

    /// Running totals of every bucket at or before `t`.
    pub fn upto(&self, t: i64) -> Bucket {
        // Every chunk has a block: the last one that starts at or before `t` holds it.
        let c = partition(self.chunks.len(), |c| self.chunk(c)[0].first_at_us <= t);
        let Some(chunk) = c.checked_sub(1).map(|c| self.chunk(c)) else {
            return Bucket::default();
        };
        let block = &chunk[chunk.partition_point(|b| b.first_at_us <= t) - 1];
        let mut acc = block.before;
        self.each_in(block, |at, b| {
            if at > t {
                return false;
            }
            acc.add(b);
            true
        });
        acc
    }

    /// Calls `f` with every bucket in time order.
    pub fn for_each(&self, mut f: impl FnMut(i64, &Bucket)) {
        for c in 0..self.chunks.len() {
            for block in self.chunk(c) {
                self.each_in(block, |at, b| {
                    f(at, b);
                    true
                });
            }
        }
    }

    /// Decodes `block`'s buckets in order while `f` says go on.
    fn each_in(&self, block: &Block, mut f: impl FnMut(i64, &Bucket) -> bool) {
        let bytes = &self.page(block.page as usize)[block.offset as usize..];
        let mut at = 0;
        let mut t = block.first_at_us;
        for _ in 0..block.len {
            let tagged = get(bytes, &mut at);
            let delta = if tagged & 1 == 0 {
                (tagged >> 1) * 1000
            } else {
                tagged >> 1
            };
            t += delta as i64;
            let mut n = [0u64; 4];
            for v in &mut n {
                *v = get(bytes, &mut at);
            }
            let b = Bucket {
                requests: [n[0], n[1]],
                cents: [n[2], n[3]],
            };
            if !f(t, &b) {
                return;
            }
        }
    }

    /// Running totals of every bucket.
    pub fn total(&self) -> Bucket {
        self.total
    }

    pub fn len(&self) -> usize {
        self.buckets
    }

    pub fn is_empty(&self) -> bool {
        self.buckets == 0
    }
}

impl Spill {
    /// The file, made at the first call.
    fn file(&mut self) -> Option<Arc<SpillFile>> {
        if self.file.is_none() {
            let dir = self.dir.as_deref()?;
            match SpillFile::create(dir) {
                Ok(f) => self.file = Some(Arc::new(f)),
                Err(error) => {
                    tracing::warn!(
                        dir = %dir.display(),
                        %error,
                        "sealed buckets stay on the heap: no spill file can be made there"
                    );
                    self.dir = None;
                    return None;
                }
            }
        }
        self.file.clone()
    }

    fn outcome(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("sealed buckets spill again");
                }
            }
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(%error, "sealed buckets stay on the heap until the spill file takes them");
            }
            Err(_) => {}
        }
    }
}

/// The first index in `0..n` for which `pred` is false (`pred` holds for a prefix), as
/// `slice::partition_point`.
fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// What a page or a chunk holds, written to the spill file as its bytes and read back in
/// place.
trait Spillable: Sized {
    fn as_bytes(items: &[Self]) -> &[u8];
    fn from_bytes(bytes: &[u8]) -> &[Self];
}

impl Spillable for u8 {
    fn as_bytes(items: &[u8]) -> &[u8] {
        items
    }

    fn from_bytes(bytes: &[u8]) -> &[u8] {
        bytes
    }
}

impl Spillable for Block {
    fn as_bytes(blocks: &[Block]) -> &[u8] {
        // SAFETY: `Block` is `repr(C)` of integers with no padding (its size is its
        // fields'), so every byte is initialized; `u8` has no alignment to keep.
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), std::mem::size_of_val(blocks)) }
    }

    fn from_bytes(bytes: &[u8]) -> &[Block] {
        let size = std::mem::size_of::<Block>();
        assert!(
            bytes.as_ptr().align_offset(std::mem::align_of::<Block>()) == 0
                && bytes.len() % size == 0,
            "spilled blocks are aligned and whole"
        );
        // SAFETY: aligned and a whole number of blocks (checked above); any bytes are a
        // valid `Block` (integers only), and these are `as_bytes`' of real blocks.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / size) }
    }
}

/// Moves the full slabs from `*next` on (every one but the last, which is being written) to
/// `file`, oldest first; stops at the first refusal, `*next` at the slab refused.
fn spill_slabs<T: Spillable>(
    slabs: &mut [Slab<T>],
    next: &mut usize,
    file: &SpillFile,
) -> io::Result<()> {
    while *next + 1 < slabs.len() {
        let slab = &mut slabs[*next];
        if let Slab::Held(held) = slab {
            let at = file.append(T::as_bytes(held))?;
            let len = held.len();
            *slab = Slab::Spilled { at, len };
        }
        *next += 1;
    }
    Ok(())
}

/// Appends `v` as a LEB128 varint.
fn put(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads the varint at `*at` (written by [`put`]: never short).
fn get(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = buf[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_totals_at_every_moment() {
        let mut s = Sealed::default();
        let mut naive = Vec::new();
        let mut at = -5_000i64;
        for n in 0..1000u64 {
            // Whole milliseconds mostly, a few odd microseconds, a large gap, huge amounts.
            at += if n % 17 == 0 {
                1_234_567
            } else {
                1000 * (1 + n as i64 % 3)
            };
            let b = Bucket {
                requests: [n % 4, n % 2],
                cents: [n * 1990, if n == 500 { u64::MAX } else { n }],
            };
            s.push(at, &b);
            naive.push((at, b));
        }
        assert_eq!(s.len(), 1000);
        for probe in naive
            .iter()
            .map(|(at, _)| *at)
            .flat_map(|a| [a - 1, a, a + 1])
        {
            let mut want = Bucket::default();
            naive
                .iter()
                .filter(|(at, _)| *at <= probe)
                .for_each(|(_, b)| want.add(b));
            assert_eq!(s.upto(probe), want, "{probe}");
        }
        let mut back = Vec::new();
        s.for_each(|at, b| back.push((at, *b)));
        assert_eq!(back, naive);
    }

    /// Across chunks too: the totals at and around every block's first bucket; returns
    /// the store, filled.
    fn across_chunks(mut s: Sealed) -> Sealed {
        let n = 2 * CHUNK * BLOCK + 100;
        let mut sums = Vec::with_capacity(n);
        let mut acc = Bucket::default();
        for k in 0..n as u64 {
            let b = Bucket {
                requests: [1, k % 2],
                cents: [k, 7],
            };
            s.push(k as i64 * 1000, &b);
            acc.add(&b);
            sums.push(acc);
        }
        assert_eq!(s.chunks.len(), 3);
        assert_eq!(s.total(), acc);
        for k in (0..n).step_by(BLOCK).chain([n - 1]) {
            let at = k as i64 * 1000;
            assert_eq!(s.upto(at), sums[k], "{k}");
            assert_eq!(s.upto(at + 999), sums[k], "{k}");
            let before = k.checked_sub(1).map_or(Bucket::default(), |j| sums[j]);
            assert_eq!(s.upto(at - 1), before, "{k}");
        }
        let mut seen = 0;
        s.for_each(|at, _| {
            assert_eq!(at, seen * 1000);
            seen += 1;
        });
        assert_eq!(seen as usize, n);
        s
    }

    /// Pages and chunks held on the heap.
    fn held(s: &Sealed) -> (usize, usize) {
        let pages = s.pages.iter().filter(|p| matches!(p, Slab::Held(_)));
        let chunks = s.chunks.iter().filter(|c| matches!(c, Slab::Held(_)));
        (pages.count(), chunks.count())
    }

    #[test]
    fn running_totals_across_chunks() {
        let s = across_chunks(Sealed::new(None));
        assert!(s.pages.len() > 3);
        assert_eq!(held(&s), (s.pages.len(), 3), "memory only: all on the heap");
    }

    /// Spilled, the same answers, with one page and one chunk left on the heap; a clone
    /// (a rebalance's copy) shares the file and both go on answering their own buckets.
    #[test]
    fn spilled_pages_and_chunks_answer_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let s = across_chunks(Sealed::new(Some(dir.path())));
        assert_eq!(held(&s), (1, 1));
        let file = s.spill.file.clone().expect("a spill file was made");
        assert!(file.len() as usize >= (s.pages.len() - 1) * PAGE / 2);

        let mut a = s.clone();
        let mut b = s;
        let last = a.last_at_us().unwrap();
        let (total, one) = (
            a.total(),
            Bucket::of(crate::processor::Processor::Fallback, 5),
        );
        for k in 1..=(PAGE as i64) {
            a.push(last + k * 1000, &one);
            if k % 2 == 0 {
                b.push(last + k * 1000, &one);
            }
        }
        let (mut want_a, mut want_b) = (total, total);
        for _ in 0..PAGE {
            want_a.add(&one);
        }
        for _ in 0..PAGE / 2 {
            want_b.add(&one);
        }
        assert_eq!(a.upto(i64::MAX), want_a);
        assert_eq!(b.upto(i64::MAX), want_b);
        assert_eq!(a.upto(last), total);
        assert_eq!(held(&a), (1, 1));
        assert_eq!(held(&b), (1, 1));
    }

    /// A spill file that refuses appends (a full disk): what it took stays there, the rest
    /// stays on the heap, and every answer is the same.
    #[test]
    fn a_refused_spill_keeps_the_buckets_on_the_heap() {
        let dir = tempfile::tempdir().unwrap();
        let file = SpillFile::with_reserve(dir.path(), 3 * PAGE).unwrap();
        let mut s = Sealed::new(None);
        s.spill.file = Some(Arc::new(file));
        let s = across_chunks(s);
        let (pages, chunks) = held(&s);
        assert!(
            pages > 1 && pages < s.pages.len(),
            "{pages} of {}",
            s.pages.len()
        );
        assert_eq!(chunks, 3, "refused after the pages took the room");
        assert!(s.spill.failing);
    }
}
