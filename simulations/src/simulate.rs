//! `mpcl simulate`: one experiment plan, every arm on identical splits, seeds and initial
//! weights, with per-round metrics, a final table and plots written to an output folder.
//!
//! Arms:
//! - `federated`: MPCL trained by the federation (encoder deltas averaged, prototype banks and
//!   co-occurrence memory aggregated from statistics);
//! - `personalized`: the federated arm's validation-selected model fine-tuned by every client on
//!   its own training part and used on its own test samples (see [`crate::personalized_arm`];
//!   subject-dependent protocols only, as elsewhere the test subjects are not clients);
//! - `fedavg-encoder`: the same federation with memory sharing off (plain FedAvg of the encoder;
//!   shows what the global memories add);
//! - `centralized`: pooled training data in one place (the upper reference);
//! - `local-only`: each client alone on its own data;
//! - `label-prior`: the mean training distribution for every sample (a model that does not beat
//!   it has learned nothing).
//!
//! Privacy (`privacy`, the coordinator's `[privacy]` section) applies to the two federated arms:
//! secure aggregation runs the masking protocol in-process every round, differential privacy
//! clips, noises and accounts (epsilon per round in `rounds.jsonl`); a run whose privacy budget
//! runs out stops its federated arms early (the other arms run every round) and says so in
//! [`SimulationResult::notes`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mpcl_client::ParticipantSettings;
use mpcl_coordinator::{AggregationConfig, CoordinatorConfig, PrivacyConfig, TrainingSettings};
use mpcl_data::Dataset;
use mpcl_data::ModelConfig;
use mpcl_model::metrics::evaluate;
use mpcl_model::personalize::{DEFAULT_PERSONALIZE_EPOCHS, PersonalizeScope};
use mpcl_model::{
    Device, DeviceChoice, DeviceError, ModelError, ModelPool, MpclModel, TrainOptions,
};
use mpcl_protocol::messages::GlobalState;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dataset::{LoadError, load_dataset};
use crate::evaluation::{EvaluationProtocol, Partition, partitions};
use crate::evaluator::Evaluator;
use crate::federation::{FederationError, InProcessFederation, RoundOutcome, available_threads};
use crate::in_order::run_in_order;
use crate::job_process::{JobProcesses, JobProgram, JobSpec};
use crate::learner::Learner;
use crate::network::{NetworkError, NetworkOptions, run_network_federation};
use crate::normalize::normalize_per_subject;
use crate::personalized_arm::{
    PartitionData, PartitionOutcome, epochs_note, omitted, personalize_partition,
};
use crate::pooling::{ArmTrace, Selected, per_subject_metrics, pool_rounds};
use crate::progress::RoundProgress;
use crate::report::{ArmSummary, SummaryTable};
use crate::round_log::RoundLog;
use crate::selection::SelectionSettings;
use crate::simulation_models::{ArmModel, write_arm_model};
use crate::simulation_outputs::write_outputs;
pub use crate::simulation_result::{
    Arm, PooledRound, RoundRecord, SimulationResult, SubjectMetrics, TestSamples,
};
use crate::stimulus_prior::stimulus_prior;
use crate::synthetic::SyntheticConfig;
use crate::train_job::write_json;
use crate::uncertainty::compare_to_prior;
use mpcl_coordinator::evaluation::{EvaluationConfig, FederatedMetrics};
use mpcl_model::network::prototypes::cross_emotion_cosine;

/// See [`crate::pooling::RoundObserver`].
type RoundObserver<'a> = crate::pooling::RoundObserver<'a, SimulationError>;

/// The name of the stimulus-prior reference row (shown when the data knows its stimuli).
pub const STIMULUS_PRIOR: &str = "stimulus prior (no signal)";

/// Everything that defines a simulation; written as `config.json` next to its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulationConfig {
    /// Dataset spec (`larwood2019`, `synthetic`, `dmer:DIR`, ...).
    pub dataset: String,
    pub synthetic: SyntheticConfig,
    /// Use a seeded sample of this many subjects (all when unset).
    pub subjects: Option<usize>,
    pub protocol: EvaluationProtocol,
    pub model: ModelConfig,
    pub rounds: u64,
    /// Local training of every arm: the coordinator's own `[training]` section (epochs per
    /// round, batch size, learning rate and its schedule, weight decay, FedProx, compression).
    /// The centralized and local-only arms train the same epochs per round with the same
    /// optimiser; `share_memories` is set per arm. Compression's `bytes_up` in `rounds.jsonl`
    /// count the compressed form.
    pub training: TrainingSettings,
    /// How each arm's reported model is chosen (validation part, patience).
    pub selection: SelectionSettings,
    /// Clients sampled per round (all when unset).
    pub clients_per_round: Option<usize>,
    pub aggregation: AggregationConfig,
    /// Privacy settings of the federated arms (the coordinator's `[privacy]` section; its
    /// `min_prototype_mass` is what participants withhold prototype statistics below). The
    /// simulation's default keeps every layer off and withholds below mass 1 (small synthetic
    /// subjects have little mass per emotion; the coordinator's own default is 5).
    pub privacy: PrivacyConfig,
    /// **Unsafe for real studies**: draw the differential-privacy noise from the run seed so
    /// the simulation is reproducible (default false: noise from the operating system).
    pub deterministic_noise_for_tests: bool,
    pub arms: Vec<Arm>,
    /// Epochs each client of the `personalized` arm fine-tunes the federated model for (0: the
    /// arm repeats the federated arm's predictions).
    pub personalize_epochs: usize,
    /// What the `personalized` arm fine-tunes: the head and prototype banks, or everything.
    pub personalize_scope: PersonalizeScope,
    pub device: DeviceChoice,
    pub seed: u64,
    /// Threads of an in-process run (all cores when unset): (partition, arm) jobs at once, and
    /// participants at once inside each federated arm. Results do not depend on it, so it is
    /// not part of `config.json`.
    #[serde(skip)]
    pub threads: Option<usize>,
}

/// The simulation's default privacy settings: every layer off, prototypes withheld below mass 1.
pub fn default_simulation_privacy() -> PrivacyConfig {
    PrivacyConfig {
        min_prototype_mass: 1.0,
        ..PrivacyConfig::default()
    }
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            dataset: "larwood2019".to_string(),
            synthetic: SyntheticConfig::default(),
            subjects: None,
            protocol: EvaluationProtocol::default(),
            model: ModelConfig::default(),
            rounds: 20,
            training: TrainingSettings::default(),
            selection: SelectionSettings::default(),
            clients_per_round: None,
            aggregation: AggregationConfig::default(),
            privacy: default_simulation_privacy(),
            deterministic_noise_for_tests: false,
            arms: Arm::ALL.to_vec(),
            personalize_epochs: DEFAULT_PERSONALIZE_EPOCHS,
            personalize_scope: PersonalizeScope::default(),
            device: DeviceChoice::Cpu,
            seed: 0,
            threads: None,
        }
    }
}

/// Errors of a simulation, each naming what failed.
#[derive(Debug, Error)]
pub enum SimulationError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot split dataset: {0}")]
    Split(#[from] mpcl_data::split::SplitError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Federation(#[from] FederationError),
    #[error(transparent)]
    Network(Box<NetworkError>),
    #[error("invalid federation settings: {0}")]
    Coordinator(#[from] mpcl_coordinator::ConfigError),
    #[error(transparent)]
    Output(#[from] crate::train_job::JobError),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    ModelFile(Box<mpcl_protocol::ModelFileError>),
    #[error("simulation config: {0}")]
    Config(String),
    /// A job run in a child process failed, or the process did.
    #[error("{job}: {reason}")]
    JobProcess { job: String, reason: String },
    /// An arm's validation KL did not improve for this many rounds; caught where the arm runs,
    /// which then reports its best round.
    #[error("validation KL did not improve for {0} rounds")]
    PatienceExhausted(u64),
}

impl From<NetworkError> for SimulationError {
    fn from(error: NetworkError) -> Self {
        Self::Network(Box::new(error))
    }
}

/// How the federated arms run.
#[derive(Clone, Debug, Default)]
pub enum ExecutionMode {
    /// Virtual participants in this process, no sockets: fast, scales to many clients.
    #[default]
    InProcess,
    /// As [`Self::InProcess`], but when several (partition, arm) jobs run at once each runs in
    /// a child process of its own (`PROGRAM simulate-job`, see [`crate::job_process`]): training
    /// threads of one process share burn-autodiff's process-wide graph registry and slow each
    /// other down, processes do not. The same numbers and files as in-process.
    JobProcesses(JobProgram),
    /// The real QUIC coordinator on 127.0.0.1 and one `mpcl client` process per participant
    /// (see [`crate::network`]); the same numbers as in-process.
    Network(NetworkOptions),
}

impl ExecutionMode {
    /// `in-process` or `network`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InProcess | Self::JobProcesses(_) => "in-process",
            Self::Network(_) => "network",
        }
    }
}

/// Runs the simulation in-process; see [`run_simulation_with`].
pub fn run_simulation(
    config: &SimulationConfig,
    out: Option<&Path>,
    progress: bool,
) -> Result<SimulationResult, SimulationError> {
    run_simulation_with(config, &ExecutionMode::InProcess, out, progress)
}

/// Runs the simulation, its federated arms as `mode` says; when `out` is given, writes
/// `config.json`, `rounds.jsonl`, `final.csv`, `final.md`, `per_subject.csv`, the plots and each
/// arm's final model (`model-ARM.mpcl`, see [`crate::simulation_models`]) there
/// (and, in network mode, each arm's coordinator output and client logs under `network/`).
pub fn run_simulation_with(
    config: &SimulationConfig,
    mode: &ExecutionMode,
    out: Option<&Path>,
    progress: bool,
) -> Result<SimulationResult, SimulationError> {
    let started = Instant::now();
    let (dataset, _report) = load_dataset(&config.dataset, &config.synthetic)?;
    run_simulation_on(&dataset, config, mode, out, progress, started)
}

/// [`run_simulation_with`] on an already loaded dataset (`config.dataset` only names it in
/// the outputs); `started` is when the run began, for its wall time.
pub fn run_simulation_on(
    dataset: &Dataset,
    config: &SimulationConfig,
    mode: &ExecutionMode,
    out: Option<&Path>,
    progress: bool,
    started: Instant,
) -> Result<SimulationResult, SimulationError> {
    // Network mode's working files: under the output folder, or a temporary folder.
    let scratch = match (mode, out) {
        (ExecutionMode::Network(_), None) => {
            Some(
                tempfile::tempdir().map_err(|source| SimulationError::Write {
                    path: std::env::temp_dir(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    let network_dir = scratch
        .as_ref()
        .map(|dir| dir.path().to_path_buf())
        .or_else(|| out.map(|dir| dir.join("network")));
    if config.arms.is_empty() {
        return Err(SimulationError::Config("no arms selected".into()));
    }
    if config.rounds == 0 {
        return Err(SimulationError::Config("rounds must be at least 1".into()));
    }
    if config.arms.contains(&Arm::Personalized) && !config.arms.contains(&Arm::Federated) {
        return Err(SimulationError::Config(
            "the personalized arm starts from the federated arm's model: select `federated` too"
                .into(),
        ));
    }
    config
        .selection
        .validate()
        .map_err(SimulationError::Config)?;
    let selected = config.device.resolve()?;
    let device = &selected.device;
    let dataset = sample_subjects(dataset, config.subjects, config.seed);
    config
        .model
        .validate(&dataset.schema)
        .map_err(ModelError::from)?;
    let parts = config_partitions(&dataset, config)?;
    let round_log = match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| SimulationError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
            write_json(&dir.join("config.json"), config)?;
            let path = dir.join("rounds.jsonl");
            Some(
                RoundLog::create(&path)
                    .map_err(|source| SimulationError::Write { path, source })?,
            )
        }
        None => None,
    };

    // The personalized arm has no rounds of its own: it runs at the end of the federated arm's
    // job, from that arm's model (see `run_job`).
    let round_arms: Vec<Arm> = config
        .arms
        .iter()
        .copied()
        .filter(|a| *a != Arm::Personalized)
        .collect();
    let bar = RoundProgress::new(
        progress,
        parts.len() * round_arms.len() * config.rounds as usize,
        config.rounds,
    );
    let several_parts = parts.len() > 1;
    let mut labels: Vec<Vec<f32>> = Vec::new();
    let mut subjects: Vec<String> = Vec::new();
    // The label prior of each test sample's partition (the reference of every comparison).
    let mut priors: Vec<Vec<f32>> = Vec::new();
    let mut partition_sizes: Vec<usize> = Vec::new();
    // The stimulus prior of each test sample, while every partition knows its stimuli.
    let mut stimulus_predictions: Option<Vec<Vec<f32>>> = Some(Vec::new());
    let mut sets = Vec::with_capacity(parts.len());
    for part in &parts {
        let set = PartitionSets::new(&dataset, part, config, device)?;
        labels.extend(set.test.samples.iter().map(|s| s.label.clone()));
        subjects.extend(set.test.samples.iter().map(|s| s.subject.clone()));
        priors.extend(std::iter::repeat_n(
            set.prior.clone(),
            set.test.samples.len(),
        ));
        partition_sizes.push(set.test.samples.len());
        stimulus_predictions = stimulus_predictions.and_then(|mut all| {
            all.extend(stimulus_prior(&set.train, &set.test)?);
            Some(all)
        });
        sets.push(set);
    }

    // Every (partition, arm) is a job of its own; in-process runs take them on several threads,
    // network runs one at a time (each starts a coordinator and client processes of its own).
    // The threads left over when there are fewer jobs than threads train a federated arm's
    // clients in parallel, so that no more threads run than asked for. (Training threads of
    // one process share burn-autodiff's one graph registry and its lock, which limits what
    // threads gain: NOTES.md, session 6.)
    let jobs: Vec<(usize, Arm)> = (0..parts.len())
        .flat_map(|part| round_arms.iter().map(move |&arm| (part, arm)))
        .collect();
    let threads = config.threads.unwrap_or_else(available_threads).max(1);
    let workers = match mode {
        ExecutionMode::InProcess | ExecutionMode::JobProcesses(_) => threads.min(jobs.len()).max(1),
        ExecutionMode::Network(_) => 1,
    };
    let threads_per_federation = (threads / workers).max(1);
    // Workers take the longest jobs first (results still come in job order).
    let mut start_order: Vec<usize> = (0..jobs.len()).collect();
    start_order.sort_by_key(|&job| (jobs[job].1.expected_work_rank(), jobs[job].0));
    // Jobs in child processes need the (sampled) dataset: one bit-exact snapshot for all.
    let job_processes = match mode {
        ExecutionMode::JobProcesses(program) if workers > 1 => {
            Some(JobProcesses::new(program, &dataset)?)
        }
        _ => None,
    };
    let outcomes = run_in_order(jobs.len(), workers, &start_order, |job| {
        let (part_index, arm) = jobs[job];
        let (part, set) = (&parts[part_index], &sets[part_index]);
        let partition = several_parts.then_some(part.name.as_str());
        let mut on_round = |report: RoundReport| {
            bar.round(
                arm.label(),
                partition,
                report.round,
                report.kl,
                report.wall_seconds,
            );
            if let Some(log) = &round_log {
                log.line(job, report.json)
                    .map_err(|source| SimulationError::Write {
                        path: log.path().to_path_buf(),
                        source,
                    })?;
            }
            Ok(())
        };
        let outcome = match &job_processes {
            Some(processes) => processes.run(
                &JobSpec {
                    config: config.clone(),
                    partition: part_index,
                    arm,
                    threads: threads_per_federation,
                },
                &format!("{} ({})", arm.label(), part.name),
                &mut on_round,
            )?,
            None => {
                let federation = match mode {
                    ExecutionMode::InProcess | ExecutionMode::JobProcesses(_) => {
                        FederationMode::InProcess {
                            threads: threads_per_federation,
                        }
                    }
                    ExecutionMode::Network(options) => FederationMode::Network {
                        options,
                        work_dir: network_dir
                            .as_deref()
                            .expect("set in network mode")
                            .join(format!("{}-{part_index}", arm.name())),
                    },
                };
                run_job(arm, set, &federation, config, device, &mut on_round)?
            }
        };
        if let Some(log) = &round_log {
            log.finished(job).map_err(|source| SimulationError::Write {
                path: log.path().to_path_buf(),
                source,
            })?;
        }
        Ok::<_, SimulationError>(outcome)
    })?;

    let mut traces: BTreeMap<Arm, Vec<ArmTrace>> = BTreeMap::new();
    let mut final_states: BTreeMap<Arm, Vec<GlobalState>> = BTreeMap::new();
    let mut federated_evaluations: BTreeMap<Arm, Vec<Vec<FederatedMetrics>>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    // Per partition, the personalized arm's outcome or why it was left out, from the federated
    // arm's job.
    let mut personalized_parts: Vec<Option<Result<PartitionOutcome, String>>> =
        vec![None; parts.len()];
    for (&(part_index, arm), outcome) in jobs.iter().zip(outcomes) {
        let JobOutcome {
            mut trace,
            state,
            stopped,
            personalized,
        } = outcome;
        let (part, set) = (&parts[part_index], &sets[part_index]);
        if let Some(reason) = stopped {
            notes.push(format!("{} ({}): {reason}", arm.label(), part.name));
        }
        // The model file holds the validation-selected round's state.
        if let (Some(dir), Some(state)) = (out, trace.best_state.as_ref().or(state.as_ref())) {
            let model = ArmModel {
                arm,
                mode: mode.name(),
                partition: (part_index, parts.len(), part),
                dataset: &dataset,
                train_set: &set.train,
                test_set: &set.test,
                state,
                rounds: trace.best.round().unwrap_or(0),
                last_predictions: trace.selected().map(Vec::as_slice),
            };
            write_arm_model(dir, config, &model)?;
        }
        if matches!(arm, Arm::Federated | Arm::FedavgEncoder) {
            federated_evaluations
                .entry(arm)
                .or_default()
                .push(std::mem::take(&mut trace.federated));
        }
        if arm == Arm::Federated {
            personalized_parts[part_index] = personalized;
        }
        traces.entry(arm).or_default().push(trace);
        if let Some(state) = state {
            final_states.entry(arm).or_default().push(state);
        }
    }

    // The personalized arm's outcome per partition, while every partition allows it.
    let mut personalized: Option<Result<Vec<PartitionOutcome>, String>> = config
        .arms
        .contains(&Arm::Personalized)
        .then(|| Ok(Vec::new()));
    for outcome in personalized_parts {
        let Some(Ok(outcomes)) = personalized.as_mut() else {
            break;
        };
        match outcome.expect("runs with the personalized arm have a federated job per partition") {
            Ok(outcome) => outcomes.push(outcome),
            Err(reason) => personalized = Some(Err(reason)),
        }
    }
    bar.finish();
    let rounds = pool_rounds(&traces, &labels, config.rounds);
    let mut selection = Selected::of(&traces, &labels);
    match personalized {
        Some(Ok(outcomes)) => {
            let predictions: Vec<Vec<f32>> = outcomes
                .iter()
                .flat_map(|o| o.predictions.iter().cloned())
                .collect();
            if predictions.len() == labels.len() {
                selection.predictions.insert(Arm::Personalized, predictions);
                // The rounds of the global models the clients started from.
                let rounds = selection.rounds.get(&Arm::Federated).cloned();
                selection
                    .rounds
                    .insert(Arm::Personalized, rounds.unwrap_or_default());
                notes.push(format!(
                    "{}: {}",
                    Arm::Personalized.label(),
                    epochs_note(&outcomes, config.personalize_epochs)
                ));
            }
        }
        Some(Err(reason)) => notes.push(format!("{}: {reason}", Arm::Personalized.label())),
        None => {}
    }
    let per_subject = per_subject_metrics(&selection, &labels, &subjects);
    let mut final_table = SummaryTable::default();
    for &arm in &config.arms {
        let Some(predictions) = selection.predictions.get(&arm) else {
            continue;
        };
        let comparison = (arm != Arm::LabelPrior)
            .then(|| compare_to_prior(&labels, predictions, &priors, &subjects, config.seed))
            .flatten();
        final_table.push(ArmSummary::new(
            arm.label(),
            predictions,
            &labels,
            &partition_sizes,
            comparison,
            selection.rounds[&arm].clone(),
        ));
    }
    if let Some(predictions) = &stimulus_predictions {
        final_table.push(ArmSummary::new(
            STIMULUS_PRIOR,
            predictions,
            &labels,
            &partition_sizes,
            compare_to_prior(&labels, predictions, &priors, &subjects, config.seed),
            Vec::new(),
        ));
    }
    let result = SimulationResult {
        dataset: dataset.name.clone(),
        subjects: dataset.subjects().len(),
        protocol: config.protocol.to_string(),
        mode: mode.name().to_string(),
        device: selected.description,
        rounds,
        per_subject,
        final_table,
        final_states,
        best_states: selection.states,
        test_samples: TestSamples {
            labels,
            subjects,
            priors,
        },
        selected_predictions: selection.predictions,
        federated_evaluations,
        notes,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = out {
        write_outputs(dir, &result)?;
    }
    Ok(result)
}

/// The partitions `config` cuts `dataset` into (its protocol, validation fraction and seed):
/// the simulation's and, from the same snapshot, each job process's.
pub(crate) fn config_partitions(
    dataset: &Dataset,
    config: &SimulationConfig,
) -> Result<Vec<Partition>, SimulationError> {
    Ok(partitions(
        dataset,
        config.protocol,
        config.selection.validation_fraction,
        config.seed,
    )?)
}

/// One partition's data as every arm sees it.
pub(crate) struct PartitionSets {
    /// The partition's name (`all`, `fold-1`, ...).
    name: String,
    /// The training side, standardised per subject with its own statistics.
    train: Dataset,
    test: Dataset,
    /// Validation samples first, then test samples: every arm predicts both each round.
    held_out: Dataset,
    validation_count: usize,
    /// The label prior of `train`.
    prior: Vec<f32>,
    /// The weights every arm starts from, its head at the training label prior.
    initial: GlobalState,
}

impl PartitionSets {
    pub(crate) fn new(
        dataset: &Dataset,
        part: &Partition,
        config: &SimulationConfig,
        device: &Device,
    ) -> Result<Self, SimulationError> {
        let normalized = normalize_per_subject(dataset, &part.train);
        let train = normalized.subset(&part.train);
        let held_out_rows: Vec<usize> = part.validation.iter().chain(&part.test).copied().collect();
        let prior = train.label_prior();
        let mut model = MpclModel::new(&dataset.schema, &config.model, device, config.seed)?;
        model.start_at_prior(&prior);
        Ok(Self {
            name: part.name.clone(),
            test: normalized.subset(&part.test),
            held_out: normalized.subset(&held_out_rows),
            validation_count: part.validation.len(),
            initial: model.global_state(),
            prior,
            train,
        })
    }
}

/// The samples an arm trains and is scored on in one partition.
struct ArmData<'a> {
    train: &'a Dataset,
    /// Validation samples (the first `validation_count`) then test samples.
    held_out: &'a Dataset,
    validation_count: usize,
    /// The label prior of `train`.
    prior: &'a [f32],
}

impl ArmData<'_> {
    /// The validation and the test samples, apart, when every training subject has some of
    /// both (trial-wise protocols): each participant of a federated arm then evaluates on its
    /// own subject's samples of them, as a real participant does. Protocols that hold out whole
    /// subjects or stimuli leave participants without a part of their own: `None`.
    fn federated_evaluation_parts(&self) -> Option<(Dataset, Dataset)> {
        let n = self.held_out.samples.len();
        let rows = |range: std::ops::Range<usize>| range.collect::<Vec<usize>>();
        let validation = self.held_out.subset(&rows(0..self.validation_count));
        let test = self.held_out.subset(&rows(self.validation_count..n));
        let (with_validation, with_test) = (validation.subjects(), test.subjects());
        self.train
            .subjects()
            .iter()
            .all(|s| with_validation.contains(s) && with_test.contains(s))
            .then_some((validation, test))
    }
}

/// How one federated arm runs (see [`ExecutionMode`]).
pub(crate) enum FederationMode<'a> {
    /// In this process, training up to `threads` participants at once.
    InProcess { threads: usize },
    Network {
        options: &'a NetworkOptions,
        work_dir: PathBuf,
    },
}

/// What one (partition, arm) job ends with.
#[derive(Serialize, Deserialize)]
pub(crate) struct JobOutcome {
    pub(crate) trace: ArmTrace,
    /// The final state (arms with a model).
    pub(crate) state: Option<GlobalState>,
    /// Why the arm stopped early, if it did for a reason the table must mention.
    pub(crate) stopped: Option<String>,
    /// The personalized arm on this partition (the federated arm's job of a run with that arm):
    /// its outcome, or why the partition leaves it out. It starts from this job's model, so it
    /// runs at the end of this job, beside the other jobs.
    pub(crate) personalized: Option<Result<PartitionOutcome, String>>,
}

/// One round of one job, as the progress bar and the round log take it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RoundReport {
    pub(crate) round: u64,
    /// Pooled test KL.
    pub(crate) kl: f64,
    pub(crate) wall_seconds: f64,
    /// The round's [`RoundRecord`] as its `rounds.jsonl` line.
    pub(crate) json: String,
}

/// Runs `arm` on the partition `set`, handing every round to `on_round`. The same whether the
/// job runs on a thread of the simulation's process or in a child process of its own
/// ([`crate::job_process`]).
pub(crate) fn run_job(
    arm: Arm,
    set: &PartitionSets,
    federation: &FederationMode<'_>,
    config: &SimulationConfig,
    device: &Device,
    on_round: &mut dyn FnMut(RoundReport) -> Result<(), SimulationError>,
) -> Result<JobOutcome, SimulationError> {
    let mut observe = |round: u64,
                       predictions: &[Vec<f32>],
                       state: Option<&GlobalState>,
                       bytes: (u64, u64),
                       seconds: f64,
                       epsilon: Option<f64>| {
        let metrics_of = |samples: &[mpcl_data::Sample], predictions: &[Vec<f32>]| {
            evaluate(
                samples
                    .iter()
                    .zip(predictions)
                    .map(|(s, p)| (s.label.as_slice(), p.as_slice())),
            )
        };
        let (validation_predictions, test_predictions) = predictions.split_at(set.validation_count);
        let metrics = metrics_of(&set.test.samples, test_predictions);
        let validation = (set.validation_count > 0).then(|| {
            metrics_of(
                &set.held_out.samples[..set.validation_count],
                validation_predictions,
            )
        });
        let record = RoundRecord {
            arm,
            partition: set.name.clone(),
            round,
            metrics,
            validation,
            prototype_cosine: state
                .and_then(|s| cross_emotion_cosine(&s.prototypes))
                .filter(|_| config.model.use_prototypes),
            bytes_down: bytes.0,
            bytes_up: bytes.1,
            wall_seconds: seconds,
            epsilon,
        };
        on_round(RoundReport {
            round,
            kl: metrics.kl,
            wall_seconds: seconds,
            json: serde_json::to_string(&record).expect("plain data serialises"),
        })?;
        Ok::<_, SimulationError>(validation)
    };
    let mut evaluator = Evaluator::new(&set.held_out, &set.train, &config.model, device)?;
    let (trace, state, stopped) = run_arm(
        arm,
        federation,
        config,
        &ArmData {
            train: &set.train,
            held_out: &set.held_out,
            validation_count: set.validation_count,
            prior: &set.prior,
        },
        &set.initial,
        device,
        &mut evaluator,
        &mut observe,
    )?;
    // The personalized arm starts from this job's model: it runs here, beside the other jobs.
    let personalized = if arm == Arm::Federated && config.arms.contains(&Arm::Personalized) {
        let chosen = (
            trace.best_state.as_ref().or(state.as_ref()),
            trace.selected(),
        );
        Some(
            match (
                omitted(&set.train, &set.test, config.selection.validation_fraction),
                chosen,
            ) {
                (Some(reason), _) => Err(reason.to_string()),
                (None, (Some(chosen), Some(predictions))) => Ok(personalize_partition(
                    &PartitionData {
                        train: &set.train,
                        held_out: &set.held_out,
                        validation_count: set.validation_count,
                        state: chosen,
                        federated_predictions: predictions,
                    },
                    config,
                    device,
                )?),
                (None, _) => Err("omitted: the federated arm chose no model".to_string()),
            },
        )
    } else {
        None
    };
    Ok(JobOutcome {
        trace,
        state,
        stopped,
        personalized,
    })
}

/// Runs one arm on one partition: its trace, its final state (arms with a model) and why it
/// stopped early, if it did for a reason the table must mention (the privacy budget).
#[allow(clippy::too_many_arguments)]
fn run_arm(
    arm: Arm,
    federation_mode: &FederationMode<'_>,
    config: &SimulationConfig,
    data: &ArmData<'_>,
    initial: &GlobalState,
    device: &Device,
    evaluator: &mut Evaluator,
    on_round: &mut RoundObserver<'_>,
) -> Result<(ArmTrace, Option<GlobalState>, Option<String>), SimulationError> {
    let mut trace = ArmTrace::new(data.validation_count);
    let patience = config.selection.patience;
    let training = &config.training;
    let options = |round: u64, salt: u64| TrainOptions {
        epochs: training.local_epochs as usize,
        batch_size: training.batch_size as usize,
        learning_rate: training.learning_rate_schedule.rate(
            training.learning_rate,
            round,
            config.rounds,
        ),
        weight_decay: training.weight_decay,
        seed: config.seed ^ (round << 32) ^ salt,
        proximal_mu: 0.0,
        progress: false,
    };
    match arm {
        Arm::Federated | Arm::FedavgEncoder => {
            let settings = ParticipantSettings {
                min_prototype_mass: config.privacy.min_prototype_mass as f32,
            };
            let mut coordinator = coordinator_config(config, data.train.subjects().len())?;
            coordinator.training.share_memories = arm == Arm::Federated;
            let mut last_state = None;
            let mut observe = |outcome: &RoundOutcome| {
                let stop = trace.record(
                    on_round,
                    outcome.round,
                    evaluator.predict(&outcome.state)?,
                    Some(&outcome.state),
                    (outcome.bytes_down, outcome.bytes_up),
                    outcome.seconds,
                    outcome.epsilon(),
                    patience,
                )?;
                if stop {
                    last_state = Some(outcome.state.clone());
                    return Err(SimulationError::PatienceExhausted(patience));
                }
                Ok(())
            };
            let parts = data.federated_evaluation_parts();
            let parts = parts.as_ref().map(|(validation, test)| (validation, test));
            coordinator.evaluation.enabled = parts.is_some();
            let mut federated = Vec::new();
            let run = match federation_mode {
                FederationMode::InProcess { threads } => {
                    let mut federation = InProcessFederation::new(
                        data.train,
                        parts,
                        &config.model,
                        &settings,
                        coordinator,
                        initial.clone(),
                        device,
                    )?;
                    if config.deterministic_noise_for_tests {
                        federation.use_deterministic_noise_for_tests();
                    }
                    federation.set_threads(*threads);
                    let run = federation
                        .run(&mut observe)
                        .map(|state| (state, federation.stop_reason().map(ToString::to_string)));
                    federated = federation.coordinator().evaluations().to_vec();
                    run
                }
                FederationMode::Network { options, work_dir } => run_network_federation(
                    data.train,
                    parts,
                    &config.model,
                    &settings,
                    coordinator,
                    initial.clone(),
                    config.device,
                    config.deterministic_noise_for_tests,
                    options,
                    work_dir,
                    &mut observe,
                )
                .map(|(state, stopped, evaluations)| {
                    federated = evaluations;
                    (state, stopped)
                }),
            };
            trace.federated = federated;
            let (final_state, stopped) = match run {
                Ok(done) => done,
                Err(SimulationError::PatienceExhausted(_)) => {
                    (last_state.expect("kept when stopping"), None)
                }
                Err(error) => return Err(error),
            };
            Ok((trace, Some(final_state), stopped))
        }
        Arm::Centralized => {
            let models = ModelPool::new(&data.train.schema, &config.model, device)?;
            let mut learner = Learner::new(data.train, &models, initial)?;
            for round in 1..=config.rounds {
                let started = Instant::now();
                learner.train_round(&options(round, 0))?;
                let state = learner.state();
                let predictions = evaluator.predict(state)?;
                let seconds = started.elapsed().as_secs_f64();
                let stop = trace.record(
                    on_round,
                    round,
                    predictions,
                    Some(state),
                    (0, 0),
                    seconds,
                    None,
                    patience,
                )?;
                if stop {
                    break;
                }
            }
            Ok((trace, Some(learner.state().clone()), None))
        }
        Arm::LocalOnly => {
            // The learners train one after another: one model serves them all.
            let models = ModelPool::new(&data.train.schema, &config.model, device)?;
            let mut learners = Vec::new();
            for (index, subject) in data.train.subjects().into_iter().enumerate() {
                let own_rows = data.held_out.indices_of_subject(&subject);
                learners.push((
                    index as u64,
                    Learner::new(&data.train.subject_subset(&subject), &models, initial)?,
                    own_rows,
                ));
            }
            // Held-out samples of subjects without a learner of their own (held-out subjects)
            // are predicted by the mean of all local models.
            let orphan_rows: Vec<usize> = (0..data.held_out.samples.len())
                .filter(|&i| !learners.iter().any(|(_, _, rows)| rows.contains(&i)))
                .collect();
            let emotions = data.held_out.schema.emotion_count();
            let learner_count = learners.len() as f32;
            for round in 1..=config.rounds {
                let started = Instant::now();
                let mut predictions = vec![vec![0.0f32; emotions]; data.held_out.samples.len()];
                for (salt, learner, rows) in &mut learners {
                    learner.train_round(&options(round, *salt + 1))?;
                    let state = learner.state();
                    for (row, p) in rows.iter().zip(evaluator.predict_rows(state, rows)?) {
                        predictions[*row] = p;
                    }
                    if !orphan_rows.is_empty() {
                        let ensemble = evaluator.predict_rows(state, &orphan_rows)?;
                        for (row, p) in orphan_rows.iter().zip(ensemble) {
                            for (acc, v) in predictions[*row].iter_mut().zip(p) {
                                *acc += v / learner_count;
                            }
                        }
                    }
                }
                let seconds = started.elapsed().as_secs_f64();
                let stop = trace.record(
                    on_round,
                    round,
                    predictions,
                    None,
                    (0, 0),
                    seconds,
                    None,
                    patience,
                )?;
                if stop {
                    break;
                }
            }
            Ok((trace, None, None))
        }
        // Not an arm with rounds: it runs after the federated arm (`personalize_partition`).
        Arm::Personalized => Err(SimulationError::Config(
            "the personalized arm has no rounds of its own".into(),
        )),
        Arm::LabelPrior => {
            let predictions = vec![data.prior.to_vec(); data.held_out.samples.len()];
            for round in 1..=config.rounds {
                trace.record(
                    on_round,
                    round,
                    predictions.clone(),
                    None,
                    (0, 0),
                    0.0,
                    None,
                    0,
                )?;
            }
            Ok((trace, None, None))
        }
    }
}

/// The coordinator settings of a simulation's federated arms.
pub fn coordinator_config(
    config: &SimulationConfig,
    clients: usize,
) -> Result<CoordinatorConfig, SimulationError> {
    let cohort = config
        .clients_per_round
        .unwrap_or(clients)
        .min(clients)
        .max(1);
    // Under secure aggregation a round completes with the threshold's number of survivors.
    let min_clients_to_aggregate = if config.privacy.secure_aggregation {
        config.privacy.threshold.for_cohort(cohort)
    } else {
        cohort
    };
    let mut coordinator = CoordinatorConfig {
        name: "simulation".to_string(),
        seed: config.seed,
        rounds: config.rounds,
        clients_per_round: Some(cohort),
        min_clients_to_aggregate,
        min_available_clients: Some(clients),
        aggregation: config.aggregation.clone(),
        privacy: config.privacy.clone(),
        // On only where every participant has a validation and a test part of its own (see
        // `ArmData::federated_evaluation_parts`).
        evaluation: EvaluationConfig::disabled(),
        // Every arm's initial state already has its head at the pooled training label prior
        // (the same prior a label-prior round would sum from the clients).
        start_at_label_prior: false,
        ..CoordinatorConfig::default()
    };
    coordinator.training = config.training.clone();
    coordinator.validate()?;
    Ok(coordinator)
}

/// A seeded sample of `count` subjects (all of them when `count` is unset or too large).
fn sample_subjects(dataset: &Dataset, count: Option<usize>, seed: u64) -> Dataset {
    let subjects = dataset.subjects();
    let Some(count) = count.filter(|c| *c < subjects.len()) else {
        return dataset.clone();
    };
    let mut chosen = subjects;
    chosen.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    chosen.truncate(count);
    let rows: Vec<usize> = (0..dataset.samples.len())
        .filter(|&i| chosen.contains(&dataset.samples[i].subject))
        .collect();
    dataset.subset(&rows)
}
