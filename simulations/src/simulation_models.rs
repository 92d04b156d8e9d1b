//! The model files `mpcl simulate` writes: the final global state of every arm that has one
//! (the federated arms and the centralized one), per partition, in the one model format
//! (`mpcl_model::model_file`), so a simulated study ends with models `mpcl evaluate` and
//! `mpcl predict` can use.

use std::path::Path;

use mpcl_data::Dataset;
use mpcl_model::metrics::evaluate;
use mpcl_protocol::messages::GlobalState;
use mpcl_protocol::model_file::{MODEL_EXTENSION, Provenance, local_run_id};

use crate::evaluation::Partition;
use crate::saved_model::{model_file_for, split_provenance};
use crate::simulate::{Arm, SimulationConfig, SimulationError};

/// One arm's final model on one partition, with what the simulation measured of it.
pub struct ArmModel<'a> {
    pub arm: Arm,
    /// `in-process` or `network`.
    pub mode: &'a str,
    /// The partition's index, the number of partitions, and the partition.
    pub partition: (usize, usize, &'a Partition),
    /// The dataset the partitions index (after any sampling of subjects).
    pub dataset: &'a Dataset,
    /// The partition's training and test samples, standardised per subject.
    pub train_set: &'a Dataset,
    pub test_set: &'a Dataset,
    pub state: &'a GlobalState,
    /// Rounds the arm ran, and its predictions for `test_set` after the last of them.
    pub rounds: u64,
    pub last_predictions: Option<&'a [Vec<f32>]>,
}

/// Writes `model-ARM.mpcl` (or `model-ARM-fold-K.mpcl` when there are several partitions) into
/// `dir`.
pub fn write_arm_model(
    dir: &Path,
    config: &SimulationConfig,
    model: &ArmModel<'_>,
) -> Result<(), SimulationError> {
    let (index, count, partition) = model.partition;
    let name = if count == 1 {
        format!("model-{}.{MODEL_EXTENSION}", model.arm.name())
    } else {
        format!(
            "model-{}-fold-{}.{MODEL_EXTENSION}",
            model.arm.name(),
            index + 1
        )
    };
    let config_text = serde_json::to_string_pretty(config).expect("plain data serialises");
    let metrics = model.last_predictions.map(|predictions| {
        evaluate(
            model
                .test_set
                .samples
                .iter()
                .zip(predictions)
                .map(|(s, p)| (s.label.as_slice(), p.as_slice())),
        )
    });
    let provenance = Provenance {
        source: format!("mpcl simulate ({} mode): {}", model.mode, model.arm.label()),
        run_id: local_run_id(&config_text),
        round: model.rounds,
        metrics,
        metrics_on: format!("test samples of {}", partition.name),
        split: Some(split_provenance(
            &config.dataset,
            model.dataset,
            config.protocol,
            config.selection.validation_fraction,
            config.seed,
            index,
            count,
        )),
        mpcl_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    model_file_for(model.state, model.train_set, &config.model, provenance)
        .write(dir.join(name))
        .map_err(|e| SimulationError::ModelFile(Box::new(e)))
}
