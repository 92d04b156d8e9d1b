//! The files `mpcl simulate` writes next to its results besides `config.json` and
//! `rounds.jsonl` (which it writes as it goes): the final table, the pooled rounds, the
//! per-subject metrics, the coordinator's federated evaluation of each federated arm, and the
//! plots.

use std::path::Path;

use crate::plots;
use crate::simulate::SimulationError;
use crate::simulation_result::SimulationResult;
use crate::train_job::write_text;

/// The coordinator's federated evaluation of each federated arm, one JSON line per model.
pub const FEDERATED_EVALUATION_FILE: &str = "federated_evaluation.jsonl";

/// Writes the result's files into `dir`.
pub fn write_outputs(dir: &Path, result: &SimulationResult) -> Result<(), SimulationError> {
    write_text(&dir.join("final.csv"), &result.final_table.to_csv())?;
    let mut markdown = format!(
        "{}: {} subjects, {}, {} mode, device {}, {:.1} s\n\n",
        result.dataset,
        result.subjects,
        result.protocol,
        result.mode,
        result.device,
        result.wall_seconds
    );
    markdown.push_str(&result.final_table.to_markdown());
    for note in &result.notes {
        markdown.push_str(&format!("\nNote: {note}\n"));
    }
    write_text(&dir.join("final.md"), &markdown)?;
    let mut pooled = String::new();
    for round in &result.rounds {
        pooled.push_str(&serde_json::to_string(round).expect("plain data serialises"));
        pooled.push('\n');
    }
    write_text(&dir.join("rounds_pooled.jsonl"), &pooled)?;
    let mut csv =
        String::from("arm,subject,chebyshev,clark,canberra,kl,cosine,intersection,samples\n");
    for s in &result.per_subject {
        let v = s.metrics.values();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            s.arm.name(),
            s.subject,
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            s.metrics.samples
        ));
    }
    write_text(&dir.join("per_subject.csv"), &csv)?;
    let mut federated = String::new();
    for (arm, partitions) in &result.federated_evaluations {
        for (partition, metrics) in partitions.iter().enumerate() {
            for m in metrics {
                let line = serde_json::json!({"arm": arm, "partition": partition, "metrics": m});
                federated.push_str(&line.to_string());
                federated.push('\n');
            }
        }
    }
    if !federated.is_empty() {
        write_text(&dir.join(FEDERATED_EVALUATION_FILE), &federated)?;
    }
    plots::write_plots(dir, result).map_err(|e| SimulationError::Config(format!("plot: {e}")))?;
    Ok(())
}
