//! Markdown tables of figures: the header and its alignment once, then rows of cells, and the
//! one way a figure, a median with its spread, or a ratio is written in a cell.

use super::stats::Spread;

/// A markdown table being written.
#[derive(Debug, Clone)]
pub struct Table {
    out: String,
}

impl Table {
    /// A table with these columns; a column whose name is in `right` is right-aligned.
    pub fn new<S: AsRef<str>>(columns: &[S], right: impl Fn(usize) -> bool) -> Table {
        let names: Vec<&str> = columns.iter().map(AsRef::as_ref).collect();
        let rule: Vec<&str> = (0..names.len())
            .map(|i| if right(i) { "---:" } else { "---" })
            .collect();
        let mut table = Table { out: String::new() };
        table.line(&names);
        table.out.push('|');
        table.out.push_str(&rule.join("|"));
        table.out.push_str("|\n");
        table
    }

    /// Appends a row (as many cells as columns).
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        let cells: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
        self.line(&cells);
    }

    fn line(&mut self, cells: &[&str]) {
        self.out.push_str("| ");
        self.out.push_str(&cells.join(" | "));
        self.out.push_str(" |\n");
    }

    /// The table's text, one line a row.
    pub fn render(self) -> String {
        self.out
    }
}

/// A figure: `-` when missing, whole figures and large ones without decimals, three
/// significant places for small ones.
pub fn cell(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        // Counts (and whole figures) without decimals.
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// A median and, when the runs differ, their spread: `0.495 (0.402-0.731)`.
pub fn cell_with_spread(median: Option<f64>, spread: Option<Spread>) -> String {
    match spread {
        Some(Spread { min, max, .. }) if min != max => {
            format!("{} ({}-{})", cell(median), cell(Some(min)), cell(Some(max)))
        }
        _ => cell(median),
    }
}

/// A ratio of two medians, three decimals, `-` when missing.
pub fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_owned(), |r| format!("{r:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_a_header_a_rule_and_rows() {
        let mut table = Table::new(&["part", "figure", "uring"], |i| i >= 2);
        table.row(&["lb", "p99", "0.5"]);
        assert_eq!(
            table.render(),
            "| part | figure | uring |\n|---|---|---:|\n| lb | p99 | 0.5 |\n"
        );
    }
}
