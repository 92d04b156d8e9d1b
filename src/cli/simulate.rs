//! `mpcl simulate`: the main job. Replays a dataset as a federation (one client per subject)
//! and compares federated MPCL with centralized, local-only and label-prior baselines.

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgMatches, Args};
use mpcl_coordinator::privacy::Threshold;
use mpcl_coordinator::{AggregationRule, LearningRateSchedule, TrainingSettings};
use mpcl_model::DeviceChoice;
use mpcl_model::personalize::PersonalizeScope;
use mpcl_protocol::Compression;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::job_process::{JobProgram, serve_job};
use mpcl_simulations::network::NetworkOptions;
use mpcl_simulations::output_dir::{Staging, simulation_outputs};
use mpcl_simulations::selection::SelectionSettings;
use mpcl_simulations::simulate::{Arm, ExecutionMode, SimulationConfig, run_simulation_with};

use super::rerun;

/// Simulate a federated study on a dataset, one client per subject, and compare federated MPCL
/// with centralized training (pooled data), local-only training and the label prior.
///
/// Every arm uses the same split, seed and initial weights. The results folder gets
/// config.json (to reproduce the run), rounds.jsonl (each arm, each round: the six metrics on
/// the test samples, bytes up and down, wall time), final.csv / final.md (the table printed at
/// the end), per_subject.csv and SVG plots (KL and cosine vs round, per-subject KL spread).
///
/// Metrics: chebyshev, clark, canberra and kl are distances (lower is better); cosine and
/// intersection are similarities (higher is better). A model that does not beat the label prior
/// (predicting the mean training distribution for everyone) has learned nothing.
///
/// With --network the federated arms run for real: the QUIC coordinator on 127.0.0.1 and one
/// `mpcl client` process per subject (TLS, signed updates), giving the same numbers as the
/// default in-process mode, which runs virtual clients without sockets and is much faster. Each
/// arm's coordinator output and client logs go to OUT/network/.
///
/// Privacy applies to the federated arms: --secure-aggregation masks every update in-process
/// (the coordinator only sees sums); --noise-multiplier with --clip-norm adds client-level
/// differential privacy (epsilon per round is printed and logged; --epsilon-budget stops the
/// federated arms when the next round would exceed it).
///
/// Results are written to a staging folder (OUT.partial) and moved into --out when the run has
/// finished, so a failed run never touches earlier results. An --out that already holds results
/// is refused unless --force, which replaces them all (never files a run did not write).
///
/// --config OUT/config.json re-runs a saved run with the same numbers; flags given as well
/// override the file's values (for example --rounds 40), and a relative dataset path in it is
/// read relative to the file's folder.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Dataset: `larwood2019` (bundled, real), `synthetic`, `study:DIR` (or just DIR: your own
    /// study folder), `dmer:DIR`, `wesad:DIR`, `larwood:DIR`.
    #[arg(long, default_value = "larwood2019")]
    dataset: String,
    /// Use a seeded sample of this many subjects.
    #[arg(long)]
    subjects: Option<usize>,
    /// `subject-dependent[:TEST_FRACTION]` (each client's held-out trials) or
    /// `subject-independent[:FOLDS]` / `loso` (held-out subjects never train).
    #[arg(long, default_value = "subject-dependent")]
    protocol: EvaluationProtocol,
    /// Federated rounds (the other arms train the same number of epochs).
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Local epochs per round.
    #[arg(long, default_value_t = TrainingSettings::default().local_epochs)]
    local_epochs: u32,
    /// Local batch size.
    #[arg(long, default_value_t = TrainingSettings::default().batch_size)]
    batch_size: u32,
    /// Local (Adam) learning rate at round 1.
    #[arg(long, default_value_t = TrainingSettings::default().learning_rate)]
    learning_rate: f64,
    /// How the learning rate changes over the rounds: `constant` or `cosine` (to a tenth of it
    /// at the last round).
    #[arg(long, default_value = "constant")]
    lr_schedule: LearningRateSchedule,
    /// Decoupled weight decay (AdamW) of every arm's optimiser; 0 = plain Adam.
    #[arg(long, default_value_t = TrainingSettings::default().weight_decay)]
    weight_decay: f64,
    /// Part of each partition's training data held out to choose each arm's reported round
    /// (trial-wise within subjects, whole training subjects or stimuli for the independent
    /// protocols); 0 reports the last round.
    #[arg(long, default_value_t = SelectionSettings::default().validation_fraction)]
    validation_fraction: f64,
    /// Stop an arm when its validation KL has not improved for this many rounds (0 = never).
    #[arg(long, default_value_t = SelectionSettings::default().patience)]
    patience: u64,
    /// Clients sampled per round (default: all).
    #[arg(long)]
    clients_per_round: Option<usize>,
    /// Server aggregation: `fedavg`, `fedadam`, `median` or `trimmed-mean`.
    #[arg(long, default_value = "fedavg")]
    aggregation: String,
    /// FedProx proximal weight mu (0 = FedAvg local training).
    #[arg(long, default_value_t = 0.0)]
    proximal_mu: f64,
    /// Upload compression of the encoder delta: `none`, `f16` or `int8` (8-bit, per-chunk
    /// scales, error feedback). Not with --secure-aggregation.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Mask updates with secure aggregation (the coordinator only sees their sum; needs fedavg or
    /// fedadam).
    #[arg(long)]
    secure_aggregation: bool,
    /// Secure-aggregation threshold: survivors needed, as a fraction of the cohort in (0.5, 1].
    #[arg(long, default_value_t = 0.6)]
    secagg_threshold: f64,
    /// Secure-aggregation fixed-point scale (lower it if an update is out of range).
    #[arg(long, default_value_t = 65536.0)]
    quantisation_scale: f64,
    /// Clip each client's encoder delta to this L2 norm.
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Differential privacy: Gaussian noise std on the sum of clipped deltas / clip norm
    /// (0 = off; needs --clip-norm).
    #[arg(long, default_value_t = 0.0)]
    noise_multiplier: f64,
    /// Stop the federated arms before epsilon exceeds this (needs --noise-multiplier).
    #[arg(long)]
    epsilon_budget: Option<f64>,
    /// The delta epsilon is reported at.
    #[arg(long, default_value_t = 1e-5)]
    target_delta: f64,
    /// Participants withhold prototype statistics of emotions with less label mass than this.
    #[arg(long, default_value_t = 1.0)]
    min_prototype_mass: f64,
    /// UNSAFE for real studies: draw the DP noise from --seed so the run is reproducible.
    #[arg(long)]
    deterministic_noise_for_tests: bool,
    /// Arms to run, comma-separated: federated, personalized (the federated model fine-tuned by
    /// each client on its own data; needs federated and a subject-dependent protocol),
    /// fedavg-encoder, centralized, local-only, label-prior.
    #[arg(long, value_delimiter = ',', default_values_t = Arm::ALL.to_vec())]
    arms: Vec<Arm>,
    /// Epochs each client of the personalized arm fine-tunes the federated model on its own
    /// training part (the epoch is chosen on its validation part; 0 keeps the global model).
    #[arg(long, default_value_t = SimulationConfig::default().personalize_epochs)]
    personalize_epochs: usize,
    /// What the personalized arm fine-tunes: `head` (the head's parameters and the prototype
    /// banks) or `all` (every parameter).
    #[arg(long, default_value_t = SimulationConfig::default().personalize_scope)]
    personalize_scope: PersonalizeScope,
    #[arg(long, value_name = "FILE|JSON", help = super::MODEL_CONFIG_HELP)]
    model_config: Option<String>,
    /// `cpu`, `wgpu` (build with --features wgpu) or `auto`.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the federated arms over the network: a real coordinator and one client process per
    /// subject on 127.0.0.1 (same numbers, slower).
    #[arg(long)]
    network: bool,
    /// Threads of an in-process run (default: every core): that many arms and folds run at the
    /// same time, each in a process of its own (`mpcl simulate-job`), the longest first; threads
    /// left over train a federated arm's participants at once. The results and every output
    /// file are the same for any number (network runs take one arm at a time).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Output folder.
    #[arg(long, default_value = "runs/simulate")]
    out: PathBuf,
    /// Replace the results of a previous run in --out (refused without it).
    #[arg(long)]
    force: bool,
    /// Re-run a saved config.json (flags given as well override its values).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl SimulateArgs {
    /// The simulation these arguments describe: the saved config (with --config) or the
    /// defaults, with every flag given on the command line (all of them without --config).
    fn simulation_config(&self, matches: &ArgMatches) -> anyhow::Result<SimulationConfig> {
        let mut config = match &self.config {
            Some(path) => {
                rerun::load_saved_config(path, |c: &mut SimulationConfig| &mut c.dataset)?
            }
            None => SimulationConfig::default(),
        };
        let set = |id: &str| self.config.is_none() || rerun::given(matches, id);
        if set("dataset") {
            config.dataset = rerun::absolute_dataset_spec(&self.dataset);
        }
        if set("subjects") {
            config.subjects = self.subjects;
        }
        if set("protocol") {
            config.protocol = self.protocol;
        }
        if set("model_config") {
            config.model = super::load_model_config(self.model_config.as_deref())?;
        }
        if set("rounds") {
            config.rounds = self.rounds;
        }
        let training = &mut config.training;
        if set("local_epochs") {
            training.local_epochs = self.local_epochs;
        }
        if set("batch_size") {
            training.batch_size = self.batch_size;
        }
        if set("learning_rate") {
            training.learning_rate = self.learning_rate;
        }
        if set("lr_schedule") {
            training.learning_rate_schedule = self.lr_schedule;
        }
        if set("weight_decay") {
            training.weight_decay = self.weight_decay;
        }
        if set("proximal_mu") {
            training.proximal_mu = self.proximal_mu;
        }
        if set("compression") {
            training.compression = self.compression;
        }
        if set("validation_fraction") {
            config.selection.validation_fraction = self.validation_fraction;
        }
        if set("patience") {
            config.selection.patience = self.patience;
        }
        if set("threads") {
            config.threads = self.threads.map(|t| t as usize);
        }
        if set("clients_per_round") {
            config.clients_per_round = self.clients_per_round;
        }
        if set("aggregation") {
            config.aggregation.rule = parse_rule(&self.aggregation)?;
        }
        let privacy = &mut config.privacy;
        if set("secure_aggregation") {
            privacy.secure_aggregation = self.secure_aggregation;
        }
        if set("secagg_threshold") {
            privacy.threshold = Threshold::Fraction(self.secagg_threshold);
        }
        if set("quantisation_scale") {
            privacy.quantisation_scale = self.quantisation_scale;
        }
        if set("clip_norm") {
            privacy.clip_norm = self.clip_norm;
        }
        if set("noise_multiplier") {
            privacy.noise_multiplier = self.noise_multiplier;
        }
        if set("epsilon_budget") {
            privacy.epsilon_budget = self.epsilon_budget;
        }
        if set("target_delta") {
            privacy.target_delta = self.target_delta;
        }
        if set("min_prototype_mass") {
            privacy.min_prototype_mass = self.min_prototype_mass;
        }
        if set("deterministic_noise_for_tests") {
            config.deterministic_noise_for_tests = self.deterministic_noise_for_tests;
        }
        if set("arms") {
            config.arms = self.arms.clone();
        }
        if set("personalize_epochs") {
            config.personalize_epochs = self.personalize_epochs;
        }
        if set("personalize_scope") {
            config.personalize_scope = self.personalize_scope;
        }
        if set("device") {
            config.device = self.device;
        }
        if set("seed") {
            config.seed = self.seed;
        }
        Ok(config)
    }

    pub fn run(self, matches: &ArgMatches) -> anyhow::Result<()> {
        let config = self.simulation_config(matches)?;
        let mode = if self.network {
            ExecutionMode::Network(NetworkOptions {
                client_program: std::env::current_exe()
                    .context("cannot find the mpcl executable to start client processes")?,
            })
        } else {
            ExecutionMode::JobProcesses(JobProgram::mpcl(
                std::env::current_exe()
                    .context("cannot find the mpcl executable to start job processes")?,
            ))
        };
        let staging = Staging::begin(&self.out, self.force, simulation_outputs)?;
        let result = match run_simulation_with(&config, &mode, Some(staging.path()), true) {
            Ok(result) => result,
            Err(error) => return Err(super::rerun::failed_run(error.into(), staging)),
        };
        let out = staging.commit()?;
        println!(
            "{}: {} subjects, {}, {}, device {}",
            result.dataset, result.subjects, result.protocol, result.mode, result.device
        );
        let federated = config
            .arms
            .iter()
            .any(|a| matches!(a, Arm::Federated | Arm::FedavgEncoder));
        if federated {
            println!("privacy (federated arms): {}", config.privacy);
        }
        println!("round-by-round (pooled over all test samples):");
        for arm in &config.arms {
            let rounds: Vec<_> = result.rounds.iter().filter(|r| r.arm == *arm).collect();
            if rounds.is_empty() {
                continue; // the personalized arm has no rounds of its own
            }
            let line: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.4}", r.metrics.kl))
                .collect();
            println!("  {:<30} KL {}", arm.label(), line.join(" "));
            if rounds.iter().any(|r| r.epsilon.is_some()) {
                let line: Vec<String> = rounds
                    .iter()
                    .map(|r| r.epsilon.map_or("-".into(), |e| format!("{e:.3}")))
                    .collect();
                println!(
                    "  {:<30} epsilon {} (delta {:e})",
                    "",
                    line.join(" "),
                    config.privacy.target_delta
                );
            }
        }
        println!();
        println!(
            "final table: each arm's model at the round with the lowest validation KL (test \
             samples never choose); KL − prior is the mean per-sample difference with a 95% \
             bootstrap interval over subjects"
        );
        println!("{}", result.final_table.to_text());
        for note in &result.notes {
            println!("note: {note}");
        }
        println!();
        println!(
            "finished in {:.1} s; results, per-round JSON lines and plots in {}",
            result.wall_seconds,
            out.display()
        );
        Ok(())
    }
}

/// The hidden child of `mpcl simulate`: runs one (partition, arm) job read from stdin and
/// writes its rounds and outcome to stdout ([`mpcl_simulations::job_process`]).
#[derive(Debug, Args)]
pub struct SimulateJobArgs {}

impl SimulateJobArgs {
    pub fn run(self) -> anyhow::Result<()> {
        serve_job(std::io::stdin().lock(), std::io::stdout().lock())?;
        Ok(())
    }
}

fn parse_rule(name: &str) -> anyhow::Result<AggregationRule> {
    let toml_name = name.replace('-', "_");
    toml::from_str::<RuleHolder>(&format!("rule = \"{toml_name}\""))
        .map(|holder| holder.rule)
        .with_context(|| {
            format!("unknown aggregation rule `{name}` (fedavg, fedadam, median, trimmed-mean)")
        })
}

#[derive(serde::Deserialize)]
struct RuleHolder {
    rule: AggregationRule,
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        simulate: SimulateArgs,
    }

    fn config_of(args: &[&str]) -> anyhow::Result<SimulationConfig> {
        let matches = <Wrapper as clap::CommandFactory>::command().try_get_matches_from(args)?;
        let wrapper = Wrapper::from_arg_matches(&matches)?;
        wrapper.simulate.simulation_config(&matches)
    }

    #[test]
    fn the_defaults_are_the_configs_and_the_personalization_flags_set_it() -> anyhow::Result<()> {
        let defaults = config_of(&["simulate"])?;
        let expected = SimulationConfig::default();
        assert_eq!(defaults.arms, expected.arms);
        assert!(defaults.arms.contains(&Arm::Personalized));
        assert_eq!(defaults.personalize_epochs, expected.personalize_epochs);
        assert_eq!(defaults.personalize_scope, expected.personalize_scope);
        let chosen = config_of(&[
            "simulate",
            "--arms",
            "federated,personalized",
            "--personalize-epochs",
            "3",
            "--personalize-scope",
            "all",
        ])?;
        assert_eq!(chosen.arms, vec![Arm::Federated, Arm::Personalized]);
        assert_eq!(chosen.personalize_epochs, 3);
        assert_eq!(chosen.personalize_scope, PersonalizeScope::All);
        assert!(config_of(&["simulate", "--personalize-scope", "encoder"]).is_err());
        Ok(())
    }
}
