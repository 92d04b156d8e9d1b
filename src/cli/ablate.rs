//! `mpcl ablate`: what each part of MPCL adds.

use std::path::PathBuf;

use clap::Args;
use mpcl_coordinator::TrainingSettings;
use mpcl_simulations::ablate::{AblationConfig, Variant, markdown, run_ablation};
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::output_dir::{Staging, ablation_outputs};
use mpcl_simulations::selection::SelectionSettings;
use mpcl_simulations::simulate::{Arm, SimulationConfig};

/// Run the full MPCL network and each ablation (one component bypassed) on identical splits,
/// seeds and initial weights, and write the table (six metrics, mean ± sd over seeds, or over
/// folds with one seed; KL − label prior with a 95% bootstrap interval over subjects) as
/// ablation.md and ablation.csv plus a plot (ablation_kl.svg).
///
/// Variants: full, no-memory-fusion (token mean instead of associative memory fusion),
/// one-scale, no-cross-modal (memory keys from the slots only), no-prototypes,
/// no-distillation, no-cooccurrence-retrieval (O = V), no-z-path. Every model is the round
/// chosen on validation KL, never on test data (the last round with --validation-fraction 0).
#[derive(Debug, Args)]
pub struct AblateArgs {
    /// Dataset: `synthetic` (seeded, in DMER's layout: EEG, GSR and PPG physiological, a face
    /// vector behavioral, planted structure), `larwood2019`, `dmer:DIR`, `wesad:DIR`,
    /// `study:DIR`.
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    /// Evaluation protocol, as for `mpcl simulate`.
    #[arg(long, default_value = "subject-dependent")]
    protocol: EvaluationProtocol,
    /// Seeds (each a new split and initialisation shared by every variant).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// The arm that trains every variant: `federated`, `centralized` or `local-only`.
    #[arg(long, default_value = "federated")]
    arm: Arm,
    /// Variants to run (comma-separated; default all). The first is the reference row.
    #[arg(long, value_delimiter = ',')]
    variants: Vec<Variant>,
    /// Federated rounds (or round-sized epoch blocks for the other arms).
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// Local epochs per round.
    #[arg(long, default_value_t = TrainingSettings::default().local_epochs)]
    local_epochs: u32,
    /// Learning rate.
    #[arg(long, default_value_t = TrainingSettings::default().learning_rate)]
    learning_rate: f64,
    /// Part of each partition's training data held out to choose each variant's reported round,
    /// as for `mpcl simulate` (0 reports the last round: needed where a subject has too few
    /// trials to spare one, such as two blocks per subject).
    #[arg(long, default_value_t = SelectionSettings::default().validation_fraction)]
    validation_fraction: f64,
    /// Use a seeded sample of this many subjects.
    #[arg(long)]
    subjects: Option<usize>,
    /// The full variant's model config: a JSON file or inline JSON (any subset of
    /// ModelConfig's fields).
    #[arg(long, value_name = "FILE|JSON")]
    model_config: Option<String>,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/ablate")]
    out: PathBuf,
    /// Replace the results of a previous ablation in --out (refused without it).
    #[arg(long)]
    force: bool,
}

impl AblateArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let model = super::load_model_config(self.model_config.as_deref())?;
        let config = AblationConfig {
            simulation: SimulationConfig {
                dataset: self.dataset,
                subjects: self.subjects,
                protocol: self.protocol,
                model,
                rounds: self.rounds,
                training: TrainingSettings {
                    local_epochs: self.local_epochs,
                    learning_rate: self.learning_rate,
                    ..TrainingSettings::default()
                },
                seed: self.seed,
                selection: SelectionSettings {
                    validation_fraction: self.validation_fraction,
                    ..SelectionSettings::default()
                },
                ..SimulationConfig::default()
            },
            arm: self.arm,
            seeds: self.seeds,
            variants: if self.variants.is_empty() {
                Variant::ALL.to_vec()
            } else {
                self.variants
            },
        };
        // Results go to OUT.partial and move into --out only when every variant has run.
        let staging = Staging::begin(&self.out, self.force, ablation_outputs)?;
        let result = match run_ablation(&config, Some(staging.path()), |step| println!("{step}")) {
            Ok(result) => result,
            Err(error) => return Err(super::rerun::failed_run(error.into(), staging)),
        };
        let out = staging.commit()?;
        println!();
        println!("{}", markdown(&config, &result));
        println!("results in {}", out.display());
        Ok(())
    }
}
