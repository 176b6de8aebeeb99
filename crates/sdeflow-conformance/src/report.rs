//! The conformance table: plugin, check, measured, claimed, tolerance, pass.

use std::fmt;

use serde::Serialize;

/// One measured check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `kind/name` of the plugin.
    pub plugin: String,
    /// What was checked, and on what.
    pub check: String,
    /// The measured value.
    pub measured: String,
    /// What the plugin (or the math) claims.
    pub claimed: String,
    /// The tolerance the pass is judged with.
    pub tolerance: String,
    /// Whether it passed.
    pub pass: bool,
    /// Why it failed, in words a newcomer can act on (empty on a pass).
    pub detail: String,
}

/// Every row of a conformance run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The rows, in run order.
    pub rows: Vec<Row>,
}

/// Formats a float for the table.
pub fn num(v: f64) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

impl Report {
    /// Adds a row.
    pub fn push(
        &mut self,
        plugin: &str,
        check: impl Into<String>,
        measured: impl Into<String>,
        claimed: impl Into<String>,
        tolerance: impl Into<String>,
        pass: bool,
        detail: impl Into<String>,
    ) {
        let row = Row {
            plugin: plugin.to_string(),
            check: check.into(),
            measured: measured.into(),
            claimed: claimed.into(),
            tolerance: tolerance.into(),
            pass,
            detail: if pass { String::new() } else { detail.into() },
        };
        tracing::info!(plugin = %row.plugin, check = %row.check, measured = %row.measured, pass = row.pass, "conformance");
        self.rows.push(row);
    }

    /// Adds a row for a check that could not run: it fails, with the error as its detail.
    pub fn error(&mut self, plugin: &str, check: impl Into<String>, err: impl fmt::Display) {
        self.push(plugin, check, "error", "-", "-", false, err.to_string());
    }

    /// Whether every row passed.
    pub fn all_passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// The failing rows.
    pub fn failures(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| !r.pass).collect()
    }

    /// Appends another report's rows.
    pub fn extend(&mut self, other: Report) {
        self.rows.extend(other.rows);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = [
            "plugin",
            "check",
            "measured",
            "claimed",
            "tolerance",
            "pass",
        ];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.plugin.clone(),
                    r.check.clone(),
                    r.measured.clone(),
                    r.claimed.clone(),
                    r.tolerance.clone(),
                    if r.pass { "pass".into() } else { "FAIL".into() },
                ]
            })
            .collect();
        let mut width = head.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cols: &[String]| -> fmt::Result {
            let parts: Vec<String> = cols
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            writeln!(f, "| {} |", parts.join(" | "))
        };
        line(f, &head.map(String::from))?;
        writeln!(f, "|{}|", width.map(|w| "-".repeat(w + 2)).join("|"))?;
        for row in &cells {
            line(f, row)?;
        }
        let failed = self.failures();
        writeln!(
            f,
            "\n{} checks, {} passed, {} failed",
            self.rows.len(),
            self.rows.len() - failed.len(),
            failed.len()
        )?;
        for r in failed {
            writeln!(f, "FAIL {} — {}: {}", r.plugin, r.check, r.detail)?;
        }
        Ok(())
    }
}
