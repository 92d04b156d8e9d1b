//! The round state machine: the whole federated protocol as a pure function from events to
//! actions, with no sockets, threads or clock reads.
//!
//! A driver (the QUIC server, or the in-process simulation) feeds [`Event`]s with the current
//! time in abstract milliseconds to [`Coordinator::handle`] and carries out the returned
//! [`Action`]s in order (send this, persist that, arm a timer). Because nothing here reads a
//! clock or a random source of its own, the same script of events always gives the same actions,
//! which is what makes the simulations reproducible and the tests exact.
//!
//! # A round
//!
//! 1. When at least [`CoordinatorConfig::start_threshold`] participants are connected, round
//!    `r` starts: a cohort of [`CoordinatorConfig::cohort_size`] participants is sampled from the
//!    connected ones (sorted by id) with a ChaCha20 generator seeded from `(seed, r)`, each gets
//!    [`Action::SendRound`], and a deadline is armed with [`Action::SetDeadline`].
//! 2. Updates are checked (run, round, sampled, first answer, then content via
//!    [`validate_update`]) and either accepted into the round's streaming aggregator or rejected
//!    with a typed reason. A sampled participant whose update is rejected for its content has
//!    answered: it cannot resend in the same round.
//! 3. The round is aggregated as soon as every sampled participant has answered and at least
//!    `min_clients_to_aggregate` updates were accepted, or when the deadline passes with at least
//!    that many accepted.
//! 4. When the deadline passes with too few accepted updates (or everyone answered but too many
//!    were rejected), the round is **extended**, never aggregated short: the accepted updates are
//!    kept, replacements are sampled from connected participants not yet in the cohort (as many
//!    as the target cohort size minus the accepted updates: participants that have not answered
//!    are presumed lost, though their update is still welcome), and a new deadline is armed
//!    ([`Action::RoundExtended`], [`Action::SetDeadline`]). This repeats until enough updates
//!    arrive.
//! 5. After aggregating: [`Action::Aggregated`] with the round's summary, [`Action::Persist`]
//!    with the checkpoint to write, then the next round starts (if enough participants are
//!    connected) or, after the last round, [`Action::Finished`].
//!
//! # Federated evaluation
//!
//! With `[evaluation]` on, evaluation rides on the rounds: a round whose received state is due
//! for evaluation ([`EvaluationConfig::is_due`]; round `r` receives the global model after round
//! `r - 1`, so round 1 evaluates the initial model) asks a seeded share of its cohort
//! ([`EvaluationConfig::evaluators`]) to evaluate that state before training
//! ([`TrainingConfig::evaluate`]). Their reports travel in their updates (or inside the masked
//! sum) and are summed exactly; when the round is aggregated the totals become that model's
//! [`FederatedMetrics`] ([`Action::Evaluated`]). A model with a new lowest validation KL is
//! handed out once more as [`Action::PersistBest`], so the driver keeps the best global state
//! beside the latest; test metrics never take part in that choice. After the last training
//! round one **evaluation-only round** (numbered `rounds + 1`; [`RoundKind::Evaluation`]) asks
//! every connected participant to evaluate the final model; its updates change nothing, it does not
//! count against the privacy budget, and [`Action::Finished`] follows it. Symmetrically, with
//! `start_at_label_prior` a **round 0** ([`RoundKind::LabelPrior`]) first collects every connected
//! participant's training label sums and sets the head's logit offsets to the summed prior
//! ([`Action::LabelPriorSet`]), so round 1 trains from a model that predicts it.
//!
//! A participant that disconnects mid-round simply stops counting as pending (its already
//! accepted update still counts); if it reconnects and asks for work while the round it was
//! sampled for is still open and it has not answered, it gets the round's state again.
//!
//! # Privacy
//!
//! With `privacy.clip_norm` set, every accepted delta is clipped to that L2 norm. With
//! differential privacy on (`privacy.noise_multiplier > 0`):
//!
//! * FedAvg weights every client 1, not by sample count: the Gaussian noise is calibrated to the
//!   sensitivity of the *sum* to one client, which is the clip norm only when no client's
//!   clipped delta enters with a weight above 1 (a client claiming 10x the samples would move
//!   the mean 10x further than the noise hides). The mean is then the noised sum divided by the
//!   number of contributors.
//! * In plain mode the coordinator adds `N(0, (sigma * C)^2)` to each coordinate of the sum of
//!   clipped deltas (so `sigma * C / n` on the mean of `n` contributors), drawn from a generator
//!   seeded by the operating system for every round. The run seed never seeds it: noise whose
//!   seed is known can be subtracted. Tests and simulations may call
//!   [`Coordinator::use_deterministic_noise_for_tests`], which makes the noise reproducible and
//!   the guarantee void.
//! * A [`PrivacyLedger`] accounts every aggregated round as one sampled Gaussian mechanism with
//!   sampling rate `q = participants sampled (replacements included) / participants connected
//!   when the round started`. This is an approximation: the analysis assumes Poisson sampling
//!   from a fixed population, while the cohort is a fixed-size draw from whoever is connected.
//!   Before a round starts, [`PrivacyLedger::peek_round`] checks that it would fit in
//!   `privacy.epsilon_budget`; if not, no client trains for it and the run ends with
//!   [`Action::Stopped`] ([`StopReason::PrivacyBudgetExhausted`]) and [`Action::Finished`]. A
//!   round whose recorded cost turns out higher than peeked (replacements raised `q`) and does
//!   not fit is discarded the same way, never released. Epsilon after each round is in
//!   [`RoundSummary::privacy`]; the ledger is in every checkpoint.
//!
//! Under secure aggregation (`privacy.secure_aggregation`) the coordinator never sees a single
//! update: [`Event::UpdateReceived`] is rejected
//! ([`RejectReason::SecureAggregationRequired`]). The driver runs the masking protocol with the
//! open round's [`SecureRoundPlan`] ([`Coordinator::secure_round_plan`]), the clients clip and
//! add their share of the noise themselves, and the unmasked sum arrives as
//! [`Event::SecureSumReceived`]; it is aggregated exactly like FedAvg's running sum. A failed
//! session ([`Event::SecureAggregationFailed`]), an unusable sum, or a deadline passing without
//! a sum restart the round with a newly sampled cohort (a session's roster is fixed, so a round
//! cannot be topped up with replacements).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use mpcl_protocol::messages::{
    ClientUpdate, GlobalState, LABEL_PRIOR_LOGITS, RoundKind, RunId, TrainingConfig,
};
use mpcl_protocol::secure_aggregation::SummedUpdate;
use mpcl_protocol::vector::F32Vec;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::aggregation::{FedAdamState, RoundAggregator};
use crate::checkpoint::Checkpoint;
use crate::config::{ConfigError, CoordinatorConfig};
use crate::evaluation::{EvaluationConfig, EvaluationTotals, FederatedMetrics, best_round};
use crate::privacy::{
    BudgetExhausted, LedgerError, PrivacyLedger, PrivacySpent, SecureRoundPlan, central_noise_std,
};
use crate::validate::{RejectReason, hex, validate_update};

/// Abstract time in milliseconds, supplied by the driver (monotonic; the origin is arbitrary).
pub type Millis = u64;

pub use mpcl_protocol::ParticipantId;

/// Something that happened, as the driver saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An authenticated participant connected.
    ClientConnected { participant: ParticipantId },
    /// A participant's connection closed.
    ClientDisconnected { participant: ParticipantId },
    /// A participant asks what to do.
    WorkRequested { participant: ParticipantId },
    /// A participant sent an update (signature already verified by the transport).
    UpdateReceived {
        participant: ParticipantId,
        update: Box<ClientUpdate>,
    },
    /// The timer armed by [`Action::SetDeadline`] for `round` fired. Ignored unless it is the
    /// open round and `now` has reached its current deadline (a timer left over from before an
    /// extension is harmless).
    DeadlinePassed { round: u64 },
    /// Time moved on; checks the open round's deadline against `now`.
    Tick,
    /// Secure aggregation: the unmasked sum of round `round`, decoded with the round's
    /// [`SecureRoundPlan::decode`], and the participants whose inputs are in it. Ignored unless
    /// secure aggregation is on and `round` is open; an unusable sum restarts the round
    /// ([`Action::RoundFailed`]).
    SecureSumReceived {
        round: u64,
        contributors: Vec<ParticipantId>,
        sum: Box<SummedUpdate>,
    },
    /// Secure aggregation: the masking protocol of round `round` failed (too few survivors, a
    /// bad reconstruction); the round restarts with a newly sampled cohort. Ignored unless
    /// `round` is open.
    SecureAggregationFailed { round: u64, error: String },
}

/// Why a participant is told to wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitReason {
    /// No round is open: too few participants are connected.
    WaitingForParticipants { connected: usize, needed: usize },
    /// A round is open but this participant is not in its cohort.
    NotSampled,
    /// The participant already answered the open round.
    AlreadySubmitted,
    /// All rounds are done; the participant may disconnect.
    RunFinished,
}

/// Something the driver must do, in the order returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send the round's global state and training settings to a participant.
    SendRound {
        participant: ParticipantId,
        round: u64,
        state: Arc<GlobalState>,
        config: TrainingConfig,
    },
    /// Tell a participant there is no work for it now.
    SendWait {
        participant: ParticipantId,
        /// The open round, or the next one when none is open.
        round: u64,
        reason: WaitReason,
    },
    /// The participant's update for `round` was accepted.
    Accept {
        participant: ParticipantId,
        round: u64,
    },
    /// The participant's update was rejected (`round` is the round the update claimed).
    Reject {
        participant: ParticipantId,
        round: u64,
        reason: RejectReason,
    },
    /// The global model after round `metrics.round` was evaluated (by the participants of the
    /// round after it). `best`: its validation KL is the lowest so far.
    Evaluated {
        metrics: Box<FederatedMetrics>,
        best: bool,
    },
    /// Keep `state`, the global model after round `round`, as the run's best (lowest validation
    /// KL so far), replacing the one kept before; comes before the [`Action::Persist`] that
    /// records the choice.
    PersistBest { round: u64, state: Arc<GlobalState> },
    /// Arm (or re-arm, replacing any earlier one) the timer for `round`; when it fires, send
    /// [`Event::DeadlinePassed`].
    SetDeadline { round: u64, at_ms: Millis },
    /// The deadline passed with too few accepted updates; the round goes on with `added`
    /// participants sampled as replacements.
    RoundExtended {
        round: u64,
        accepted: usize,
        required: usize,
        added: Vec<ParticipantId>,
    },
    /// The opening round set the head at `prior`, the label prior of `samples` training samples
    /// of `participants` participants; the new global state is [`Coordinator::global_state`].
    LabelPriorSet {
        participants: usize,
        samples: u64,
        prior: Vec<f32>,
    },
    /// A round was aggregated; the new global state is [`Coordinator::global_state`].
    Aggregated {
        round: u64,
        summary: Box<RoundSummary>,
    },
    /// Aggregation failed on internally inconsistent data (not bad client input, which is
    /// rejected earlier); the round's updates are discarded and the round starts again.
    RoundFailed { round: u64, error: String },
    /// Write this checkpoint durably (see [`crate::checkpoint::write_checkpoint`]) before
    /// carrying out the actions after it.
    Persist { checkpoint: Box<Checkpoint> },
    /// The run ends before its last round, for `reason`; [`Action::Finished`] follows.
    Stopped { rounds: u64, reason: StopReason },
    /// The run is over: the last round has been aggregated, or the run stopped early
    /// ([`Action::Stopped`] comes first).
    Finished { rounds: u64 },
}

/// Why a run ended before its last round.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum StopReason {
    /// The next round would have exceeded the privacy budget (`privacy.epsilon_budget`).
    #[error(
        "privacy budget exhausted after {rounds} rounds, epsilon = {epsilon:.4} (delta {delta:e}); round {} would have raised epsilon to {:.4}, above the budget of {}",
        refused.round, refused.epsilon, refused.budget
    )]
    PrivacyBudgetExhausted {
        /// Rounds aggregated (and released).
        rounds: u64,
        /// Epsilon spent by those rounds.
        epsilon: f64,
        /// The delta epsilon is reported at.
        delta: f64,
        /// What the refused round would have cost.
        refused: BudgetExhausted,
    },
}

/// What the privacy layers did in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundPrivacy {
    /// The coordinator saw only the sum (secure aggregation).
    pub secure_aggregation: bool,
    /// The L2 bound each delta was clipped to.
    pub clip_norm: Option<f64>,
    /// How many deltas clipping scaled down (`None` under secure aggregation: clients clip their
    /// own and the coordinator cannot tell).
    pub clipped: Option<usize>,
    /// Standard deviation of the Gaussian noise on the sum of deltas (differential privacy);
    /// under secure aggregation, that of the sum of the contributors' noise shares.
    pub noise_std: Option<f64>,
    /// The sampling rate the round was accounted with.
    pub sampling_rate: Option<f64>,
    /// Epsilon spent by the run up to and including this round.
    pub epsilon: Option<f64>,
    /// The delta epsilon is reported at.
    pub delta: Option<f64>,
}

/// One contributor to a round, as the round log reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContributorSummary {
    pub participant: ParticipantId,
    pub sample_count: u64,
    /// L2 norm of the participant's encoder delta.
    pub update_norm: f64,
    /// Local training loss the participant reported.
    pub train_loss: f64,
    /// Local training KL the participant reported.
    pub train_kl: f64,
    /// Local training seconds the participant reported.
    pub train_seconds: f64,
}

/// What happened in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: u64,
    /// Participants sampled, replacements included.
    pub sampled: usize,
    /// The accepted updates, in arrival order.
    pub contributors: Vec<ContributorSummary>,
    /// Updates rejected while the round was open (any reason).
    pub rejected: usize,
    /// Sum of the contributors' sample counts.
    pub total_samples: u64,
    /// Sample-weighted mean of the contributors' reported train loss (non-finite reports
    /// ignored); `None` when no finite loss was reported.
    pub mean_train_loss: Option<f64>,
    /// L2 norm of the combined client delta.
    pub combined_delta_norm: f64,
    /// L2 norm of the change applied to the global encoder.
    pub applied_norm: f64,
    /// Driver time when the round started and when it was aggregated.
    pub started_at_ms: Millis,
    pub completed_at_ms: Millis,
    /// How many times the deadline was extended.
    pub deadline_extensions: u32,
    /// What the privacy layers did (`None` when none is configured). Under secure aggregation
    /// the contributors' sample counts, update norms and metrics are not known (reported as 0).
    pub privacy: Option<RoundPrivacy>,
}

impl RoundSummary {
    /// Epsilon spent by the run up to and including this round (differential privacy only).
    pub fn epsilon(&self) -> Option<f64> {
        self.privacy.as_ref().and_then(|p| p.epsilon)
    }
}

/// Errors from building or resuming a coordinator.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The initial or checkpointed global state is malformed.
    #[error("invalid global state: {0}")]
    InvalidState(String),
    /// The checkpoint is inconsistent with itself.
    #[error("inconsistent checkpoint: {0}")]
    InvalidCheckpoint(String),
    /// The privacy ledger cannot be set up.
    #[error("privacy accounting: {0}")]
    Privacy(#[from] LedgerError),
}

/// The state of the open round.
struct OpenRound {
    round: u64,
    sampled: BTreeSet<ParticipantId>,
    responded: BTreeSet<ParticipantId>,
    contributors: Vec<ContributorSummary>,
    aggregator: RoundAggregator,
    started_at: Millis,
    deadline_at: Millis,
    extensions: u32,
    rejected: usize,
    /// Participants connected when the round started (the population of the DP sampling rate).
    available: usize,
    /// Participants asked to evaluate the received state (empty: the round does not evaluate).
    evaluators: BTreeSet<ParticipantId>,
    /// The exact totals of their reports.
    evaluation: EvaluationTotals,
    /// Training, the opening label-prior round or the final evaluation round (the last two
    /// change no trained parameter and cost no privacy budget).
    kind: RoundKind,
}

impl OpenRound {
    fn evaluates(&self) -> bool {
        !self.evaluators.is_empty()
    }
}

enum Phase {
    /// Waiting for enough participants to start round `completed_rounds + 1`.
    Waiting,
    Collecting(Box<OpenRound>),
    Finished,
}

/// Snapshot of the open round, for status displays.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundStatus {
    pub round: u64,
    pub sampled: Vec<ParticipantId>,
    pub accepted: usize,
    pub responded: usize,
    pub deadline_at_ms: Millis,
}

/// The coordinator's protocol logic (see the module documentation).
pub struct Coordinator {
    config: CoordinatorConfig,
    config_toml: String,
    run_id: RunId,
    global: Arc<GlobalState>,
    completed_rounds: u64,
    fedadam: Option<FedAdamState>,
    history: Vec<RoundSummary>,
    connected: BTreeSet<ParticipantId>,
    phase: Phase,
    restarts: u32,
    /// The privacy ledger, when differential privacy is on.
    ledger: Option<PrivacyLedger>,
    noise: NoiseSource,
    stop: Option<StopReason>,
    /// Federated metrics of every evaluated global model, in round order.
    evaluations: Vec<FederatedMetrics>,
    /// Whether the final evaluation round has been run (or there is none to run).
    final_evaluated: bool,
    /// Whether the opening round has set the head at the aggregated label prior (or there is
    /// none to run: `start_at_label_prior` is off).
    label_prior_applied: bool,
}

/// Where the coordinator's differential-privacy noise comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum NoiseSource {
    /// A generator seeded by the operating system for every round (the only safe choice).
    OperatingSystem,
    /// Derived from a seed, for reproducible tests; voids the guarantee.
    DeterministicForTests(u64),
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("run", &self.config.name)
            .field("run_id", &hex(&self.run_id))
            .field("completed_rounds", &self.completed_rounds)
            .field("rounds", &self.config.rounds)
            .field("connected", &self.connected.len())
            .field("round_status", &self.round_status())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Coordinator {
    /// A coordinator for a new run starting from `initial`. Validates the config and that the
    /// initial state is well formed (finite parameters, consistent banks and statistics).
    pub fn new(
        config: CoordinatorConfig,
        run_id: RunId,
        initial: GlobalState,
    ) -> Result<Self, CoordinatorError> {
        config.validate()?;
        check_global_state(&initial)?;
        if config.start_at_label_prior {
            check_label_prior_logits(&initial)?;
        }
        let config_toml = config.to_toml_string()?;
        let ledger = new_ledger(&config)?;
        let config_start_at_label_prior = config.start_at_label_prior;
        Ok(Self {
            config,
            config_toml,
            run_id,
            global: Arc::new(initial),
            completed_rounds: 0,
            fedadam: None,
            history: Vec::new(),
            connected: BTreeSet::new(),
            phase: Phase::Waiting,
            restarts: 0,
            ledger,
            noise: NoiseSource::OperatingSystem,
            stop: None,
            evaluations: Vec::new(),
            final_evaluated: false,
            label_prior_applied: !config_start_at_label_prior,
        })
    }

    /// A coordinator continuing from a checkpoint, with no participant connected yet (they
    /// reconnect). Sampling is derived from `(seed, round)`, so given the same events the
    /// resumed run proceeds exactly as an uninterrupted one would from that round boundary.
    pub fn resume(checkpoint: Checkpoint) -> Result<Self, CoordinatorError> {
        let config = checkpoint.config()?;
        check_global_state(&checkpoint.global)?;
        let label_prior_applied = checkpoint.label_prior_applied || !config.start_at_label_prior;
        if !label_prior_applied {
            check_label_prior_logits(&checkpoint.global)?;
        }
        let parameters = checkpoint.global.parameters.value_count();
        if let Some(state) = &checkpoint.fedadam
            && (state.m.len() != parameters || state.v.len() != parameters)
        {
            return Err(CoordinatorError::InvalidCheckpoint(format!(
                "FedAdam state holds {} / {} values, the model has {parameters}",
                state.m.len(),
                state.v.len()
            )));
        }
        if checkpoint.completed_rounds > config.rounds {
            return Err(CoordinatorError::InvalidCheckpoint(format!(
                "{} rounds completed but the run has only {}",
                checkpoint.completed_rounds, config.rounds
            )));
        }
        let ledger = match (
            config.privacy.differential_privacy(),
            checkpoint.privacy_ledger,
        ) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(CoordinatorError::InvalidCheckpoint(
                    "it holds a privacy ledger but its config has no differential privacy".into(),
                ));
            }
            (true, None) if checkpoint.completed_rounds == 0 => new_ledger(&config)?,
            (true, None) => {
                return Err(CoordinatorError::InvalidCheckpoint(format!(
                    "differential privacy is on and {} rounds are done, but the privacy ledger is missing",
                    checkpoint.completed_rounds
                )));
            }
            (true, Some(ledger)) => {
                let p = &config.privacy;
                if ledger.rounds() != checkpoint.completed_rounds
                    || ledger.noise_multiplier() != p.noise_multiplier
                    || ledger.epsilon_budget() != p.epsilon_budget
                    || ledger.spent().delta != p.target_delta
                {
                    return Err(CoordinatorError::InvalidCheckpoint(format!(
                        "the privacy ledger ({} rounds, noise multiplier {}) does not match the run ({} rounds, noise multiplier {})",
                        ledger.rounds(),
                        ledger.noise_multiplier(),
                        checkpoint.completed_rounds,
                        p.noise_multiplier
                    )));
                }
                Some(ledger)
            }
        };
        if let Some(late) = checkpoint
            .evaluations
            .iter()
            .find(|m| m.round > checkpoint.completed_rounds)
        {
            return Err(CoordinatorError::InvalidCheckpoint(format!(
                "it holds federated metrics of round {} but only {} rounds are done",
                late.round, checkpoint.completed_rounds
            )));
        }
        let final_pending = config.evaluation.enabled && !checkpoint.final_evaluated;
        let phase = if checkpoint.completed_rounds >= config.rounds && !final_pending {
            Phase::Finished
        } else {
            Phase::Waiting
        };
        Ok(Self {
            config,
            config_toml: checkpoint.config_toml,
            run_id: checkpoint.run_id,
            global: Arc::new(checkpoint.global),
            completed_rounds: checkpoint.completed_rounds,
            fedadam: checkpoint.fedadam,
            history: checkpoint.history,
            connected: BTreeSet::new(),
            phase,
            restarts: 0,
            ledger,
            noise: NoiseSource::OperatingSystem,
            stop: None,
            evaluations: checkpoint.evaluations,
            final_evaluated: checkpoint.final_evaluated,
            label_prior_applied,
        })
    }

    /// **Unsafe for real studies.** Draws the differential-privacy noise from a generator
    /// derived from `seed` and the round instead of the operating system, so that simulations
    /// and tests are reproducible. Anyone who knows the seed can subtract the noise: the
    /// reported epsilon then means nothing. Not persisted: a resumed coordinator uses the
    /// operating system again unless this is called again.
    pub fn use_deterministic_noise_for_tests(&mut self, seed: u64) {
        self.noise = NoiseSource::DeterministicForTests(seed);
    }

    /// The privacy ledger (differential privacy only).
    pub fn privacy_ledger(&self) -> Option<&PrivacyLedger> {
        self.ledger.as_ref()
    }

    /// The (epsilon, delta) spent so far (differential privacy only).
    pub fn privacy_spent(&self) -> Option<PrivacySpent> {
        self.ledger.as_ref().map(PrivacyLedger::spent)
    }

    /// Why the run ended early, if it did.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// The secure-aggregation plan of the open round: `Ok(None)` when secure aggregation is off
    /// or no round is collecting.
    pub fn secure_round_plan(&self) -> Result<Option<SecureRoundPlan>, CoordinatorError> {
        let Phase::Collecting(open) = &self.phase else {
            return Ok(None);
        };
        if !self.config.privacy.secure_aggregation {
            return Ok(None);
        }
        self.config
            .privacy
            .secure_round_plan(
                self.run_id,
                open.round,
                open.sampled.iter().copied().collect(),
                &self.global,
                open.evaluates(),
            )
            .map(Some)
            .map_err(|e| {
                CoordinatorError::Config(ConfigError::Invalid {
                    path: None,
                    field: "privacy.quantisation_scale".into(),
                    message: e.to_string(),
                })
            })
    }

    /// The state to persist: everything up to the last completed round.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            config_toml: self.config_toml.clone(),
            run_id: self.run_id,
            completed_rounds: self.completed_rounds,
            global: (*self.global).clone(),
            fedadam: self.fedadam.clone(),
            history: self.history.clone(),
            privacy_ledger: self.ledger.clone(),
            evaluations: self.evaluations.clone(),
            final_evaluated: self.final_evaluated,
            label_prior_applied: self.label_prior_applied,
        }
    }

    /// Federated metrics of every evaluated global model, in round order.
    pub fn evaluations(&self) -> &[FederatedMetrics] {
        &self.evaluations
    }

    /// The evaluated round with the lowest validation KL (never chosen on test metrics).
    pub fn best_round(&self) -> Option<u64> {
        best_round(&self.evaluations)
    }

    /// The run configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The global state after the last completed round.
    pub fn global_state(&self) -> &Arc<GlobalState> {
        &self.global
    }

    /// Rounds aggregated so far.
    pub fn completed_rounds(&self) -> u64 {
        self.completed_rounds
    }

    /// Summaries of the completed rounds.
    pub fn history(&self) -> &[RoundSummary] {
        &self.history
    }

    /// The FedAdam moments, once FedAdam has stepped.
    pub fn fedadam_state(&self) -> Option<&FedAdamState> {
        self.fedadam.as_ref()
    }

    /// Participants currently connected.
    pub fn connected(&self) -> impl Iterator<Item = &ParticipantId> {
        self.connected.iter()
    }

    /// Whether every round has been aggregated.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// The open round, if one is collecting updates.
    pub fn round_status(&self) -> Option<RoundStatus> {
        match &self.phase {
            Phase::Collecting(open) => Some(RoundStatus {
                round: open.round,
                sampled: open.sampled.iter().copied().collect(),
                accepted: open.aggregator.accepted(),
                responded: open.responded.len(),
                deadline_at_ms: open.deadline_at,
            }),
            _ => None,
        }
    }

    /// When the open round's deadline falls, if one is open (what a driver's timer waits for).
    pub fn next_deadline(&self) -> Option<Millis> {
        match &self.phase {
            Phase::Collecting(open) => Some(open.deadline_at),
            _ => None,
        }
    }

    /// The round that is open or will open next.
    pub fn current_round(&self) -> u64 {
        match &self.phase {
            Phase::Collecting(open) => open.round,
            _ => self.next_round(),
        }
    }

    /// The number of the round to start next: 0 while the opening label-prior round is to
    /// run, then `completed_rounds + 1`.
    fn next_round(&self) -> u64 {
        if self.label_prior_applied {
            self.completed_rounds + 1
        } else {
            0
        }
    }

    /// Feeds one event at driver time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::ClientConnected { participant } => {
                self.connected.insert(participant);
                self.maybe_start_round(now, &mut actions);
            }
            Event::ClientDisconnected { participant } => {
                self.connected.remove(&participant);
            }
            Event::WorkRequested { participant } => {
                self.connected.insert(participant);
                self.maybe_start_round(now, &mut actions);
                self.answer_work_request(participant, &mut actions);
            }
            Event::UpdateReceived {
                participant,
                update,
            } => {
                self.connected.insert(participant);
                self.on_update(now, participant, &update, &mut actions);
            }
            Event::DeadlinePassed { round } => {
                if matches!(&self.phase, Phase::Collecting(open) if open.round == round) {
                    self.check_deadline(now, &mut actions);
                }
            }
            Event::Tick => self.check_deadline(now, &mut actions),
            Event::SecureSumReceived {
                round,
                contributors,
                sum,
            } => self.on_secure_sum(now, round, contributors, &sum, &mut actions),
            Event::SecureAggregationFailed { round, error } => {
                if self.config.privacy.secure_aggregation
                    && matches!(&self.phase, Phase::Collecting(open) if open.round == round)
                {
                    self.phase = Phase::Waiting;
                    self.fail_round(
                        now,
                        round,
                        format!("secure aggregation failed: {error}"),
                        &mut actions,
                    );
                }
            }
        }
        actions
    }

    fn answer_work_request(&mut self, participant: ParticipantId, actions: &mut Vec<Action>) {
        let round = self.current_round();
        let reason = match &self.phase {
            Phase::Finished => WaitReason::RunFinished,
            Phase::Waiting => WaitReason::WaitingForParticipants {
                connected: self.connected.len(),
                needed: self.config.start_threshold(),
            },
            Phase::Collecting(open) => {
                if !open.sampled.contains(&participant) {
                    WaitReason::NotSampled
                } else if open.responded.contains(&participant) {
                    WaitReason::AlreadySubmitted
                } else {
                    // Sampled and still owing an update: (re)send the round, unless the round
                    // started in this very call and already sent it.
                    let already_sent = actions.iter().any(|a| {
                        matches!(a, Action::SendRound { participant: p, .. } if *p == participant)
                    });
                    if !already_sent {
                        let evaluate = open.evaluators.contains(&participant);
                        let kind = open.kind;
                        actions.push(self.send_round(participant, round, evaluate, kind));
                    }
                    return;
                }
            }
        };
        actions.push(Action::SendWait {
            participant,
            round,
            reason,
        });
    }

    fn send_round(
        &self,
        participant: ParticipantId,
        round: u64,
        evaluate: bool,
        kind: RoundKind,
    ) -> Action {
        let mut config = training_config(&self.config, round, &participant);
        config.evaluate = evaluate;
        config.kind = kind;
        Action::SendRound {
            participant,
            round,
            state: Arc::clone(&self.global),
            config,
        }
    }

    /// Whether the global model after `round` (0: the initial model) is evaluated in this run
    /// (by the participants of the round after it).
    pub fn evaluates_model_after(&self, round: u64) -> bool {
        let evaluation = &self.config.evaluation;
        evaluation.enabled && evaluation.is_due(round, self.config.rounds)
    }

    /// The final evaluation round is still to run.
    fn final_evaluation_pending(&self) -> bool {
        self.config.evaluation.enabled
            && !self.final_evaluated
            && self.completed_rounds >= self.config.rounds
    }

    fn maybe_start_round(&mut self, now: Millis, actions: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Waiting)
            || self.connected.len() < self.config.start_threshold()
        {
            return;
        }
        let round = self.next_round();
        let kind = if !self.label_prior_applied {
            RoundKind::LabelPrior
        } else if self.final_evaluation_pending() {
            RoundKind::Evaluation
        } else {
            RoundKind::Training
        };
        // The label-prior and final evaluation rounds ask everyone connected; they train
        // nothing.
        let training = kind == RoundKind::Training;
        let cohort = if training {
            self.config.cohort_size(self.connected.len())
        } else {
            self.connected.len()
        };
        if let (Some(ledger), true) = (&self.ledger, training) {
            let rate = sampling_rate(cohort, self.connected.len());
            if let Err(LedgerError::BudgetExhausted(refused)) = ledger.peek_round(rate) {
                self.stop_for_budget(refused, actions);
                return;
            }
        }
        let candidates: Vec<ParticipantId> = self.connected.iter().copied().collect();
        let mut rng = sampling_rng(self.config.seed, round, self.restarts, 0);
        let sampled: BTreeSet<ParticipantId> =
            sample(&mut rng, &candidates, cohort).into_iter().collect();
        let evaluators =
            if kind != RoundKind::LabelPrior && self.evaluates_model_after(self.completed_rounds) {
                evaluators(&self.config.evaluation, self.config.seed, round, &sampled)
            } else {
                BTreeSet::new()
            };
        let deadline_at = now.saturating_add(self.config.round_deadline_ms());
        for participant in &sampled {
            let evaluate = evaluators.contains(participant);
            actions.push(self.send_round(*participant, round, evaluate, kind));
        }
        actions.push(Action::SetDeadline {
            round,
            at_ms: deadline_at,
        });
        self.phase = Phase::Collecting(Box::new(OpenRound {
            evaluators,
            evaluation: EvaluationTotals::default(),
            kind,
            round,
            sampled,
            responded: BTreeSet::new(),
            contributors: Vec::new(),
            aggregator: RoundAggregator::with_policy(
                &self.global,
                &self.config.aggregation.rule,
                self.config.privacy.contribution_policy(),
            ),
            started_at: now,
            deadline_at,
            extensions: 0,
            rejected: 0,
            available: self.connected.len(),
        }));
    }

    /// Ends the run because the next round would not fit in the privacy budget.
    fn stop_for_budget(&mut self, refused: BudgetExhausted, actions: &mut Vec<Action>) {
        let spent = self
            .ledger
            .as_ref()
            .map(PrivacyLedger::spent)
            .unwrap_or(PrivacySpent {
                epsilon: refused.spent_epsilon,
                delta: refused.delta,
                order: f64::NAN,
                rounds: self.completed_rounds,
            });
        let reason = StopReason::PrivacyBudgetExhausted {
            rounds: self.completed_rounds,
            epsilon: spent.epsilon,
            delta: spent.delta,
            refused,
        };
        self.phase = Phase::Finished;
        self.stop = Some(reason.clone());
        actions.push(Action::Stopped {
            rounds: self.completed_rounds,
            reason,
        });
        actions.push(Action::Finished {
            rounds: self.completed_rounds,
        });
    }

    /// Reports a failed round (already closed: the phase is `Waiting`) and starts it again with
    /// a newly sampled cohort.
    fn fail_round(&mut self, now: Millis, round: u64, error: String, actions: &mut Vec<Action>) {
        self.restarts = self.restarts.saturating_add(1);
        actions.push(Action::RoundFailed { round, error });
        self.maybe_start_round(now, actions);
    }

    fn on_secure_sum(
        &mut self,
        now: Millis,
        round: u64,
        mut contributors: Vec<ParticipantId>,
        sum: &SummedUpdate,
        actions: &mut Vec<Action>,
    ) {
        if !self.config.privacy.secure_aggregation {
            return;
        }
        let min = self.config.min_clients_to_aggregate;
        let uniform = self.config.privacy.differential_privacy();
        let Phase::Collecting(open) = &mut self.phase else {
            return;
        };
        if open.round != round {
            return;
        }
        contributors.sort();
        contributors.dedup();
        let problem = if let Some(stranger) =
            contributors.iter().find(|p| !open.sampled.contains(*p))
        {
            Some(format!(
                "the secure sum names {stranger}, who was not sampled"
            ))
        } else if contributors.len() != sum.contributors {
            Some(format!(
                "the secure sum holds {} inputs but names {} contributors",
                sum.contributors,
                contributors.len()
            ))
        } else if contributors.len() < min {
            Some(format!(
                "the secure sum holds {} inputs, min_clients_to_aggregate is {min}",
                contributors.len()
            ))
        } else if uniform && (sum.total_weight - contributors.len() as f64).abs() > 0.5 {
            Some(format!(
                "the summed weight is {} for {} contributors; with differential privacy every client must weigh 1",
                sum.total_weight,
                contributors.len()
            ))
        } else {
            // Sample-count weights: the summed weight is the contributors' total sample count.
            let samples = if uniform {
                0
            } else {
                sum.total_weight.round() as u64
            };
            let evaluation = match (&sum.evaluation, open.evaluates()) {
                (Some(values), true) => {
                    let reports = contributors
                        .iter()
                        .filter(|p| open.evaluators.contains(*p))
                        .count();
                    EvaluationTotals::from_summed_values(values, reports)
                        .map(|totals| open.evaluation = totals)
                        .map_err(|e| format!("unusable evaluation in the secure sum: {e}"))
                }
                (None, false) => Ok(()),
                (Some(_), false) => {
                    Err("the secure sum holds an evaluation nobody was asked for".into())
                }
                (None, true) => {
                    Err("the secure sum lacks the evaluation the round asked for".into())
                }
            };
            evaluation.err().or_else(|| {
                open.aggregator
                    .add_sum(sum, samples)
                    .err()
                    .map(|e| format!("unusable secure sum: {e}"))
            })
        };
        if let Some(error) = problem {
            self.phase = Phase::Waiting;
            self.fail_round(now, round, error, actions);
            return;
        }
        for participant in contributors {
            open.responded.insert(participant);
            open.contributors.push(ContributorSummary {
                participant,
                sample_count: 0,
                update_norm: 0.0,
                train_loss: 0.0,
                train_kl: 0.0,
                train_seconds: 0.0,
            });
        }
        self.finish_round(now, actions);
    }

    fn on_update(
        &mut self,
        now: Millis,
        participant: ParticipantId,
        update: &ClientUpdate,
        actions: &mut Vec<Action>,
    ) {
        let claimed = update.round;
        let reject = |reason: RejectReason| Action::Reject {
            participant,
            round: claimed,
            reason,
        };
        if update.run_id != self.run_id {
            self.count_rejection();
            actions.push(reject(RejectReason::WrongRun {
                expected: self.run_id,
                found: update.run_id,
            }));
            return;
        }
        if self.config.privacy.secure_aggregation {
            // The coordinator must never hold a single update in the clear under secure
            // aggregation; the participant is not marked as answered (it may still mask).
            self.count_rejection();
            actions.push(reject(RejectReason::SecureAggregationRequired));
            return;
        }
        let current = self.current_round();
        let open = match &mut self.phase {
            Phase::Finished => {
                actions.push(reject(RejectReason::RunFinished));
                return;
            }
            Phase::Waiting => {
                actions.push(reject(round_mismatch(claimed, current)));
                return;
            }
            Phase::Collecting(open) => open,
        };
        if claimed != open.round {
            open.rejected += 1;
            actions.push(reject(round_mismatch(claimed, open.round)));
            return;
        }
        if !open.sampled.contains(&participant) {
            open.rejected += 1;
            actions.push(reject(RejectReason::NotSampled { round: claimed }));
            return;
        }
        if open.responded.contains(&participant) {
            open.rejected += 1;
            actions.push(reject(RejectReason::Duplicate { round: claimed }));
            return;
        }
        open.responded.insert(participant);
        // A report nobody asked for is ignored; a missing one only leaves this participant out
        // of the round's evaluation.
        let asked = open.evaluators.contains(&participant);
        let outcome = validate_update(&self.global, update, &self.config.limits).and_then(|()| {
            open.aggregator
                .add(update)
                .map_err(|e| RejectReason::LayoutMismatch(e.to_string()))
        });
        match outcome {
            Err(reason) => {
                open.rejected += 1;
                actions.push(reject(reason));
            }
            Ok(()) => {
                if let (Some(report), true) = (&update.evaluation, asked) {
                    open.evaluation
                        .add(participant, report)
                        .expect("validate_update checked the report");
                }
                open.contributors.push(ContributorSummary {
                    participant,
                    sample_count: update.sample_count,
                    update_norm: update.delta.l2_norm(),
                    train_loss: update.metrics.train_loss,
                    train_kl: update.metrics.train_kl,
                    train_seconds: update.metrics.seconds,
                });
                actions.push(Action::Accept {
                    participant,
                    round: claimed,
                });
            }
        }
        if open.responded.len() == open.sampled.len() {
            if open.aggregator.accepted() >= self.config.min_clients_to_aggregate {
                self.finish_round(now, actions);
            } else {
                self.extend_round(now, actions);
            }
        }
    }

    fn count_rejection(&mut self) {
        if let Phase::Collecting(open) = &mut self.phase {
            open.rejected += 1;
        }
    }

    fn check_deadline(&mut self, now: Millis, actions: &mut Vec<Action>) {
        let Phase::Collecting(open) = &self.phase else {
            return;
        };
        if now < open.deadline_at {
            return;
        }
        if self.config.privacy.secure_aggregation {
            let round = open.round;
            self.phase = Phase::Waiting;
            self.fail_round(
                now,
                round,
                "no secure sum arrived before the deadline".into(),
                actions,
            );
            return;
        }
        if open.aggregator.accepted() >= self.config.min_clients_to_aggregate {
            self.finish_round(now, actions);
        } else {
            self.extend_round(now, actions);
        }
    }

    fn extend_round(&mut self, now: Millis, actions: &mut Vec<Action>) {
        let target = self.config.cohort_size(self.connected.len());
        let required = self.config.min_clients_to_aggregate;
        let deadline_ms = self.config.round_deadline_ms();
        let seed = self.config.seed;
        let restarts = self.restarts;
        let Phase::Collecting(open) = &mut self.phase else {
            return;
        };
        open.extensions += 1;
        let accepted = open.aggregator.accepted();
        // Participants that have not answered by now are presumed lost (they may still answer):
        // replacements cover the whole gap between the accepted updates and the target cohort.
        let wanted = target.saturating_sub(accepted);
        let candidates: Vec<ParticipantId> = self
            .connected
            .iter()
            .filter(|p| !open.sampled.contains(*p))
            .copied()
            .collect();
        let mut rng = sampling_rng(seed, open.round, restarts, open.extensions);
        let added = sample(&mut rng, &candidates, wanted);
        open.sampled.extend(added.iter().copied());
        open.deadline_at = now.saturating_add(deadline_ms);
        let round = open.round;
        let at_ms = open.deadline_at;
        actions.push(Action::RoundExtended {
            round,
            accepted,
            required,
            added: added.clone(),
        });
        let evaluates = open.evaluates();
        let kind = open.kind;
        if evaluates {
            open.evaluators.extend(added.iter().copied());
        }
        for participant in added {
            actions.push(self.send_round(participant, round, evaluates, kind));
        }
        actions.push(Action::SetDeadline { round, at_ms });
    }

    fn finish_round(&mut self, now: Millis, actions: &mut Vec<Action>) {
        let Phase::Collecting(open) = std::mem::replace(&mut self.phase, Phase::Waiting) else {
            return;
        };
        let open = *open;
        let round = open.round;
        // The reports are about the state this round received: the model after `round - 1`.
        let evaluated = if open.evaluates() && open.evaluation.reports() > 0 {
            match open.evaluation.finish(round - 1) {
                Ok(metrics) => Some(metrics),
                Err(error) => {
                    self.fail_round(now, round, error.to_string(), actions);
                    return;
                }
            }
        } else {
            None
        };
        if open.kind == RoundKind::LabelPrior {
            self.apply_label_prior(now, open, actions);
            return;
        }
        if open.kind == RoundKind::Evaluation {
            self.final_evaluated = true;
            if let Some(metrics) = evaluated {
                self.record_evaluation(metrics, actions);
            }
            actions.push(Action::Persist {
                checkpoint: Box::new(self.checkpoint()),
            });
            self.phase = Phase::Finished;
            actions.push(Action::Finished {
                rounds: self.completed_rounds,
            });
            return;
        }
        let privacy = self.config.privacy.clone();
        let secure = privacy.secure_aggregation;
        let mut aggregator = open.aggregator;
        let clipped = aggregator.clipped();
        let total_samples = aggregator.total_samples();
        let mut noise_std = None;
        if let (true, Some(clip)) = (privacy.differential_privacy(), privacy.clip_norm) {
            if secure {
                // The clients added their shares; the sum carries one per contributor.
                noise_std = Some(
                    crate::privacy::distributed_noise_std(
                        privacy.noise_multiplier,
                        clip,
                        privacy.threshold.for_cohort(open.sampled.len()),
                    ) * (open.contributors.len() as f64).sqrt(),
                );
            } else {
                let std = central_noise_std(privacy.noise_multiplier, clip);
                let noised = self
                    .noise_rng(round)
                    .map_err(|e| format!("cannot seed the privacy noise: {e}"))
                    .and_then(|mut rng| {
                        aggregator
                            .add_sum_noise(std, &mut rng)
                            .map_err(|e| e.to_string())
                    });
                if let Err(error) = noised {
                    self.fail_round(now, round, error, actions);
                    return;
                }
                noise_std = Some(std);
            }
        }
        match aggregator.finish(&self.global, &self.config.aggregation, &mut self.fedadam) {
            Ok(aggregate) => {
                let rate = sampling_rate(open.sampled.len(), open.available);
                let spent = match self.ledger.as_mut().map(|l| l.record_round(rate)) {
                    None => None,
                    Some(Ok(spent)) => Some(spent),
                    Some(Err(LedgerError::BudgetExhausted(refused))) => {
                        // The round cost more than peeked (replacements raised the sampling
                        // rate) and does not fit: it is discarded, never released.
                        self.stop_for_budget(refused, actions);
                        return;
                    }
                    Some(Err(other)) => {
                        self.fail_round(now, round, other.to_string(), actions);
                        return;
                    }
                };
                let round_privacy = (secure || privacy.clip_norm.is_some() || spent.is_some())
                    .then(|| RoundPrivacy {
                        secure_aggregation: secure,
                        clip_norm: privacy.clip_norm,
                        clipped: (!secure && privacy.clip_norm.is_some()).then_some(clipped),
                        noise_std,
                        sampling_rate: spent.map(|_| rate),
                        epsilon: spent.map(|s| s.epsilon),
                        delta: spent.map(|s| s.delta),
                    });
                if let Some(metrics) = evaluated {
                    self.record_evaluation(metrics, actions);
                }
                self.global = Arc::new(aggregate.state);
                self.completed_rounds = round;
                self.restarts = 0;
                let (weighted_loss, loss_weight) = open
                    .contributors
                    .iter()
                    .filter(|c| c.train_loss.is_finite())
                    .fold((0.0, 0.0), |(sum, weight), c| {
                        let n = c.sample_count as f64;
                        (sum + n * c.train_loss, weight + n)
                    });
                let summary = RoundSummary {
                    round,
                    sampled: open.sampled.len(),
                    total_samples,
                    contributors: open.contributors,
                    rejected: open.rejected,
                    mean_train_loss: (loss_weight > 0.0).then(|| weighted_loss / loss_weight),
                    combined_delta_norm: aggregate.combined_delta_norm,
                    applied_norm: aggregate.applied_norm,
                    started_at_ms: open.started_at,
                    completed_at_ms: now,
                    deadline_extensions: open.extensions,
                    privacy: round_privacy,
                };
                self.history.push(summary.clone());
                actions.push(Action::Aggregated {
                    round,
                    summary: Box::new(summary),
                });
                actions.push(Action::Persist {
                    checkpoint: Box::new(self.checkpoint()),
                });
                if self.completed_rounds >= self.config.rounds && !self.final_evaluation_pending() {
                    self.phase = Phase::Finished;
                    actions.push(Action::Finished {
                        rounds: self.completed_rounds,
                    });
                    return;
                }
            }
            Err(error) => {
                self.fail_round(now, round, error.to_string(), actions);
                return;
            }
        }
        self.maybe_start_round(now, actions);
    }

    /// Ends the opening round: the head's logit offsets become `ln` of the label prior the
    /// participants' label sums give (floored at 1e-6, as the model's own prior start), then
    /// round 1 starts. Nothing else of the state changes: the co-occurrence memory is still the
    /// initial one (round 1's statistics set it), and no privacy budget is spent, since no
    /// trained parameter is released.
    fn apply_label_prior(&mut self, now: Millis, open: OpenRound, actions: &mut Vec<Action>) {
        let sums = open.aggregator.cooccurrence_total();
        if sums.count <= 0.0 {
            let error = "the label-prior round summed no labelled sample".to_string();
            self.fail_round(now, open.round, error, actions);
            return;
        }
        let prior = sums.label_prior();
        let logits: Vec<f32> = prior.iter().map(|p| p.max(1e-6).ln()).collect();
        let mut state = (*self.global).clone();
        let tensor = state
            .parameters
            .tensors
            .iter_mut()
            .find(|t| t.name == LABEL_PRIOR_LOGITS)
            .expect("Coordinator::new checked the label-prior logits");
        tensor.values = F32Vec(logits);
        self.global = Arc::new(state);
        self.label_prior_applied = true;
        self.restarts = 0;
        actions.push(Action::LabelPriorSet {
            participants: open.aggregator.accepted(),
            samples: sums.count.round() as u64,
            prior,
        });
        actions.push(Action::Persist {
            checkpoint: Box::new(self.checkpoint()),
        });
        self.maybe_start_round(now, actions);
    }

    /// Records the federated metrics of the current global state (the one evaluated) and, when
    /// its validation KL is the lowest so far, hands the state out to be kept as the best.
    fn record_evaluation(&mut self, metrics: FederatedMetrics, actions: &mut Vec<Action>) {
        self.evaluations.push(metrics);
        let best = self.best_round() == Some(metrics.round);
        actions.push(Action::Evaluated {
            metrics: Box::new(metrics),
            best,
        });
        if best {
            actions.push(Action::PersistBest {
                round: metrics.round,
                state: Arc::clone(&self.global),
            });
        }
    }

    /// The generator for round `round`'s central noise (see [`NoiseSource`]).
    fn noise_rng(&self, round: u64) -> Result<ChaCha20Rng, String> {
        match self.noise {
            NoiseSource::OperatingSystem => {
                ChaCha20Rng::try_from_os_rng().map_err(|e| e.to_string())
            }
            NoiseSource::DeterministicForTests(seed) => {
                let mut hasher = Sha256::new();
                hasher.update(b"mpcl/dp-noise/deterministic-for-tests-only");
                hasher.update(seed.to_le_bytes());
                hasher.update(round.to_le_bytes());
                hasher.update(self.restarts.to_le_bytes());
                Ok(ChaCha20Rng::from_seed(hasher.finalize().into()))
            }
        }
    }
}

/// The privacy ledger of a run with differential privacy on.
fn new_ledger(config: &CoordinatorConfig) -> Result<Option<PrivacyLedger>, CoordinatorError> {
    let p = &config.privacy;
    if !p.differential_privacy() {
        return Ok(None);
    }
    Ok(Some(PrivacyLedger::new(
        p.noise_multiplier,
        p.target_delta,
        p.epsilon_budget,
    )?))
}

/// `sampled / available`, within [0, 1] (the DP sampling rate; see the module documentation).
fn sampling_rate(sampled: usize, available: usize) -> f64 {
    if available == 0 {
        1.0
    } else {
        (sampled as f64 / available as f64).min(1.0)
    }
}

fn round_mismatch(claimed: u64, current: u64) -> RejectReason {
    if claimed < current {
        RejectReason::StaleRound {
            round: claimed,
            current,
        }
    } else if claimed > current {
        RejectReason::FutureRound {
            round: claimed,
            current,
        }
    } else {
        RejectReason::RoundNotOpen { round: claimed }
    }
}

/// Samples `amount` of `candidates` (capped at their number), in candidate order.
fn sample(
    rng: &mut ChaCha20Rng,
    candidates: &[ParticipantId],
    amount: usize,
) -> Vec<ParticipantId> {
    let amount = amount.min(candidates.len());
    let mut indices = rand::seq::index::sample(rng, candidates.len(), amount).into_vec();
    indices.sort_unstable();
    indices.into_iter().map(|i| candidates[i]).collect()
}

/// The generator for round `round`'s sampling: ChaCha20 keyed by
/// `SHA-256("mpcl/sample" || seed || round || restart || extension)`.
/// The participants of `cohort` asked to evaluate in `round`: a seeded share of it
/// ([`EvaluationConfig::evaluators`]), all of it by default.
fn evaluators(
    config: &EvaluationConfig,
    seed: u64,
    round: u64,
    cohort: &BTreeSet<ParticipantId>,
) -> BTreeSet<ParticipantId> {
    let cohort: Vec<ParticipantId> = cohort.iter().copied().collect();
    let wanted = config.evaluators(cohort.len());
    if wanted >= cohort.len() {
        return cohort.into_iter().collect();
    }
    let mut hasher = Sha256::new();
    hasher.update(b"mpcl/evaluators");
    hasher.update(seed.to_le_bytes());
    hasher.update(round.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(hasher.finalize().into());
    sample(&mut rng, &cohort, wanted).into_iter().collect()
}

fn sampling_rng(seed: u64, round: u64, restart: u32, extension: u32) -> ChaCha20Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"mpcl/sample");
    hasher.update(seed.to_le_bytes());
    hasher.update(round.to_le_bytes());
    hasher.update(restart.to_le_bytes());
    hasher.update(extension.to_le_bytes());
    ChaCha20Rng::from_seed(hasher.finalize().into())
}

/// The training settings `participant` gets for `round` (what [`Action::SendRound`] carries), so
/// that a run can be replayed from its round log.
pub fn training_config(
    config: &CoordinatorConfig,
    round: u64,
    participant: &ParticipantId,
) -> TrainingConfig {
    let t = &config.training;
    TrainingConfig {
        local_epochs: t.local_epochs,
        batch_size: t.batch_size,
        learning_rate: t
            .learning_rate_schedule
            .rate(t.learning_rate, round, config.rounds),
        weight_decay: t.weight_decay,
        proximal_mu: t.proximal_mu,
        share_memories: t.share_memories,
        seed: training_seed(config.seed, round, participant),
        compression: t.compression,
        evaluate: false,
        kind: RoundKind::Training,
    }
}

/// The training seed a participant gets for a round: the first eight bytes of
/// `SHA-256("mpcl/train" || seed || round || participant)`.
pub fn training_seed(seed: u64, round: u64, participant: &ParticipantId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"mpcl/train");
    hasher.update(seed.to_le_bytes());
    hasher.update(round.to_le_bytes());
    hasher.update(participant.0);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The state has the tensor the opening round sets ([`LABEL_PRIOR_LOGITS`]), one value per
/// emotion.
fn check_label_prior_logits(state: &GlobalState) -> Result<(), CoordinatorError> {
    let emotions = state.cooccurrence.emotions;
    match state.parameters.get(LABEL_PRIOR_LOGITS) {
        Some(tensor) if tensor.values.len() == emotions => Ok(()),
        Some(tensor) => Err(CoordinatorError::InvalidState(format!(
            "`start_at_label_prior` needs the parameter `{LABEL_PRIOR_LOGITS}` to hold one value per emotion ({emotions}), it holds {}",
            tensor.values.len()
        ))),
        None => Err(CoordinatorError::InvalidState(format!(
            "`start_at_label_prior` needs a parameter named `{LABEL_PRIOR_LOGITS}` (the head's logit offsets) and the initial state has none; set `start_at_label_prior = false`"
        ))),
    }
}

fn check_global_state(state: &GlobalState) -> Result<(), CoordinatorError> {
    let invalid = |m: String| Err(CoordinatorError::InvalidState(m));
    if let Err(e) = state.parameters.validate() {
        return invalid(format!("parameters: {e}"));
    }
    let mut groups = BTreeSet::new();
    for bank in &state.prototypes {
        if !groups.insert(bank.group.as_str()) {
            return invalid(format!("two prototype banks for group `{}`", bank.group));
        }
        let expected = bank.emotions * bank.prototypes * bank.width;
        if bank.values.len() != expected {
            return invalid(format!(
                "prototype bank `{}` holds {} values, {}x{}x{} needs {expected}",
                bank.group,
                bank.values.len(),
                bank.emotions,
                bank.prototypes,
                bank.width
            ));
        }
        if !bank.values.all_finite() {
            return invalid(format!(
                "prototype bank `{}` holds a non-finite value",
                bank.group
            ));
        }
    }
    if let Err(e) = state.cooccurrence.validate() {
        return invalid(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
