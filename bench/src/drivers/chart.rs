//! A hand-written SVG grouped bar chart of the latency percentiles per driver: one group per
//! percentile (contest and each open-loop rate), one bar per driver, log-scale milliseconds.

use std::fmt::Write as _;

use super::summary::Row;
use crate::measure::svg::{self, escape};

const GROUP_W: f64 = 64.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 110.0;
const PLOT_H: f64 = 300.0;
const URING: &str = "#1f77b4";
const EPOLL: &str = "#ff7f0e";

/// Renders the percentile rows of the comparison; `title` goes on top.
pub fn svg(rows: &[Row], title: &str) -> String {
    let bars: Vec<&Row> = rows.iter().filter(|row| row.percentile).collect();
    let values = bars.iter().flat_map(|row| [row.uring, row.epoll]).flatten();
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades around the data, so the grid lines are 0.01, 0.1, 1, 10 ... ms.
    let (lo_exp, hi_exp) = if lo <= hi && lo > 0.0 {
        (
            lo.log10().floor() as i32,
            (hi.log10().ceil() as i32).max(lo.log10().floor() as i32 + 1),
        )
    } else {
        (-1, 2)
    };
    let y = |ms: f64| {
        let v = ms.max(10f64.powi(lo_exp)).log10();
        TOP + PLOT_H * (1.0 - (v - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp))
    };
    let width = LEFT + RIGHT + GROUP_W * bars.len().max(1) as f64;
    let height = TOP + PLOT_H + BOTTOM;

    let mut out = String::new();
    let w = &mut out;
    svg::open(w, width, height);
    svg::title(w, LEFT, title);
    for (i, (name, colour)) in [("io_uring", URING), ("epoll", EPOLL)].iter().enumerate() {
        let x = LEFT + 110.0 * i as f64;
        let _ = writeln!(
            w,
            r#"<rect x="{x}" y="30" width="12" height="12" fill="{colour}"/><text x="{}" y="40">{name}</text>"#,
            x + 16.0
        );
    }
    for exp in lo_exp..=hi_exp {
        let value = 10f64.powi(exp);
        let gy = y(value);
        let _ = writeln!(
            w,
            r##"<line x1="{LEFT}" x2="{}" y1="{gy:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            width - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            trim(value)
        );
    }
    let bottom = TOP + PLOT_H;
    let bar_w = GROUP_W * 0.36;
    let mut last_section = "";
    for (i, row) in bars.iter().enumerate() {
        let x0 = LEFT + GROUP_W * i as f64;
        if row.section != last_section {
            last_section = &row.section;
            let _ = writeln!(
                w,
                r##"<line x1="{x0}" x2="{x0}" y1="{TOP}" y2="{}" stroke="#999" stroke-dasharray="3,3"/>"##,
                bottom + 95.0
            );
            let _ = writeln!(
                w,
                r#"<text x="{}" y="{}" font-size="11">{}</text>"#,
                x0 + 4.0,
                bottom + 90.0,
                escape(&row.section)
            );
        }
        for (k, (value, colour)) in [(row.uring, URING), (row.epoll, EPOLL)].iter().enumerate() {
            let Some(value) = value else { continue };
            let bx = x0 + GROUP_W * 0.12 + bar_w * k as f64;
            let top = y(*value);
            let _ = writeln!(
                w,
                r#"<rect x="{bx:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {value:.3} ms</title></rect>"#,
                (bottom - top).max(0.5),
                escape(&row.section),
                escape(&row.metric),
            );
            let _ = writeln!(
                w,
                r#"<text x="{:.1}" y="{:.1}" font-size="8" text-anchor="middle">{}</text>"#,
                bx + bar_w / 2.0,
                top - 3.0,
                short(*value)
            );
        }
        let label = row.metric.rsplit(' ').next().unwrap_or("");
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + GROUP_W / 2.0,
            bottom + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        w,
        r##"<line x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}" stroke="#333"/>"##,
        width - RIGHT
    );
    svg::close(w);
    out
}

/// `0.01`, `0.1`, `1`, `10` ... without trailing zeros.
fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A bar label: three significant digits.
fn short(ms: f64) -> String {
    match ms {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(section: &str, metric: &str, uring: f64, epoll: f64) -> Row {
        Row {
            section: section.to_owned(),
            metric: metric.to_owned(),
            unit: "ms",
            lower_is_better: true,
            uring: Some(uring),
            epoll: Some(epoll),
            uring_spread: None,
            epoll_spread: None,
            ratio: Some(uring / epoll),
            percentile: true,
        }
    }

    #[test]
    fn draws_two_bars_per_percentile_and_a_decade_grid() {
        let rows = [
            row("contest", "POST /payments p50", 0.2, 0.3),
            row("contest", "POST /payments p99", 1.5, 2.5),
            row("open loop <1k>", "POST /payments p99.9", 12.0, 9.0),
        ];
        let svg = svg(&rows, "a & b");
        assert_eq!(svg.matches("<rect x=").count(), 2 + 6, "legend + bars");
        for grid in [">0.1 ms<", ">1 ms<", ">10 ms<", ">100 ms<"] {
            assert!(svg.contains(grid), "{grid}");
        }
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains("open loop &lt;1k&gt;"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
