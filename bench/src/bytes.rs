//! Bytes per client per round, dense and compressed, and what compression does to the final
//! metrics: the same synthetic federated simulation (identical data, seeds and initial weights)
//! with `compression = none`, `f16` and `int8`. Upload bytes are the signed payloads as encoded
//! for the wire; download bytes are the round's global state and training config.

use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_protocol::Compression;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::simulate::{Arm, SimulationConfig, run_simulation};
use mpcl_simulations::synthetic::SyntheticConfig;
use serde::{Deserialize, Serialize};

use crate::BenchError;

/// Which simulation the bytes were measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BytesSetup {
    /// `tiny` or `default` model configuration.
    pub model: String,
    pub parameters: usize,
    pub subjects: usize,
    pub rounds: u64,
    pub local_epochs: u32,
    pub learning_rate: f64,
}

/// One compression choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BytesRow {
    pub model: String,
    pub compression: Compression,
    /// Mean upload bytes per client per round.
    pub up_bytes_per_client: f64,
    /// `up_bytes_per_client` over the uncompressed run's.
    pub up_ratio: f64,
    /// Mean download bytes per client per round (never compressed).
    pub down_bytes_per_client: f64,
    pub final_kl: f64,
    pub final_cosine: f64,
    /// Relative change of the final KL against the uncompressed run, percent.
    pub kl_change_percent: f64,
    /// Final KL of the label prior on the same test samples.
    pub label_prior_kl: f64,
}

/// Runs the three simulations on `subjects` synthetic subjects.
pub fn measure(
    model_name: &str,
    model: &ModelConfig,
    subjects: usize,
    rounds: u64,
    local_epochs: u32,
    learning_rate: f64,
) -> Result<(BytesSetup, Vec<BytesRow>), BenchError> {
    let mut rows: Vec<BytesRow> = Vec::new();
    let mut parameters = 0;
    for compression in Compression::ALL {
        let config = SimulationConfig {
            dataset: "synthetic".into(),
            synthetic: SyntheticConfig {
                subjects,
                trials_per_subject: 12,
                windows_per_trial: 3,
                ..SyntheticConfig::default()
            },
            protocol: EvaluationProtocol::SubjectDependent {
                test_fraction: 0.25,
            },
            model: model.clone(),
            rounds,
            training: TrainingSettings {
                local_epochs,
                batch_size: 16,
                learning_rate,
                compression,
                ..TrainingSettings::default()
            },
            arms: vec![Arm::Federated, Arm::LabelPrior],
            ..SimulationConfig::default()
        };
        let result = run_simulation(&config, None, false).map_err(|e| BenchError::Measure {
            what: format!("{compression} simulation"),
            message: e.to_string(),
        })?;
        let federated: Vec<_> = result
            .rounds
            .iter()
            .filter(|r| r.arm == Arm::Federated)
            .collect();
        let prior = result
            .rounds
            .iter()
            .rev()
            .find(|r| r.arm == Arm::LabelPrior)
            .map(|r| r.metrics.kl)
            .unwrap_or(f64::NAN);
        let last = federated.last().ok_or_else(|| BenchError::Measure {
            what: format!("{compression} simulation"),
            message: "no federated round".into(),
        })?;
        if let Some(states) = result.final_states.get(&Arm::Federated) {
            parameters = states[0].parameters.value_count();
        }
        let per_client = |bytes: u64| bytes as f64 / result.subjects.max(1) as f64;
        let rounds_run = federated.len() as f64;
        let up = federated
            .iter()
            .map(|r| per_client(r.bytes_up))
            .sum::<f64>()
            / rounds_run;
        let down = federated
            .iter()
            .map(|r| per_client(r.bytes_down))
            .sum::<f64>()
            / rounds_run;
        let (dense_up, dense_kl) = rows
            .first()
            .map(|d| (d.up_bytes_per_client, d.final_kl))
            .unwrap_or((up, last.metrics.kl));
        rows.push(BytesRow {
            model: model_name.to_string(),
            compression,
            up_bytes_per_client: up,
            up_ratio: up / dense_up,
            down_bytes_per_client: down,
            final_kl: last.metrics.kl,
            final_cosine: last.metrics.cosine,
            kl_change_percent: 100.0 * (last.metrics.kl - dense_kl) / dense_kl,
            label_prior_kl: prior,
        });
    }
    Ok((
        BytesSetup {
            model: model_name.to_string(),
            parameters,
            subjects,
            rounds,
            local_epochs,
            learning_rate,
        },
        rows,
    ))
}
