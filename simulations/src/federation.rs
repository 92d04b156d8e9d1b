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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mpcl_client::evaluation::LocalSplit;
use mpcl_client::{
    ClientMachine, HandedRound, Output, Participant, ParticipantError, ParticipantSettings,
    ProtocolError, TrainedUpdate,
};
use mpcl_coordinator::{
    Action, Coordinator, CoordinatorConfig, CoordinatorError, Event, HandOut, ParticipantId,
    RelayOutput, RoundPrivacy, SecureSessions, StopReason,
};
use mpcl_data::Dataset;
use mpcl_data::ModelConfig;
use mpcl_model::{Device, ModelError, ModelPool};
use mpcl_protocol::codec::{MessageLimits, VERSION_PREFIX_BYTES, encode_message};
use mpcl_protocol::messages::{
    ClientMessage, ClientUpdate, CoordinatorMessage, GlobalState, RunId, TrainingConfig,
};
use mpcl_protocol::privacy_noise::NoiseSource;
use mpcl_protocol::secure_aggregation::SecAggUpload;
use mpcl_protocol::{NodeIdentity, SigningKey};
use thiserror::Error;

use crate::secure::{DropStage, simulation_signing_key};

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
    #[error("participant `{subject}`: {source}")]
    Protocol {
        subject: String,
        source: ProtocolError,
    },
    #[error("participant `{subject}` sent a {request}, which an in-process run does not carry")]
    Unexpected {
        subject: String,
        request: &'static str,
    },
    #[error("cannot open round {round}'s secure-aggregation session: {reason}")]
    SecureSession { round: u64, reason: String },
    #[error("secure aggregation of round {round} failed {attempts} times in a row: {last}")]
    SecureAggregation {
        round: u64,
        attempts: u32,
        last: String,
    },
    #[error("cannot build the participants' model: {0}")]
    Model(#[from] ModelError),
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
    pub updates: Vec<Arc<ClientUpdate>>,
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

/// Step timeout of an in-process secure-aggregation session (virtual milliseconds: every
/// participant answers at once, so only a vanished one makes a step wait this long).
const SECURE_STEP_TIMEOUT_MS: u64 = 10_000;

/// What one [`InProcessFederation::run`] keeps while it drives the machines.
struct Drive {
    /// Each participant's protocol machine, in subject order.
    machines: Vec<ClientMachine>,
    /// What the machines asked for, in order.
    queue: VecDeque<(usize, Output)>,
    /// Participants whose `RequestWork` waits for a round.
    parked: BTreeSet<usize>,
    /// Participants told to wait (woken when nobody else has anything to do).
    sleeping: Vec<usize>,
    /// Trainings asked for since the last batch, in order.
    to_train: Vec<(usize, HandedRound)>,
    /// The open round's secure-aggregation session, as the server keeps it.
    sessions: SecureSessions,
    secure: bool,
    failed_sessions: u32,
    limits: MessageLimits,
    /// The encoded size of the global state handed out last (the same for a whole round).
    state_size: Option<(Arc<GlobalState>, u64)>,
    bytes_down: u64,
    bytes_up: u64,
    /// The updates trained this round, in training order.
    updates: Vec<Arc<ClientUpdate>>,
    /// Rounds aggregated and not yet reported.
    aggregated: Vec<RoundOutcome>,
    /// The virtual time of the last tick (a deadline that changes nothing is a stall).
    ticked_at: Option<u64>,
    finished: bool,
}

impl Drive {
    fn new(federation: &InProcessFederation) -> Result<Self, FederationError> {
        let machines = federation
            .clients
            .iter()
            .enumerate()
            .map(|(index, client)| {
                let identity = NodeIdentity::from_signing_key(
                    Some(&format!("participant-{index}")),
                    client.signing_key.clone(),
                )
                .expect("a valid participant id");
                let noise = match federation.deterministic_noise {
                    Some(seed) => {
                        NoiseSource::SeededForTests(seed ^ (index as u64).wrapping_mul(0x9e37_79b9))
                    }
                    None => NoiseSource::OperatingSystem,
                };
                ClientMachine::new(Arc::new(identity), noise)
            })
            .collect();
        Ok(Self {
            machines,
            queue: VecDeque::new(),
            parked: BTreeSet::new(),
            sleeping: Vec::new(),
            to_train: Vec::new(),
            sessions: SecureSessions::new(SECURE_STEP_TIMEOUT_MS),
            secure: federation.coordinator.config().privacy.secure_aggregation,
            failed_sessions: 0,
            limits: MessageLimits::new(mpcl_protocol::codec::HARD_MAX_MESSAGE_BYTES).map_err(
                |e| FederationError::SecureSession {
                    round: 0,
                    reason: e.to_string(),
                },
            )?,
            state_size: None,
            bytes_down: 0,
            bytes_up: 0,
            updates: Vec::new(),
            aggregated: Vec::new(),
            ticked_at: None,
            finished: false,
        })
    }

    fn queue(&mut self, index: usize, outputs: Vec<Output>) {
        self.queue
            .extend(outputs.into_iter().map(|output| (index, output)));
    }
}

/// A session nonce that never repeats within a run (the round and a counter would do; the
/// seed keeps simulations of different runs apart).
fn session_nonce(seed: u64, round: u64) -> [u8; 16] {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&seed.to_le_bytes());
    nonce[8..].copy_from_slice(&round.to_le_bytes());
    nonce
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
        // The participants train one at a time per thread: they share models (`ModelPool`).
        let models = ModelPool::new(&train_set.schema, model_config, device)?;
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
                    &models,
                    settings.clone(),
                ),
                None => Participant::new(&train, &models, settings.clone()),
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
        let mut drive = Drive::new(self)?;
        for index in 0..self.clients.len() {
            let participant = self.clients[index].id;
            let actions = self
                .coordinator
                .handle(self.now, Event::ClientConnected { participant });
            self.execute(&mut drive, actions, None)?;
            let outputs = drive.machines[index].start_session(self.run_id);
            drive.queue(index, outputs);
        }
        let mut round_started = Instant::now();
        loop {
            while let Some((index, output)) = drive.queue.pop_front() {
                self.carry_out(&mut drive, index, output)?;
                for mut outcome in drive.aggregated.drain(..) {
                    outcome.seconds = round_started.elapsed().as_secs_f64();
                    on_round(&outcome)?;
                    round_started = Instant::now();
                }
                if drive.finished {
                    return Ok(self.coordinator.global_state().as_ref().clone());
                }
            }
            if !drive.to_train.is_empty() {
                // In participant order, as the state machine hands a round out, whichever
                // order the requests came in.
                let mut batch = std::mem::take(&mut drive.to_train);
                batch.sort_by_key(|(index, _)| self.clients[*index].id);
                let trained = self.train_batch(&batch, &drive.limits);
                for ((index, _), trained) in batch.iter().zip(trained) {
                    let (trained, payload_bytes) = trained?;
                    drive.bytes_up += payload_bytes;
                    drive.updates.push(Arc::clone(&trained.update));
                    let outputs = drive.machines[*index]
                        .trained(Arc::new(trained))
                        .map_err(|source| self.protocol_error(*index, source))?;
                    drive.queue(*index, outputs);
                }
                continue;
            }
            if self.coordinator.is_finished() {
                return Ok(self.coordinator.global_state().as_ref().clone());
            }
            if !drive.sleeping.is_empty() {
                for index in std::mem::take(&mut drive.sleeping) {
                    let outputs = drive.machines[index]
                        .wait_over()
                        .map_err(|source| self.protocol_error(index, source))?;
                    drive.queue(index, outputs);
                }
                continue;
            }
            // Nobody has anything to do: let the next deadline pass (virtual time).
            let next = [
                self.coordinator.next_deadline(),
                drive.sessions.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(deadline) = next.filter(|&at| at > self.now || drive.ticked_at != Some(at))
            else {
                return Err(FederationError::Stalled(self.coordinator.current_round()).into());
            };
            self.now = self.now.max(deadline);
            drive.ticked_at = Some(deadline);
            let actions = self.coordinator.handle(self.now, Event::Tick);
            self.execute(&mut drive, actions, None)?;
            let outputs = drive.sessions.tick(self.now);
            self.relay(&mut drive, outputs)?;
        }
    }

    /// Does what participant `index`'s machine asked for.
    fn carry_out(
        &mut self,
        drive: &mut Drive,
        index: usize,
        output: Output,
    ) -> Result<(), FederationError> {
        let participant = self.clients[index].id;
        match output {
            Output::Request {
                message: ClientMessage::RequestWork { .. },
                ..
            } => {
                let actions = self
                    .coordinator
                    .handle(self.now, Event::WorkRequested { participant });
                match self.execute(drive, actions, Some(index))? {
                    Some(reply) => self.reply(drive, index, reply)?,
                    // Nothing to hand out: the request is held until a round opens for it, as
                    // the server's long poll holds it.
                    None => {
                        drive.parked.insert(index);
                    }
                }
            }
            Output::Request {
                message:
                    ClientMessage::SecureAggregation {
                        round,
                        nonce,
                        upload,
                    },
                ..
            } => {
                let drops_here = matches!(
                    (self.secure_drops.get(&(round, index)), &upload),
                    (Some(DropStage::BeforeMasking), SecAggUpload::MaskedInput(_))
                        | (Some(DropStage::AfterMasking), SecAggUpload::Signature(_))
                );
                if drops_here {
                    // It vanishes, and comes back for the rounds after this one.
                    self.secure_drops.remove(&(round, index));
                    drive.machines[index].session_lost();
                    let outputs = drive.sessions.participant_left(self.now, participant);
                    self.relay(drive, outputs)?;
                    let outputs = drive.machines[index].start_session(self.run_id);
                    drive.queue(index, outputs);
                    return Ok(());
                }
                let outputs = drive
                    .sessions
                    .receive(self.now, participant, round, nonce, upload)
                    .unwrap_or_else(|| {
                        vec![RelayOutput::Reply {
                            participant,
                            message: CoordinatorMessage::SecureAggregationAborted {
                                round,
                                reason: format!(
                                    "no secure-aggregation session is open for round {round}"
                                ),
                            },
                        }]
                    });
                self.relay(drive, outputs)?;
            }
            Output::Request { message, .. } => {
                return Err(FederationError::Unexpected {
                    subject: self.clients[index].subject.clone(),
                    request: message.kind(),
                });
            }
            Output::Upload { update, .. } => {
                self.now += 1;
                let actions = self.coordinator.handle(
                    self.now,
                    Event::UpdateReceived {
                        participant,
                        update: Box::new(ClientUpdate::clone(&update.update)),
                    },
                );
                let reply = self
                    .execute(drive, actions, Some(index))?
                    .unwrap_or_else(|| CoordinatorMessage::Error {
                        reason: "the update got no answer".into(),
                    });
                self.reply(drive, index, reply)?;
            }
            Output::Train(handed) => drive.to_train.push((index, handed)),
            Output::Wait(_) => drive.sleeping.push(index),
            Output::Event(_) | Output::Finished { .. } => {}
        }
        Ok(())
    }

    /// Carries out the state machine's `actions`; returns the answer for `requester`'s request,
    /// if one was produced (`None`: park it). A round sent to a parked participant answers its
    /// request, as the server's actor does.
    fn execute(
        &mut self,
        drive: &mut Drive,
        actions: Vec<Action>,
        requester: Option<usize>,
    ) -> Result<Option<CoordinatorMessage>, FederationError> {
        let requester_id = requester.map(|index| self.clients[index].id);
        let mut answer = None;
        for action in actions {
            let ended = drive.sessions.after(&action);
            self.relay(drive, ended)?;
            match action {
                Action::SendRound {
                    participant,
                    round,
                    state,
                    config,
                } => {
                    let index = self.index_of(participant);
                    let asked = Some(participant) == requester_id && answer.is_none();
                    if !asked && !drive.parked.contains(&index) {
                        // It gets the round on its next request.
                        continue;
                    }
                    let Some(message) =
                        self.start_round(drive, participant, round, &state, config)?
                    else {
                        // The session is under way without it: it waits for the next round.
                        if asked {
                            drive.parked.insert(index);
                        }
                        continue;
                    };
                    if asked {
                        answer = Some(message);
                    } else {
                        drive.parked.remove(&index);
                        self.reply(drive, index, message)?;
                    }
                }
                Action::Accept { participant, round } => {
                    if Some(participant) == requester_id && answer.is_none() {
                        answer = Some(CoordinatorMessage::UpdateAccepted { round });
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
                    });
                }
                Action::Aggregated { round, summary } => {
                    drive.failed_sessions = 0;
                    let mean_train_loss = if drive.secure {
                        mean(drive.updates.iter().map(|u| u.metrics.train_loss))
                    } else {
                        mean(summary.contributors.iter().map(|c| c.train_loss))
                    };
                    drive.aggregated.push(RoundOutcome {
                        round,
                        state: self.coordinator.global_state().as_ref().clone(),
                        participants: summary.contributors.len(),
                        bytes_down: std::mem::take(&mut drive.bytes_down),
                        bytes_up: std::mem::take(&mut drive.bytes_up),
                        seconds: 0.0,
                        mean_train_loss,
                        updates: std::mem::take(&mut drive.updates),
                        privacy: summary.privacy.clone(),
                    });
                }
                Action::Finished { .. } => drive.finished = true,
                Action::SendWait { .. }
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
        Ok(answer)
    }

    /// The `StartRound` for `participant` (with its secure-aggregation setup under secure
    /// aggregation; `None` when it cannot join the round's session), its bytes counted.
    fn start_round(
        &mut self,
        drive: &mut Drive,
        participant: ParticipantId,
        round: u64,
        state: &Arc<GlobalState>,
        config: TrainingConfig,
    ) -> Result<Option<CoordinatorMessage>, FederationError> {
        let secure_aggregation = if drive.secure {
            let seed = self.coordinator.config().seed;
            let (handed, ended) = drive
                .sessions
                .hand_out(&self.coordinator, round, participant, self.now, || {
                    session_nonce(seed, round)
                })
                .map_err(|reason| FederationError::SecureSession { round, reason })?;
            self.relay(drive, ended)?;
            match handed {
                HandOut::Join(setup) => Some(setup),
                HandOut::CannotJoin { .. } => return Ok(None),
            }
        } else {
            None
        };
        // What `StartRound` carries; the state is encoded once a round.
        let state_bytes = match &drive.state_size {
            Some((shared, bytes)) if Arc::ptr_eq(shared, state) => *bytes,
            _ => {
                let bytes = encoded_size(&**state, &drive.limits);
                drive.state_size = Some((Arc::clone(state), bytes));
                bytes
            }
        };
        drive.bytes_down += state_bytes
            + encoded_size(&config, &drive.limits).saturating_sub(VERSION_PREFIX_BYTES as u64);
        let deadline_ms = self
            .coordinator
            .next_deadline()
            .map(|at| at.saturating_sub(self.now))
            .unwrap_or(0);
        Ok(Some(CoordinatorMessage::StartRound {
            run_id: self.run_id,
            round,
            state: state.as_ref().clone(),
            config,
            deadline_ms,
            secure_aggregation,
        }))
    }

    /// Carries the secure relay's replies to the participants and its result to the state
    /// machine.
    fn relay(
        &mut self,
        drive: &mut Drive,
        outputs: Vec<RelayOutput>,
    ) -> Result<(), FederationError> {
        for output in outputs {
            match output {
                RelayOutput::Reply {
                    participant,
                    message,
                } => {
                    let index = self.index_of(participant);
                    self.reply(drive, index, message)?;
                }
                RelayOutput::Event(event) => {
                    if let Event::SecureAggregationFailed { round, error } = &event {
                        drive.failed_sessions += 1;
                        if drive.failed_sessions >= MAX_SECURE_ATTEMPTS {
                            return Err(FederationError::SecureAggregation {
                                round: *round,
                                attempts: drive.failed_sessions,
                                last: error.clone(),
                            });
                        }
                    }
                    self.now += 1;
                    let actions = self.coordinator.handle(self.now, event);
                    self.execute(drive, actions, None)?;
                }
            }
        }
        Ok(())
    }

    /// Feeds `message` to participant `index`'s machine as the answer to its request.
    fn reply(
        &self,
        drive: &mut Drive,
        index: usize,
        message: CoordinatorMessage,
    ) -> Result<(), FederationError> {
        let outputs = drive.machines[index]
            .handle_reply(message)
            .map_err(|source| self.protocol_error(index, source))?;
        drive.queue(index, outputs);
        Ok(())
    }

    fn protocol_error(&self, index: usize, source: ProtocolError) -> FederationError {
        FederationError::Protocol {
            subject: self.clients[index].subject.clone(),
            source,
        }
    }

    fn index_of(&self, participant: ParticipantId) -> usize {
        self.clients
            .iter()
            .position(|c| c.id == participant)
            .expect("the coordinator only knows participants of this federation")
    }

    /// Trains the participants of `batch` (distinct ones) on up to `self.threads` threads, each
    /// taking the next untrained one; the results, with the size of the signed payload each
    /// would upload (the compressed delta when the run compresses: the update's own delta is
    /// then its decompression, what the coordinator reconstructs on receipt), come back in
    /// `batch` order.
    fn train_batch(
        &mut self,
        batch: &[(usize, HandedRound)],
        limits: &MessageLimits,
    ) -> Vec<TrainResult> {
        let run_id = self.run_id;
        let mut clients: Vec<Option<&mut VirtualClient>> =
            self.clients.iter_mut().map(Some).collect();
        let jobs: Vec<Mutex<Option<(&HandedRound, &mut VirtualClient)>>> = batch
            .iter()
            .map(|(index, handed)| {
                let client = clients[*index]
                    .take()
                    .expect("a participant trains one round at a time");
                Mutex::new(Some((handed, client)))
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
                let (handed, client) = job
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("each job is taken once");
                let trained = client
                    .participant
                    .train_round(run_id, handed.round, &handed.state, &handed.config)
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
