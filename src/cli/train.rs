//! `mpcl train`: centralized training (pooled data) and evaluation.

use std::path::PathBuf;

use clap::{ArgMatches, Args};
use mpcl_model::{DeviceChoice, TrainOptions};
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::output_dir::{Staging, train_outputs};
use mpcl_simulations::selection::SelectionSettings;
use mpcl_simulations::train_job::{TrainJobConfig, run_train_job};

use super::rerun;

/// Train the MPCL network centrally on one dataset and report the six metrics beside the
/// label-prior baseline.
///
/// Writes config.json (everything needed to reproduce the run), metrics.json, metrics.md and
/// the trained model(s) to --out. They are written to a staging folder (OUT.partial) and moved
/// into --out when training has finished, so a failed run never touches earlier results; an
/// --out that already holds results is refused unless --force, which replaces them all.
///
/// --config OUT/config.json re-runs a saved run; flags given as well override its values, and
/// a relative dataset path in it is read relative to the file's folder.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset: `synthetic`, `larwood2019` (bundled), `study:DIR` (or just DIR: your own study
    /// folder), `larwood:DIR`, `dmer:DIR`, `wesad:DIR`.
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
    /// subjects, or whole training subjects or stimuli for the independent protocols); 0
    /// reports the last epoch.
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
    #[arg(long, value_name = "FILE|JSON", help = super::MODEL_CONFIG_HELP)]
    model_config: Option<String>,
    /// Seed of initialisation, splits and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Replace the results of a previous run in --out (refused without it).
    #[arg(long)]
    force: bool,
    /// Re-run a saved config.json (flags given as well override its values).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl TrainArgs {
    /// The job these arguments describe: the saved config (with --config) or the defaults,
    /// with every flag given on the command line (all of them without --config).
    fn job_config(&self, matches: &ArgMatches) -> anyhow::Result<TrainJobConfig> {
        let mut config = match &self.config {
            Some(path) => rerun::load_saved_config(path, |c: &mut TrainJobConfig| &mut c.dataset)?,
            None => TrainJobConfig::default(),
        };
        let set = |id: &str| self.config.is_none() || rerun::given(matches, id);
        if set("dataset") {
            config.dataset = rerun::absolute_dataset_spec(&self.dataset);
        }
        if set("model_config") {
            config.model = super::load_model_config(self.model_config.as_deref())?;
        }
        if set("epochs") {
            config.training.epochs = self.epochs;
        }
        if set("batch_size") {
            config.training.batch_size = self.batch_size;
        }
        if set("learning_rate") {
            config.training.learning_rate = self.learning_rate;
        }
        if set("weight_decay") {
            config.training.weight_decay = self.weight_decay;
        }
        if set("validation_fraction") {
            config.selection.validation_fraction = self.validation_fraction;
        }
        if set("patience") {
            config.selection.patience = self.patience;
        }
        if set("protocol") {
            config.protocol = self.protocol;
        }
        if set("device") {
            config.device = self.device;
        }
        if set("seed") {
            config.seed = self.seed;
            config.training.seed = self.seed;
        }
        config.training.progress = true;
        Ok(config)
    }

    pub fn run(self, matches: &ArgMatches) -> anyhow::Result<()> {
        let config = self.job_config(matches)?;
        let staging = Staging::begin(&self.out, self.force, train_outputs)?;
        let result = match run_train_job(&config, staging.path()) {
            Ok(result) => result,
            Err(error) => return Err(super::rerun::failed_run(error.into(), staging)),
        };
        let out = staging.commit()?;
        println!(
            "{} — {}, {} partition(s), device {}, {:.1} s",
            result.dataset, result.protocol, result.partitions, result.device, result.wall_seconds
        );
        println!("{}", result.table.to_text());
        println!("results in {}", out.display());
        Ok(())
    }
}
