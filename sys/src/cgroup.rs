//! The memory a process may use (`MEMORY_LIMIT_MB`, cgroup v2 `memory.max`, cgroup v1
//! `memory.limit_in_bytes`, else the machine's), read once at start so both servers derive
//! their connection caps (and the backend its queues) from the same reading; and
//! [`MemoryCgroup`], the group a memory test runs a server in.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The memory this process may use and where that was read: `MEMORY_LIMIT_MB`, else the
/// cgroup v2 limit, else the cgroup v1 one, else the machine's memory (`None` if nothing
/// says).
pub fn memory_limit(explicit_mb: Option<u64>) -> Option<(u64, &'static str)> {
    if let Some(mb) = explicit_mb {
        return Some((mb.saturating_mul(1 << 20), "MEMORY_LIMIT_MB"));
    }
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    if let Some(bytes) = cgroup.as_deref().and_then(cgroup_memory) {
        return Some((bytes, "cgroup memory.max"));
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(bytes) = v1_memory_limit(&own, |p| std::fs::read_to_string(p).ok()) {
        return Some((bytes, "cgroup v1 memory.limit_in_bytes"));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some((mem_total(&meminfo)?, "machine memory"))
}

/// Parses cgroup v2 `memory.max` ("max" or bytes).
fn cgroup_memory(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The cgroup v1 memory limit of the process whose `/proc/self/cgroup` is `own`: the
/// smallest `memory.limit_in_bytes` from its own group up to the hierarchy's root, since a
/// parent's limit binds its children. Without a cgroup namespace a container sees its own
/// group mounted at the root while `own` names the host's path: the walk still reaches it.
/// v1 says "no limit" with a huge number (`i64::MAX` rounded to pages): ignored.
fn v1_memory_limit(own: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    const ROOT: &str = "/sys/fs/cgroup/memory";
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let mut dir = format!("{ROOT}{}", path.trim_end_matches('/'));
    let mut limit: Option<u64> = None;
    loop {
        let bytes = read(&format!("{dir}/memory.limit_in_bytes"))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&b| b < 1 << 60);
        if let Some(b) = bytes {
            limit = Some(limit.map_or(b, |l| l.min(b)));
        }
        if dir.len() <= ROOT.len() {
            return limit;
        }
        dir.truncate(dir.rfind('/').unwrap_or(0).max(ROOT.len()));
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// A cgroup v1 memory group made under this process's own, for a test that runs a server
/// inside a limit and reads what it was charged; removed on drop (once its processes are
/// gone: the caller kills them first). Needs a writable v1 memory hierarchy (root).
#[derive(Debug)]
pub struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    /// The group `name` with `memory.limit_in_bytes` set to `limit`; the error says why
    /// none can be made here (no v1 memory controller, not root), for a test to skip.
    pub fn create(name: &str, limit: u64) -> Result<MemoryCgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))
            .ok_or("no cgroup v1 memory controller")?;
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{path}")).join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = MemoryCgroup(dir);
        std::fs::write(cg.0.join("memory.limit_in_bytes"), limit.to_string())
            .map_err(|e| format!("memory.limit_in_bytes: {e}"))?;
        Ok(cg)
    }

    /// A number the group reports (`memory.max_usage_in_bytes`, say).
    ///
    /// # Panics
    /// When the file is missing or not a number: the test's own mistake.
    pub fn read(&self, file: &str) -> u64 {
        let text =
            std::fs::read_to_string(self.0.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Makes `cmd`'s process join the group before `exec`, so it reads the group's limit at
    /// start and every byte it takes is charged here.
    pub fn run_inside(&self, cmd: &mut Command) {
        let procs = CString::new(
            self.0
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("a path has no NUL");
        // SAFETY: between fork and exec only async-signal-safe calls: open, write, close, on
        // a path prepared before the fork. Writing "0" moves the writer itself.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The group can go once its processes have.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits() {
        assert_eq!(cgroup_memory("max\n"), None);
        assert_eq!(cgroup_memory("157286400\n"), Some(150 << 20));
        let meminfo = "MemTotal:       24684544 kB\nMemFree:        22483944 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_684_544 * 1024));
        assert_eq!(memory_limit(Some(64)), Some((64 << 20, "MEMORY_LIMIT_MB")));
    }

    #[test]
    fn v1_limits_bind_from_the_group_up() {
        let files = |entries: &'static [(&'static str, &'static str)]| {
            move |p: &str| {
                entries
                    .iter()
                    .find(|(path, _)| *path == p)
                    .map(|(_, v)| v.to_string())
            }
        };
        let own = "12:pids:/a\n4:memory:/a/b\n1:name=systemd:/a\n";
        const UNLIMITED: &str = "9223372036854771712\n";
        let nested = files(&[
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", UNLIMITED),
            (
                "/sys/fs/cgroup/memory/a/memory.limit_in_bytes",
                "157286400\n",
            ),
            ("/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes", UNLIMITED),
        ]);
        assert_eq!(v1_memory_limit(own, nested), Some(150 << 20));
        // A container without a cgroup namespace: its group is the mount's root.
        let mounted = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "67108864")]);
        assert_eq!(v1_memory_limit(own, mounted), Some(64 << 20));
        let none = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", UNLIMITED)]);
        assert_eq!(v1_memory_limit(own, none), None);
        assert_eq!(v1_memory_limit("0::/\n", files(&[])), None, "v2 only");
    }
}
