//! CPU quotas for the stack's processes through cgroup v1's cpu controller, as
//! docker-compose.yml's `deploy.resources.limits.cpus` sets them for the containers: one
//! group per process under `/sys/fs/cgroup/cpu`, `cpu.cfs_quota_us` = cpus x the period,
//! every thread moved in through `cgroup.procs`. The groups are removed on drop, once their
//! processes have exited (needs root).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// Where cgroup v1 mounts the cpu controller.
const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The scheduler's quota period, as Docker sets it.
const PERIOD_US: u64 = 100_000;

/// The groups made for one stack.
#[derive(Debug, Default)]
pub struct Quotas {
    groups: Vec<PathBuf>,
}

impl Quotas {
    /// Puts `pid` (all its threads, and any it starts later) under a quota of `cpus` CPUs.
    pub fn limit(&mut self, name: &str, pid: u32, cpus: f64) -> anyhow::Result<()> {
        anyhow::ensure!(cpus > 0.0, "a CPU quota must be positive");
        let dir = Path::new(CPU_ROOT).join(format!("rinha-capacity-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {dir:?} (cgroup v1 cpu controller, needs root)"))?;
        self.groups.push(dir.clone());
        let quota = (cpus * PERIOD_US as f64).round() as u64;
        std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())
            .with_context(|| format!("setting {dir:?}'s quota"))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {name} (pid {pid}) into {dir:?}"))?;
        Ok(())
    }

    /// How long each group's threads waited for their quota so far (`cpu.stat`'s
    /// `throttled_time`), per group name.
    pub fn throttled(&self) -> Vec<(String, Duration)> {
        self.groups
            .iter()
            .filter_map(|dir| {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let ns = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("throttled_time "))?
                    .trim()
                    .parse()
                    .ok()?;
                let name = dir.file_name()?.to_string_lossy().into_owned();
                Some((name, Duration::from_nanos(ns)))
            })
            .collect()
    }
}

impl Drop for Quotas {
    /// Removes the groups; a group whose process has not been reaped yet is empty moments later.
    fn drop(&mut self) {
        for dir in &self.groups {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
