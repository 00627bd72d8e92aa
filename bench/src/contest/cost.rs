//! What a payment costs the stack under test: the CPU and wake-ups of every thread of the
//! backends and the lb over the run ([`crate::measure::threads`]), per process and per thread
//! role, divided by the successful POSTs. Only the local stack's processes are read (their
//! pids are known); the processors' emulators are not the contestant and are left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::measure::threads::{self, Cost};

/// The processes to read: (name, pid).
pub type Processes = Vec<(String, u32)>;

/// One process's samples at the start of the run.
#[derive(Debug)]
pub struct Start {
    samples: Vec<(String, u32, BTreeMap<&'static str, Cost>)>,
}

/// Samples every process (a process that cannot be read is left out, with a warning).
pub fn start(processes: &Processes) -> Start {
    let samples = processes
        .iter()
        .filter_map(|(name, pid)| match threads::sample(*pid) {
            Ok(roles) => Some((name.clone(), *pid, roles)),
            Err(e) => {
                tracing::warn!(process = %name, error = %e, "cannot read its threads' cost");
                None
            }
        })
        .collect();
    Start { samples }
}

/// What one process spent over the run, per role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessCost {
    pub name: String,
    pub roles: BTreeMap<&'static str, Cost>,
}

/// What the stack spent over the run, and the payments it was spent on.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StackCost {
    pub processes: Vec<ProcessCost>,
    /// Successful POSTs of the run.
    pub payments: u64,
}

impl Start {
    /// The cost since [`start`], for `payments` successful POSTs.
    pub fn finish(self, payments: u64) -> StackCost {
        let processes = self
            .samples
            .into_iter()
            .filter_map(|(name, pid, before)| {
                let after = threads::sample(pid).ok()?;
                Some(ProcessCost {
                    name,
                    roles: threads::spent(&before, &after),
                })
            })
            .collect();
        StackCost {
            processes,
            payments,
        }
    }
}

impl StackCost {
    /// Microseconds of CPU and wake-ups of `cost` per payment.
    pub fn per_payment(&self, cost: Cost) -> (f64, f64) {
        let n = self.payments.max(1) as f64;
        (cost.cpu_ns as f64 / 1000.0 / n, cost.runs as f64 / n)
    }

    /// The whole stack's cost.
    pub fn total(&self) -> Cost {
        self.processes
            .iter()
            .map(|p| threads::total(&p.roles))
            .fold(Cost::default(), |a, b| Cost {
                cpu_ns: a.cpu_ns + b.cpu_ns,
                runs: a.runs + b.runs,
            })
    }

    /// The whole stack's, and every role's of every process, per payment: `(what, us, wake-ups)`.
    pub fn rows(&self) -> Vec<(String, f64, f64)> {
        let mut rows = Vec::new();
        let (us, runs) = self.per_payment(self.total());
        rows.push(("stack".to_string(), us, runs));
        for p in &self.processes {
            let (us, runs) = self.per_payment(threads::total(&p.roles));
            rows.push((p.name.clone(), us, runs));
            for (role, cost) in &p.roles {
                let (us, runs) = self.per_payment(*cost);
                rows.push((format!("{} {role}", p.name), us, runs));
            }
        }
        rows
    }

    /// The score sheet's lines (nothing when no process was read).
    pub fn lines(&self) -> String {
        let mut out = String::new();
        if self.processes.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "cost per payment ({} successful POSTs): CPU us, wake-ups",
            self.payments
        );
        for (what, us, runs) in self.rows() {
            let _ = writeln!(out, "  {what:<36} {us:>9.2} us {runs:>7.2}");
        }
        out
    }

    /// The JSON: totals, and per process and role, per payment.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows()
            .into_iter()
            .map(|(what, us, runs)| {
                serde_json::json!({"what": what, "cpu_us_per_payment": us, "wakeups_per_payment": runs})
            })
            .collect();
        serde_json::json!({
            "payments": self.payments,
            "per_payment": rows,
            "processes": self.processes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_by_the_payments() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "lb workers",
            Cost {
                cpu_ns: 4_000_000,
                runs: 300,
            },
        );
        roles.insert(
            "other",
            Cost {
                cpu_ns: 1_000_000,
                runs: 100,
            },
        );
        let cost = StackCost {
            processes: vec![ProcessCost {
                name: "rinha-lb".into(),
                roles,
            }],
            payments: 100,
        };
        let rows = cost.rows();
        assert_eq!(rows[0], ("stack".to_string(), 50.0, 4.0));
        assert_eq!(rows[1], ("rinha-lb".to_string(), 50.0, 4.0));
        assert_eq!(rows[2], ("rinha-lb lb workers".to_string(), 40.0, 3.0));
        assert!(cost.lines().contains("rinha-lb other"));
    }

    #[test]
    fn reads_a_live_process() {
        let me = vec![("me".to_string(), std::process::id())];
        let cost = threads::around_a_busy_core_thread(|| start(&me), |started| started.finish(1));
        assert_eq!(cost.processes.len(), 1);
        assert!(cost.total().cpu_ns > 0);
    }
}
