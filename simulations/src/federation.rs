//! The federated arms run in-process: one virtual participant per subject, driven through the
//! coordinator's own state machine (the very code `mpcl coordinator` runs), with a virtual clock
//! and no sockets. Participants train one after another in a fixed order, so a run is exactly
//! reproducible.

use std::collections::BTreeMap;
use std::time::Instant;

use mpcl_client::{Participant, ParticipantError, ParticipantSettings};
use mpcl_coordinator::{
    Action, Coordinator, CoordinatorConfig, CoordinatorError, Event, ParticipantId,
};
use mpcl_model::data::Dataset;
use mpcl_model::{Device, ModelConfig};
use mpcl_protocol::codec::{MessageLimits, encode_message};
use mpcl_protocol::messages::{ClientUpdate, GlobalState, RunId};
use thiserror::Error;

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
}

/// One virtual participant.
struct VirtualClient {
    id: ParticipantId,
    subject: String,
    participant: Participant,
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
    /// The updates the coordinator accepted this round, in arrival order.
    pub updates: Vec<ClientUpdate>,
}

/// A federation of virtual participants, one per subject of the training data.
pub struct InProcessFederation {
    coordinator: Coordinator,
    clients: Vec<VirtualClient>,
    run_id: RunId,
    now: u64,
}

impl InProcessFederation {
    /// Participants for every subject of `train_set` (in order of first appearance), a coordinator
    /// starting from `initial`.
    pub fn new(
        train_set: &Dataset,
        model_config: &ModelConfig,
        settings: &ParticipantSettings,
        config: CoordinatorConfig,
        initial: GlobalState,
        device: &Device,
    ) -> Result<Self, FederationError> {
        let mut clients = Vec::new();
        for (index, subject) in train_set.subjects().into_iter().enumerate() {
            let rows: Vec<usize> = (0..train_set.samples.len())
                .filter(|&i| train_set.samples[i].subject == subject)
                .collect();
            let participant = Participant::new(
                &train_set.subset(&rows),
                model_config,
                device,
                settings.clone(),
            )
            .map_err(|source| FederationError::Participant {
                subject: subject.clone(),
                source,
            })?;
            clients.push(VirtualClient {
                id: ParticipantId::from_index(index as u64),
                subject,
                participant,
            });
        }
        let run_id = run_id_from_seed(config.seed);
        let coordinator = Coordinator::new(config, run_id, initial)?;
        Ok(Self {
            coordinator,
            clients,
            run_id,
            now: 0,
        })
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
            let actions = std::mem::take(&mut pending);
            for action in actions {
                match action {
                    Action::SendRound {
                        participant,
                        round,
                        state,
                        config,
                    } => {
                        bytes_down += encoded_size(&(&*state, &config), &limits);
                        let client = self
                            .clients
                            .iter_mut()
                            .find(|c| c.id == participant)
                            .expect("the coordinator only samples connected participants");
                        let update = client
                            .participant
                            .train_round(self.run_id, round, &state, &config)
                            .map_err(|source| FederationError::Participant {
                                subject: client.subject.clone(),
                                source,
                            })?;
                        bytes_up += encoded_size(&update, &limits);
                        updates.push(update.clone());
                        self.now += 1;
                        pending.extend(self.coordinator.handle(
                            self.now,
                            Event::UpdateReceived {
                                participant,
                                update: Box::new(update),
                            },
                        ));
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
                        let outcome = RoundOutcome {
                            round,
                            state: self.coordinator.global_state().as_ref().clone(),
                            participants: summary.contributors.len(),
                            bytes_down,
                            bytes_up,
                            seconds: round_started.elapsed().as_secs_f64(),
                            mean_train_loss: mean(
                                summary.contributors.iter().map(|c| c.train_loss),
                            ),
                            updates: std::mem::take(&mut updates),
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
                    | Action::Persist { .. } => {}
                }
            }
        }
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
