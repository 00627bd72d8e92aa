//! What the container allows this process: the CPUs (affinity mask and cgroup v2 CPU quota)
//! and the memory (`MEMORY_LIMIT_MB`, cgroup v2 `memory.max`, cgroup v1
//! `memory.limit_in_bytes`, else the machine's; read in `rinha_sys::cgroup`, which the load
//! balancer shares), read once at start for the configuration's defaults.

pub use rinha_sys::cgroup::memory_limit;

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
}
