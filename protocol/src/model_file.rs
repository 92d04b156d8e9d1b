//! The trained model as one file: everything needed to use a model away from the run that made
//! it, in a versioned, checksummed format that every mpcl job writes (`mpcl train`,
//! `mpcl simulate`, `mpcl export` from a coordinator's output) and that `mpcl evaluate` and
//! `mpcl predict` read.
//!
//! A file holds the network's gradient-trained parameters (named vectors, see
//! `mpcl_model::parameters`), the prototype banks and the co-occurrence statistics (the global
//! memories), the dataset schema, the [`ModelConfig`], how inputs are standardised
//! ([`InputStandardisation`]), the label prior of the model's training data (the baseline every
//! evaluation prints beside the model) and the provenance ([`Provenance`]: run id, round, the
//! run's metrics of this model, the mpcl version).
//!
//! File layout (all integers little-endian), the same scheme as the coordinator's checkpoints:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `MPCLMODL` |
//! | 4 | format version (currently 1) |
//! | 8 | payload length |
//! | 32 | SHA-256 of the payload |
//! | n | payload: the [`ModelFile`] encoded with bincode 2 (serde, standard config) |
//!
//! A file is written to a temporary file in the target's directory, synced and renamed over the
//! target, so a crash never leaves a half-written model under the target's name.
//!
//! The format lives here, free of burn, so that it can be fuzzed and read by tools that never
//! build a network; `mpcl_model` turns a file into a network (`MpclModel::from_file`) and back
//! (`MpclModel::to_file`), and applies its standardisation (`TensorDataset::standardised`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use mpcl_data::{ModelConfig, Schema, Standardizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::messages::GlobalState;
use crate::metrics::DistributionMetrics;
use crate::sealed_file::{self, SealError};

/// Magic bytes opening every model file.
pub const MODEL_MAGIC: [u8; 8] = *b"MPCLMODL";
/// The model file format version this build writes and reads.
pub const MODEL_FORMAT_VERSION: u32 = 1;
/// The file extension mpcl uses for model files.
pub const MODEL_EXTENSION: &str = "mpcl";
/// The coordinator checkpoint's magic, recognised to give a helpful error.
const CHECKPOINT_MAGIC: [u8; 8] = *b"MPCLCKPT";
/// Most memory (2^34 bytes) decoding a model file may claim, however large it is.
const MAX_CLAIM_BITS: u32 = 34;

/// How a subject's own (stage 1) statistics are obtained. One rule today; the enum makes the
/// rule explicit in the file so a later format can add others without guessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubjectStatistics {
    /// Mean and population standard deviation of each feature over the subject's own samples:
    /// under an evaluation protocol its samples on the training side of the split when it has
    /// any there, otherwise (a held-out or new subject) all of its samples. Only features are
    /// used, never labels, so a new participant can standardise its recordings itself.
    OwnSamples,
}

/// How inputs are standardised before the network sees them, in two stages:
///
/// 1. every subject's features are standardised with that subject's own statistics
///    ([`SubjectStatistics`]; physiological levels differ a lot between people);
/// 2. the result is standardised with the `pooled` statistics stored here: those of the
///    model's (stage-1-standardised) training data. A federation has no pooled statistics
///    (each participant standardises with its own only), so its files store the identity
///    (mean 0, standard deviation 1), which leaves values unchanged bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputStandardisation {
    pub per_subject: SubjectStatistics,
    pub pooled: Standardizer,
}

impl InputStandardisation {
    /// Per-subject statistics followed by `pooled`.
    pub fn per_subject_then(pooled: Standardizer) -> Self {
        Self {
            per_subject: SubjectStatistics::OwnSamples,
            pooled,
        }
    }

    /// Per-subject statistics only (stage 2 is the identity), as a federation trains.
    pub fn per_subject_only(schema: &Schema) -> Self {
        Self::per_subject_then(Standardizer::identity(schema))
    }
}

/// Where a split of the data came from, so that `mpcl evaluate --protocol` can rebuild the
/// exact test samples of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitProvenance {
    /// The dataset spec the run read.
    pub dataset: String,
    /// The evaluation protocol as the command line writes it (`subject-dependent:0.25`, ...).
    pub protocol: String,
    /// The part of the training side that was held out for model selection (the training
    /// side's per-subject statistics exclude it).
    pub validation_fraction: f64,
    /// The seed of the split.
    pub seed: u64,
    /// The subjects the split was made over, in the dataset's order (a simulation may use a
    /// sample of the dataset's subjects).
    pub subjects: Vec<String>,
    /// Which partition (fold) of the protocol the model was trained on (0-based).
    pub partition: usize,
    /// Number of partitions of the protocol.
    pub partitions: usize,
}

/// Where the model came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The job that made it (`mpcl train`, `mpcl simulate: federated MPCL`, `mpcl coordinator`).
    pub source: String,
    /// The run's id: a coordinator's run id in hex, or a digest of a local job's config.
    pub run_id: String,
    /// The round (federation) or the number of epochs (centralized training) the model is from.
    pub round: u64,
    /// The run's own metrics of this model (`None` where the run measured none).
    pub metrics: Option<DistributionMetrics>,
    /// What `metrics` were computed on, in words.
    pub metrics_on: String,
    /// The split the metrics come from (`None` for a federation, whose clients split their
    /// own data).
    pub split: Option<SplitProvenance>,
    /// The mpcl version that wrote the file.
    pub mpcl_version: String,
}

/// The trained model as stored: see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub schema: Schema,
    pub config: ModelConfig,
    /// Parameters, prototype banks and co-occurrence statistics.
    pub state: GlobalState,
    pub standardisation: InputStandardisation,
    /// Mean label distribution of the model's training data.
    pub label_prior: Vec<f32>,
    pub provenance: Provenance,
}

/// What is wrong with the bytes of a model file.
#[derive(Debug, Error, PartialEq)]
pub enum ModelFormatError {
    #[error("not an mpcl model file (bad magic bytes)")]
    BadMagic,
    #[error(
        "this is a coordinator checkpoint, not a model file: write one with `mpcl export --from RUN_DIR --out FILE`"
    )]
    Checkpoint,
    #[error("model format version {found}, this build reads version {supported}{}", if *found > *supported { " (written by a newer mpcl: use that build)" } else { " (written by an older mpcl)" })]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("truncated: {found} bytes, expected {expected}")]
    Truncated { expected: u64, found: u64 },
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes { extra: u64 },
    #[error("checksum mismatch: the file is damaged")]
    ChecksumMismatch,
    #[error("cannot decode payload: {0}")]
    Decode(String),
    #[error("cannot encode model: {0}")]
    Encode(String),
}

/// How the data's schema differs from the model's.
#[derive(Debug, Error, PartialEq)]
pub enum SchemaMismatch {
    #[error("emotions differ: model has [{}], data has [{}]", .model.join(", "), .data.join(", "))]
    Emotions {
        model: Vec<String>,
        data: Vec<String>,
    },
    #[error("modalities differ: model has [{}], data has [{}]", .model.join(", "), .data.join(", "))]
    Modalities {
        model: Vec<String>,
        data: Vec<String>,
    },
}

/// Errors of reading, writing and using model files; each names the file.
#[derive(Debug, Error)]
pub enum ModelFileError {
    #[error("model file {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot {action} model file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {} is unusable: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ModelFormatError,
    },
    #[error("model file {} does not fit data `{data}`: {source}", path.display())]
    Schema {
        path: PathBuf,
        data: String,
        #[source]
        source: SchemaMismatch,
    },
}

impl ModelFile {
    /// Whether data of `schema` can be fed to this model: same emotions (names and order) and
    /// same modalities (names, groups and token layouts).
    pub fn check_schema(&self, schema: &Schema) -> Result<(), SchemaMismatch> {
        if self.schema.emotions != schema.emotions {
            return Err(SchemaMismatch::Emotions {
                model: self.schema.emotions.clone(),
                data: schema.emotions.clone(),
            });
        }
        let describe =
            |s: &Schema| -> Vec<String> { s.modalities.iter().map(|m| m.describe()).collect() };
        let (model, data) = (describe(&self.schema), describe(schema));
        if model != data {
            return Err(SchemaMismatch::Modalities { model, data });
        }
        Ok(())
    }

    /// The file's bytes: header, checksum, payload.
    pub fn encode(&self) -> Result<Vec<u8>, ModelFormatError> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| ModelFormatError::Encode(e.to_string()))?;
        Ok(sealed_file::seal(
            MODEL_MAGIC,
            MODEL_FORMAT_VERSION,
            &payload,
        ))
    }

    /// Verifies and decodes a file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ModelFormatError> {
        let payload = verified_payload(bytes)?;
        // Bounded by the payload's size: a damaged length gives an error, not a huge allocation.
        let (file, read): (Self, usize) =
            crate::codec::decode_bincode_bounded(payload, MAX_CLAIM_BITS)
                .map_err(|e| ModelFormatError::Decode(e.to_string()))?;
        if read != payload.len() {
            return Err(ModelFormatError::Decode(format!(
                "{} bytes left over after the model",
                payload.len() - read
            )));
        }
        Ok(file)
    }

    /// Reads and verifies the file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelFileError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                ModelFileError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::decode(&bytes).map_err(|source| ModelFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the file to `path` atomically (temporary file, sync, rename, sync directory).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        let path = path.as_ref();
        let bytes = self.encode().map_err(|source| ModelFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string());
        let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelFileError::Io {
                action,
                path,
                source,
            }
        };
        let result = (|| {
            let mut file = File::create(&temporary).map_err(io("create", &temporary))?;
            file.write_all(&bytes).map_err(io("write", &temporary))?;
            file.sync_all().map_err(io("sync", &temporary))?;
            drop(file);
            fs::rename(&temporary, path).map_err(io("write", path))?;
            #[cfg(unix)]
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync the directory of", &dir))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result
    }
}

/// Checks header and checksum; returns the payload.
fn verified_payload(bytes: &[u8]) -> Result<&[u8], ModelFormatError> {
    if bytes.starts_with(&CHECKPOINT_MAGIC) {
        return Err(ModelFormatError::Checkpoint);
    }
    sealed_file::unseal(bytes, MODEL_MAGIC, MODEL_FORMAT_VERSION).map_err(|error| match error {
        SealError::BadMagic => ModelFormatError::BadMagic,
        SealError::UnsupportedVersion { found, supported } => {
            ModelFormatError::UnsupportedVersion { found, supported }
        }
        SealError::Truncated { expected, found } => ModelFormatError::Truncated { expected, found },
        SealError::TrailingBytes { extra } => ModelFormatError::TrailingBytes { extra },
        SealError::ChecksumMismatch => ModelFormatError::ChecksumMismatch,
    })
}

/// A run id for a local job: the first 16 bytes of the SHA-256 of its config text, in hex, so
/// the same config always names the same run.
pub fn local_run_id(config_text: &str) -> String {
    Sha256::digest(config_text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
