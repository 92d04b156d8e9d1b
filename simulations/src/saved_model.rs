//! Using a model file away from the run that made it: `mpcl evaluate` (the six metrics beside
//! the label prior) and `mpcl predict` (one predicted distribution per sample, as CSV), and the
//! helper with which `mpcl train` and `mpcl simulate` write their models.
//!
//! Inputs are standardised by the file's rule ([`InputStandardisation`]): each subject with its
//! own label-free statistics, then the stored pooled statistics. Under `--protocol P` the data is
//! split as the run split it (the file's seed and subjects), each subject's statistics come from
//! its training side, and the metrics are over the test side of the model's own partition (or of
//! every partition when the file was not made under P). Without a protocol every sample counts
//! and each subject's statistics come from all of its samples.

use std::path::{Path, PathBuf};

use mpcl_data::{Dataset, Standardizer};
use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_model::{Device, ModelError, MpclModel, TensorDataset};
use mpcl_protocol::messages::GlobalState;
use mpcl_protocol::model_file::{InputStandardisation, Provenance, SplitProvenance};
use mpcl_protocol::{ModelFile, ModelFileError};
use thiserror::Error;

use crate::evaluation::{EvaluationProtocol, partitions};
use crate::report::MetricsTable;

/// Errors of evaluating or predicting with a model file; each names the file or output.
#[derive(Debug, Error)]
pub enum SavedModelError {
    #[error(transparent)]
    File(#[from] ModelFileError),
    #[error("model file {} holds a model that cannot be built: {source}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("cannot split `{data}` for model file {}: {source}", path.display())]
    Split {
        path: PathBuf,
        data: String,
        source: mpcl_data::split::SplitError,
    },
    #[error("model file {} records protocol `{protocol}`, which this build cannot read: {reason}", path.display())]
    Protocol {
        path: PathBuf,
        protocol: String,
        reason: String,
    },
    #[error("no samples to evaluate in `{data}`")]
    NoSamples { data: String },
    #[error("cannot write predictions to {}: {source}", path.display())]
    Write { path: PathBuf, source: csv::Error },
}

/// A model file's metrics on some data, beside its label prior on the same samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEvaluation {
    pub model: DistributionMetrics,
    pub label_prior: DistributionMetrics,
    /// Which samples, in words.
    pub on: String,
}

impl ModelEvaluation {
    /// The model beside the label prior.
    pub fn table(&self) -> MetricsTable {
        let mut table = MetricsTable::default();
        table.push("model", self.model);
        table.push("label prior", self.label_prior);
        table
    }
}

/// The model file of a state trained on `train_set` (already standardised per subject): the
/// pooled statistics and the label prior of that training data.
pub fn model_file_for(
    state: &GlobalState,
    train_set: &Dataset,
    config: &mpcl_data::ModelConfig,
    provenance: Provenance,
) -> ModelFile {
    ModelFile {
        schema: train_set.schema.clone(),
        config: config.clone(),
        state: state.clone(),
        standardisation: InputStandardisation::per_subject_then(Standardizer::fit(train_set)),
        label_prior: train_set.label_prior(),
        provenance,
    }
}

/// The split of a local run, for its model files.
pub fn split_provenance(
    data_spec: &str,
    dataset: &Dataset,
    protocol: EvaluationProtocol,
    validation_fraction: f64,
    seed: u64,
    partition: usize,
    partitions: usize,
) -> SplitProvenance {
    SplitProvenance {
        dataset: data_spec.to_string(),
        protocol: protocol.spec(),
        validation_fraction,
        seed,
        subjects: dataset.subjects(),
        partition,
        partitions,
    }
}

fn model_on(file: &ModelFile, path: &Path, device: &Device) -> Result<MpclModel, SavedModelError> {
    MpclModel::from_file(file, device).map_err(|source| SavedModelError::Model {
        path: path.to_path_buf(),
        source,
    })
}

fn check_schema(
    file: &ModelFile,
    path: &Path,
    dataset: &Dataset,
    data_spec: &str,
) -> Result<(), ModelFileError> {
    file.check_schema(&dataset.schema)
        .map_err(|source| ModelFileError::Schema {
            path: path.to_path_buf(),
            data: data_spec.to_string(),
            source,
        })
}

/// The metrics of the model in `file` (read from `path`) on `dataset` (read from `data_spec`),
/// beside its label prior; see the module documentation for which samples count.
pub fn evaluate_saved(
    file: &ModelFile,
    path: &Path,
    dataset: &Dataset,
    data_spec: &str,
    protocol: Option<EvaluationProtocol>,
    device: &Device,
) -> Result<ModelEvaluation, SavedModelError> {
    check_schema(file, path, dataset, data_spec)?;
    let model = model_on(file, path, device)?;
    let (data, groups, on) = match protocol {
        None => {
            let all: Vec<usize> = (0..dataset.samples.len()).collect();
            (
                dataset.clone(),
                vec![(all.clone(), all)],
                format!("all {} samples of `{data_spec}`", dataset.samples.len()),
            )
        }
        Some(protocol) => {
            let split = file.provenance.split.as_ref();
            // The run's subjects when the data holds all of them (the split depends on them).
            let data = match split {
                Some(split)
                    if dataset.subjects() != split.subjects
                        && split
                            .subjects
                            .iter()
                            .all(|s| dataset.subjects().contains(s)) =>
                {
                    let rows: Vec<usize> = (0..dataset.samples.len())
                        .filter(|&i| split.subjects.contains(&dataset.samples[i].subject))
                        .collect();
                    dataset.subset(&rows)
                }
                _ => dataset.clone(),
            };
            let seed = split.map_or(0, |s| s.seed);
            let validation_fraction = split.map_or(0.0, |s| s.validation_fraction);
            let parts =
                partitions(&data, protocol, validation_fraction, seed).map_err(|source| {
                    SavedModelError::Split {
                        path: path.to_path_buf(),
                        data: data_spec.to_string(),
                        source,
                    }
                })?;
            let own = split.filter(|s| {
                s.protocol.parse::<EvaluationProtocol>().ok() == Some(protocol)
                    && s.partitions == parts.len()
            });
            let (chosen, which): (Vec<_>, String) = match own {
                Some(s) if s.partition < parts.len() => (
                    vec![parts[s.partition].clone()],
                    format!("partition {}", parts[s.partition].name),
                ),
                _ => (parts, "every partition".to_string()),
            };
            let groups = chosen.into_iter().map(|p| (p.train, p.test)).collect();
            (
                data,
                groups,
                format!("test samples of `{data_spec}` under {protocol}, seed {seed}, {which}"),
            )
        }
    };
    let mut labels: Vec<&[f32]> = Vec::new();
    let mut predictions: Vec<Vec<f32>> = Vec::new();
    for (fit_rows, rows) in &groups {
        let tensors =
            TensorDataset::standardised(&data, &file.standardisation, fit_rows, model.device());
        predictions.extend(model.predict_rows(&tensors, rows));
        labels.extend(rows.iter().map(|&i| data.samples[i].label.as_slice()));
    }
    if labels.is_empty() {
        return Err(SavedModelError::NoSamples {
            data: data_spec.to_string(),
        });
    }
    let pairs =
        |p: &[Vec<f32>]| evaluate(labels.iter().copied().zip(p.iter().map(|v| v.as_slice())));
    let prior = vec![file.label_prior.clone(); labels.len()];
    Ok(ModelEvaluation {
        model: pairs(&predictions),
        label_prior: pairs(&prior),
        on,
    })
}

/// Predicted distributions for every sample of `dataset`, in order; each subject standardised
/// with the statistics of all of its samples.
pub fn predict_saved(
    file: &ModelFile,
    path: &Path,
    dataset: &Dataset,
    data_spec: &str,
    device: &Device,
) -> Result<Vec<Vec<f32>>, SavedModelError> {
    check_schema(file, path, dataset, data_spec)?;
    let model = model_on(file, path, device)?;
    let all: Vec<usize> = (0..dataset.samples.len()).collect();
    let tensors = TensorDataset::standardised(dataset, &file.standardisation, &all, model.device());
    Ok(model.predict(&tensors))
}

/// Writes one row per sample: `subject,trial,time` and one probability column per emotion
/// (named after it), readable by pandas' `read_csv` as it is.
pub fn write_predictions(
    path: &Path,
    dataset: &Dataset,
    predictions: &[Vec<f32>],
) -> Result<(), SavedModelError> {
    let error = |source| SavedModelError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = csv::Writer::from_path(path).map_err(error)?;
    let mut header = vec!["subject".to_string(), "trial".into(), "time".into()];
    header.extend(dataset.schema.emotions.iter().cloned());
    writer.write_record(&header).map_err(error)?;
    for (sample, p) in dataset.samples.iter().zip(predictions) {
        let mut row = vec![
            sample.subject.clone(),
            sample.trial.to_string(),
            sample.time.to_string(),
        ];
        row.extend(p.iter().map(|v| v.to_string()));
        writer.write_record(&row).map_err(error)?;
    }
    writer.flush().map_err(|e| error(csv::Error::from(e)))
}
