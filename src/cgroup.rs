//! What the container allows this process: the CPUs (affinity mask and cgroup v2 CPU quota)
//! and the memory (`MEMORY_LIMIT_MB`, cgroup v2 `memory.max`, else the machine's), read once
//! at start for the configuration's defaults.

/// The memory this process may use and where that was read: `MEMORY_LIMIT_MB`, else the
/// cgroup v2 limit, else the machine's memory (`None` if nothing says).
pub fn memory_limit(explicit_mb: Option<u64>) -> Option<(u64, &'static str)> {
    if let Some(mb) = explicit_mb {
        return Some((mb.saturating_mul(1 << 20), "MEMORY_LIMIT_MB"));
    }
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    if let Some(bytes) = cgroup.as_deref().and_then(cgroup_memory) {
        return Some((bytes, "cgroup memory.max"));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some((mem_total(&meminfo)?, "machine memory"))
}

/// Parses cgroup v2 `memory.max` ("max" or bytes).
fn cgroup_memory(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota (rounded up),
/// so a container limited to 0.75 CPU runs one runtime, not one per host core.
pub fn available_cpus() -> usize {
    let affinity = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| cgroup_quota(&s));
    quota.map_or(affinity, |q| q.min(affinity)).max(1)
}

/// Parses cgroup v2 `cpu.max` ("max 100000" or "150000 100000") into whole CPUs, rounded up.
fn cgroup_quota(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next()?.parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(quota.div_ceil(period) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota() {
        assert_eq!(cgroup_quota("max 100000"), None);
        assert_eq!(cgroup_quota("150000 100000\n"), Some(2));
        assert_eq!(cgroup_quota("50000 100000"), Some(1));
    }

    #[test]
    fn memory_limits() {
        assert_eq!(cgroup_memory("max\n"), None);
        assert_eq!(cgroup_memory("157286400\n"), Some(150 << 20));
        let meminfo = "MemTotal:       24684544 kB\nMemFree:        22483944 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_684_544 * 1024));
        assert_eq!(memory_limit(Some(64)), Some((64 << 20, "MEMORY_LIMIT_MB")));
    }
}
