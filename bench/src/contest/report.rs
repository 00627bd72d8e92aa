//! What a run reports: the score table, the JSON results file (the official fields of the
//! profile's script, and ours under `"bench"`) and the strict verdict.

use std::fmt::Write as _;

use super::calls::{cents, BackendSummary, ProcessorSummary};
use super::checker::Check;
use super::cost::StackCost;
use super::drain::Drain;
use super::progress::{stored_per_tick, Held};
use super::recorder::Snapshot;
use super::score::Score;
use super::stages::{Applied, Stage};
use crate::measure::stats::Percentiles;
use crate::profile::{ProfileName, TeardownSource};

/// The summaries read at teardown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Teardown {
    pub window: String,
    /// The backend's summary, when the profile reads it (the preview; the final does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendSummary>,
    pub default: ProcessorSummary,
    pub fallback: ProcessorSummary,
    /// Whose counts the score is taken from.
    #[serde(skip)]
    pub source: TeardownSource,
}

impl Teardown {
    /// The payments the score counts, per processor: the backend's summary, or what the
    /// processors stored.
    pub fn counted(&self) -> BackendSummary {
        match self.source {
            TeardownSource::Backend => self.backend.unwrap_or_default(),
            TeardownSource::Processors => {
                BackendSummary::of_processors(&self.default, &self.fallback)
            }
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub profile: ProfileName,
    pub target: String,
    pub default: String,
    pub fallback: String,
    pub max_requests: u64,
    pub duration_secs: u64,
    pub started_at: String,
    /// Seconds from the first user to the last request finished.
    pub run_secs: f64,
    pub score: Score,
    pub teardown: Teardown,
    pub snapshot: Snapshot,
    pub checks: Vec<Check>,
    pub stages: Vec<Stage>,
    pub applied: Vec<Applied>,
    /// What the processors held, once a second.
    pub held: Vec<Held>,
    pub notes: Vec<String>,
    pub drain: Option<Drain>,
    /// CPU (user + system) the instrument itself spent during the run.
    pub bench_cpu_secs: f64,
    /// What the stack's threads spent per payment (empty against a `--target`).
    pub cost: StackCost,
}

/// The rule between the score sheet's blocks.
const SHEET_RULE: &str = "+-------------------------------+------------------+";

/// One `| name | value |` row of the score sheet.
fn sheet_row(w: &mut String, k: &str, v: String) {
    let _ = writeln!(w, "| {k:<29} | {v:>16} |");
}

impl Report {
    fn post_latency(&self) -> Percentiles {
        Percentiles::of(&self.snapshot.posts)
    }

    /// Why `--strict` fails this run (empty = it passes).
    pub fn strict_failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        let s = &self.score;
        if s.inconsistencies > 0 {
            why.push(format!(
                "{} inconsistencies counted by the checker",
                s.inconsistencies
            ));
        }
        if s.disqualified {
            why.push(format!(
                "negative lag {}: more payments recorded than requested",
                s.lag
            ));
        }
        let c = &self.snapshot.counts;
        if c.failed() > 0 {
            why.push(format!(
                "{} failed POSTs ({} bad status {:?}, {} timeouts, {} errors)",
                c.failed(),
                c.bad_status,
                self.snapshot.statuses,
                c.timeout,
                c.error
            ));
        }
        for check in self.checks.iter().filter(|c| c.error.is_some()) {
            why.push(format!(
                "check at {:.1} s failed: {}",
                check.at_secs,
                check.error.as_deref().unwrap_or_default()
            ));
        }
        for applied in self.applied.iter().filter(|a| !a.errors.is_empty()) {
            why.push(format!(
                "stage {}: {}",
                applied.stage,
                applied.errors.join("; ")
            ));
        }
        if let Some(drain) = &self.drain {
            why.extend(
                drain
                    .problems
                    .iter()
                    .map(|p| format!("after the drain: {p}")),
            );
        }
        why
    }

    /// The human score sheet.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let profile = match self.profile {
            ProfileName::Preview => String::new(),
            name => format!(" --profile {name}"),
        };
        let _ = writeln!(
            w,
            "\nrinha-bench rinha{profile}: {} users over {} s against {}",
            self.max_requests, self.duration_secs, self.target
        );
        let _ = writeln!(w, "{SHEET_RULE}");
        self.score_rows(w);
        let _ = writeln!(w, "{SHEET_RULE}");
        self.count_rows(w);
        let _ = writeln!(w, "{SHEET_RULE}");
        self.latency_lines(w);
        self.check_lines(w);
        self.closing_lines(w);
        out
    }

    /// The score, as the contest computes it.
    fn score_rows(&self, w: &mut String) {
        let s = &self.score;
        sheet_row(w, "profit (total_liquido)", format!("{:.2}", s.profit));
        sheet_row(w, "gross (total_bruto)", format!("{:.2}", s.gross));
        sheet_row(w, "fees (total_taxas)", format!("{:.2}", s.fees));
        sheet_row(
            w,
            "p99 (every successful req)",
            format!("{:.2} ms", s.p99_ms),
        );
        sheet_row(w, "bonus", format!("{:.2} %", s.bonus * 100.0));
        sheet_row(w, "inconsistencies", s.inconsistencies.to_string());
        sheet_row(
            w,
            "fine",
            format!("{:.0} % = {:.2}", s.fine * 100.0, s.fine_amount),
        );
        sheet_row(
            w,
            "lag",
            format!(
                "{}{}",
                s.lag,
                if s.disqualified { " DISQUALIFIED" } else { "" }
            ),
        );
    }

    /// What the users sent, and what each processor was counted for.
    fn count_rows(&self, w: &mut String) {
        let t = &self.teardown;
        let c = &self.snapshot.counts;
        sheet_row(w, "POSTs sent", c.total().to_string());
        sheet_row(w, "POSTs successful", c.success.to_string());
        sheet_row(w, "POSTs bad status", c.bad_status.to_string());
        sheet_row(w, "POSTs timed out (1.5 s)", c.timeout.to_string());
        sheet_row(w, "POSTs connect/HTTP errors", c.error.to_string());
        let counted = t.counted();
        let side = |w: &mut String, name: &str, b: u64, bc: f64, p: &ProcessorSummary| {
            match t.source {
                TeardownSource::Backend => sheet_row(
                    w,
                    &format!("{name}: backend / processor"),
                    format!("{b} / {}", p.total_requests),
                ),
                TeardownSource::Processors => sheet_row(
                    w,
                    &format!("{name}: stored by processor"),
                    p.total_requests.to_string(),
                ),
            }
            sheet_row(
                w,
                &format!("{name}: amount (fee {})", p.fee_per_transaction),
                format!("{:.2}", cents(bc) as f64 / 100.0),
            );
        };
        side(
            w,
            "default",
            counted.default.total_requests,
            counted.default.total_amount,
            &t.default,
        );
        side(
            w,
            "fallback",
            counted.fallback.total_requests,
            counted.fallback.total_amount,
            &t.fallback,
        );
    }

    /// The POST latency and the score's (every successful request's).
    fn latency_lines(&self, w: &mut String) {
        let p = self.post_latency();
        let _ = writeln!(
            w,
            "POST /payments ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        );
        let a = Percentiles::of(&self.snapshot.all);
        let _ = writeln!(
            w,
            "every successful request ms: p50 {:.2}  p99 {:.3}  max {:.2}  (n={})",
            a.p50, a.p99, a.max, a.count
        );
    }

    /// One line per consistency check, then the backend's summaries together.
    fn check_lines(&self, w: &mut String) {
        let _ = writeln!(w, "{}", super::checker::Verdict::of(&self.checks));
        for check in &self.checks {
            let (backend, processors) = match check.sides {
                Some(s) => (
                    format!("{}+{}", s.backend_default, s.backend_fallback),
                    format!("{}+{}", s.processor_default, s.processor_fallback),
                ),
                None => (check.backend.to_string(), check.processors.to_string()),
            };
            let _ = writeln!(
                w,
                "check at {:>5.1} s ({:>6.1} ms): backend {backend} processors {processors} -> {} inconsistencies{}",
                check.at_secs,
                check.took_ms,
                check.inconsistencies,
                check
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }

    /// Notes, the drain, the backlog and the instrument's own CPU.
    fn closing_lines(&self, w: &mut String) {
        for note in &self.notes {
            let _ = writeln!(w, "note: {note}");
        }
        if let Some(d) = &self.drain {
            let _ = writeln!(
                w,
                "after a {} s drain: backend {:?}, processors {:?} + {:?}: {}",
                d.secs,
                d.backend.map(|b| b.total_requests()),
                d.default.map(|p| p.total_requests),
                d.fallback.map(|p| p.total_requests),
                if d.problems.is_empty() {
                    "consistent".to_string()
                } else {
                    d.problems.join("; ")
                }
            );
        }
        if let Some(peak) = self
            .held
            .iter()
            .filter_map(|h| Some((h.backlog()?, h.second)))
            .max()
        {
            let last = self.held.last().and_then(Held::backlog);
            let _ = writeln!(
                w,
                "backlog (successful POSTs the processors do not hold yet): peak {} at {} s, {} at the end of the run",
                peak.0,
                peak.1,
                last.map_or_else(|| "?".to_string(), |b| b.to_string())
            );
        }
        w.push_str(&self.cost.lines());
        let _ = writeln!(
            w,
            "instrument CPU: {:.2} s over {:.1} s",
            self.bench_cpu_secs, self.run_secs
        );
    }

    /// Once a second: what each processor stored since the previous reading, what it holds,
    /// and the backlog.
    fn processor_seconds(&self) -> Vec<serde_json::Value> {
        self.held
            .iter()
            .zip(stored_per_tick(&self.held))
            .map(|(h, (d, f))| {
                serde_json::json!({
                    "second": h.second,
                    "default_stored": d, "fallback_stored": f,
                    "default_held": h.default, "fallback_held": h.fallback,
                    "successful_posts": h.successful_posts, "backlog": h.backlog(),
                })
            })
            .collect()
    }

    /// The results file: the official fields, and ours under `"bench"`.
    pub fn json(&self) -> serde_json::Result<String> {
        let s = &self.score;
        let t = &self.teardown;
        let counted = t.counted();
        let c = &self.snapshot.counts;
        let side = |amount: f64, n: u64, fee: f64| {
            serde_json::json!({
                "total_bruto": cents(amount) as f64 / 100.0,
                "num_pagamentos": n,
                "total_taxas": super::score::fee(fee, amount),
            })
        };
        let seconds: Vec<_> = self
            .snapshot
            .seconds
            .iter()
            .enumerate()
            .map(|(i, sec)| {
                let p = Percentiles::of(&sec.posts);
                serde_json::json!({
                    "second": i, "users": sec.users, "requests": sec.requests,
                    "posts": sec.post_count, "posts_failed": sec.post_failed,
                    "post_p50_ms": p.p50, "post_p99_ms": p.p99, "post_max_ms": p.max,
                })
            })
            .collect();
        // The official `partial-results.json` / `final-results.json` fields (without their
        // prose `descricao`s); the preview's and the final's have the same shape.
        let mut value = serde_json::json!({
            "participante": "rinha-bench",
            "total_liquido": s.profit,
            "total_bruto": s.gross,
            "total_taxas": s.fees,
            "p99": {
                "valor": format!("{}ms", s.p99_ms),
                "bonus": format!("{}%", (s.bonus * 100.0).round()),
                "max_requests": self.max_requests,
            },
            "multa": {
                "porcentagem": s.fine,
                "total": s.fine_amount,
                "composicao": { "num_inconsistencias": s.inconsistencies },
            },
            "caixa_dois": { "detectado": s.disqualified },
            "lag": {
                "num_pagamentos_total": counted.total_requests(),
                "num_pagamentos_solicitados": c.success,
                "lag": s.lag,
            },
            "pagamentos_solicitados": { "qtd_sucesso": c.success, "qtd_falha": c.failed() },
            "pagamentos_realizados_default": side(counted.default.total_amount, counted.default.total_requests, t.default.fee_per_transaction),
            "pagamentos_realizados_fallback": side(counted.fallback.total_amount, counted.fallback.total_requests, t.fallback.fee_per_transaction),
            "bench": {
                "target": self.target,
                "default": self.default,
                "fallback": self.fallback,
                "duration_secs": self.duration_secs,
                "started_at": self.started_at,
                "run_secs": self.run_secs,
                "disqualified": s.disqualified,
                "score": s,
                "posts": c,
                "post_statuses": self.snapshot.statuses,
                "post_latency_ms": self.post_latency(),
                "all_latency_ms": Percentiles::of(&self.snapshot.all),
                "teardown": t,
                "checks": self.checks,
                "stages": self.stages,
                "stages_applied": self.applied,
                "notes": self.notes,
                "drain": self.drain,
                "bench_cpu_secs": self.bench_cpu_secs,
                "cost": self.cost.json(),
                "strict_failures": self.strict_failures(),
                "seconds": seconds,
            }
        });
        // The final's file also carries its timestamp, and ours the profile and the
        // processors' side second by second (the preview's file stays as it always was).
        if self.profile == ProfileName::Final {
            value["timestamp"] = serde_json::json!(chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string());
            value["bench"]["profile"] = serde_json::json!(self.profile);
            value["bench"]["processor_seconds"] = serde_json::json!(self.processor_seconds());
        }
        serde_json::to_string_pretty(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contest::calls::Side;

    fn teardown(source: TeardownSource, backend: Option<(u64, u64)>) -> Teardown {
        let processor = |n: u64, fee: f64| ProcessorSummary {
            total_requests: n,
            total_amount: n as f64 * 20.05,
            total_fee: 0.0,
            fee_per_transaction: fee,
        };
        let side = |n: u64| Side {
            total_requests: n,
            total_amount: n as f64 * 20.05,
        };
        Teardown {
            window: String::new(),
            backend: backend.map(|(d, f)| BackendSummary {
                default: side(d),
                fallback: side(f),
            }),
            default: processor(70, 0.07),
            fallback: processor(25, 0.10),
            source,
        }
    }

    #[test]
    fn the_final_counts_what_the_processors_stored() {
        let t = teardown(TeardownSource::Processors, None);
        let counted = t.counted();
        assert_eq!(
            (
                counted.default.total_requests,
                counted.fallback.total_requests
            ),
            (70, 25)
        );
        assert_eq!(cents(counted.fallback.total_amount), 25 * 2005);
        // Even a backend summary, were one read, would not count.
        let t = teardown(TeardownSource::Processors, Some((90, 10)));
        assert_eq!(t.counted().total_requests(), 95);
    }

    #[test]
    fn the_preview_counts_what_the_backend_reports() {
        let t = teardown(TeardownSource::Backend, Some((90, 10)));
        assert_eq!(t.counted().total_requests(), 100);
        // A failed backend summary counts as zeros.
        let t = teardown(TeardownSource::Backend, None);
        assert_eq!(t.counted().total_requests(), 0);
    }

    #[test]
    fn the_final_teardown_omits_the_backend_from_the_results_file() {
        let json = serde_json::to_value(teardown(TeardownSource::Processors, None)).unwrap();
        assert!(json.get("backend").is_none());
        assert!(json.get("source").is_none());
        let json = serde_json::to_value(teardown(TeardownSource::Backend, Some((1, 2)))).unwrap();
        assert_eq!(json["backend"]["fallback"]["totalRequests"], 2);
    }
}
