//! The table a federated run ends with (`final.md`, `final.csv` in the coordinator's output
//! folder, and printed): the global model after the last round and after the best round (the
//! lowest federated validation KL, never chosen on test), beside the label prior, each on every
//! evaluating participant's test part.
//!
//! The coordinator sees only totals (under secure aggregation it could not see more), so the
//! table gives means over all evaluated samples, not a spread over participants or a bootstrap
//! interval; `mpcl simulate`, which holds every prediction, reports those.

use std::fmt::Write as _;

use mpcl_protocol::metrics::DistributionMetrics;

use crate::evaluation::{FederatedMetrics, final_rows};

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
        "| model | chebyshev ↓ | clark ↓ | canberra ↓ | kl ↓ | cosine ↑ | intersection ↑ | samples |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (name, m) in &rows {
        let _ = write!(out, "| {name} |");
        for value in m.values() {
            let _ = write!(out, " {value:.4} |");
        }
        let _ = writeln!(out, " {} |", m.samples);
    }
    let prior = &rows[2].1;
    let _ = writeln!(out);
    for (name, m) in &rows[..2] {
        let difference = m.kl - prior.kl;
        let verdict = if difference < 0.0 {
            "lower (better) than"
        } else {
            "not lower than"
        };
        let _ = writeln!(
            out,
            "- {name}: KL {difference:+.4} against the label prior, {verdict} the prior."
        );
    }
    Some(out)
}

/// The final table as CSV: one row per model, the six metrics and the sample count.
pub fn final_csv(history: &[FederatedMetrics]) -> Option<String> {
    let rows = final_rows(history)?;
    let mut out = format!("model,{},samples\n", METRIC_NAMES.join(","));
    for (name, m) in &rows {
        let _ = writeln!(
            out,
            "\"{}\",{},{}",
            name.replace('"', "\"\""),
            csv_values(m),
            m.samples
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
        }
    }

    #[test]
    fn the_table_shows_last_best_and_prior_and_says_which_beats_the_prior() {
        let history = [
            metrics(0, 1.0, 1.1),
            metrics(1, 0.5, 0.7),
            metrics(2, 0.6, 0.9),
        ];
        let md = final_markdown("demo", &history).unwrap();
        assert!(md.contains("| global model, last round (2) |"), "{md}");
        assert!(md.contains("| global model, best round (1, by validation KL) |"));
        assert!(md.contains("| label prior |"));
        assert!(md.contains(
            "best round (1, by validation KL): KL -0.1000 against the label prior, lower"
        ));
        assert!(md.contains("last round (2): KL +0.1000 against the label prior, not lower"));
        let csv = final_csv(&history).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "model,chebyshev,clark,canberra,kl,cosine,intersection,samples"
        );
        assert!(
            lines[2].starts_with("\"global model, best round (1, by validation KL)\",0,0,0,0.7,")
        );
        assert_eq!(final_markdown("demo", &[]), None);
    }
}
