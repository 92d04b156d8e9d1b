//! `mpcl export`, `mpcl evaluate` and `mpcl predict`: the trained model as a file
//! (`mpcl_model::model_file`), written from a coordinator's output and used on data.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mpcl_coordinator::server::RunFile;
use mpcl_model::DeviceChoice;
use mpcl_protocol::ModelFile;
use mpcl_simulations::dataset::load_dataset;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::export::{RoundChoice, export_model};
use mpcl_simulations::saved_model::{evaluate_saved, predict_saved, write_predictions};
use mpcl_simulations::synthetic::SyntheticConfig;

use super::coordinator::{SAVED_CONFIG_FILE, resolve_schema};

/// Write a model file from a coordinator's output folder.
///
/// The coordinator keeps the latest round's state and the one before it; `--round N` works for
/// those two rounds only. `--round best` needs a run with federated evaluation.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The coordinator's output folder (its `--out`).
    #[arg(long)]
    from: PathBuf,
    /// Which round: `best` (lowest validation KL), `last`, or a round number.
    #[arg(long, default_value = "last")]
    round: RoundChoice,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
}

impl ExportArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let run_file = self.from.join(SAVED_CONFIG_FILE);
        let run = RunFile::load(&run_file).with_context(|| {
            format!(
                "{} is not a coordinator's output folder",
                self.from.display()
            )
        })?;
        let schema = resolve_schema(&run.schema)?;
        let file = export_model(&self.from, &schema, &run.model, self.round)?;
        file.write(&self.out)?;
        println!(
            "wrote {} (run {}, round {})",
            self.out.display(),
            file.provenance.run_id,
            file.provenance.round
        );
        Ok(())
    }
}

/// Evaluate a model file on a dataset: the six metrics beside the model's label prior.
///
/// Without --protocol every sample counts, each subject standardised with all of its samples.
/// With --protocol the data is split as the run split it (the file's seed and subjects) and the
/// test samples of the model's own partition count.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model file.
    #[arg(long)]
    model: PathBuf,
    /// Dataset spec: `synthetic`, `larwood2019`, `study:DIR`, ... (must have the model's schema).
    #[arg(long)]
    data: String,
    /// Evaluation protocol: `subject-dependent[:FRACTION]`, `subject-independent[:FOLDS]`, `loso`.
    #[arg(long)]
    protocol: Option<EvaluationProtocol>,
    /// Where to compute: `cpu`, `wgpu` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

impl EvaluateArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let file = ModelFile::read(&self.model)?;
        let (dataset, _) = load_dataset(&self.data, &SyntheticConfig::default())?;
        let device = self.device.resolve()?;
        let evaluation = evaluate_saved(
            &file,
            &self.model,
            &dataset,
            &self.data,
            self.protocol,
            &device.device,
        )?;
        let p = &file.provenance;
        println!(
            "{}: {} (run {}, round {}, mpcl {})",
            self.model.display(),
            p.source,
            p.run_id,
            p.round,
            p.mpcl_version
        );
        if let Some(own) = &p.metrics {
            println!(
                "the run measured KL {:.4}, cosine {:.4} on {} ({} samples)",
                own.kl, own.cosine, p.metrics_on, own.samples
            );
        }
        println!("on {}", evaluation.on);
        println!("{}", evaluation.table().to_text());
        Ok(())
    }
}

/// Predict a distribution over the model's emotions for every sample of a dataset, as CSV.
///
/// One row per sample: subject, trial, time and one probability column per emotion. Each
/// subject is standardised with the statistics of all of its samples.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model file.
    #[arg(long)]
    model: PathBuf,
    /// Dataset spec (must have the model's schema).
    #[arg(long)]
    data: String,
    /// The CSV file to write.
    #[arg(long)]
    out: PathBuf,
    /// Where to compute: `cpu`, `wgpu` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

impl PredictArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let file = ModelFile::read(&self.model)?;
        let (dataset, _) = load_dataset(&self.data, &SyntheticConfig::default())?;
        let device = self.device.resolve()?;
        let predictions = predict_saved(&file, &self.model, &dataset, &self.data, &device.device)?;
        write_predictions(&self.out, &dataset, &predictions)?;
        println!(
            "wrote {} predictions to {}",
            predictions.len(),
            self.out.display()
        );
        Ok(())
    }
}
