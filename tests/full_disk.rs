//! A full disk under the journal (issue 24, item 1): `DATA_DIR` on a small tmpfs that a
//! filler file fills, a compaction (the one a purge runs) while it is full, then the space
//! comes back. No payment that got its `202` is lost, and the instance takes payments again
//! without a restart. Needs root to mount the tmpfs; skipped with a printed reason otherwise.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Instance, Processors, TempDir};
use uuid::Uuid;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_owned()))
    }

    /// Bytes an unprivileged writer may still take.
    fn free(&self) -> u64 {
        let path = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: statvfs(3) fills the struct we pass; `path` is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Pays `n` payments of 19.90; returns how many got a `202` (the rest must be 503).
fn pay(inst: &Instance, n: usize) -> u64 {
    let mut accepted = 0;
    for _ in 0..n {
        match inst.pay(Uuid::new_v4(), "19.90") {
            202 => accepted += 1,
            503 => {}
            other => panic!("status {other}: {}", inst.log_text()),
        }
    }
    accepted
}

/// Two rounds, each a purge (and its compaction) on a full disk, then the space back: with
/// 256 KiB left, room for the compacted file but not for its preallocation while the old
/// file holds its blocks; with nothing left, where writing the compacted file fails.
///
/// Before the fix, in the first round the compaction renamed its file in, then failed to
/// preallocate it (the old file, still mapped, held the space) and left the journal poisoned
/// for good: every payment after the purge got a 503, also once the space was back, and
/// nothing exited.
#[test]
fn a_full_disk_at_a_compaction_loses_no_payment_and_heals() {
    let dir = TempDir::new();
    let fs = match Tmpfs::mount(&dir.0.join("data"), "3m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("skipped: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let procs = Processors::start();
    let data = fs.0.display().to_string();
    let env = [("DATA_DIR", data.as_str()), ("WORKERS", "1")];
    let inst = Instance::start(&dir.0, "d", "auto", &procs, &[], &env);
    let stored = || (procs.default.stored() + procs.fallback.stored()) as u64;
    assert_eq!(pay(&inst, 20), 20);
    assert!(common::eventually(Duration::from_secs(10), || stored() == 20));

    for keep in [256 << 10, 0] {
        // The disk fills up (to the last page, when nothing is kept: the write fails there).
        let filler = fs.0.join("filler");
        let _ = std::fs::write(&filler, vec![1u8; fs.free().saturating_sub(keep) as usize]);
        assert!(fs.free() <= keep, "{} bytes free", fs.free());
        let at_purge = stored();
        let ((d0, dc0), (f0, fc0)) = procs.window(None, None);
        let (status, body) = inst.post("/purge-payments", "");
        assert_eq!(status, 200, "{body}");
        let mut accepted = pay(&inst, 20);

        // The space comes back: every payment is taken again, without a restart.
        std::fs::remove_file(&filler).unwrap();
        let healed = common::eventually(Duration::from_secs(5), || {
            let ok = pay(&inst, 1);
            accepted += ok;
            ok == 1
        });
        assert!(
            healed,
            "keep {keep}: still refusing payments: {}",
            inst.log_text()
        );
        let after = pay(&inst, 20);
        assert_eq!(after, 20, "keep {keep}: refused after the space came back");
        accepted += after;

        // Every payment that got its 202 reaches a processor, once, and the summary (which
        // counts what was stored since the purge) is exact.
        let all = common::eventually(Duration::from_secs(15), || stored() == at_purge + accepted);
        assert!(
            all,
            "keep {keep}: {} stored of {accepted} accepted: {}",
            stored() - at_purge,
            inst.log_text()
        );
        let ((d, dc), (f, fc)) = procs.window(None, None);
        let since_purge = ((d - d0, dc - dc0), (f - f0, fc - fc0));
        assert_eq!(since_purge.0 .0 + since_purge.1 .0, accepted, "keep {keep}");
        assert_eq!(inst.summary(""), since_purge, "keep {keep}");
    }
    let log = inst.log_text();
    assert!(log.contains("journal compaction failed"), "{log}");
}
