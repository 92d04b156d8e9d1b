//! `mpcl train`: centralized training and evaluation under a protocol, with the config, the
//! metrics (beside the label-prior baseline) and the trained models written to an output folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_model::model_file::{MODEL_EXTENSION, Provenance, local_run_id};
use mpcl_model::{DeviceChoice, DeviceError, ModelConfig, ModelError, TrainOptions};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::centralized::train_centralized;
use crate::dataset::{LoadError, load_dataset};
use crate::evaluation::{EvaluationProtocol, partitions};
use crate::normalize::normalize_per_subject;
use crate::report::MetricsTable;
use crate::saved_model::{model_file_for, split_provenance};
use crate::synthetic::SyntheticConfig;

/// Everything that defines a training run; written as `config.json` next to its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainJobConfig {
    pub dataset: String,
    pub synthetic: SyntheticConfig,
    pub model: ModelConfig,
    pub training: TrainOptions,
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
    Split(#[from] mpcl_model::data::split::SplitError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    ModelFile(Box<mpcl_model::ModelFileError>),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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
    pub wall_seconds: f64,
}

impl TrainJobResult {
    /// The model beside the label prior.
    pub fn table(&self) -> MetricsTable {
        let mut table = MetricsTable::default();
        table.push("MPCL (centralized)", self.model);
        table.push("label prior", self.label_prior);
        table
    }
}

/// Runs the job, writing `config.json`, `metrics.json`, `metrics.md` and one model file per
/// partition (`model.mpcl`, or `model-fold-K.mpcl`; see `mpcl_model::model_file`) into `out`.
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
    let parts = partitions(&dataset, config.protocol, config.seed)?;
    let mut labels: Vec<&[f32]> = Vec::new();
    let mut predictions: Vec<Vec<f32>> = Vec::new();
    let mut priors: Vec<Vec<f32>> = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        tracing::info!(partition = %part.name, train = part.train.len(), test = part.test.len(), "training");
        // Each subject's features standardised with its own (label-free) statistics, as in the
        // simulations, so `mpcl train` and the centralized arm of `mpcl simulate` agree.
        let normalized = normalize_per_subject(&dataset, &part.train);
        let train_set = normalized.subset(&part.train);
        let test_set = normalized.subset(&part.test);
        let trained = train_centralized(
            &train_set,
            &config.model,
            &TrainOptions {
                seed: config.training.seed ^ index as u64,
                ..config.training.clone()
            },
            &selected.device,
            config.seed,
        )?;
        predictions.extend(trained.predict(&test_set));
        let prior = train_set.label_prior();
        priors.extend(std::iter::repeat_n(prior, part.test.len()));
        labels.extend(
            part.test
                .iter()
                .map(|&i| dataset.samples[i].label.as_slice()),
        );
        let name = if parts.len() == 1 {
            format!("model.{MODEL_EXTENSION}")
        } else {
            format!("model-fold-{}.{MODEL_EXTENSION}", index + 1)
        };
        let fold_predictions = &predictions[predictions.len() - part.test.len()..];
        let provenance = Provenance {
            source: "mpcl train".to_string(),
            run_id: local_run_id(&config_text),
            round: config.training.epochs as u64,
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
                config.seed,
                index,
                parts.len(),
            )),
            mpcl_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let path = out.join(name);
        model_file_for(
            &trained.model.global_state(),
            &train_set,
            &config.model,
            provenance,
        )
        .write(&path)
        .map_err(|e| JobError::ModelFile(Box::new(e)))?;
    }
    let result = TrainJobResult {
        dataset: dataset.name.clone(),
        protocol: config.protocol.to_string(),
        device: selected.description,
        model: evaluate(
            labels
                .iter()
                .copied()
                .zip(predictions.iter().map(|p| p.as_slice())),
        ),
        label_prior: evaluate(
            labels
                .iter()
                .copied()
                .zip(priors.iter().map(|p| p.as_slice())),
        ),
        partitions: parts.len(),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("metrics.json"), &result)?;
    write_text(&out.join("metrics.md"), &result.table().to_markdown())?;
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
