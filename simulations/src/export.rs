//! `mpcl export`: a model file from a coordinator's output folder.
//!
//! The coordinator keeps the latest global state in `checkpoint.bin` and the one before it in
//! `checkpoint.prev.bin` (see `mpcl_coordinator::checkpoint`), so `--round last` and
//! `--round N` for those two rounds work; any other round's state was not kept. `--round best`
//! needs the best round's state, which only a run with federated evaluation selects and keeps
//! (in `checkpoint.best.bin`: a checkpoint of that round); without it there is no best round,
//! and export says so. The model file's provenance carries the federated test metrics of the
//! exported round when the run evaluated it.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use mpcl_coordinator::checkpoint::{Checkpoint, CheckpointError, previous_path, read_checkpoint};
use mpcl_data::ModelConfig;
use mpcl_data::Schema;
use mpcl_model::{Device, ModelError, MpclModel};
use mpcl_protocol::ModelFile;
use mpcl_protocol::model_file::{InputStandardisation, Provenance};
use thiserror::Error;

pub use mpcl_coordinator::server::{BEST_CHECKPOINT_FILE, CHECKPOINT_FILE};

/// Which round's global model to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundChoice {
    /// The round with the lowest validation KL (needs federated evaluation).
    Best,
    /// The last completed round.
    Last,
    /// A given round (only the last two rounds' states are kept).
    Round(u64),
}

impl FromStr for RoundChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "best" => Ok(Self::Best),
            "last" => Ok(Self::Last),
            n => n
                .parse::<u64>()
                .map(Self::Round)
                .map_err(|_| format!("round `{s}`: expected `best`, `last` or a round number")),
        }
    }
}

/// Errors of exporting; each names the run folder or file.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "run {} has no evaluation metrics (its coordinator ran without federated evaluation), so it has no best round: use --round last",
        dir.display()
    )]
    NoEvaluation { dir: PathBuf },
    #[error(
        "round {round}'s state was not kept in {}: a coordinator keeps only the latest round and the one before it (kept: {kept:?}; `--round best` needs federated evaluation)",
        dir.display()
    )]
    RoundNotKept {
        dir: PathBuf,
        round: u64,
        kept: Vec<u64>,
    },
    #[error("the state in {} does not fit the run's model: {source}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
}

/// The checkpoint holding the chosen round, and its path.
fn chosen_checkpoint(
    run_dir: &Path,
    choice: RoundChoice,
) -> Result<(Checkpoint, PathBuf), ExportError> {
    let latest = run_dir.join(CHECKPOINT_FILE);
    match choice {
        RoundChoice::Last => Ok((read_checkpoint(&latest)?, latest)),
        RoundChoice::Best => {
            let best = run_dir.join(BEST_CHECKPOINT_FILE);
            if !best.exists() {
                return Err(ExportError::NoEvaluation {
                    dir: run_dir.to_path_buf(),
                });
            }
            Ok((read_checkpoint(&best)?, best))
        }
        RoundChoice::Round(round) => {
            let mut kept = Vec::new();
            for path in [latest.clone(), previous_path(&latest)] {
                if let Ok(checkpoint) = read_checkpoint(&path) {
                    if checkpoint.completed_rounds == round {
                        return Ok((checkpoint, path));
                    }
                    kept.push(checkpoint.completed_rounds);
                }
            }
            if kept.is_empty() {
                // Neither file is readable: report why the latest is not.
                read_checkpoint(&latest)?;
            }
            Err(ExportError::RoundNotKept {
                dir: run_dir.to_path_buf(),
                round,
                kept,
            })
        }
    }
}

/// The model file of the chosen round of the run in `run_dir`, whose run file names `schema`
/// and `config`. A federation standardises per participant only, so the file's pooled
/// statistics are the identity; the label prior is the one the aggregated co-occurrence
/// statistics imply.
pub fn export_model(
    run_dir: &Path,
    schema: &Schema,
    config: &ModelConfig,
    choice: RoundChoice,
) -> Result<ModelFile, ExportError> {
    let (checkpoint, path) = chosen_checkpoint(run_dir, choice)?;
    // The federated evaluation of this very model, when the run evaluated it.
    let evaluated = checkpoint
        .evaluations
        .iter()
        .find(|m| m.round == checkpoint.completed_rounds)
        .copied();
    let run_name = checkpoint
        .config()
        .map(|c| c.name)
        .unwrap_or_else(|_| "unnamed".to_string());
    let file = ModelFile {
        schema: schema.clone(),
        config: config.clone(),
        label_prior: checkpoint.global.cooccurrence.label_prior(),
        state: checkpoint.global,
        standardisation: InputStandardisation::per_subject_only(schema),
        provenance: Provenance {
            source: format!("mpcl coordinator, run `{run_name}`"),
            run_id: checkpoint
                .run_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            round: checkpoint.completed_rounds,
            metrics: evaluated.map(|m| m.test),
            metrics_on: match evaluated {
                Some(m) => format!(
                    "federated evaluation: the test parts of {} participants, which they kept out of training",
                    m.clients
                ),
                None => "none: the run did not evaluate this round's model".to_string(),
            },
            split: None,
            mpcl_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    // The state must fit the run's model (names, shapes, finite values) before it is written.
    MpclModel::from_file(&file, &Device::flex())
        .map_err(|source| ExportError::Model { path, source })?;
    Ok(file)
}
