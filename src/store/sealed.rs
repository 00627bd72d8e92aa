//! Sealed buckets, packed: the folded payments of a core in `requestedAt` order, ~7 bytes a
//! bucket instead of 40, so a long life's buckets (one per millisecond stamped) stay small.
//!
//! Buckets are appended in time order and never change. They are varint-encoded in blocks
//! of 64 (`BLOCK`): each block keeps its first `requestedAt` and the running totals before it,
//! so the totals up to any moment are a binary search over the blocks and at most
//! `BLOCK` decodes. The bytes live in 64 KiB pages (a block never spans two), and the
//! blocks in chunks of `CHUNK`, so that growing never copies either: a `Vec` of a long
//! life's blocks would copy megabytes in one fold step each time it doubled.

use super::folded::Bucket;

/// Buckets per block.
const BLOCK: usize = 64;
/// Bytes per page.
const PAGE: usize = 64 << 10;
/// Blocks per chunk (56 KiB).
const CHUNK: usize = 1024;
/// The most one bucket takes encoded: five varints of at most 10 bytes.
const MAX_ENTRY: usize = 50;

#[derive(Debug, Clone, Copy)]
struct Block {
    first_at_us: i64,
    /// Running totals of every bucket before this block.
    before: Bucket,
    page: u32,
    offset: u32,
    len: u32,
}

/// The sealed buckets of one core.
#[derive(Debug, Default, Clone)]
pub struct Sealed {
    /// Every chunk but the last holds `CHUNK` blocks; none is ever reallocated.
    chunks: Vec<Vec<Block>>,
    pages: Vec<Vec<u8>>,
    total: Bucket,
    last_at_us: Option<i64>,
    buckets: usize,
}

impl Sealed {
    /// The last bucket's `requestedAt`: only later ones may be appended.
    pub fn last_at_us(&self) -> Option<i64> {
        self.last_at_us
    }

    /// Appends the bucket of `at_us`, which must come after [`Sealed::last_at_us`].
    pub fn push(&mut self, at_us: i64, bucket: &Bucket) {
        debug_assert!(self.last_at_us.is_none_or(|l| at_us > l));
        let last = self.chunks.last().and_then(|c| c.last());
        let new_block = last.is_none_or(|b| b.len as usize == BLOCK);
        let prev = if new_block {
            let room = self.pages.last().map_or(0, |p| p.capacity() - p.len());
            if room < BLOCK * MAX_ENTRY {
                self.pages.push(Vec::with_capacity(PAGE));
            }
            let page = self.pages.len() - 1;
            if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            let chunk = self.chunks.last_mut().expect("just made room");
            chunk.push(Block {
                first_at_us: at_us,
                before: self.total,
                page: page as u32,
                offset: self.pages[page].len() as u32,
                len: 0,
            });
            at_us
        } else {
            self.last_at_us.unwrap_or(at_us)
        };
        let page = self.pages.last_mut().expect("a block has a page");
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
        if let Some(b) = self.chunks.last_mut().and_then(|c| c.last_mut()) {
            b.len += 1;
        }
        self.total.add(bucket);
        self.last_at_us = Some(at_us);
        self.buckets += 1;
    }

    /// Running totals of every bucket at or before `t`.
    pub fn upto(&self, t: i64) -> Bucket {
        // Every chunk has a block: the last one that starts at or before `t` holds it.
        let c = self.chunks.partition_point(|c| c[0].first_at_us <= t);
        let Some(chunk) = c.checked_sub(1).map(|c| &self.chunks[c]) else {
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
        for block in self.chunks.iter().flatten() {
            self.each_in(block, |at, b| {
                f(at, b);
                true
            });
        }
    }

    /// Decodes `block`'s buckets in order while `f` says go on.
    fn each_in(&self, block: &Block, mut f: impl FnMut(i64, &Bucket) -> bool) {
        let bytes = &self.pages[block.page as usize][block.offset as usize..];
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

    /// Across chunks too: the totals at and around every block's first bucket.
    #[test]
    fn running_totals_across_chunks() {
        let mut s = Sealed::default();
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
    }
}
