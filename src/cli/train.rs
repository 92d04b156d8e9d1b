//! `mpcl train`: centralized training (pooled data) and evaluation.

use std::path::PathBuf;

use clap::Args;
use mpcl_model::{DeviceChoice, TrainOptions};
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::selection::SelectionSettings;
use mpcl_simulations::train_job::{TrainJobConfig, run_train_job};

/// Train the MPCL network centrally on one dataset and report the six metrics beside the
/// label-prior baseline.
///
/// Writes config.json (everything needed to reproduce the run), metrics.json, metrics.md and
/// the trained model(s) to --out.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset: `synthetic`, `larwood2019` (bundled), `larwood:DIR`, `dmer:DIR`, `wesad:DIR`.
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    learning_rate: f64,
    /// Decoupled weight decay (AdamW); 0 = plain Adam.
    #[arg(long, default_value_t = TrainOptions::default().weight_decay)]
    weight_decay: f64,
    /// Part of the training data held out to choose the reported epoch (trial-wise within
    /// subjects, or whole training subjects for subject-independent protocols); 0 reports the
    /// last epoch.
    #[arg(long, default_value_t = SelectionSettings::default().validation_fraction)]
    validation_fraction: f64,
    /// Stop when validation KL has not improved for this many epochs (0 = never).
    #[arg(long, default_value_t = SelectionSettings::default().patience)]
    patience: u64,
    /// Evaluation protocol: `subject-dependent[:TEST_FRACTION]` (held-out trials of every
    /// subject), `subject-independent[:FOLDS]` (held-out subjects) or `loso`.
    #[arg(long, default_value = "subject-dependent")]
    protocol: EvaluationProtocol,
    /// Where to compute: `cpu`, `wgpu` (needs a build with --features wgpu) or `auto` (a hardware
    /// GPU if there is one, else the CPU).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Model config as JSON (any subset of ModelConfig's fields; the rest keep their defaults).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Seed of initialisation, splits and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
}

impl TrainArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let model = super::load_model_config(self.model_config.as_deref())?;
        let config = TrainJobConfig {
            dataset: self.dataset,
            model,
            training: TrainOptions {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                weight_decay: self.weight_decay,
                seed: self.seed,
                progress: true,
                ..TrainOptions::default()
            },
            selection: SelectionSettings {
                validation_fraction: self.validation_fraction,
                patience: self.patience,
            },
            protocol: self.protocol,
            device: self.device,
            seed: self.seed,
            ..TrainJobConfig::default()
        };
        let result = run_train_job(&config, &self.out)?;
        println!(
            "{} — {}, {} partition(s), device {}, {:.1} s",
            result.dataset, result.protocol, result.partitions, result.device, result.wall_seconds
        );
        println!("{}", result.table.to_text());
        println!("results in {}", self.out.display());
        Ok(())
    }
}
