//! The federated arms run in-process: one virtual participant per subject, driven through the
//! coordinator's own state machine (the very code `mpcl coordinator` runs), with a virtual clock
//! and no sockets. The participants a round is handed to train in parallel on
//! [`InProcessFederation::set_threads`] threads (default: every core), and their updates reach
//! the state machine in the order the rounds were handed out, whatever order the trainings end
//! in; each participant's training depends only on its own data, the global state and its seed,
//! and aggregation is exact and order-independent, so a run is bit-identical on any number of
//! threads and exactly reproducible (with differential privacy only when
//! [`InProcessFederation::use_deterministic_noise_for_tests`] is called: real noise comes from
//! the operating system).
//!
//! Under secure aggregation (`privacy.secure_aggregation`) the cohort trains, each participant
//! prepares its update with the round's [`mpcl_coordinator::SecureRoundPlan`] (clipping and its
//! share of the noise with differential privacy), the masking protocol runs between the virtual
//! participants and a secure-aggregation server ([`crate::secure`]), and the coordinator gets
//! only the unmasked sum ([`Event::SecureSumReceived`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mpcl_client::evaluation::LocalSplit;
use mpcl_client::{Participant, ParticipantError, ParticipantSettings, TrainedUpdate};
use mpcl_coordinator::privacy::{os_noise_rng, seeded_noise_rng};
use mpcl_coordinator::{
    Action, Coordinator, CoordinatorConfig, CoordinatorError, Event, ParticipantId, RoundPrivacy,
    StopReason,
};
use mpcl_data::Dataset;
use mpcl_data::ModelConfig;
use mpcl_model::Device;
use mpcl_protocol::SigningKey;
use mpcl_protocol::codec::{MessageLimits, VERSION_PREFIX_BYTES, encode_message};
use mpcl_protocol::messages::{ClientUpdate, GlobalState, RunId, TrainingConfig};
use thiserror::Error;

use crate::secure::{DropStage, run_secure_round, simulation_signing_key};

/// Errors of an in-process federation.
#[derive(Debug, Error)]
pub enum FederationError {
    #[error("participant `{subject}`: {source}")]
    Participant {
        subject: String,
        source: ParticipantError,
    },
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("the coordinator rejected the update of `{subject}` in round {round}: {reason}")]
    Rejected {
        subject: String,
        round: u64,
        reason: String,
    },
    #[error("the run stalled in round {0}: no participant has work and no round completed")]
    Stalled(u64),
    #[error(
        "participant `{subject}` cannot prepare its update for secure aggregation in round {round}: {reason}"
    )]
    SecureInput {
        subject: String,
        round: u64,
        reason: String,
    },
    #[error("secure aggregation of round {round} failed {attempts} times in a row: {last}")]
    SecureAggregation {
        round: u64,
        attempts: u32,
        last: String,
    },
}

/// Secure-aggregation sessions of one round that may fail in a row before the run gives up.
const MAX_SECURE_ATTEMPTS: u32 = 3;

/// One virtual participant.
struct VirtualClient {
    id: ParticipantId,
    subject: String,
    participant: Participant,
    /// Its identity for secure aggregation (derived from the simulation seed).
    signing_key: SigningKey,
}

/// What one aggregated round looked like from the outside.
#[derive(Clone, Debug)]
pub struct RoundOutcome {
    pub round: u64,
    pub state: GlobalState,
    pub participants: usize,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub seconds: f64,
    pub mean_train_loss: f64,
    /// The updates the participants produced this round, in training order (under secure
    /// aggregation the coordinator never saw them; the in-process simulation does). Empty in
    /// network mode, where they stay in the client processes.
    pub updates: Vec<ClientUpdate>,
    /// What the privacy layers did (epsilon with differential privacy).
    pub privacy: Option<RoundPrivacy>,
}

impl RoundOutcome {
    /// Epsilon spent up to and including this round (differential privacy only).
    pub fn epsilon(&self) -> Option<f64> {
        self.privacy.as_ref().and_then(|p| p.epsilon)
    }
}

/// A federation of virtual participants, one per subject of the training data.
pub struct InProcessFederation {
    coordinator: Coordinator,
    clients: Vec<VirtualClient>,
    run_id: RunId,
    now: u64,
    /// Seed of the reproducible (test-only) noise, when asked for.
    deterministic_noise: Option<u64>,
    /// Fault injection: (round, participant index) -> when it drops out of secure aggregation.
    secure_drops: BTreeMap<(u64, usize), DropStage>,
    /// Threads that train participants at the same time.
    threads: usize,
}

/// Every core the process may use (1 when unknown).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A trained update and the bytes of its signed upload.
type TrainResult = Result<(TrainedUpdate, u64), FederationError>;

/// A round handed to one participant: what [`Action::SendRound`] carries.
struct Handout {
    participant: ParticipantId,
    round: u64,
    state: Arc<GlobalState>,
    config: TrainingConfig,
}

impl InProcessFederation {
    /// Participants for every subject of `train_set` (in order of first appearance), a coordinator
    /// starting from `initial`. With `evaluation` (pooled validation and test samples), each
    /// participant evaluates on its own subject's samples of them when a round asks
    /// (federated evaluation, as a client process given `--validation-data` and `--test-data`).
    pub fn new(
        train_set: &Dataset,
        evaluation: Option<(&Dataset, &Dataset)>,
        model_config: &ModelConfig,
        settings: &ParticipantSettings,
        config: CoordinatorConfig,
        initial: GlobalState,
        device: &Device,
    ) -> Result<Self, FederationError> {
        let mut clients = Vec::new();
        for (index, subject) in train_set.subjects().into_iter().enumerate() {
            let train = train_set.subject_subset(&subject);
            let participant = match evaluation {
                Some((validation, test)) => Participant::with_evaluation(
                    &LocalSplit {
                        train,
                        validation: validation.subject_subset(&subject),
                        test: test.subject_subset(&subject),
                    },
                    model_config,
                    device,
                    settings.clone(),
                ),
                None => Participant::new(&train, model_config, device, settings.clone()),
            }
            .map_err(|source| FederationError::Participant {
                subject: subject.clone(),
                source,
            })?;
            // The id is the key's public half, as over the network, so that sampling and the
            // per-participant training seeds are those of `mpcl simulate --network`.
            let signing_key = simulation_signing_key(config.seed, index as u64);
            clients.push(VirtualClient {
                id: ParticipantId(signing_key.verifying_key().to_bytes()),
                subject,
                participant,
                signing_key,
            });
        }
        let run_id = run_id_from_seed(config.seed);
        let coordinator = Coordinator::new(config, run_id, initial)?;
        Ok(Self {
            coordinator,
            clients,
            run_id,
            now: 0,
            deterministic_noise: None,
            secure_drops: BTreeMap::new(),
            threads: available_threads(),
        })
    }

    /// Trains up to `threads` participants at the same time (at least 1); the results do not
    /// depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// **Unsafe for real studies.** Makes the differential-privacy noise (the coordinator's, and
    /// the participants' shares under secure aggregation) reproducible from the run seed, so the
    /// same simulation gives the same numbers. Anyone who knows the seed can remove the noise.
    pub fn use_deterministic_noise_for_tests(&mut self) {
        let seed = self.coordinator.config().seed;
        self.coordinator.use_deterministic_noise_for_tests(seed);
        self.deterministic_noise = Some(seed);
    }

    /// Fault injection: participant number `index` (in subject order) drops out of round
    /// `round`'s secure-aggregation session at `stage` (once; a restarted round runs clean).
    pub fn drop_from_secure_round(&mut self, round: u64, index: usize, stage: DropStage) {
        self.secure_drops.insert((round, index), stage);
    }

    /// Why the run ended before its last round (the privacy budget), if it did.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.coordinator.stop_reason()
    }

    /// The coordinator (for its history, ledger and configuration).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Number of participants.
    pub fn participant_count(&self) -> usize {
        self.clients.len()
    }

    /// Runs every round, calling `on_round` after each aggregation.
    pub fn run<E: From<FederationError>>(
        &mut self,
        mut on_round: impl FnMut(&RoundOutcome) -> Result<(), E>,
    ) -> Result<GlobalState, E> {
        let mut pending: Vec<Action> = Vec::new();
        for client in &self.clients {
            pending.extend(self.coordinator.handle(
                self.now,
                Event::ClientConnected {
                    participant: client.id,
                },
            ));
        }
        let limits = MessageLimits::new(mpcl_protocol::codec::HARD_MAX_MESSAGE_BYTES)
            .expect("the hard cap is a valid limit");
        let mut round_started = Instant::now();
        let (mut bytes_down, mut bytes_up) = (0u64, 0u64);
        let mut updates: Vec<ClientUpdate> = Vec::new();
        let secure = self.coordinator.config().privacy.secure_aggregation;
        // Under secure aggregation: the cohort's updates of the open round, and failed sessions
        // in a row.
        let mut to_mask: BTreeMap<ParticipantId, ClientUpdate> = BTreeMap::new();
        let mut failed_sessions = 0u32;
        // The encoded size of the global state handed out last (the same for a whole round).
        let mut state_size: Option<(Arc<GlobalState>, u64)> = None;
        loop {
            if pending.is_empty() {
                // Everyone asks for work; the state machine answers with rounds or waits.
                for client in &self.clients {
                    pending.extend(self.coordinator.handle(
                        self.now,
                        Event::WorkRequested {
                            participant: client.id,
                        },
                    ));
                }
                if !pending
                    .iter()
                    .any(|a| matches!(a, Action::SendRound { .. }))
                {
                    if self.coordinator.is_finished() {
                        return Ok(self.coordinator.global_state().as_ref().clone());
                    }
                    // Nothing to train: let the deadline pass (virtual time).
                    match self.coordinator.next_deadline() {
                        Some(deadline) => {
                            self.now = self.now.max(deadline);
                            pending.extend(self.coordinator.handle(self.now, Event::Tick));
                            continue;
                        }
                        None => {
                            return Err(
                                FederationError::Stalled(self.coordinator.current_round()).into()
                            );
                        }
                    }
                }
            }
            let mut actions = std::mem::take(&mut pending).into_iter().peekable();
            while let Some(action) = actions.next() {
                match action {
                    Action::SendRound {
                        participant,
                        round,
                        state,
                        config,
                    } => {
                        // This hand-out and the ones right after it (to other participants)
                        // train together; a participant handed two rounds trains them in turn.
                        let mut batch = vec![Handout {
                            participant,
                            round,
                            state,
                            config,
                        }];
                        let mut seen = BTreeSet::from([participant]);
                        while let Some(Action::SendRound { participant, .. }) = actions.peek() {
                            if !seen.insert(*participant) {
                                break;
                            }
                            let Some(Action::SendRound {
                                participant,
                                round,
                                state,
                                config,
                            }) = actions.next()
                            else {
                                unreachable!("peeked a SendRound");
                            };
                            batch.push(Handout {
                                participant,
                                round,
                                state,
                                config,
                            });
                        }
                        let trained = self.train_batch(&batch, &limits);
                        for (handout, trained) in batch.iter().zip(trained) {
                            let (trained, payload_bytes) = trained?;
                            // What `StartRound` carries; the state is encoded once a round.
                            let state_bytes = match &state_size {
                                Some((state, bytes)) if Arc::ptr_eq(state, &handout.state) => {
                                    *bytes
                                }
                                _ => {
                                    let bytes = encoded_size(&*handout.state, &limits);
                                    state_size = Some((Arc::clone(&handout.state), bytes));
                                    bytes
                                }
                            };
                            bytes_down += state_bytes
                                + encoded_size(&handout.config, &limits)
                                    .saturating_sub(VERSION_PREFIX_BYTES as u64);
                            bytes_up += payload_bytes;
                            let update = trained.update;
                            updates.push(update.clone());
                            self.now += 1;
                            if secure {
                                to_mask.insert(handout.participant, update);
                            } else {
                                pending.extend(self.coordinator.handle(
                                    self.now,
                                    Event::UpdateReceived {
                                        participant: handout.participant,
                                        update: Box::new(update),
                                    },
                                ));
                            }
                        }
                    }
                    Action::Reject {
                        participant,
                        round,
                        reason,
                    } => {
                        let subject = self.subject_of(participant);
                        return Err(FederationError::Rejected {
                            subject,
                            round,
                            reason: reason.to_string(),
                        }
                        .into());
                    }
                    Action::Aggregated { round, summary } => {
                        failed_sessions = 0;
                        let mean_train_loss = if secure {
                            mean(updates.iter().map(|u| u.metrics.train_loss))
                        } else {
                            mean(summary.contributors.iter().map(|c| c.train_loss))
                        };
                        let outcome = RoundOutcome {
                            round,
                            state: self.coordinator.global_state().as_ref().clone(),
                            participants: summary.contributors.len(),
                            bytes_down,
                            bytes_up,
                            seconds: round_started.elapsed().as_secs_f64(),
                            mean_train_loss,
                            updates: std::mem::take(&mut updates),
                            privacy: summary.privacy.clone(),
                        };
                        on_round(&outcome)?;
                        round_started = Instant::now();
                        bytes_down = 0;
                        bytes_up = 0;
                    }
                    Action::Finished { .. } => {
                        return Ok(self.coordinator.global_state().as_ref().clone());
                    }
                    Action::SendWait { .. }
                    | Action::Accept { .. }
                    | Action::SetDeadline { .. }
                    | Action::RoundExtended { .. }
                    | Action::RoundFailed { .. }
                    | Action::Stopped { .. }
                    | Action::Evaluated { .. }
                    | Action::LabelPriorSet { .. }
                    | Action::PersistBest { .. }
                    | Action::Persist { .. } => {}
                }
            }
            if secure && !to_mask.is_empty() {
                let cohort = std::mem::take(&mut to_mask);
                let (event, failed) = self.secure_round(cohort)?;
                if let Some(error) = failed {
                    failed_sessions += 1;
                    if failed_sessions >= MAX_SECURE_ATTEMPTS {
                        return Err(FederationError::SecureAggregation {
                            round: self.coordinator.current_round(),
                            attempts: failed_sessions,
                            last: error,
                        }
                        .into());
                    }
                }
                self.now += 1;
                pending.extend(self.coordinator.handle(self.now, event));
            }
        }
    }

    /// Trains the participants of `batch` (distinct ones) on up to `self.threads` threads, each
    /// taking the next untrained one; the results, with the size of the signed payload each
    /// would upload (the compressed delta when the run compresses: the update's own delta is
    /// then its decompression, what the coordinator reconstructs on receipt), come back in
    /// `batch` order.
    fn train_batch(&mut self, batch: &[Handout], limits: &MessageLimits) -> Vec<TrainResult> {
        let run_id = self.run_id;
        let mut by_id: BTreeMap<ParticipantId, &mut VirtualClient> =
            self.clients.iter_mut().map(|c| (c.id, c)).collect();
        let jobs: Vec<Mutex<Option<(&Handout, &mut VirtualClient)>>> = batch
            .iter()
            .map(|handout| {
                let client = by_id
                    .remove(&handout.participant)
                    .expect("the coordinator only samples connected participants, once a batch");
                Mutex::new(Some((handout, client)))
            })
            .collect();
        let results: Vec<Mutex<Option<TrainResult>>> =
            batch.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(index) else {
                    break;
                };
                let (handout, client) = job
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("each job is taken once");
                let trained = client
                    .participant
                    .train_round(run_id, handout.round, &handout.state, &handout.config)
                    .map(|trained| {
                        let bytes = trained.payload_bytes(limits).unwrap_or(0) as u64;
                        (trained, bytes)
                    })
                    .map_err(|source| FederationError::Participant {
                        subject: client.subject.clone(),
                        source,
                    });
                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(trained);
            }
        };
        let threads = self.threads.min(batch.len());
        if threads <= 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(work);
                }
            });
        }
        results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect("every job ran")
            })
            .collect()
    }

    /// Runs the open round's secure-aggregation session over the cohort's `updates`; returns
    /// the event for the coordinator and, when the session failed, why.
    fn secure_round(
        &mut self,
        updates: BTreeMap<ParticipantId, ClientUpdate>,
    ) -> Result<(Event, Option<String>), FederationError> {
        let plan = self
            .coordinator
            .secure_round_plan()?
            .ok_or_else(|| FederationError::Stalled(self.coordinator.current_round()))?;
        let round = plan.round;
        let mut keys = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let mut drops = BTreeMap::new();
        for (index, client) in self.clients.iter().enumerate() {
            let Some(update) = updates.get(&client.id) else {
                continue;
            };
            let prepared = match self.deterministic_noise {
                Some(seed) => {
                    let mut rng = seeded_noise_rng(
                        seed ^ round.rotate_left(32) ^ (index as u64).wrapping_mul(0x9e37_79b9),
                    );
                    plan.prepare_input(update, &mut rng)
                }
                None => plan.prepare_input(update, &mut os_noise_rng()),
            }
            .map_err(|e| FederationError::SecureInput {
                subject: client.subject.clone(),
                round,
                reason: e.to_string(),
            })?;
            keys.insert(client.id, client.signing_key.clone());
            inputs.insert(client.id, prepared.words);
            if let Some(stage) = self.secure_drops.remove(&(round, index)) {
                drops.insert(client.id, stage);
            }
        }
        Ok(match run_secure_round(&plan, &keys, &inputs, &drops) {
            Ok(outcome) => (
                Event::SecureSumReceived {
                    round,
                    contributors: outcome.contributors,
                    sum: Box::new(outcome.sum),
                },
                None,
            ),
            Err(error) => (
                Event::SecureAggregationFailed {
                    round,
                    error: error.to_string(),
                },
                Some(error.to_string()),
            ),
        })
    }

    fn subject_of(&self, participant: ParticipantId) -> String {
        self.clients
            .iter()
            .find(|c| c.id == participant)
            .map(|c| c.subject.clone())
            .unwrap_or_else(|| "unknown participant".to_string())
    }

    /// The subject behind each participant id, for reports.
    pub fn subjects(&self) -> BTreeMap<ParticipantId, String> {
        self.clients
            .iter()
            .map(|c| (c.id, c.subject.clone()))
            .collect()
    }
}

/// The run id of a simulation: derived from its seed, so a repeated simulation is identical.
pub fn run_id_from_seed(seed: u64) -> RunId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(b"mpclsim\0");
    id[8..].copy_from_slice(&seed.to_le_bytes());
    id
}

fn encoded_size<T: serde::Serialize + ?Sized>(value: &T, limits: &MessageLimits) -> u64 {
    encode_message(value, limits)
        .map(|b| b.len() as u64)
        .unwrap_or(0)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 { 0.0 } else { sum / count as f64 }
}
