//! Where a long life's sealed buckets go instead of the heap: an unnamed file in `DATA_DIR`,
//! appended to and read back through one read-only mapping. Its pages are the kernel's page
//! cache, which the container's memory limit reclaims (a clean page is dropped and read
//! again), where the heap's would only grow towards the limit.
//!
//! The file has no name (`O_TMPFILE`): it goes away with the last descriptor, at a purge or
//! when the process ends, so a crash leaves nothing behind and a restart, which rebuilds
//! the buckets from the journal, starts a new one. It holds no state of its own: the
//! journal stays the record. Without `DATA_DIR` (memory only) nothing spills.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The address space one file's mapping reserves (no memory: pages come in as they are
/// read). At ~8 bytes a sealed bucket, 64 GiB is months of one bucket a millisecond; past
/// it, appends are refused and the buckets stay on the heap.
const RESERVE: usize = 64 << 30;
/// Every append starts on a page of its own: appended slices are page-aligned, so any
/// plain type up to a page's alignment can be read back in place.
pub const ALIGN: u64 = 4096;

/// The directory spill files are made in, set once at start (with `DATA_DIR`).
static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Spill files go in `dir` from now on (the process's `DATA_DIR`). Set once; a later call
/// changes nothing.
pub fn keep_in(dir: &Path) {
    let _ = DIR.set(dir.to_path_buf());
}

/// Where spill files are made, if anywhere.
pub fn dir() -> Option<&'static Path> {
    DIR.get().map(PathBuf::as_path)
}

/// An unnamed append-only file and its read-only mapping.
#[derive(Debug)]
pub struct SpillFile {
    file: File,
    base: NonNull<u8>,
    /// The mapping's length: appends past it are refused.
    reserve: usize,
    /// Where the next append starts; appends are serialized by it.
    next: Mutex<u64>,
    /// The end of the last append that was written whole: every byte before it is readable.
    written: AtomicU64,
}

// SAFETY: the mapping is read-only and never remapped while the file lives; the bytes a
// reader is handed were written (and the write returned) before `written` passed them, and
// the page cache keeps `pwrite` and the mapping coherent.
unsafe impl Send for SpillFile {}
// SAFETY: as above; appends go through the mutex, reads touch only written bytes.
unsafe impl Sync for SpillFile {}

impl SpillFile {
    /// A new unnamed file in `dir`, mapped for reading.
    pub fn create(dir: &Path) -> io::Result<SpillFile> {
        SpillFile::with_reserve(dir, RESERVE)
    }

    /// As [`SpillFile::create`], refusing appends past `reserve` bytes (a test's full disk).
    pub fn with_reserve(dir: &Path, reserve: usize) -> io::Result<SpillFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)?;
        // SAFETY: a fresh shared read-only mapping of our own descriptor at an address the
        // kernel picks; nothing aliases it. Bytes past the file's end are never read
        // (`bytes` checks against `written`), so the SIGBUS they would raise cannot happen.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::other("null map"))?;
        Ok(SpillFile {
            file,
            base,
            reserve,
            next: Mutex::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// Appends `bytes` on a page of their own; returns where they start. On an error (a
    /// full disk, the reservation used up) nothing was appended and the caller keeps them.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let at = *next;
        let end = at + bytes.len() as u64;
        if end > self.reserve as u64 {
            return Err(io::Error::other("spill file's reservation used up"));
        }
        // A short write left behind is overwritten by the next append at the same place.
        self.file.write_all_at(bytes, at)?;
        *next = end.next_multiple_of(ALIGN);
        // Appends are serialized by `next`: each ends past the one before.
        self.written.store(end, Ordering::Release);
        Ok(at)
    }

    /// The `len` bytes appended at `at`.
    ///
    /// # Panics
    /// When they reach past what was written: a caller's bug, never a fault of the disk.
    pub fn bytes(&self, at: u64, len: usize) -> &[u8] {
        let end = at + len as u64;
        assert!(
            end <= self.written.load(Ordering::Acquire),
            "spill read past the written end"
        );
        // SAFETY: `at..end` is inside the reservation and was written (checked above), so
        // every page of it is backed by the file; the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(at as usize), len) }
    }

    /// Bytes appended, with the alignment's gaps.
    pub fn len(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once; no slice of it outlives
        // `self` (`bytes` borrows it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.reserve) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_bytes_read_back_page_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let f = SpillFile::create(dir.path()).expect("O_TMPFILE in a temp dir");
        let a = f.append(b"first").unwrap();
        let b = f.append(&[7u8; 5000]).unwrap();
        let c = f.append(b"third").unwrap();
        assert_eq!((a, b % ALIGN, c % ALIGN), (0, 0, 0));
        assert!(b >= 5 && c >= b + 5000);
        assert_eq!(f.bytes(a, 5), b"first");
        assert_eq!(f.bytes(b, 5000), &[7u8; 5000][..]);
        assert_eq!(f.bytes(c, 5), b"third");
        // Unnamed: the directory shows nothing.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    #[should_panic(expected = "past the written end")]
    fn a_read_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = SpillFile::create(dir.path()).unwrap();
        f.append(b"abc").unwrap();
        let _ = f.bytes(0, 4);
    }
}
