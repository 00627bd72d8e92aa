//! A scrape written in Prometheus' text exposition format (version 0.0.4): one `# HELP` and
//! `# TYPE` per family, then its samples. The names are a contract (docs/architecture.md,
//! "Metrics"): dashboards and alerts read them.

use std::fmt::Write;

use crate::processor::Processor;

use super::{CoreSample, ProcessorSample, Scrape, SUMMARY_BUCKETS};

/// The `Content-Type` of [`write()`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PROCESSORS: [Processor; 2] = [Processor::Default, Processor::Fallback];
const KINDS: [&str; 2] = ["public", "internal"];

/// Writes `scrape` as exposition text.
pub fn write(scrape: &Scrape) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let cores = &scrape.cores;
    family(
        &mut out,
        "rinha_queue_depth",
        "gauge",
        "payments waiting on the core: in the line or set aside",
    );
    for c in cores {
        let _ = writeln!(
            out,
            "rinha_queue_depth{{core=\"{}\"}} {}",
            c.core, c.queue_depth
        );
    }
    family(
        &mut out,
        "rinha_senders_busy",
        "gauge",
        "payments a sender of the core holds now",
    );
    for c in cores {
        let _ = writeln!(out, "rinha_senders_busy{{core=\"{}\"}} {}", c.core, c.busy);
    }
    family(
        &mut out,
        "rinha_payments_accepted_total",
        "counter",
        "new payments answered 202",
    );
    for c in cores {
        let _ = writeln!(
            out,
            "rinha_payments_accepted_total{{core=\"{}\"}} {}",
            c.core, c.accepted
        );
    }
    per_processor(
        &mut out,
        cores,
        "rinha_processor_in_flight",
        "gauge",
        "calls in flight to the processor",
        |p| p.in_flight,
    );
    per_processor(
        &mut out,
        cores,
        "rinha_breaker_open",
        "gauge",
        "1 while the processor's breaker is open (failing), else 0",
        |p| u64::from(p.breaker_open),
    );
    per_processor(
        &mut out,
        cores,
        "rinha_payments_processed_total",
        "counter",
        "payments the processor stored, as recorded",
        |p| p.processed,
    );
    per_processor(
        &mut out,
        cores,
        "rinha_route_choices_total",
        "counter",
        "unpinned payments placed on the processor by the routing",
        |p| p.routed,
    );
    per_processor(
        &mut out,
        cores,
        "rinha_unknown_outcomes_total",
        "counter",
        "attempts whose outcome was unknown (timeout, lost connection)",
        |p| p.unknown,
    );
    per_processor(
        &mut out,
        cores,
        "rinha_lookups_total",
        "counter",
        "GET /payments/{id} lookups of unknown outcomes",
        |p| p.lookups,
    );
    per_processor(
        &mut out,
        cores,
        "rinha_inconclusive_answers_total",
        "counter",
        "processor answers that proved nothing (a 404, 401/403, 408, 3XX): payment kept, retried",
        |p| p.inconclusive,
    );
    family(
        &mut out,
        "rinha_journal_commits_total",
        "counter",
        "journal group commits (0 without DATA_DIR)",
    );
    let commits: u64 = cores.iter().map(|c| c.journal_commits).sum();
    let _ = writeln!(out, "rinha_journal_commits_total {commits}");
    family(
        &mut out,
        "rinha_journal_bytes_total",
        "counter",
        "journal record bytes committed (0 without DATA_DIR)",
    );
    let bytes: u64 = cores.iter().map(|c| c.journal_bytes).sum();
    let _ = writeln!(out, "rinha_journal_bytes_total {bytes}");
    let s = &scrape.summaries;
    family(
        &mut out,
        "rinha_summaries_total",
        "counter",
        "summaries answered whole (public: with the peers; internal: a peer's question)",
    );
    for (kind, n) in KINDS.iter().zip(s.served) {
        let _ = writeln!(out, "rinha_summaries_total{{kind=\"{kind}\"}} {n}");
    }
    family(
        &mut out,
        "rinha_summaries_failed_total",
        "counter",
        "summaries answered with a 5XX",
    );
    for (kind, n) in KINDS.iter().zip(s.failed) {
        let _ = writeln!(out, "rinha_summaries_failed_total{{kind=\"{kind}\"}} {n}");
    }
    family(
        &mut out,
        "rinha_summary_duration_seconds",
        "histogram",
        "how long a summary waited for the shards and peers",
    );
    for (le, n) in SUMMARY_BUCKETS.iter().zip(s.cumulative) {
        let _ = writeln!(
            out,
            "rinha_summary_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let count = s.cumulative[SUMMARY_BUCKETS.len()];
    let _ = writeln!(
        out,
        "rinha_summary_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "rinha_summary_duration_seconds_sum {}", s.sum_seconds);
    let _ = writeln!(out, "rinha_summary_duration_seconds_count {count}");
    family(
        &mut out,
        "rinha_connections_open",
        "gauge",
        "client connections open in the process",
    );
    let _ = writeln!(out, "rinha_connections_open {}", scrape.connections_open);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family with one sample per core and processor.
fn per_processor(
    out: &mut String,
    cores: &[CoreSample],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ProcessorSample) -> u64,
) {
    family(out, name, kind, help);
    for c in cores {
        for p in PROCESSORS {
            let v = value(&c.processors[p.index()]);
            let _ = writeln!(
                out,
                "{name}{{core=\"{}\",processor=\"{}\"}} {v}",
                c.core,
                p.name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SummaryStats;
    use std::time::Duration;

    /// Every sample line is `name{labels} value` under a `# TYPE` of its family, and the
    /// numbers are the scrape's.
    #[test]
    fn the_text_names_each_family_once_and_carries_the_numbers() {
        let mut core = CoreSample {
            core: 1,
            queue_depth: 7,
            accepted: 42,
            journal_commits: 3,
            journal_bytes: 300,
            ..CoreSample::default()
        };
        core.processors[1].processed = 5;
        core.processors[0].breaker_open = true;
        core.processors[0].inconclusive = 4;
        let stats = SummaryStats::default();
        stats.observe(true, true, Duration::from_millis(20));
        let text = write(&Scrape {
            cores: vec![CoreSample::default(), core],
            summaries: stats.sample(),
            connections_open: 9,
        });
        for line in [
            "rinha_queue_depth{core=\"1\"} 7",
            "rinha_payments_accepted_total{core=\"1\"} 42",
            "rinha_payments_processed_total{core=\"1\",processor=\"fallback\"} 5",
            "rinha_breaker_open{core=\"1\",processor=\"default\"} 1",
            "rinha_inconclusive_answers_total{core=\"1\",processor=\"default\"} 4",
            "rinha_inconclusive_answers_total{core=\"0\",processor=\"fallback\"} 0",
            "rinha_journal_bytes_total 300",
            "rinha_summaries_total{kind=\"public\"} 1",
            "rinha_summary_duration_seconds_bucket{le=\"0.01\"} 0",
            "rinha_summary_duration_seconds_bucket{le=\"0.025\"} 1",
            "rinha_summary_duration_seconds_count 1",
            "rinha_connections_open 9",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    typed.insert(rest.split(' ').next().unwrap().to_owned()),
                    "{line}"
                );
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line} before its # TYPE");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}
