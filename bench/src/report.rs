//! The result table (printed) and its machine-readable form (JSON).

use serde::Serialize;

use crate::stats::Summary;

/// One figure of the table: the measured value, its in-run baseline and its target.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Benchmark group (`setup`, `throughput`, …; what `--only` selects).
    pub group: String,
    /// Human-readable figure name.
    pub figure: String,
    /// Unit of `median`/`p95`.
    pub unit: String,
    /// Summary of the trials (a single value is a summary with n = 1).
    pub value: Summary,
    /// What the baseline is, when there is one.
    pub baseline_label: Option<String>,
    /// Summary of the baseline trials of the same run.
    pub baseline: Option<Summary>,
    /// `value.median / baseline.median`.
    pub ratio: Option<f64>,
    /// The target, as text (informational, never asserted).
    pub target: Option<String>,
    /// Whether the median (or the figure the target names) meets the target.
    pub met: Option<bool>,
    /// Remarks (how the figure was obtained).
    pub note: Option<String>,
}

impl Row {
    /// A row without baseline or target.
    pub fn new(group: &str, figure: &str, unit: &str, value: Summary) -> Row {
        Row {
            group: group.into(),
            figure: figure.into(),
            unit: unit.into(),
            value,
            baseline_label: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: None,
        }
    }

    /// Adds the in-run baseline and the ratio of the medians.
    pub fn baseline(mut self, label: &str, b: Option<Summary>) -> Row {
        if let Some(b) = b {
            if b.median != 0.0 {
                self.ratio = Some(self.value.median / b.median);
            }
            self.baseline = Some(b);
            self.baseline_label = Some(label.into());
        }
        self
    }

    /// Adds a target and whether it is met.
    pub fn target(mut self, text: &str, met: bool) -> Row {
        self.target = Some(text.into());
        self.met = Some(met);
        self
    }

    /// Adds a remark.
    pub fn note(mut self, text: impl Into<String>) -> Row {
        self.note = Some(text.into());
        self
    }
}

/// Formats a number with a sensible number of significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The table as Markdown (also what is printed to stdout).
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| group | figure | median | p95 | n | baseline (median) | ratio | target | met |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---|---:|---|---|\n");
    for r in rows {
        let baseline = match (&r.baseline_label, &r.baseline) {
            (Some(l), Some(b)) => format!("{} {} ({l})", num(b.median), r.unit),
            _ => String::new(),
        };
        let ratio = r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default();
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} {} | {} | {} | {} | {} | {} |\n",
            r.group,
            r.figure,
            num(r.value.median),
            r.unit,
            num(r.value.p95),
            r.unit,
            r.value.n,
            baseline,
            ratio,
            r.target.as_deref().unwrap_or(""),
            met,
        ));
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| r.note.is_some()).collect();
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for r in notes {
            out.push_str(&format!(
                "- {} / {}: {}\n",
                r.group,
                r.figure,
                r.note.as_deref().unwrap_or("")
            ));
        }
    }
    out
}
