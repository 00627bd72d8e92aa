//! The frame every hand-written SVG chart shares: the opening tag on a white ground, the title
//! line, the closing tag, and escaping text.

use std::fmt::Write as _;

/// Opens a `width` x `height` chart on a white ground.
pub fn open(w: &mut String, width: f64, height: f64) {
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
}

/// The chart's title at `x` on the top line (`text` is escaped here).
pub fn title(w: &mut String, x: f64, text: &str) {
    let _ = writeln!(
        w,
        r#"<text x="{x}" y="20" font-size="13">{}</text>"#,
        escape(text)
    );
}

/// Closes the chart.
pub fn close(w: &mut String) {
    let _ = writeln!(w, "</svg>");
}

/// Text safe inside an element.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
