//! From the runs to the comparison: the median of each figure over the rounds, per driver, its
//! spread (lowest and highest run), and the ratio uring/epoll, as rows that the table, the JSON
//! file and the chart all read.
//!
//! A median alone cannot say whether a difference is the drivers' or the machine's: on a
//! shared 2-vCPU host a p99.9 is decided by a few scheduling stalls, and the same code has
//! measured 0.8x in one invocation and 3.0x in the next. So a row names a better driver only
//! when the runs of the two drivers do not overlap at all (every run of one beats every run of
//! the other: with 3 rounds each, 1 chance in 10 if the drivers were the same; with 5, 1 in
//! 126); when the medians differ but the runs overlap, the name is in parentheses. One run
//! per driver cannot overlap and says nothing about chance (1 in 2), so it only leans too.

use std::fmt::Write as _;

use super::session::{CpuSecs, Latency, Run};
use super::{Driver, MEASURED};
use crate::measure::stats::{median, ratio, Spread};
use crate::measure::table::{cell_with_spread, ratio_cell, Table};

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
    /// Lowest and highest run per driver.
    pub uring_spread: Option<Spread>,
    pub epoll_spread: Option<Spread>,
    /// `uring / epoll` of the medians.
    pub ratio: Option<f64>,
    /// A latency percentile (drawn in the chart).
    pub percentile: bool,
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
        let over = |driver: Driver| -> Vec<f64> {
            self.runs
                .iter()
                .filter(|run| run.driver == driver)
                .filter_map(&pick)
                .collect()
        };
        let (uring, epoll) = (over(Driver::Uring), over(Driver::Epoll));
        let (uring_median, epoll_median) = (median(&uring), median(&epoll));
        self.rows.push(Row {
            section: self.section.clone(),
            metric: metric.to_owned(),
            unit,
            lower_is_better,
            uring: uring_median,
            epoll: epoll_median,
            uring_spread: Spread::of(&uring),
            epoll_spread: Spread::of(&epoll),
            ratio: ratio(uring_median, epoll_median),
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

/// Which driver the row favours: `=` when the medians are within 1 %, the driver's name when
/// every run of it beats every run of the other, the name in parentheses when only the medians
/// say so (the runs overlap).
fn better(row: &Row) -> &'static str {
    let favoured = match row.ratio {
        None => return "",
        Some(r) if (r - 1.0).abs() < 0.01 => return "=",
        Some(r) if (r < 1.0) == row.lower_is_better => Driver::Uring,
        Some(_) => Driver::Epoll,
    };
    let apart = match (row.uring_spread, row.epoll_spread) {
        (Some(u), Some(e)) => u.apart_from(e),
        _ => false,
    };
    match (favoured, apart) {
        (Driver::Uring, true) => "uring",
        (Driver::Uring, false) => "(uring)",
        (Driver::Epoll, true) => "epoll",
        (Driver::Epoll, false) => "(epoll)",
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
    let columns = [
        "part",
        "figure",
        "unit",
        "uring",
        "epoll",
        "uring/epoll",
        "better",
    ];
    let mut table = Table::new(&columns, |i| (3..6).contains(&i));
    let mut last = "";
    for row in rows {
        let section = if row.section == last {
            ""
        } else {
            &row.section
        };
        last = &row.section;
        table.row(&[
            section,
            &row.metric,
            row.unit,
            &cell_with_spread(row.uring, row.uring_spread),
            &cell_with_spread(row.epoll, row.epoll_spread),
            &ratio_cell(row.ratio),
            better(row),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row built from the runs of each driver, as `Builder::row` builds it.
    fn row(uring: &[f64], epoll: &[f64], lower_is_better: bool) -> Row {
        let (u, e) = (median(uring), median(epoll));
        Row {
            section: String::new(),
            metric: String::new(),
            unit: "",
            lower_is_better,
            uring: u,
            epoll: e,
            uring_spread: Spread::of(uring),
            epoll_spread: Spread::of(epoll),
            ratio: ratio(u, e),
            percentile: false,
        }
    }

    #[test]
    fn better_follows_the_direction_of_the_figure() {
        assert_eq!(better(&row(&[1.0, 1.1], &[2.0, 2.2], true)), "uring");
        assert_eq!(better(&row(&[1.0, 1.1], &[2.0, 2.2], false)), "epoll");
        assert_eq!(better(&row(&[4.0, 4.4], &[2.0, 2.2], false)), "uring");
        assert_eq!(better(&row(&[1.005], &[1.0], true)), "=");
    }

    #[test]
    fn overlapping_runs_only_lean_to_a_driver() {
        // Medians 0.5 against 0.4, but one uring run beats one epoll run.
        let overlapping = row(&[0.73, 0.40, 0.50], &[0.33, 0.41, 0.54], true);
        assert_eq!(better(&overlapping), "(epoll)");
        let apart = row(&[0.73, 0.60, 0.50], &[0.33, 0.41, 0.45], true);
        assert_eq!(better(&apart), "epoll");
        // Touching ranges overlap.
        assert_eq!(better(&row(&[0.5, 0.6], &[0.4, 0.5], true)), "(epoll)");
        assert_eq!(better(&row(&[0.5, 0.6], &[0.4, 0.45], true)), "epoll");
    }

    #[test]
    fn a_single_run_on_either_side_only_leans() {
        assert_eq!(better(&row(&[0.5], &[0.4], true)), "(epoll)");
        assert_eq!(better(&row(&[0.5, 0.6, 0.7], &[0.4], true)), "(epoll)");
        assert_eq!(better(&row(&[0.3], &[0.4, 0.45, 0.5], true)), "(uring)");
    }

    #[test]
    fn the_table_shows_each_spread_beside_its_median() {
        let rows = [row(&[0.73, 0.40, 0.50], &[0.33, 0.41, 0.54], true)];
        let spread = table(&rows);
        assert!(
            spread.contains("| 0.500 (0.400-0.730) | 0.410 (0.330-0.540) | 1.220 | (epoll) |"),
            "{spread}"
        );
        let single = table(&[row(&[0.5], &[0.4], true)]);
        assert!(
            single.contains("| 0.500 | 0.400 | 1.250 | (epoll) |"),
            "{single}"
        );
    }
}
