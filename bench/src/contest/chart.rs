//! A hand-written SVG chart of a run: per second, the p50 / p99 / max latency of the successful
//! `POST /payments` (log scale, left axis) and the requests per second (bars, right axis), with
//! the stage changes marked as dashed vertical lines; below it, when the processors were read
//! during the run, a second panel: the payments each processor stored per second and the
//! backlog (successful POSTs the processors do not hold yet).

use std::fmt::Write as _;

use super::progress::stored_per_tick;
use super::report::Report;
use crate::measure::stats::Percentiles;
use crate::measure::svg;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// The processors' panel, below the latency one.
const PANEL_HEIGHT: f64 = 280.0;
const PANEL_PLOT: f64 = 190.0;

/// Latency axis: 0.1 ms .. 2000 ms, log10.
const LAT_MIN: f64 = 0.1;
const LAT_MAX: f64 = 2000.0;

/// Picks one percentile of a second.
type Pick = fn(&Percentiles) -> f64;

/// Payments (default, fallback) stored since the previous reading.
type Stored = (Option<u64>, Option<u64>);

/// Picks one processor's side of [`Stored`].
type PickSide = fn(&Stored) -> Option<u64>;

/// Renders the chart.
pub fn svg(report: &Report) -> String {
    let n = report
        .snapshot
        .seconds
        .len()
        .max(report.duration_secs as usize)
        .max(1) as f64;
    let mut out = String::new();
    let w = &mut out;
    let total_height = if report.held.is_empty() {
        HEIGHT
    } else {
        HEIGHT + PANEL_HEIGHT
    };
    svg::open(w, WIDTH, total_height);
    let s = &report.score;
    let title = format!(
        "{} users / {} s against {}: p99 {:.2} ms, profit {:.2}, lag {}, inconsistencies {}",
        report.max_requests,
        report.duration_secs,
        report.target,
        s.p99_ms,
        s.profit,
        s.lag,
        s.inconsistencies
    );
    svg::title(w, LEFT, &title);
    latency_panel(w, report, n);
    if !report.held.is_empty() {
        processors_panel(w, report, n);
    }
    svg::close(w);
    out
}

/// The first panel: per second, the POST latency lines over the request-rate bars, with the
/// stage changes marked.
fn latency_panel(w: &mut String, report: &Report, n: f64) {
    let seconds = &report.snapshot.seconds;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |second: f64| LEFT + plot_w * second / n;
    let y_lat = |ms: f64| {
        let v = ms.clamp(LAT_MIN, LAT_MAX);
        TOP + plot_h * (1.0 - (v / LAT_MIN).log10() / (LAT_MAX / LAT_MIN).log10())
    };
    let max_rate = seconds.iter().map(|s| s.requests).max().unwrap_or(1).max(1) as f64;
    let y_rate = |r: f64| TOP + plot_h * (1.0 - r / max_rate);
    // Request-rate bars first, so the latency lines draw over them.
    let bar_w = (plot_w / n * 0.8).max(1.0);
    for (i, sec) in seconds.iter().enumerate() {
        let top = y_rate(sec.requests as f64);
        let _ = writeln!(
            w,
            r##"<rect x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="#dde6f0"/>"##,
            x(i as f64),
            TOP + plot_h - top
        );
    }
    latency_grid(w, plot_w, y_lat);
    let _ = writeln!(
        w,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="start" fill="#6b87a8">{max_rate} req/s</text>"##,
        LEFT + plot_w + 4.0,
        TOP + 4.0
    );
    let _ = writeln!(
        w,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    seconds_axis(w, n, x, TOP + plot_h + 14.0);
    stage_labels(w, report, x, TOP + plot_h);
    // Latency lines.
    let lines: [(&str, &str, Pick); 3] = [
        ("p50", "#2a7", |p| p.p50),
        ("p99", "#d33", |p| p.p99),
        ("max", "#888", |p| p.max),
    ];
    for (k, (name, color, pick)) in lines.iter().enumerate() {
        let points: Vec<String> = seconds
            .iter()
            .enumerate()
            .filter(|(_, sec)| !sec.posts.is_empty())
            .map(|(i, sec)| {
                format!(
                    "{:.1},{:.1}",
                    x(i as f64 + 0.5),
                    y_lat(pick(&Percentiles::of(&sec.posts)))
                )
            })
            .collect();
        let legend = (LEFT + 10.0 + 90.0 * k as f64, HEIGHT - 8.0);
        series(w, color, &points, legend, &format!("POST {name}"));
    }
    let _ = writeln!(
        w,
        r##"<rect x="{:.1}" y="{:.1}" width="14" height="8" fill="#dde6f0"/><text x="{:.1}" y="{:.1}">requests/s (right axis); dashed: stage (d/f delay ms, ! = failing)</text>"##,
        LEFT + 290.0,
        HEIGHT - 16.0,
        LEFT + 308.0,
        HEIGHT - 8.0
    );
}

/// The latency axis: a grid line and a label at every decade of milliseconds.
fn latency_grid(w: &mut String, plot_w: f64, y_lat: impl Fn(f64) -> f64) {
    let mut decade = LAT_MIN;
    while decade <= LAT_MAX {
        let y = y_lat(decade);
        let _ = writeln!(
            w,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{decade} ms</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            y + 4.0
        );
        decade *= 10.0;
    }
}

/// The stage changes as dashed lines down to `bottom`, each labelled with its number and
/// both processors' delay (`!` when failing).
fn stage_labels(w: &mut String, report: &Report, x: impl Fn(f64) -> f64, bottom: f64) {
    for (i, stage) in report.stages.iter().enumerate() {
        let sx = x(stage.at.as_secs_f64());
        let _ = writeln!(
            w,
            r##"<line x1="{sx:.1}" x2="{sx:.1}" y1="{TOP}" y2="{bottom:.1}" stroke="#c60" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}" fill="#c60">{} d{}{} f{}{}</text>"##,
            sx + 2.0,
            TOP + 12.0 + 12.0 * (i % 2) as f64,
            i + 1,
            stage.default_delay_ms,
            if stage.default_failing { "!" } else { "" },
            stage.fallback_delay_ms,
            if stage.fallback_failing { "!" } else { "" },
        );
    }
}

/// The second panel: payments stored per second by each processor (lines, left axis) and the
/// backlog (shaded, right axis), over the same seconds and stage marks as the first.
fn processors_panel(w: &mut String, report: &Report, n: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let top = HEIGHT + 40.0;
    let bottom = top + PANEL_PLOT;
    let x = |second: f64| LEFT + plot_w * second / n;
    let stored = stored_per_tick(&report.held);
    let max_rate = stored
        .iter()
        .flat_map(|(d, f)| [d.unwrap_or(0), f.unwrap_or(0)])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let backlogs: Vec<(u64, i64)> = report
        .held
        .iter()
        .filter_map(|h| Some((h.second, h.backlog()?.max(0))))
        .collect();
    let max_backlog = backlogs.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let y_rate = |r: f64| bottom - PANEL_PLOT * r / max_rate;
    let y_backlog = |b: f64| bottom - PANEL_PLOT * b / max_backlog;
    let _ = writeln!(
        w,
        r#"<text x="{LEFT}" y="{:.1}" font-size="13">payments stored per second by each processor, and the backlog</text>"#,
        top - 12.0
    );
    // The backlog first, shaded, so the rate lines draw over it.
    if let (Some(first), Some(last)) = (backlogs.first(), backlogs.last()) {
        let mut points = vec![format!("{:.1},{bottom:.1}", x(first.0 as f64))];
        points.extend(
            backlogs
                .iter()
                .map(|(s, b)| format!("{:.1},{:.1}", x(*s as f64), y_backlog(*b as f64))),
        );
        points.push(format!("{:.1},{bottom:.1}", x(last.0 as f64)));
        let _ = writeln!(
            w,
            r##"<polygon fill="#f4c7c3" stroke="#d33" stroke-width="1" points="{}"/>"##,
            points.join(" ")
        );
    }
    let _ = writeln!(
        w,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_PLOT}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        w,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{max_rate}/s</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"##,
        LEFT - 4.0,
        top + 4.0,
        LEFT - 4.0,
        bottom + 4.0
    );
    let _ = writeln!(
        w,
        r##"<text x="{:.1}" y="{:.1}" fill="#d33">{max_backlog}</text><text x="{:.1}" y="{:.1}" fill="#d33">backlog</text>"##,
        LEFT + plot_w + 4.0,
        top + 4.0,
        LEFT + plot_w + 4.0,
        top + 16.0
    );
    seconds_axis(w, n, x, bottom + 14.0);
    for stage in &report.stages {
        let sx = x(stage.at.as_secs_f64());
        let _ = writeln!(
            w,
            r##"<line x1="{sx:.1}" x2="{sx:.1}" y1="{top}" y2="{bottom:.1}" stroke="#c60" stroke-dasharray="4,3"/>"##
        );
    }
    let lines: [(&str, &str, PickSide); 2] =
        [("default", "#2a7", |p| p.0), ("fallback", "#36c", |p| p.1)];
    for (k, (name, color, pick)) in lines.iter().enumerate() {
        let points: Vec<String> = report
            .held
            .iter()
            .zip(&stored)
            .filter_map(|(h, pair)| {
                let rate = pick(pair)?;
                Some(format!(
                    "{:.1},{:.1}",
                    x(h.second as f64),
                    y_rate(rate as f64)
                ))
            })
            .collect();
        let legend = (LEFT + 10.0 + 150.0 * k as f64, bottom + 36.0);
        series(w, color, &points, legend, &format!("{name} stored/s"));
    }
    let _ = writeln!(
        w,
        r##"<rect x="{:.1}" y="{:.1}" width="14" height="8" fill="#f4c7c3" stroke="#d33"/><text x="{:.1}" y="{:.1}">backlog: successful POSTs not yet stored (right axis)</text>"##,
        LEFT + 310.0,
        bottom + 28.0,
        LEFT + 328.0,
        bottom + 36.0
    );
}

/// The time axis both panels share: a label every twelfth of the `n` seconds at height `y`.
fn seconds_axis(w: &mut String, n: f64, x: impl Fn(f64) -> f64, y: f64) {
    let mut tick = 0usize;
    while (tick as f64) <= n {
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{y:.1}" text-anchor="middle">{tick}s</text>"#,
            x(tick as f64),
        );
        tick += (n as usize / 12).max(1);
    }
}

/// One line of a panel through `points`, and its legend entry (a short stroke and `label`) at
/// `(lx, ly)`.
fn series(w: &mut String, color: &str, points: &[String], (lx, ly): (f64, f64), label: &str) {
    let _ = writeln!(
        w,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        points.join(" ")
    );
    let _ = writeln!(
        w,
        r#"<line x1="{lx}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{ly}">{label}</text>"#,
        lx + 14.0,
        ly - 4.0,
        ly - 4.0,
        lx + 18.0
    );
}
