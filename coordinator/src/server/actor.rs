//! The single task that owns the round state machine.
//!
//! Connection tasks never touch [`Coordinator`] themselves: they send a [`Command`] with a reply
//! channel, and this actor feeds the matching [`Event`] to the state machine, carries out the
//! returned [`Action`]s in order (answering the request that asked, arming the deadline timer,
//! writing checkpoints and the round log), and only then answers. Because one task does all of
//! it, events are totally ordered, nothing is ever held across a network await, and a checkpoint
//! is durable before any client hears about the round that follows it.
//!
//! Under secure aggregation the actor also owns the open round's session ([`SecureSessions`],
//! the relay the in-process simulation drives too): it hands the
//! session's setup out with the round, keeps each client's `SecureAggregation` request waiting
//! until the relay closes the step, arms the step deadlines, tells the relay who disconnected,
//! and feeds the sum (or the failure) to the state machine. A round that fails or closes in the
//! state machine ends its session, answering every waiting client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mpcl_protocol::MessageLimits;
use mpcl_protocol::RunId;
use mpcl_protocol::messages::{
    ClientUpdate, CoordinatorMessage, GlobalState, RoundPhase, StatusReport, WaitReason as WireWait,
};
use mpcl_protocol::secure_aggregation::SecAggUpload;
use mpcl_protocol::start_round::{EncodedState, SplicedPayload, encode_start_round};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::BEST_CHECKPOINT_FILE;
use crate::checkpoint::{read_checkpoint, write_checkpoint};
use crate::evaluation::FederatedMetrics;
use crate::final_table::{FINAL_CSV_FILE, FINAL_MARKDOWN_FILE, final_csv, final_markdown};
use crate::round::{Action, Coordinator, Event, Millis, ParticipantId, RoundSummary, WaitReason};
use crate::round_log::{RoundLog, RoundRecord, RoundTraffic};

use super::live::{Connections, LivePublisher};
use super::{AggregatedRound, ServerError};
use crate::secure_relay::RelayOutput;
use crate::secure_session::{HandOut, SecureSessions};

/// A request from a connection task.
pub(crate) enum Command {
    /// A participant said `Hello` on a new connection. Answered with the round in progress.
    Admit {
        participant: ParticipantId,
        name: String,
        reply: oneshot::Sender<u64>,
    },
    /// One of the participant's connections closed.
    Leave { participant: ParticipantId },
    /// `RequestWork`. Answered at once with a round or `Finished`; a `Wait` is parked instead
    /// (see [`Actor`]) and answered when a round opens for the participant or the long poll
    /// ends.
    RequestWork {
        participant: ParticipantId,
        reply: oneshot::Sender<WorkReply>,
    },
    /// An update whose signature, run and payload were verified.
    Update {
        participant: ParticipantId,
        update: Box<ClientUpdate>,
        reply: oneshot::Sender<CoordinatorMessage>,
    },
    /// `StatusRequest`.
    Status {
        participant: ParticipantId,
        reply: oneshot::Sender<CoordinatorMessage>,
    },
    /// `RequestFinalModel`: answered with the run's model once the run is over (see
    /// `Actor::final_model`).
    FinalModel {
        participant: ParticipantId,
        reply: oneshot::Sender<CoordinatorMessage>,
    },
    /// A step of the secure-aggregation session; answered when the step closes.
    SecureAggregation {
        participant: ParticipantId,
        round: u64,
        nonce: [u8; 16],
        upload: Box<SecAggUpload>,
        reply: oneshot::Sender<CoordinatorMessage>,
    },
}

/// The answer to `RequestWork`: a message, or a `StartRound` payload already encoded around the
/// round's shared global state (see [`mpcl_protocol::start_round`]).
pub(crate) enum WorkReply {
    Message(CoordinatorMessage),
    StartRound(SplicedPayload),
}

impl WorkReply {
    /// The answer to a request other than `RequestWork`, which never carries a round.
    fn into_message(self, request: &str) -> CoordinatorMessage {
        match self {
            Self::Message(message) => message,
            Self::StartRound(_) => no_answer(request),
        }
    }
}

/// A `RequestWork` waiting for a round to open for its participant.
struct Parked {
    reply: oneshot::Sender<WorkReply>,
    /// Why there was no work when it was asked (sent back when the long poll ends).
    reason: WireWait,
    /// When the long poll ends: the participant is told to ask again at once.
    expires: Instant,
}

/// Bytes moved since the last aggregated round (connection tasks add, the actor reads).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// How the actor stopped.
pub(crate) struct ActorOutcome {
    pub finished: bool,
    pub completed_rounds: u64,
    pub global: Arc<GlobalState>,
    pub history: Vec<RoundSummary>,
    pub evaluations: Vec<FederatedMetrics>,
}

/// The actor's state.
///
/// `RequestWork` is a long poll: a participant with nothing to do (not sampled, its update
/// already in, too few participants yet) is not told to come back after `poll_interval_ms`;
/// its request is parked and answered with `StartRound` the moment the state machine sends it a
/// round (usually while handling the update that closed the previous round), with `Finished`
/// when the run ends, or with `Wait { retry_after_ms: 0 }` after `long_poll`, so that the
/// client asks again (a long poll never outlives clients' request timeouts). The poll interval
/// remains the retry interval for waits that are answered at once (`long_poll` zero).
pub(crate) struct Actor {
    coordinator: Coordinator,
    run_id: RunId,
    names: HashMap<ParticipantId, String>,
    /// Open connections per admitted participant (status queries included).
    connections: BTreeMap<ParticipantId, usize>,
    /// Participants that asked for work on a connection still open: the ones the state
    /// machine counts as connected. A status query alone does not make a participant active.
    active: BTreeSet<ParticipantId>,
    last_accepted: HashMap<ParticipantId, u64>,
    enrolled: usize,
    deadline: Option<(u64, Instant)>,
    origin: Instant,
    checkpoint_path: PathBuf,
    round_log: Option<RoundLog>,
    /// The round log's line of the last aggregated round, held back until that round's global
    /// model is evaluated (by the next round) so that the line carries its federated metrics.
    pending_record: Option<RoundRecord>,
    /// Federated metrics produced while closing the round being aggregated (for the observer).
    just_evaluated: Option<FederatedMetrics>,
    traffic: Arc<Traffic>,
    poll_interval_ms: u64,
    finish_grace: Duration,
    finished_at: Option<Instant>,
    /// Receives every aggregated round (see `Server::observe_rounds`).
    observer: Option<UnboundedSender<AggregatedRound>>,
    /// The read-only view for observers (see `Server::live_status`).
    live: Option<LivePublisher>,
    /// The open round's secure-aggregation session (secure aggregation only).
    secure: SecureSessions,
    /// `SecureAggregation` requests waiting for their step to close.
    secure_replies: HashMap<ParticipantId, oneshot::Sender<CoordinatorMessage>>,
    /// How long a `RequestWork` may stay parked (zero: answer `Wait` at once).
    long_poll: Duration,
    /// Parked `RequestWork`s, one per participant (a newer one replaces an older one).
    parked: HashMap<ParticipantId, Parked>,
    /// The message limits of `StartRound`.
    limits: MessageLimits,
    /// The global state handed out last and its encoding, shared by every `StartRound` of the
    /// round (the state machine's `Arc` identifies the state).
    encoded: Option<(Arc<GlobalState>, EncodedState)>,
    /// The best round's state, read back from `checkpoint.best.bin` for `RequestFinalModel`.
    best_state: Option<(u64, Arc<GlobalState>)>,
}

/// How the actor answers `RequestWork` (from `[network]`).
pub(crate) struct Polling {
    pub poll_interval_ms: u64,
    pub long_poll: Duration,
    pub limits: MessageLimits,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        coordinator: Coordinator,
        enrolled: usize,
        checkpoint_path: PathBuf,
        round_log: Option<RoundLog>,
        traffic: Arc<Traffic>,
        polling: Polling,
        finish_grace: Duration,
        secure_step_timeout_ms: u64,
    ) -> Self {
        let run_id = coordinator.run_id();
        let finished_at = coordinator.is_finished().then(Instant::now);
        Self {
            coordinator,
            run_id,
            names: HashMap::new(),
            connections: BTreeMap::new(),
            active: BTreeSet::new(),
            last_accepted: HashMap::new(),
            enrolled,
            deadline: None,
            origin: Instant::now(),
            checkpoint_path,
            round_log,
            pending_record: None,
            just_evaluated: None,
            traffic,
            poll_interval_ms: polling.poll_interval_ms,
            finish_grace,
            finished_at,
            observer: None,
            live: None,
            secure: SecureSessions::new(secure_step_timeout_ms),
            secure_replies: HashMap::new(),
            long_poll: polling.long_poll,
            parked: HashMap::new(),
            limits: polling.limits,
            encoded: None,
            best_state: None,
        }
    }

    pub(crate) fn set_observer(&mut self, observer: UnboundedSender<AggregatedRound>) {
        self.observer = Some(observer);
    }

    pub(crate) fn set_live(&mut self, live: LivePublisher) {
        self.live = Some(live);
    }

    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Hands the state to the live view, if there is one.
    fn publish_live(&mut self) {
        let now = self.now();
        if let Some(live) = &mut self.live {
            let connections = Connections {
                open: &self.connections,
                active: &self.active,
                last_accepted: &self.last_accepted,
            };
            live.publish(&self.coordinator, &connections, now);
        }
    }

    fn now(&self) -> Millis {
        self.origin.elapsed().as_millis() as Millis
    }

    fn name(&self, participant: &ParticipantId) -> String {
        self.names
            .get(participant)
            .cloned()
            .unwrap_or_else(|| participant.to_string())
    }

    /// Runs until the run is finished (and every client has left or the grace period passed),
    /// `shutdown` is cancelled (a final checkpoint is written) or the command channel closes.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Result<ActorOutcome, ServerError> {
        loop {
            self.publish_live();
            if self.finished_at.is_some() && self.connections.is_empty() {
                info!("run finished and every participant has left");
                break;
            }
            let deadline = self.deadline.map(|(_, at)| at);
            let step_deadline = self
                .secure
                .next_deadline()
                .map(|at| self.origin + Duration::from_millis(at));
            let grace_end = self.finished_at.map(|at| at + self.finish_grace);
            let poll_end = self.parked.values().map(|p| p.expires).min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    if !self.coordinator.is_finished() {
                        info!(
                            completed_rounds = self.coordinator.completed_rounds(),
                            "shutting down: writing a checkpoint"
                        );
                        self.persist(Box::new(self.coordinator.checkpoint())).await?;
                    }
                    break;
                }
                () = sleep_until_opt(deadline) => {
                    if let Some((round, _)) = self.deadline.take() {
                        info!(round, "round deadline passed");
                        let actions = self.coordinator.handle(self.now(), Event::DeadlinePassed { round });
                        self.execute(actions, None).await?;
                    }
                }
                () = sleep_until_opt(step_deadline) => {
                    let now = self.now();
                    let outputs = self.secure.tick(now);
                    self.deliver(outputs).await?;
                }
                () = sleep_until_opt(poll_end) => self.end_long_polls(),
                () = sleep_until_opt(grace_end) => {
                    info!(
                        still_connected = self.connections.len(),
                        "run finished; grace period over, stopping"
                    );
                    break;
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await?,
                    None => break,
                },
            }
        }
        Ok(ActorOutcome {
            finished: self.coordinator.is_finished(),
            completed_rounds: self.coordinator.completed_rounds(),
            global: Arc::clone(self.coordinator.global_state()),
            history: self.coordinator.history().to_vec(),
            evaluations: self.coordinator.evaluations().to_vec(),
        })
    }

    async fn on_command(&mut self, command: Command) -> Result<(), ServerError> {
        if let Some(live) = &mut self.live {
            live.contact(&command);
        }
        match command {
            Command::Admit {
                participant,
                name,
                reply,
            } => {
                self.names.insert(participant, name.clone());
                let count = self.connections.entry(participant).or_insert(0);
                *count += 1;
                debug!(participant = %name, connections = *count, "connection admitted");
                let _ = reply.send(self.reported_round());
            }
            Command::Leave { participant } => {
                let name = self.name(&participant);
                if let Some(count) = self.connections.get_mut(&participant) {
                    *count -= 1;
                    if *count == 0 {
                        self.connections.remove(&participant);
                        self.parked.remove(&participant);
                        if self.active.remove(&participant) {
                            info!(participant = %name, active = self.active.len(), "participant left");
                            let now = self.now();
                            let outputs = self.secure.participant_left(now, participant);
                            self.deliver(outputs).await?;
                            let actions = self
                                .coordinator
                                .handle(self.now(), Event::ClientDisconnected { participant });
                            self.execute(actions, None).await?;
                        }
                    }
                }
            }
            Command::RequestWork { participant, reply } => {
                self.activate(participant);
                let actions = self
                    .coordinator
                    .handle(self.now(), Event::WorkRequested { participant });
                let answer = self.execute(actions, Some(participant)).await?;
                match answer {
                    Some(WorkReply::Message(CoordinatorMessage::Wait { reason, .. }))
                        if !self.long_poll.is_zero() =>
                    {
                        self.park(participant, reason, reply)
                    }
                    Some(answer) => {
                        let _ = reply.send(answer);
                    }
                    None => {
                        let _ = reply.send(WorkReply::Message(no_answer("RequestWork")));
                    }
                }
            }
            Command::Update {
                participant,
                update,
                reply,
            } => {
                self.activate(participant);
                let actions = self.coordinator.handle(
                    self.now(),
                    Event::UpdateReceived {
                        participant,
                        update,
                    },
                );
                let answer = self.execute(actions, Some(participant)).await?;
                let _ = reply.send(
                    answer
                        .map(|a| a.into_message("Update"))
                        .unwrap_or_else(|| no_answer("Update")),
                );
            }
            Command::Status { participant, reply } => {
                let _ = reply.send(CoordinatorMessage::Status(self.status(&participant)));
            }
            Command::FinalModel { reply, .. } => {
                let answer = self.final_model().await;
                let _ = reply.send(answer);
            }
            Command::SecureAggregation {
                participant,
                round,
                nonce,
                upload,
                reply,
            } => {
                self.activate(participant);
                let name = self.name(&participant);
                let kind = upload.kind();
                let now = self.now();
                let Some(stage) = self.secure.relay().map(|r| r.stage()) else {
                    warn!(participant = %name, round, step = kind, "secure-aggregation message outside a session");
                    let _ = reply.send(CoordinatorMessage::SecureAggregationAborted {
                        round,
                        reason: format!("no secure-aggregation session is open for round {round}"),
                    });
                    return Ok(());
                };
                debug!(participant = %name, round, step = kind, stage, "secure-aggregation message");
                if let Some(previous) = self.secure_replies.insert(participant, reply) {
                    let _ = previous.send(CoordinatorMessage::SecureAggregationAborted {
                        round,
                        reason: "superseded by a newer request of the same participant".into(),
                    });
                }
                let outputs = self
                    .secure
                    .receive(now, participant, round, nonce, *upload)
                    .unwrap_or_default();
                self.deliver(outputs).await?;
            }
        }
        Ok(())
    }

    /// Carries out what the relay asked for: answers waiting requests, and feeds the session's
    /// result to the state machine.
    async fn deliver(&mut self, outputs: Vec<RelayOutput>) -> Result<(), ServerError> {
        for output in outputs {
            match output {
                RelayOutput::Reply {
                    participant,
                    message,
                } => self.reply_secure(participant, message),
                RelayOutput::Event(event) => {
                    match &event {
                        Event::SecureSumReceived {
                            round,
                            contributors,
                            ..
                        } => info!(
                            round,
                            contributors = contributors.len(),
                            "secure aggregation: sum unmasked"
                        ),
                        Event::SecureAggregationFailed { round, error } => {
                            warn!(round, %error, "secure aggregation failed")
                        }
                        _ => {}
                    }
                    let actions = self.coordinator.handle(self.now(), event);
                    self.execute(actions, None).await?;
                }
            }
        }
        Ok(())
    }

    fn reply_secure(&mut self, participant: ParticipantId, message: CoordinatorMessage) {
        if let CoordinatorMessage::SecureAggregationAborted { round, reason } = &message {
            warn!(participant = %self.name(&participant), round, %reason, "secure aggregation: participant left out");
        }
        match self.secure_replies.remove(&participant) {
            Some(reply) => {
                let _ = reply.send(message);
            }
            None => {
                debug!(participant = %self.name(&participant), reply = message.kind(), "no request waiting for this answer")
            }
        }
    }

    /// Answers the waiting clients of a session that ended.
    fn reply_ended(&mut self, outputs: Vec<RelayOutput>) {
        for output in outputs {
            if let RelayOutput::Reply {
                participant,
                message,
            } = output
            {
                self.reply_secure(participant, message);
            }
        }
    }

    /// Counts the participant as taking part (the state machine learns it from the event that
    /// follows).
    fn activate(&mut self, participant: ParticipantId) {
        if self.active.insert(participant) {
            info!(
                participant = %self.name(&participant),
                active = self.active.len(),
                "participant joined"
            );
        }
    }

    /// Carries out `actions` in order; returns the answer for `requester`, if one was produced.
    /// A round sent to a participant whose `RequestWork` is parked answers that request.
    async fn execute(
        &mut self,
        actions: Vec<Action>,
        requester: Option<ParticipantId>,
    ) -> Result<Option<WorkReply>, ServerError> {
        let mut answer = None;
        for action in actions {
            let ended = self.secure.after(&action);
            self.reply_ended(ended);
            match action {
                Action::SendRound {
                    participant,
                    round,
                    state,
                    config,
                } => {
                    if Some(participant) == requester && answer.is_none() {
                        answer = Some(self.start_round(participant, round, &state, &config));
                    } else if let Some(parked) = self.parked.remove(&participant) {
                        let reply = self.start_round(participant, round, &state, &config);
                        if parked.reply.send(reply).is_err() {
                            debug!(participant = %self.name(&participant), round, "parked request gone; the round goes out on its next request");
                        }
                    } else {
                        debug!(participant = %self.name(&participant), round, "sampled; gets the round on its next request");
                    }
                }
                Action::SendWait {
                    participant,
                    round,
                    reason,
                } => {
                    if Some(participant) == requester && answer.is_none() {
                        answer = Some(WorkReply::Message(self.wait_message(round, reason)));
                    }
                }
                Action::Accept { participant, round } => {
                    let name = self.name(&participant);
                    self.last_accepted.insert(participant, round);
                    info!(participant = %name, round, "accepted update");
                    if Some(participant) == requester && answer.is_none() {
                        answer = Some(WorkReply::Message(CoordinatorMessage::UpdateAccepted {
                            round,
                        }));
                    }
                }
                Action::Reject {
                    participant,
                    round,
                    reason,
                } => {
                    let name = self.name(&participant);
                    warn!(participant = %name, round, reason = %reason, "rejected update");
                    if Some(participant) == requester && answer.is_none() {
                        answer = Some(WorkReply::Message(CoordinatorMessage::UpdateRejected {
                            round,
                            reason,
                        }));
                    }
                }
                Action::SetDeadline { round, at_ms } => {
                    if self.deadline.map(|(r, _)| r) != Some(round) {
                        let sampled = self
                            .coordinator
                            .round_status()
                            .map(|s| {
                                s.sampled
                                    .iter()
                                    .map(|p| self.name(p))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        info!(round, %sampled, "round started");
                    }
                    self.deadline = Some((round, self.origin + Duration::from_millis(at_ms)));
                }
                Action::RoundExtended {
                    round,
                    accepted,
                    required,
                    added,
                } => {
                    let added: Vec<String> = added.iter().map(|p| self.name(p)).collect();
                    warn!(
                        round,
                        accepted,
                        required,
                        added = %added.join(","),
                        "too few updates by the deadline: round extended"
                    );
                }
                Action::Aggregated { round, summary } => {
                    let traffic = RoundTraffic {
                        wall_seconds: Some(
                            summary
                                .completed_at_ms
                                .saturating_sub(summary.started_at_ms)
                                as f64
                                / 1000.0,
                        ),
                        bytes_in: Some(self.traffic.bytes_in.swap(0, Ordering::Relaxed)),
                        bytes_out: Some(self.traffic.bytes_out.swap(0, Ordering::Relaxed)),
                    };
                    info!(
                        round,
                        contributors = summary.contributors.len(),
                        rejected = summary.rejected,
                        total_samples = summary.total_samples,
                        mean_train_loss = summary.mean_train_loss.unwrap_or(f64::NAN),
                        "round aggregated"
                    );
                    // A line still held back saw no evaluation (nobody reported): write it as is.
                    self.flush_round_record();
                    self.pending_record = Some(RoundRecord::new(&summary, &traffic));
                    if !self.coordinator.evaluates_model_after(round) {
                        self.flush_round_record();
                    }
                    if let Some(observer) = &self.observer {
                        // A gone observer only loses its view; the run goes on.
                        let _ = observer.send(AggregatedRound {
                            summary: (*summary).clone(),
                            state: Arc::clone(self.coordinator.global_state()),
                            traffic,
                            evaluated: self.just_evaluated.take(),
                        });
                    }
                    self.deadline = None;
                }
                Action::LabelPriorSet {
                    participants,
                    samples,
                    prior,
                } => {
                    let prior: Vec<String> = prior.iter().map(|p| format!("{p:.4}")).collect();
                    info!(
                        participants,
                        samples,
                        prior = %prior.join(","),
                        "round 0: the head starts at the label prior of the participants' training data"
                    );
                    self.deadline = None;
                }
                Action::RoundFailed { round, error } => {
                    error!(round, %error, "aggregation failed; the round starts again");
                    self.deadline = None;
                }
                Action::Evaluated { metrics, best } => {
                    info!(
                        round = metrics.round,
                        participants = metrics.clients,
                        validation_kl = metrics.validation.kl,
                        test_kl = metrics.test.kl,
                        prior_test_kl = metrics.prior_test.kl,
                        test_samples = metrics.test.samples,
                        best,
                        "global model evaluated"
                    );
                    self.just_evaluated = Some(*metrics);
                    if let Some(record) = &mut self.pending_record
                        && record.round == metrics.round
                    {
                        record.evaluation = Some(*metrics);
                        self.flush_round_record();
                    }
                }
                Action::PersistBest { round, state } => self.persist_best(round, state).await?,
                Action::Persist { checkpoint } => self.persist(checkpoint).await?,
                Action::Stopped { rounds, reason } => {
                    warn!(rounds, %reason, "the run stops early");
                }
                Action::Finished { rounds } => {
                    info!(rounds, "all rounds done");
                    self.flush_round_record();
                    self.write_final_table();
                    for (_, parked) in self.parked.drain() {
                        let _ = parked
                            .reply
                            .send(WorkReply::Message(CoordinatorMessage::Finished { rounds }));
                    }
                    self.deadline = None;
                    self.finished_at = Some(Instant::now());
                }
            }
        }
        Ok(answer)
    }

    /// The `StartRound` for `participant` (under secure aggregation with its session setup,
    /// or a `Wait` when the session is under way without it), its state encoded once a round.
    fn start_round(
        &mut self,
        participant: ParticipantId,
        round: u64,
        state: &Arc<GlobalState>,
        config: &mpcl_protocol::TrainingConfig,
    ) -> WorkReply {
        let name = self.name(&participant);
        let deadline_ms = self
            .coordinator
            .next_deadline()
            .map(|at| at.saturating_sub(self.now()))
            .unwrap_or(0);
        let secure_aggregation = if self.coordinator.config().privacy.secure_aggregation {
            let opening = self.secure.relay().is_none();
            let now = self.now();
            match self
                .secure
                .hand_out(&self.coordinator, round, participant, now, rand::random)
            {
                Ok((handed, ended)) => {
                    self.reply_ended(ended);
                    if opening && let Some(relay) = self.secure.relay() {
                        let cohort: Vec<String> =
                            relay.cohort().iter().map(|p| self.name(p)).collect();
                        info!(round, cohort = %cohort.join(","), "secure-aggregation session opened");
                    }
                    match handed {
                        HandOut::Join(setup) => Some(setup),
                        HandOut::CannotJoin { stage } => {
                            debug!(participant = %name, round, stage, "cannot join the session now");
                            return WorkReply::Message(CoordinatorMessage::Wait {
                                retry_after_ms: self.poll_interval_ms,
                                reason: WireWait::Other(format!(
                                    "round {round}'s secure aggregation is under way without this participant"
                                )),
                            });
                        }
                    }
                }
                Err(error) => {
                    error!(round, %error, "cannot open the secure-aggregation session");
                    return WorkReply::Message(CoordinatorMessage::Error {
                        reason: format!(
                            "cannot open round {round}'s secure-aggregation session: {error}"
                        ),
                    });
                }
            }
        } else {
            None
        };
        let encoded = match &self.encoded {
            Some((shared, encoded)) if Arc::ptr_eq(shared, state) => encoded.clone(),
            _ => match EncodedState::encode(state) {
                Ok(encoded) => {
                    self.encoded = Some((Arc::clone(state), encoded.clone()));
                    encoded
                }
                Err(error) => {
                    error!(round, %error, "cannot encode the global state");
                    return WorkReply::Message(CoordinatorMessage::Error {
                        reason: format!("cannot encode round {round}'s global state: {error}"),
                    });
                }
            },
        };
        match encode_start_round(
            &self.run_id,
            round,
            &encoded,
            config,
            deadline_ms,
            &secure_aggregation,
            &self.limits,
        ) {
            Ok(payload) => {
                info!(participant = %name, round, deadline_ms, secure = secure_aggregation.is_some(), "sending round");
                WorkReply::StartRound(payload)
            }
            Err(error) => {
                error!(participant = %name, round, %error, "cannot encode StartRound");
                WorkReply::Message(CoordinatorMessage::Error {
                    reason: format!("cannot encode round {round}'s StartRound: {error}"),
                })
            }
        }
    }

    /// Parks `participant`'s `RequestWork` (see [`Actor`]); an older parked one is answered.
    fn park(
        &mut self,
        participant: ParticipantId,
        reason: WireWait,
        reply: oneshot::Sender<WorkReply>,
    ) {
        let parked = Parked {
            reply,
            reason,
            expires: Instant::now() + self.long_poll,
        };
        if let Some(older) = self.parked.insert(participant, parked) {
            let _ = older
                .reply
                .send(WorkReply::Message(CoordinatorMessage::Wait {
                    retry_after_ms: 0,
                    reason: older.reason,
                }));
        }
    }

    /// Answers the parked requests whose long poll is over: ask again at once.
    fn end_long_polls(&mut self) {
        let now = Instant::now();
        let over: Vec<ParticipantId> = self
            .parked
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for participant in over {
            if let Some(parked) = self.parked.remove(&participant) {
                let _ = parked
                    .reply
                    .send(WorkReply::Message(CoordinatorMessage::Wait {
                        retry_after_ms: 0,
                        reason: parked.reason,
                    }));
            }
        }
    }

    async fn persist(
        &mut self,
        checkpoint: Box<crate::checkpoint::Checkpoint>,
    ) -> Result<(), ServerError> {
        let path = self.checkpoint_path.clone();
        let rounds = checkpoint.completed_rounds;
        let written = tokio::task::spawn_blocking(move || write_checkpoint(&path, &checkpoint))
            .await
            .map_err(|e| ServerError::Internal(format!("checkpoint writer panicked: {e}")))?;
        written.map_err(ServerError::Checkpoint)?;
        info!(
            completed_rounds = rounds,
            path = %self.checkpoint_path.display(),
            "checkpoint written"
        );
        Ok(())
    }

    /// Writes the held-back round-log line, if any.
    fn flush_round_record(&mut self) {
        if let (Some(record), Some(log)) = (self.pending_record.take(), &mut self.round_log)
            && let Err(error) = log.append(&record)
        {
            warn!(%error, "cannot append to the round log");
        }
    }

    /// Keeps `state` (the global model after `round`, the best so far) in
    /// `checkpoint.best.bin` beside the checkpoint, as a checkpoint of that round.
    async fn persist_best(
        &mut self,
        round: u64,
        state: Arc<GlobalState>,
    ) -> Result<(), ServerError> {
        let path = self.checkpoint_path.with_file_name(BEST_CHECKPOINT_FILE);
        let mut checkpoint = self.coordinator.checkpoint();
        checkpoint.completed_rounds = round;
        checkpoint.global = (*state).clone();
        checkpoint.history.retain(|s| s.round <= round);
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_checkpoint(&target, &checkpoint))
            .await
            .map_err(|e| ServerError::Internal(format!("checkpoint writer panicked: {e}")))?;
        written.map_err(ServerError::Checkpoint)?;
        info!(round, path = %path.display(), "best global model so far kept");
        Ok(())
    }

    /// The answer to `RequestFinalModel`: the run's model, that is the best round's global
    /// state on federated validation when the run evaluated (kept in `checkpoint.best.bin`, as
    /// the study's model file is), else the state after the last round; while rounds remain, an
    /// error (the state in between is neither, and a node would personalize the wrong model).
    async fn final_model(&mut self) -> CoordinatorMessage {
        let coordinator = &self.coordinator;
        if !coordinator.is_finished() {
            return CoordinatorMessage::Error {
                reason: format!(
                    "the run is not over ({} of {} rounds aggregated): its model exists once \
                     the coordinator answers `Finished`",
                    coordinator.completed_rounds(),
                    coordinator.config().rounds
                ),
            };
        }
        let run_id = coordinator.run_id();
        let last = coordinator.completed_rounds();
        let round = coordinator.best_round().unwrap_or(last);
        if round == last {
            return CoordinatorMessage::FinalModel {
                run_id,
                round,
                state: GlobalState::clone(coordinator.global_state()),
            };
        }
        if self
            .best_state
            .as_ref()
            .is_none_or(|(kept, _)| *kept != round)
        {
            let path = self.checkpoint_path.with_file_name(BEST_CHECKPOINT_FILE);
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_checkpoint(&path)).await
            };
            match read {
                Ok(Ok(best)) if best.run_id == run_id && best.completed_rounds == round => {
                    self.best_state = Some((round, Arc::new(best.global)));
                }
                Ok(Ok(best)) => {
                    let reason = format!(
                        "{} holds round {} of {}, not the best round ({round}) of this run",
                        path.display(),
                        best.completed_rounds,
                        if best.run_id == run_id {
                            "this run"
                        } else {
                            "another run"
                        },
                    );
                    error!(%reason, "cannot hand out the run's model");
                    return CoordinatorMessage::Error { reason };
                }
                Ok(Err(error)) => {
                    error!(%error, "cannot read the best round's model");
                    return CoordinatorMessage::Error {
                        reason: format!(
                            "the coordinator cannot read the best round's model: {error}"
                        ),
                    };
                }
                Err(error) => return no_answer(&format!("RequestFinalModel ({error})")),
            }
        }
        let (round, state) = self.best_state.as_ref().expect("just kept");
        CoordinatorMessage::FinalModel {
            run_id,
            round: *round,
            state: GlobalState::clone(state),
        }
    }

    /// Writes `final.md` and `final.csv` beside the checkpoint and prints the table to the log
    /// (nothing when the run evaluated nothing).
    fn write_final_table(&self) {
        let evaluations = self.coordinator.evaluations();
        let name = &self.coordinator.config().name;
        let (Some(markdown), Some(csv)) =
            (final_markdown(name, evaluations), final_csv(evaluations))
        else {
            return;
        };
        for (file, text) in [(FINAL_MARKDOWN_FILE, &markdown), (FINAL_CSV_FILE, &csv)] {
            let path = self.checkpoint_path.with_file_name(file);
            if let Err(error) = std::fs::write(&path, text) {
                warn!(path = %path.display(), %error, "cannot write the final table");
            }
        }
        info!(
            path = %self.checkpoint_path.with_file_name(FINAL_MARKDOWN_FILE).display(),
            "final table written:\n{markdown}"
        );
    }

    fn wait_message(&self, round: u64, reason: WaitReason) -> CoordinatorMessage {
        let retry_after_ms = self.poll_interval_ms;
        let reason = match reason {
            WaitReason::RunFinished => {
                return CoordinatorMessage::Finished {
                    rounds: self.coordinator.completed_rounds(),
                };
            }
            WaitReason::WaitingForParticipants { connected, needed } => {
                WireWait::WaitingForParticipants {
                    connected: u32::try_from(connected).unwrap_or(u32::MAX),
                    needed: u32::try_from(needed).unwrap_or(u32::MAX),
                }
            }
            WaitReason::NotSampled => WireWait::NotSelected { round },
            WaitReason::AlreadySubmitted => WireWait::AlreadySubmitted { round },
        };
        CoordinatorMessage::Wait {
            retry_after_ms,
            reason,
        }
    }

    /// The round in progress, or else the last one completed (0 before the first), as
    /// `Welcome` and `Status` report it.
    fn reported_round(&self) -> u64 {
        self.coordinator
            .round_status()
            .map(|open| open.round)
            .unwrap_or_else(|| self.coordinator.completed_rounds())
    }

    fn status(&self, participant: &ParticipantId) -> StatusReport {
        let open = self.coordinator.round_status();
        let phase = if self.coordinator.is_finished() {
            RoundPhase::Finished
        } else if open.is_some() {
            RoundPhase::Training
        } else {
            RoundPhase::WaitingForParticipants
        };
        let now = self.now();
        StatusReport {
            run_id: self.run_id,
            phase,
            round: self.reported_round(),
            total_rounds: self.coordinator.config().rounds,
            updates_received: open
                .as_ref()
                .map(|s| u32::try_from(s.accepted).unwrap_or(u32::MAX))
                .unwrap_or(0),
            updates_expected: open
                .as_ref()
                .map(|s| u32::try_from(s.sampled.len()).unwrap_or(u32::MAX))
                .unwrap_or(0),
            connected_participants: u32::try_from(self.active.len()).unwrap_or(u32::MAX),
            enrolled_participants: u32::try_from(self.enrolled).unwrap_or(u32::MAX),
            last_accepted_round: self.last_accepted.get(participant).copied(),
            deadline_in_ms: open.map(|s| s.deadline_at_ms.saturating_sub(now)),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn no_answer(request: &str) -> CoordinatorMessage {
    CoordinatorMessage::Error {
        reason: format!("internal error: the coordinator produced no answer to {request}"),
    }
}
