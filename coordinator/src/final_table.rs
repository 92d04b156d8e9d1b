//! The table a federated run ends with (`final.md`, `final.csv` in the coordinator's output
//! folder, and printed): the global model after the last round and after the best round (the
//! lowest federated validation KL, never chosen on test), beside the label prior, each on every
//! evaluating participant's test part.
//!
//! Each metric is the mean over all evaluated samples. A model row also gives its test KL minus
//! the label prior's with a 95% bootstrap interval over participants (resampling people, whose
//! samples are not independent) and says in words whether it beats the prior. That interval
//! needs each participant's own report: under secure aggregation the coordinator sees only the
//! summed reports, so the table gives the point difference and says that no interval exists.

use std::fmt::Write as _;

use mpcl_protocol::metrics::DistributionMetrics;

use crate::evaluation::{FederatedMetrics, FinalRow, final_rows};

/// Output file of the Markdown table.
pub const FINAL_MARKDOWN_FILE: &str = "final.md";
/// Output file of the CSV table.
pub const FINAL_CSV_FILE: &str = "final.csv";

const METRIC_NAMES: [&str; 6] = [
    "chebyshev",
    "clark",
    "canberra",
    "kl",
    "cosine",
    "intersection",
];

/// The final table as Markdown (`None` when nothing was evaluated).
pub fn final_markdown(run_name: &str, history: &[FederatedMetrics]) -> Option<String> {
    let rows = final_rows(history)?;
    let last = history.iter().max_by_key(|m| m.round)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Run `{run_name}`: federated evaluation\n\nEach participant's own test part (never trained on, never used to choose a round): {} samples from {} participants. The best round is the one with the lowest validation KL.\n",
        last.test.samples, last.clients
    );
    let _ = writeln!(
        out,
        "| model | chebyshev ↓ | clark ↓ | canberra ↓ | kl ↓ | cosine ↑ | intersection ↑ | samples | KL − prior [95% CI over participants] |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let _ = write!(out, "| {} |", row.name);
        for value in row.test.values() {
            let _ = write!(out, " {value:.4} |");
        }
        let interval = row
            .prior_comparison
            .map_or_else(|| "—".to_string(), |c| c.interval_text());
        let _ = writeln!(out, " {} | {interval} |", row.test.samples);
    }
    let prior = &rows[2].test;
    let _ = writeln!(out);
    for row in &rows[..2] {
        let _ = writeln!(out, "- {}: {}", row.name, verdict(row, prior));
    }
    Some(out)
}

/// A model row's comparison with the label prior, in words.
fn verdict(row: &FinalRow, prior: &DistributionMetrics) -> String {
    match row.prior_comparison {
        Some(c) => format!(
            "KL {} against the label prior (95% bootstrap interval over {} participants): {}.",
            c.interval_text(),
            c.subjects,
            c.verdict()
        ),
        None => {
            let difference = row.test.kl - prior.kl;
            let lower = if difference < 0.0 {
                "lower (better) than"
            } else {
                "not lower than"
            };
            format!(
                "KL {difference:+.4} against the label prior, {lower} the prior; no interval, because the coordinator saw only summed reports (secure aggregation) or fewer than two participants, so this is not evidence either way."
            )
        }
    }
}

/// The final table as CSV: one row per model, the six metrics, the sample count and the KL
/// difference to the prior with its interval (empty where there is none).
pub fn final_csv(history: &[FederatedMetrics]) -> Option<String> {
    let rows = final_rows(history)?;
    let mut out = format!(
        "model,{},samples,kl_minus_prior,kl_minus_prior_low,kl_minus_prior_high\n",
        METRIC_NAMES.join(",")
    );
    for row in &rows {
        let interval = row.prior_comparison.map_or_else(
            || ",,".to_string(),
            |c| format!("{},{},{}", c.difference, c.low, c.high),
        );
        let _ = writeln!(
            out,
            "\"{}\",{},{},{interval}",
            row.name.replace('"', "\"\""),
            csv_values(&row.test),
            row.test.samples
        );
    }
    Some(out)
}

fn csv_values(m: &DistributionMetrics) -> String {
    m.values()
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior_comparison::PriorComparison;

    fn metrics(round: u64, validation_kl: f64, test_kl: f64) -> FederatedMetrics {
        let m = |kl: f64| DistributionMetrics {
            kl,
            samples: 12,
            ..DistributionMetrics::default()
        };
        FederatedMetrics {
            round,
            clients: 3,
            validation: m(validation_kl),
            test: m(test_kl),
            prior_validation: m(0.9),
            prior_test: m(0.8),
            prior_comparison: None,
        }
    }

    #[test]
    fn the_table_shows_last_best_and_prior_and_says_which_beats_the_prior() {
        let mut history = [
            metrics(0, 1.0, 1.1),
            metrics(1, 0.5, 0.7),
            metrics(2, 0.6, 0.9),
        ];
        // Round 1 was evaluated in plain (with an interval), round 2 under secure aggregation.
        history[1].prior_comparison = Some(PriorComparison {
            difference: -0.1,
            low: -0.15,
            high: -0.05,
            subjects: 3,
        });
        let md = final_markdown("demo", &history).unwrap();
        assert!(md.contains("| global model, last round (2) |"), "{md}");
        assert!(md.contains("| global model, best round (1, by validation KL) |"));
        assert!(md.contains("| label prior |"));
        assert!(md.contains(
            "best round (1, by validation KL): KL -0.1000 [-0.1500, -0.0500] against the label prior (95% bootstrap interval over 3 participants): beats the label prior."
        ), "{md}");
        assert!(md.contains("| 12 | -0.1000 [-0.1500, -0.0500] |"), "{md}");
        assert!(md.contains(
            "last round (2): KL +0.1000 against the label prior, not lower than the prior; no interval"
        ));
        let csv = final_csv(&history).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "model,chebyshev,clark,canberra,kl,cosine,intersection,samples,kl_minus_prior,kl_minus_prior_low,kl_minus_prior_high"
        );
        assert!(
            lines[2].starts_with("\"global model, best round (1, by validation KL)\",0,0,0,0.7,")
        );
        assert!(lines[2].ends_with(",12,-0.1,-0.15,-0.05"), "{}", lines[2]);
        assert!(lines[1].ends_with(",12,,,"), "{}", lines[1]);
        assert_eq!(final_markdown("demo", &[]), None);
    }
}
