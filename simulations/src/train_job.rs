//! `mpcl train`: centralized training and evaluation under a protocol, with the config, the
//! metrics (beside the label-prior baseline) and the trained models written to an output folder.
//!
//! Each partition's validation part (carved from its training side) chooses the epoch whose
//! model is reported and saved; test samples never take part in the choice.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mpcl_data::ModelConfig;
use mpcl_data::Standardizer;
use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_model::{
    DeviceChoice, DeviceError, ModelError, MpclModel, TensorDataset, TrainOptions, train_observed,
};
use mpcl_protocol::model_file::{MODEL_EXTENSION, Provenance, local_run_id};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::centralized::cooccurrence_of;
use crate::dataset::{LoadError, load_dataset};
use crate::evaluation::{EvaluationProtocol, partitions};
use crate::normalize::normalize_per_subject;
use crate::report::{ArmSummary, SummaryTable};
use crate::saved_model::{model_file_for, split_provenance};
use crate::selection::{BestRound, SelectionSettings};
use crate::synthetic::SyntheticConfig;
use crate::uncertainty::compare_to_prior;

/// Everything that defines a training run; written as `config.json` next to its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainJobConfig {
    pub dataset: String,
    pub synthetic: SyntheticConfig,
    pub model: ModelConfig,
    pub training: TrainOptions,
    /// Which epoch's model is reported (validation part, patience in epochs).
    pub selection: SelectionSettings,
    pub protocol: EvaluationProtocol,
    pub device: DeviceChoice,
    /// Seeds initialisation and splits.
    pub seed: u64,
}

impl Default for TrainJobConfig {
    fn default() -> Self {
        Self {
            dataset: "synthetic".to_string(),
            synthetic: SyntheticConfig::default(),
            model: ModelConfig::default(),
            training: TrainOptions::default(),
            selection: SelectionSettings::default(),
            protocol: EvaluationProtocol::default(),
            device: DeviceChoice::Cpu,
            seed: 0,
        }
    }
}

/// Errors of a training job, each naming what failed.
#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot split dataset: {0}")]
    Split(#[from] mpcl_data::split::SplitError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    ModelFile(Box<mpcl_protocol::ModelFileError>),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("training config: {0}")]
    Config(String),
}

/// The outcome of a training job (also written as `metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainJobResult {
    pub dataset: String,
    pub protocol: String,
    pub device: String,
    /// Pooled over every test sample of every partition.
    pub model: DistributionMetrics,
    /// The label-prior baseline (mean training distribution of each partition) on the same samples.
    pub label_prior: DistributionMetrics,
    pub partitions: usize,
    /// The model (each partition's validation-selected epoch) beside the label prior, with
    /// spreads over folds and the bootstrap comparison.
    pub table: SummaryTable,
    pub wall_seconds: f64,
}

/// Runs the job, writing `config.json`, `metrics.json`, `metrics.md` and one model file per
/// partition (`model.mpcl`, or `model-fold-K.mpcl`; see `mpcl_model::model_file`) into `out`:
/// each partition's validation-selected epoch.
pub fn run_train_job(config: &TrainJobConfig, out: &Path) -> Result<TrainJobResult, JobError> {
    let started = Instant::now();
    std::fs::create_dir_all(out).map_err(|source| JobError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let config_text = serde_json::to_string_pretty(config).expect("plain data serialises to JSON");
    write_text(&out.join("config.json"), &config_text)?;
    let selected = config.device.resolve()?;
    tracing::info!(device = %selected.description, "training device");
    let (dataset, report) = load_dataset(&config.dataset, &config.synthetic)?;
    if !report.skipped.is_empty() {
        tracing::info!(
            skipped = report.skipped.len(),
            "samples skipped while loading (see `mpcl data inspect`)"
        );
    }
    config
        .model
        .validate(&dataset.schema)
        .map_err(ModelError::from)?;
    config.selection.validate().map_err(JobError::Config)?;
    let parts = partitions(
        &dataset,
        config.protocol,
        config.selection.validation_fraction,
        config.seed,
    )?;
    let mut labels: Vec<Vec<f32>> = Vec::new();
    let mut subjects: Vec<String> = Vec::new();
    let mut predictions: Vec<Vec<f32>> = Vec::new();
    let mut priors: Vec<Vec<f32>> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut epochs: Vec<u64> = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        tracing::info!(
            partition = %part.name,
            train = part.train.len(),
            validation = part.validation.len(),
            test = part.test.len(),
            "training"
        );
        // Each subject's features standardised with its own (label-free) statistics, as in the
        // simulations, so `mpcl train` and the centralized arm of `mpcl simulate` agree.
        let normalized = normalize_per_subject(&dataset, &part.train);
        let train_set = normalized.subset(&part.train);
        let validation_set = normalized.subset(&part.validation);
        let test_set = normalized.subset(&part.test);
        train_set.validate().map_err(ModelError::from)?;
        let standardizer = Standardizer::fit(&train_set);
        let prior = train_set.label_prior();
        let mut model = MpclModel::new(
            &dataset.schema,
            &config.model,
            &selected.device,
            config.seed,
        )?;
        model.start_at_prior(&prior);
        model.memories.set_cooccurrence(cooccurrence_of(&train_set));
        let tensors = |set| TensorDataset::new(set, &standardizer, model.device());
        let (train_tensors, validation_tensors, test_tensors) = (
            tensors(&train_set),
            tensors(&validation_set),
            tensors(&test_set),
        );
        let mut best = BestRound::default();
        let mut chosen = (model.global_state(), model.predict(&test_tensors));
        train_observed(
            &mut model,
            &train_tensors,
            &TrainOptions {
                seed: config.training.seed ^ index as u64,
                ..config.training.clone()
            },
            None,
            |epoch, model| {
                let validation_kl = (!validation_set.samples.is_empty())
                    .then(|| model.evaluate(&validation_tensors).kl);
                if best.observe(epoch as u64, validation_kl) {
                    chosen = (model.global_state(), model.predict(&test_tensors));
                }
                !best.should_stop(config.selection.patience)
            },
        );
        epochs.push(best.round().unwrap_or(0));
        predictions.extend(chosen.1);
        priors.extend(std::iter::repeat_n(prior, part.test.len()));
        labels.extend(test_set.samples.iter().map(|s| s.label.clone()));
        subjects.extend(test_set.samples.iter().map(|s| s.subject.clone()));
        sizes.push(part.test.len());
        let name = if parts.len() == 1 {
            format!("model.{MODEL_EXTENSION}")
        } else {
            format!("model-fold-{}.{MODEL_EXTENSION}", index + 1)
        };
        let fold_predictions = &predictions[predictions.len() - part.test.len()..];
        let provenance = Provenance {
            source: "mpcl train".to_string(),
            run_id: local_run_id(&config_text),
            round: best.round().unwrap_or(0),
            metrics: Some(evaluate(
                test_set
                    .samples
                    .iter()
                    .zip(fold_predictions)
                    .map(|(s, p)| (s.label.as_slice(), p.as_slice())),
            )),
            metrics_on: format!("test samples of {}", part.name),
            split: Some(split_provenance(
                &config.dataset,
                &dataset,
                config.protocol,
                config.selection.validation_fraction,
                config.seed,
                index,
                parts.len(),
            )),
            mpcl_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let path = out.join(name);
        model_file_for(&chosen.0, &train_set, &config.model, provenance)
            .write(&path)
            .map_err(|e| JobError::ModelFile(Box::new(e)))?;
    }
    let pairs = |predicted: &[Vec<f32>]| {
        evaluate(
            labels
                .iter()
                .zip(predicted)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        )
    };
    let mut table = SummaryTable::default();
    table.push(ArmSummary::new(
        "MPCL (centralized)",
        &predictions,
        &labels,
        &sizes,
        compare_to_prior(&labels, &predictions, &priors, &subjects, config.seed),
        epochs,
    ));
    table.push(ArmSummary::new(
        "label prior",
        &priors,
        &labels,
        &sizes,
        None,
        Vec::new(),
    ));
    let result = TrainJobResult {
        dataset: dataset.name.clone(),
        protocol: config.protocol.to_string(),
        device: selected.description,
        model: pairs(&predictions),
        label_prior: pairs(&priors),
        partitions: parts.len(),
        table,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("metrics.json"), &result)?;
    write_text(&out.join("metrics.md"), &result.table.to_markdown())?;
    Ok(result)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), JobError> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises to JSON");
    write_text(path, &text)
}

/// Writes `text` to `path`, naming the path on failure.
pub fn write_text(path: &Path, text: &str) -> Result<(), JobError> {
    std::fs::write(path, text).map_err(|source| JobError::Write {
        path: path.to_path_buf(),
        source,
    })
}
