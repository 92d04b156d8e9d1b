//! The participant's side of the protocol as a pure state machine: replies, trained updates and
//! ended waits go in, requests to send, trainings to run, waits and events come out. It holds no
//! socket, clock, thread or model, so that the QUIC node ([`crate::node`]) and the in-process
//! federation of a simulation drive the very same logic, and tests drive it message by message
//! (as quinn-proto does for both ends of a connection).
//!
//! ```text
//! start_session ─► RequestWork ─► StartRound ─► Train ─► trained ─► Upload ─► Accepted/Rejected ─► RequestWork
//!                              └► Wait ─► wait_over ─► RequestWork
//!                              └► Finished
//! StartRound(setup) ─► advertise ─► shares ─► Train ─► mask ─► sign survivors ─► unmask ─► done
//! ```
//!
//! Every [`Output::Request`] and [`Output::Upload`] is answered by exactly one
//! [`ClientMachine::handle_reply`], every [`Output::Train`] by one [`ClientMachine::trained`] and
//! every [`Output::Wait`] by one [`ClientMachine::wait_over`]; the driver feeds them in order.
//!
//! What survives a lost connection ([`ClientMachine::session_lost`]): the last round completed
//! and an update trained but not acknowledged. When the (resumed) coordinator hands out the same
//! round from the same state with the same settings, that update is sent again without
//! retraining. A secure-aggregation session does not survive: its keys are gone with it.

use std::sync::Arc;
use std::time::Duration;

use mpcl_protocol::NodeIdentity;
use mpcl_protocol::messages::{
    ClientMessage, CoordinatorMessage, GlobalState, RejectReason, RunId, TrainingConfig,
};
use mpcl_protocol::privacy_noise::NoiseSource;
use mpcl_protocol::secure_aggregation::{SecAggStep, SecureRoundSetup};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::events::{NodeEvent, UpdateOutcome};
use crate::participant::TrainedUpdate;
use crate::secure::{SecureParticipation, SecureRoundError};

/// A round as the coordinator handed it out: what to train from.
#[derive(Clone, Debug)]
pub struct HandedRound {
    pub run_id: RunId,
    pub round: u64,
    pub state: Arc<GlobalState>,
    pub config: TrainingConfig,
}

/// What the driver must do next, in order.
#[derive(Debug)]
pub enum Output {
    /// Send `message` and feed the reply to [`ClientMachine::handle_reply`]. Under secure
    /// aggregation each step is answered only when it closes, at the latest by the round's
    /// deadline (`round_deadline`, from when the round was handed out), so the driver must wait
    /// that long plus its usual request timeout.
    Request {
        message: ClientMessage,
        round_deadline: Option<Duration>,
    },
    /// Sign and send this trained update, and feed the reply to
    /// [`ClientMachine::handle_reply`] (signing needs the transport's limits; in-process the
    /// update goes to the coordinator's state machine as it is).
    Upload {
        round: u64,
        update: Arc<TrainedUpdate>,
    },
    /// Train on the local data from this round's state, then call [`ClientMachine::trained`].
    Train(HandedRound),
    /// The coordinator asked to wait this long before asking again; then call
    /// [`ClientMachine::wait_over`] (the driver may cap the wait).
    Wait(Duration),
    /// Something observers may want to know.
    Event(NodeEvent),
    /// The run is over after `rounds` rounds: the session ends.
    Finished { rounds: u64 },
}

/// The coordinator broke the protocol (or said it failed): the session is lost and the driver
/// reconnects. Secure-aggregation trouble only costs the round and is no error here.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The coordinator answered with an error.
    #[error("the coordinator reported an error: {reason}")]
    Coordinator { reason: String },
    /// A reply the protocol does not allow for the request.
    #[error("unexpected {reply} in reply to {request}")]
    Unexpected {
        request: &'static str,
        reply: &'static str,
    },
    /// `StartRound` named another run than the session's `Welcome`.
    #[error("StartRound names another run than Welcome")]
    OtherRun,
    /// The driver fed an input the machine was not waiting for (a driver bug).
    #[error("the participant's protocol machine got {got} while waiting for {waiting}")]
    OutOfOrder {
        got: &'static str,
        waiting: &'static str,
    },
}

/// A trained update not yet acknowledged, and what it was trained from.
struct Pending {
    round: HandedRound,
    update: Arc<TrainedUpdate>,
}

/// Where a secure-aggregation session stands: what the last message sent was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecureStage {
    Advertised,
    SharesSent,
    MaskedInputSent,
    Signed,
    UnmaskSent,
}

/// One round's secure-aggregation session on this participant.
struct SecureSession {
    part: SecureParticipation,
    round: HandedRound,
    deadline: Duration,
    stage: SecureStage,
    /// The update being masked (for the `MaskedInputSent` event).
    update: Option<Arc<TrainedUpdate>>,
}

/// What the machine waits for.
enum Awaiting {
    /// No session (before the first, between sessions, after the run).
    Nothing,
    /// The reply to `RequestWork`.
    Work,
    /// The end of a wait the coordinator asked for.
    WaitOver,
    /// The trained update of a round (under secure aggregation, inside its session).
    Training {
        round: HandedRound,
        secure: Option<Box<SecureSession>>,
    },
    /// The answer to an uploaded update.
    Ack {
        round: u64,
        update: Arc<TrainedUpdate>,
    },
    /// The answer to a secure-aggregation step.
    Secure(Box<SecureSession>),
}

impl Awaiting {
    fn name(&self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Work => "the reply to RequestWork",
            Self::WaitOver => "the end of a wait",
            Self::Training { .. } => "a trained update",
            Self::Ack { .. } => "the reply to an Update",
            Self::Secure(_) => "a secure-aggregation step",
        }
    }
}

/// The participant's protocol state (see the module documentation).
pub struct ClientMachine {
    identity: Arc<NodeIdentity>,
    noise: NoiseSource,
    /// The run of the current session.
    run_id: Option<RunId>,
    last_completed_round: Option<u64>,
    pending: Option<Pending>,
    last_round: Option<HandedRound>,
    awaiting: Awaiting,
}

impl ClientMachine {
    /// A participant signing its secure-aggregation messages as `identity` and drawing its
    /// noise shares from `noise`.
    pub fn new(identity: Arc<NodeIdentity>, noise: NoiseSource) -> Self {
        Self {
            identity,
            noise,
            run_id: None,
            last_completed_round: None,
            pending: None,
            last_round: None,
            awaiting: Awaiting::Nothing,
        }
    }

    /// The last round this participant was handed (the final evaluation round's state is the
    /// run's last global model).
    pub fn last_round(&self) -> Option<&HandedRound> {
        self.last_round.as_ref()
    }

    /// The last round whose update (or masked input) the coordinator confirmed.
    pub fn last_completed_round(&self) -> Option<u64> {
        self.last_completed_round
    }

    /// A session of run `run_id` was admitted: ask for work.
    pub fn start_session(&mut self, run_id: RunId) -> Vec<Output> {
        self.run_id = Some(run_id);
        vec![self.request_work()]
    }

    /// The connection is gone: whatever was awaited is dropped (the pending update is kept).
    pub fn session_lost(&mut self) {
        self.run_id = None;
        self.awaiting = Awaiting::Nothing;
    }

    /// A wait asked for by the coordinator is over: ask again.
    pub fn wait_over(&mut self) -> Result<Vec<Output>, ProtocolError> {
        match self.awaiting {
            Awaiting::WaitOver => Ok(vec![self.request_work()]),
            _ => Err(self.out_of_order("the end of a wait")),
        }
    }

    /// The update trained for the round of the last [`Output::Train`].
    pub fn trained(&mut self, update: Arc<TrainedUpdate>) -> Result<Vec<Output>, ProtocolError> {
        let Awaiting::Training { round, secure } =
            std::mem::replace(&mut self.awaiting, Awaiting::Nothing)
        else {
            return Err(self.out_of_order("a trained update"));
        };
        self.pending = Some(Pending {
            round: round.clone(),
            update: Arc::clone(&update),
        });
        Ok(match secure {
            Some(session) => self.mask(*session, update),
            None => self.upload(round.round, update),
        })
    }

    /// The coordinator's reply to the last request or upload.
    pub fn handle_reply(
        &mut self,
        reply: CoordinatorMessage,
    ) -> Result<Vec<Output>, ProtocolError> {
        if let CoordinatorMessage::Error { reason } = reply {
            self.awaiting = Awaiting::Nothing;
            return Err(ProtocolError::Coordinator { reason });
        }
        match std::mem::replace(&mut self.awaiting, Awaiting::Nothing) {
            Awaiting::Work => self.on_work(reply),
            Awaiting::Ack { round, update } => self.on_ack(round, update, reply),
            Awaiting::Secure(session) => Ok(self.on_secure_step(*session, reply)),
            other => {
                self.awaiting = other;
                Err(self.out_of_order("a reply"))
            }
        }
    }

    fn out_of_order(&self, got: &'static str) -> ProtocolError {
        ProtocolError::OutOfOrder {
            got,
            waiting: self.awaiting.name(),
        }
    }

    fn request_work(&mut self) -> Output {
        self.awaiting = Awaiting::Work;
        Output::Request {
            message: ClientMessage::RequestWork {
                last_completed_round: self.last_completed_round,
            },
            round_deadline: None,
        }
    }

    fn on_work(&mut self, reply: CoordinatorMessage) -> Result<Vec<Output>, ProtocolError> {
        match reply {
            CoordinatorMessage::StartRound {
                run_id,
                round,
                state,
                config,
                deadline_ms,
                secure_aggregation,
            } => {
                if Some(run_id) != self.run_id {
                    return Err(ProtocolError::OtherRun);
                }
                info!(round, deadline_ms, seed = config.seed, "sampled for round");
                let handed = HandedRound {
                    run_id,
                    round,
                    state: Arc::new(state),
                    config,
                };
                self.last_round = Some(handed.clone());
                let mut outputs = vec![Output::Event(NodeEvent::RoundStarted {
                    round,
                    state: Arc::clone(&handed.state),
                    config: handed.config.clone(),
                })];
                match secure_aggregation {
                    Some(setup) => outputs.extend(self.start_secure(
                        handed,
                        &setup,
                        Duration::from_millis(deadline_ms),
                    )),
                    None => match self.reusable(&handed) {
                        Some(update) => {
                            info!(round, "re-using the update trained before the reconnection");
                            outputs.extend(self.upload(round, update));
                        }
                        None => outputs.push(self.train(handed, None)),
                    },
                }
                Ok(outputs)
            }
            CoordinatorMessage::Wait {
                retry_after_ms,
                reason,
            } => {
                debug!(%reason, retry_after_ms, "waiting");
                self.awaiting = Awaiting::WaitOver;
                Ok(vec![Output::Wait(Duration::from_millis(retry_after_ms))])
            }
            CoordinatorMessage::Finished { rounds } => {
                info!(rounds, "the run is finished");
                Ok(vec![
                    Output::Event(NodeEvent::Finished { rounds }),
                    Output::Finished { rounds },
                ])
            }
            other => Err(ProtocolError::Unexpected {
                request: "RequestWork",
                reply: other.kind(),
            }),
        }
    }

    fn train(&mut self, round: HandedRound, secure: Option<Box<SecureSession>>) -> Output {
        self.awaiting = Awaiting::Training {
            round: round.clone(),
            secure,
        };
        Output::Train(round)
    }

    fn upload(&mut self, round: u64, update: Arc<TrainedUpdate>) -> Vec<Output> {
        self.awaiting = Awaiting::Ack {
            round,
            update: Arc::clone(&update),
        };
        vec![Output::Upload { round, update }]
    }

    fn on_ack(
        &mut self,
        round: u64,
        update: Arc<TrainedUpdate>,
        reply: CoordinatorMessage,
    ) -> Result<Vec<Output>, ProtocolError> {
        let outcome = match reply {
            CoordinatorMessage::UpdateAccepted { round: acked } => {
                info!(round = acked, "update accepted");
                self.last_completed_round = Some(acked);
                self.pending = None;
                UpdateOutcome::Accepted
            }
            CoordinatorMessage::UpdateRejected { round, reason } => {
                warn!(round, %reason, "update rejected");
                // A round that is not open may be handed out again from the same state; keep
                // the update for that case only.
                if !matches!(reason, RejectReason::RoundNotOpen { .. }) {
                    self.pending = None;
                }
                UpdateOutcome::Rejected(reason)
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    request: "Update",
                    reply: other.kind(),
                });
            }
        };
        Ok(vec![
            Output::Event(NodeEvent::UpdateSent {
                round,
                update: Arc::clone(&update.update),
                outcome,
            }),
            self.request_work(),
        ])
    }

    /// The pending update, if it was trained for exactly this round, state and settings.
    fn reusable(&self, handed: &HandedRound) -> Option<Arc<TrainedUpdate>> {
        let pending = self.pending.as_ref()?;
        (pending.round.run_id == handed.run_id
            && pending.round.round == handed.round
            && pending.round.config == handed.config
            && *pending.round.state == *handed.state)
            .then(|| Arc::clone(&pending.update))
    }

    fn start_secure(
        &mut self,
        round: HandedRound,
        setup: &SecureRoundSetup,
        deadline: Duration,
    ) -> Vec<Output> {
        match SecureParticipation::start(
            setup,
            round.run_id,
            round.round,
            &round.state,
            &self.identity,
        ) {
            Ok((part, advertise)) => {
                info!(
                    round = round.round,
                    cohort = setup.params.roster.len(),
                    threshold = setup.params.threshold,
                    "secure aggregation: keys advertised"
                );
                let session = SecureSession {
                    part,
                    round,
                    deadline,
                    stage: SecureStage::Advertised,
                    update: None,
                };
                vec![self.secure_request(session, advertise)]
            }
            Err(error) => self.abandon(round.round, error),
        }
    }

    fn secure_request(&mut self, session: SecureSession, message: ClientMessage) -> Output {
        let round_deadline = Some(session.deadline);
        self.awaiting = Awaiting::Secure(Box::new(session));
        Output::Request {
            message,
            round_deadline,
        }
    }

    /// This participant takes no further part in the round's session: it asks for work again.
    fn abandon(&mut self, round: u64, error: SecureRoundError) -> Vec<Output> {
        warn!(round, %error, "secure aggregation: this node's part of the round ended");
        vec![
            Output::Event(NodeEvent::SecureRoundAbandoned {
                round,
                reason: error.to_string(),
            }),
            self.request_work(),
        ]
    }

    fn mask(&mut self, mut session: SecureSession, update: Arc<TrainedUpdate>) -> Vec<Output> {
        let round = session.round.round;
        match session.part.mask(&update.update, self.noise) {
            Ok((masked, prepared)) => {
                if let Some(clip) = prepared.clip {
                    debug!(round, norm = clip.norm, clipped = clip.clipped(), "clipped");
                }
                session.stage = SecureStage::MaskedInputSent;
                session.update = Some(update);
                vec![self.secure_request(session, masked)]
            }
            Err(error) => self.abandon(round, error),
        }
    }

    fn on_secure_step(&mut self, session: SecureSession, reply: CoordinatorMessage) -> Vec<Output> {
        let round = session.round.round;
        match self.secure_step(session, reply) {
            Ok(outputs) => outputs,
            Err(error) => self.abandon(round, error),
        }
    }

    fn secure_step(
        &mut self,
        mut session: SecureSession,
        reply: CoordinatorMessage,
    ) -> Result<Vec<Output>, SecureRoundError> {
        let step: SecAggStep = session.part.expect_step(reply)?;
        let round = session.round.round;
        match session.stage {
            SecureStage::Advertised => {
                let shares = session.part.share_keys(step)?;
                session.stage = SecureStage::SharesSent;
                Ok(vec![self.secure_request(session, shares)])
            }
            SecureStage::SharesSent => {
                session.part.receive_shares(step)?;
                let handed = session.round.clone();
                Ok(match self.reusable(&handed) {
                    Some(update) => {
                        info!(round, "re-using the update trained before the reconnection");
                        self.mask(session, update)
                    }
                    None => vec![self.train(handed, Some(Box::new(session)))],
                })
            }
            SecureStage::MaskedInputSent => {
                let survivors = session.part.survivors(step)?;
                let mut outputs = Vec::new();
                if session.part.in_sum(&survivors)
                    && let Some(update) = &session.update
                {
                    outputs.push(Output::Event(NodeEvent::MaskedInputSent {
                        round,
                        update: Arc::clone(&update.update),
                    }));
                }
                let signature = session.part.sign(&survivors)?;
                session.stage = SecureStage::Signed;
                outputs.push(self.secure_request(session, signature));
                Ok(outputs)
            }
            SecureStage::Signed => {
                let unmask = session.part.unmask(step)?;
                session.stage = SecureStage::UnmaskSent;
                Ok(vec![self.secure_request(session, unmask)])
            }
            SecureStage::UnmaskSent => {
                let contributors = session.part.done(step)?;
                info!(round, contributors, "secure aggregation: round done");
                self.last_completed_round = Some(round);
                self.pending = None;
                Ok(vec![
                    Output::Event(NodeEvent::SecureRoundDone {
                        round,
                        contributors,
                    }),
                    self.request_work(),
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests;
