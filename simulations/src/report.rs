//! Tables of the six metrics, rendered for the terminal, Markdown and CSV, so that every command
//! shows results the same way, with the label-prior baseline beside the models.

use mpcl_model::metrics::{DistributionMetrics, METRIC_NAMES, evaluate};
use serde::{Deserialize, Serialize};

use mpcl_coordinator::prior_comparison::PriorComparison;

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
        render_text(&Self::header(), &self.cells())
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

/// One row of a final table: an arm's metrics, their spread over folds or seeds, its KL
/// difference to the label prior with a bootstrap interval, and the rounds it was chosen at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    pub name: String,
    /// Pooled over every test sample (or, over seeds, the mean of the seeds' pooled metrics).
    pub metrics: DistributionMetrics,
    /// Sample standard deviation of the six metrics over folds or seeds (absent for one).
    pub spread: Option<[f64; 6]>,
    /// KL minus the label prior's, 95% bootstrap interval over subjects (absent for the prior).
    pub prior: Option<PriorComparison>,
    /// The validation-selected round of each partition (or seed).
    pub rounds: Vec<u64>,
}

impl ArmSummary {
    /// A row from an arm's test `predictions` (concatenated over partitions of
    /// `partition_sizes` samples each).
    pub fn new(
        name: &str,
        predictions: &[Vec<f32>],
        labels: &[Vec<f32>],
        partition_sizes: &[usize],
        prior: Option<PriorComparison>,
        rounds: Vec<u64>,
    ) -> Self {
        let pairs = |range: std::ops::Range<usize>| {
            evaluate(
                labels[range.clone()]
                    .iter()
                    .zip(&predictions[range])
                    .map(|(l, p)| (l.as_slice(), p.as_slice())),
            )
        };
        let mut start = 0;
        let per_partition: Vec<DistributionMetrics> = partition_sizes
            .iter()
            .map(|&n| {
                let metrics = pairs(start..start + n);
                start += n;
                metrics
            })
            .collect();
        Self {
            name: name.to_string(),
            metrics: pairs(0..labels.len()),
            spread: spread(&per_partition),
            prior,
            rounds,
        }
    }
}

/// Sample standard deviation of each metric over `runs` (absent for fewer than two).
pub fn spread(runs: &[DistributionMetrics]) -> Option<[f64; 6]> {
    if runs.len() < 2 {
        return None;
    }
    let n = runs.len() as f64;
    let mut out = [0.0; 6];
    for (i, value) in out.iter_mut().enumerate() {
        let mean = runs.iter().map(|r| r.values()[i]).sum::<f64>() / n;
        let variance = runs
            .iter()
            .map(|r| (r.values()[i] - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        *value = variance.sqrt();
    }
    Some(out)
}

/// The final table of a run: one [`ArmSummary`] per arm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryTable {
    pub rows: Vec<ArmSummary>,
}

impl SummaryTable {
    /// Appends a row.
    pub fn push(&mut self, row: ArmSummary) {
        self.rows.push(row);
    }

    /// The row named `name`.
    pub fn row(&self, name: &str) -> Option<&ArmSummary> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn cells(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = MetricsTable::header();
        header.extend(["rounds", "KL − prior [95% CI]", "verdict"].map(String::from));
        let cells = self
            .rows
            .iter()
            .map(|r| {
                let mut row = vec![r.name.clone()];
                for (i, v) in r.metrics.values().iter().enumerate() {
                    row.push(match r.spread {
                        Some(sd) => format!("{v:.4} ± {:.4}", sd[i]),
                        None => format!("{v:.4}"),
                    });
                }
                row.push(r.metrics.samples.to_string());
                row.push(rounds_text(&r.rounds));
                match &r.prior {
                    Some(c) => {
                        row.push(c.interval_text());
                        row.push(c.verdict().to_string());
                    }
                    None => row.extend(["—".to_string(), "(reference)".to_string()]),
                }
                row
            })
            .collect();
        (header, cells)
    }

    /// A fixed-width table for the terminal.
    pub fn to_text(&self) -> String {
        let (header, cells) = self.cells();
        render_text(&header, &cells)
    }

    /// A Markdown table.
    pub fn to_markdown(&self) -> String {
        let (header, cells) = self.cells();
        let mut out = vec![
            format!("| {} |", header.join(" | ")),
            format!("|{}|", vec!["---"; header.len()].join("|")),
        ];
        out.extend(cells.iter().map(|r| format!("| {} |", r.join(" | "))));
        out.join("\n") + "\n"
    }

    /// CSV: plain metric names, their spreads (`_sd`, empty for one run), the prior comparison.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("arm");
        for (name, _) in METRIC_NAMES {
            out.push(',');
            out.push_str(name);
        }
        for (name, _) in METRIC_NAMES {
            out.push_str(&format!(",{name}_sd"));
        }
        out.push_str(
            ",samples,rounds,kl_minus_prior,kl_minus_prior_low,kl_minus_prior_high,verdict\n",
        );
        for r in &self.rows {
            out.push_str(&csv_field(&r.name));
            for v in r.metrics.values() {
                out.push_str(&format!(",{v}"));
            }
            for i in 0..6 {
                match r.spread {
                    Some(sd) => out.push_str(&format!(",{}", sd[i])),
                    None => out.push(','),
                }
            }
            out.push_str(&format!(
                ",{},{}",
                r.metrics.samples,
                csv_field(&rounds_text(&r.rounds))
            ));
            match &r.prior {
                Some(c) => out.push_str(&format!(
                    ",{},{},{},{}\n",
                    c.difference,
                    c.low,
                    c.high,
                    c.verdict()
                )),
                None => out.push_str(",,,,reference\n"),
            }
        }
        out
    }
}

fn rounds_text(rounds: &[u64]) -> String {
    rounds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_text(header: &[String], cells: &[Vec<String>]) -> String {
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
    let mut out = vec![line(header)];
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
