//! Tables of the six metrics, rendered for the terminal, Markdown and CSV, so that every command
//! shows results the same way, with the label-prior baseline beside the models.

use mpcl_model::metrics::{DistributionMetrics, METRIC_NAMES};
use serde::{Deserialize, Serialize};

/// Named rows of metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsTable {
    pub rows: Vec<(String, DistributionMetrics)>,
}

impl MetricsTable {
    /// Appends a row.
    pub fn push(&mut self, name: impl Into<String>, metrics: DistributionMetrics) {
        self.rows.push((name.into(), metrics));
    }

    fn header() -> Vec<String> {
        let mut header = vec!["arm".to_string()];
        header.extend(
            METRIC_NAMES
                .iter()
                .map(|(name, higher)| format!("{name} {}", if *higher { "↑" } else { "↓" })),
        );
        header.push("samples".to_string());
        header
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|(name, m)| {
                let mut row = vec![name.clone()];
                row.extend(m.values().iter().map(|v| format!("{v:.4}")));
                row.push(m.samples.to_string());
                row
            })
            .collect()
    }

    /// A fixed-width table for the terminal.
    pub fn to_text(&self) -> String {
        let header = Self::header();
        let cells = self.cells();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            row.iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    if i == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = vec![line(&header)];
        out.push(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.extend(cells.iter().map(|r| line(r)));
        out.join("\n")
    }

    /// A Markdown table.
    pub fn to_markdown(&self) -> String {
        let header = Self::header();
        let mut out = vec![
            format!("| {} |", header.join(" | ")),
            format!("|{}|", vec!["---"; header.len()].join("|")),
        ];
        out.extend(
            self.cells()
                .iter()
                .map(|r| format!("| {} |", r.join(" | "))),
        );
        out.join("\n") + "\n"
    }

    /// CSV with plain metric names as columns.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("arm");
        for (name, _) in METRIC_NAMES {
            out.push(',');
            out.push_str(name);
        }
        out.push_str(",samples\n");
        for (name, m) in &self.rows {
            out.push_str(&csv_field(name));
            for v in m.values() {
                out.push_str(&format!(",{v}"));
            }
            out.push_str(&format!(",{}\n", m.samples));
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_row_in_every_format() {
        let mut table = MetricsTable::default();
        table.push(
            "federated",
            DistributionMetrics {
                kl: 0.25,
                samples: 10,
                ..Default::default()
            },
        );
        table.push(
            "label prior, \"mean\"",
            DistributionMetrics {
                kl: 0.5,
                samples: 10,
                ..Default::default()
            },
        );
        let text = table.to_text();
        assert!(text.contains("federated") && text.contains("0.2500") && text.contains("kl ↓"));
        let markdown = table.to_markdown();
        assert_eq!(markdown.lines().count(), 4);
        let csv = table.to_csv();
        assert!(csv.starts_with("arm,chebyshev,clark,canberra,kl,cosine,intersection,samples\n"));
        assert!(csv.contains("\"label prior, \"\"mean\"\"\",0,0,0,0.5,0,0,10"));
    }
}
