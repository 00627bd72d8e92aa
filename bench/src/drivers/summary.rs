//! From the runs to the comparison: the median of each figure over the rounds, per driver, and
//! the ratio uring/epoll, as rows that the table, the JSON file and the chart all read.

use std::fmt::Write as _;

use super::session::{CpuSecs, Latency, Run};
use super::{Driver, MEASURED};

/// One figure of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub section: String,
    pub metric: String,
    pub unit: &'static str,
    pub lower_is_better: bool,
    /// Median over the rounds (None when no run measured it).
    pub uring: Option<f64>,
    pub epoll: Option<f64>,
    /// `uring / epoll` of the medians.
    pub ratio: Option<f64>,
    /// A latency percentile (drawn in the chart).
    pub percentile: bool,
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `uring / epoll`, when both exist and epoll is not zero.
pub fn ratio(uring: Option<f64>, epoll: Option<f64>) -> Option<f64> {
    match (uring, epoll) {
        (Some(u), Some(e)) if e != 0.0 => Some(u / e),
        _ => None,
    }
}

/// CPU seconds per 100,000 requests.
fn per_100k(cpu_secs: f64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| cpu_secs * 100_000.0 / requests as f64)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Reads one percentile.
type PickPercentile = fn(&Latency) -> f64;
/// Reads the peak RSS (KiB, [`MEASURED`] order) of one phase of a run.
type PickRss = fn(&Run) -> Option<[u64; 3]>;

/// Builds the rows: `pick` reads one figure from one run.
struct Builder<'a> {
    runs: &'a [Run],
    rows: Vec<Row>,
    section: String,
}

impl Builder<'_> {
    fn row(
        &mut self,
        metric: &str,
        unit: &'static str,
        lower_is_better: bool,
        pick: impl Fn(&Run) -> Option<f64>,
    ) {
        let over = |driver: Driver| {
            let values: Vec<f64> = self
                .runs
                .iter()
                .filter(|run| run.driver == driver)
                .filter_map(&pick)
                .collect();
            median(&values)
        };
        let (uring, epoll) = (over(Driver::Uring), over(Driver::Epoll));
        self.rows.push(Row {
            section: self.section.clone(),
            metric: metric.to_owned(),
            unit,
            lower_is_better,
            uring,
            epoll,
            ratio: ratio(uring, epoll),
            percentile: false,
        });
    }

    fn latency(&mut self, what: &str, pick: impl Fn(&Run) -> Option<Latency>) {
        let percentiles: [(&str, PickPercentile); 3] = [
            ("p50", |l| l.p50),
            ("p99", |l| l.p99),
            ("p99.9", |l| l.p999),
        ];
        for (name, field) in percentiles {
            self.row(&format!("{what} {name}"), "ms", true, |run| {
                pick(run).map(|l| field(&l))
            });
            if let Some(row) = self.rows.last_mut() {
                row.percentile = true;
            }
        }
    }
}

fn total(cpu: &CpuSecs) -> f64 {
    cpu.iter().sum()
}

/// The comparison's rows, in table order.
pub fn rows(
    runs: &[Run],
    max_requests: u64,
    duration: u64,
    saturation_connections: usize,
) -> Vec<Row> {
    let mut b = Builder {
        runs,
        rows: Vec::new(),
        section: String::new(),
    };
    if runs.iter().any(|run| run.contest.is_some()) {
        b.section = format!("contest, {max_requests} users, {duration} s");
        b.latency("POST /payments", |run| run.contest.as_ref().map(|c| c.post));
        b.row("p99 of every request (score)", "ms", true, |run| {
            run.contest.as_ref().map(|c| c.score_p99_ms)
        });
        b.row("score (total_liquido)", "", false, |run| {
            run.contest.as_ref().map(|c| c.profit)
        });
        b.row("CPU-s / 100k POSTs, lb + backends", "s", true, |run| {
            run.contest
                .as_ref()
                .and_then(|c| per_100k(total(&c.cpu_secs), c.successful_posts))
        });
        b.row("failed POSTs", "", true, |run| {
            run.contest.as_ref().map(|c| c.failed_posts as f64)
        });
    }
    let rates: Vec<f64> = runs
        .first()
        .map(|run| run.rates.iter().map(|r| r.rate).collect())
        .unwrap_or_default();
    for (i, rate) in rates.iter().enumerate() {
        b.section = format!("open loop, {rate} req/s");
        b.latency("POST /payments", |run| run.rates.get(i).map(|r| r.latency));
        b.row("requests/s achieved", "req/s", false, |run| {
            run.rates.get(i).map(|r| r.achieved)
        });
        b.row("backlog drain after the load", "s", true, |run| {
            run.rates.get(i).map(|r| r.drained.secs)
        });
        b.row("CPU-s / 100k req, lb + backends", "s", true, |run| {
            run.rates
                .get(i)
                .and_then(|r| per_100k(total(&r.cpu_secs), r.ok))
        });
        b.row("failed requests", "", true, |run| {
            run.rates.get(i).map(|r| r.failed as f64)
        });
    }
    if runs.iter().any(|run| run.saturation.is_some()) {
        b.section = format!("saturation, closed loop, {saturation_connections} connections");
        b.row("requests/s answered (intake)", "req/s", false, |run| {
            run.saturation.as_ref().map(|s| s.throughput)
        });
        b.row(
            "payments/s recorded, backlog included",
            "req/s",
            false,
            |run| run.saturation.as_ref().map(|s| s.processed),
        );
        for (p, name) in MEASURED.iter().enumerate() {
            b.row(&format!("CPU-s / 100k req, {name}"), "s", true, |run| {
                run.saturation
                    .as_ref()
                    .and_then(|s| per_100k(s.cpu_secs[p], s.ok))
            });
        }
        b.row("CPU-s / 100k req, lb + backends", "s", true, |run| {
            run.saturation
                .as_ref()
                .and_then(|s| per_100k(total(&s.cpu_secs), s.ok))
        });
        b.row("failed requests", "", true, |run| {
            run.saturation.as_ref().map(|s| s.failed as f64)
        });
    }
    let phases: [(&str, PickRss); 2] = [
        ("peak RSS after the contest", |run| run.peak_rss_contest_kib),
        ("peak RSS, whole run", |run| Some(run.peak_rss_kib)),
    ];
    for (section, pick) in phases {
        if runs.iter().all(|run| pick(run).is_none()) {
            continue;
        }
        b.section = section.to_owned();
        for (p, name) in MEASURED.iter().enumerate() {
            b.row(name, "MiB", true, |run| pick(run).map(|kib| mib(kib[p])));
        }
        b.row("lb + backends", "MiB", true, |run| {
            pick(run).map(|kib| mib(kib.iter().sum()))
        });
    }
    b.rows
}

fn cell(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        // Counts (and whole figures) without decimals.
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Which driver the row favours (`=` within 1 %).
fn better(row: &Row) -> &'static str {
    match row.ratio {
        None => "",
        Some(r) if (r - 1.0).abs() < 0.01 => "=",
        Some(r) if (r < 1.0) == row.lower_is_better => "uring",
        Some(_) => "epoll",
    }
}

/// One line per run (the medians hide outliers; these show them).
pub fn runs(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let _ = write!(out, "- round {} {}:", run.round, run.driver.env_value());
        if let Some(c) = &run.contest {
            let _ = write!(
                out,
                " contest POST p99 {:.2} ms, p99.9 {:.2} ms, score {:.0}, inconsistencies {}, lag {};",
                c.post.p99, c.post.p999, c.profit, c.inconsistencies, c.lag
            );
            for check in &c.failed_checks {
                let _ = write!(
                    out,
                    " [check at {:.1} s, {}: backend {} processors {}]",
                    check.at_secs, check.window, check.backend, check.processors
                );
            }
        }
        let open: Vec<String> = run
            .rates
            .iter()
            .map(|r| format!("{}/s p99 {:.2} ms", r.rate, r.latency.p99))
            .collect();
        if !open.is_empty() {
            let _ = write!(out, " open loop {};", open.join(", "));
        }
        if let Some(s) = &run.saturation {
            let _ = write!(out, " saturation {:.0} req/s", s.throughput);
        }
        let _ = writeln!(out);
    }
    out
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| part | figure | unit | uring | epoll | uring/epoll | better |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---|");
    let mut last = "";
    for row in rows {
        let section = if row.section == last {
            ""
        } else {
            &row.section
        };
        last = &row.section;
        let _ = writeln!(
            out,
            "| {section} | {} | {} | {} | {} | {} | {} |",
            row.metric,
            row.unit,
            cell(row.uring),
            cell(row.epoll),
            row.ratio.map_or("-".to_owned(), |r| format!("{r:.3}")),
            better(row),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }

    #[test]
    fn better_follows_the_direction_of_the_figure() {
        let row = |ratio: f64, lower_is_better: bool| Row {
            section: String::new(),
            metric: String::new(),
            unit: "",
            lower_is_better,
            uring: None,
            epoll: None,
            ratio: Some(ratio),
            percentile: false,
        };
        assert_eq!(better(&row(0.5, true)), "uring");
        assert_eq!(better(&row(0.5, false)), "epoll");
        assert_eq!(better(&row(2.0, false)), "uring");
        assert_eq!(better(&row(1.005, true)), "=");
    }
}
