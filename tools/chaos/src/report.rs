//! The table a run prints: one figure per line, the violations marked, and the details (names of
//! crashed processes, a few dead-letter reasons) under it.

use std::fmt;

#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub value: u64,
    /// Any value above 0 is a violation.
    pub must_be_zero: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub title: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn figure(&mut self, label: impl Into<String>, value: usize) {
        self.push(label.into(), value, false);
    }

    /// A figure that must be 0.
    pub fn check(&mut self, label: impl Into<String>, value: usize) {
        self.push(label.into(), value, true);
    }

    fn push(&mut self, label: String, value: usize, must_be_zero: bool) {
        self.rows.push(Row {
            label,
            value: u64::try_from(value).unwrap_or(u64::MAX),
            must_be_zero,
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The rows whose value breaks their rule.
    pub fn violations(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.must_be_zero && r.value > 0)
            .collect()
    }

    /// The value of the row labelled `label` (for tests).
    pub fn value(&self, label: &str) -> Option<u64> {
        self.rows.iter().find(|r| r.label == label).map(|r| r.value)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0);
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "| {:width$} | {:>7} | {:9} |",
            "figure", "value", "check"
        )?;
        writeln!(f, "| {:-<width$} | {:->7} | {:-<9} |", "", "", "")?;
        for row in &self.rows {
            let mark = match (row.must_be_zero, row.value) {
                (false, _) => " ",
                (true, 0) => "ok",
                (true, _) => "VIOLATION",
            };
            writeln!(f, "| {:width$} | {:>7} | {mark:9} |", row.label, row.value)?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        let violations = self.violations();
        if violations.is_empty() {
            writeln!(f, "result: no violation")
        } else {
            let names: Vec<&str> = violations.iter().map(|r| r.label.as_str()).collect();
            writeln!(
                f,
                "result: {} violation(s): {}",
                names.len(),
                names.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn only_checks_above_zero_are_violations() {
        let mut r = Report::default();
        r.figure("orders posted", 5);
        r.check("mails lost", 0);
        r.check("mails doubled", 2);
        let v: Vec<&str> = r.violations().iter().map(|r| r.label.as_str()).collect();
        assert_eq!(v, ["mails doubled"]);
        let text = r.to_string();
        assert!(
            text.contains("| mails doubled |       2 | VIOLATION |"),
            "{text}"
        );
        assert!(text.contains("1 violation(s): mails doubled"), "{text}");
    }
}
