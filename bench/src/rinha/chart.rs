//! A hand-written SVG chart of a run: per second, the p50 / p99 / max latency of the successful
//! `POST /payments` (log scale, left axis) and the requests per second (bars, right axis), with
//! the stage changes marked as dashed vertical lines.

use std::fmt::Write as _;

use super::report::{Percentiles, Report};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// Latency axis: 0.1 ms .. 2000 ms, log10.
const LAT_MIN: f64 = 0.1;
const LAT_MAX: f64 = 2000.0;

/// Picks one percentile of a second.
type Pick = fn(&Percentiles) -> f64;

/// Renders the chart.
pub fn svg(report: &Report) -> String {
    let seconds = &report.snapshot.seconds;
    let n = seconds.len().max(report.duration_secs as usize).max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |second: f64| LEFT + plot_w * second / n;
    let y_lat = |ms: f64| {
        let v = ms.clamp(LAT_MIN, LAT_MAX);
        TOP + plot_h * (1.0 - (v / LAT_MIN).log10() / (LAT_MAX / LAT_MIN).log10())
    };
    let max_rate = seconds.iter().map(|s| s.requests).max().unwrap_or(1).max(1) as f64;
    let y_rate = |r: f64| TOP + plot_h * (1.0 - r / max_rate);

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let s = &report.score;
    let _ = writeln!(
        w,
        r#"<text x="{LEFT}" y="20" font-size="13">{} users / {} s against {}: p99 {:.2} ms, profit {:.2}, lag {}, inconsistencies {}</text>"#,
        report.max_requests,
        report.duration_secs,
        escape(&report.target),
        s.p99_ms,
        s.profit,
        s.lag,
        s.inconsistencies
    );
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
    // Latency grid (decades) and axes.
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
    let mut tick = 0usize;
    while (tick as f64) <= n {
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{tick}s</text>"#,
            x(tick as f64),
            TOP + plot_h + 14.0
        );
        tick += (n as usize / 12).max(1);
    }
    // Stage changes.
    for (i, stage) in report.stages.iter().enumerate() {
        let sx = x(stage.at.as_secs_f64());
        let _ = writeln!(
            w,
            r##"<line x1="{sx:.1}" x2="{sx:.1}" y1="{TOP}" y2="{:.1}" stroke="#c60" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}" fill="#c60">{} d{}{} f{}{}</text>"##,
            TOP + plot_h,
            sx + 2.0,
            TOP + 12.0 + 12.0 * (i % 2) as f64,
            i + 1,
            stage.default_delay_ms,
            if stage.default_failing { "!" } else { "" },
            stage.fallback_delay_ms,
            if stage.fallback_failing { "!" } else { "" },
        );
    }
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
        let _ = writeln!(
            w,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let lx = LEFT + 10.0 + 90.0 * k as f64;
        let ly = HEIGHT - 8.0;
        let _ = writeln!(
            w,
            r#"<line x1="{lx}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{ly}">POST {name}</text>"#,
            lx + 14.0,
            ly - 4.0,
            ly - 4.0,
            lx + 18.0
        );
    }
    let _ = writeln!(
        w,
        r##"<rect x="{:.1}" y="{:.1}" width="14" height="8" fill="#dde6f0"/><text x="{:.1}" y="{:.1}">requests/s (right axis); dashed: stage (d/f delay ms, ! = failing)</text>"##,
        LEFT + 290.0,
        HEIGHT - 16.0,
        LEFT + 308.0,
        HEIGHT - 8.0
    );
    let _ = writeln!(w, "</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
