//! The coordinator's half of one secure-aggregation session: a pure relay
//! around [`SecAggServer`] that decides when each step closes and what every waiting client is
//! told, with no sockets and no clock of its own (the driver passes the time in), so that the QUIC
//! server and the in-process simulation run the same relay, and it is tested step by step with
//! in-memory clients.
//!
//! Each client's upload for a step is answered only when the step closes: as soon as every
//! client still expected has answered, or when the step's deadline passes. Key setup, the
//! survivor signatures and unmasking each get [`SecureRoundSetup::step_timeout_ms`]; the masked
//! inputs, which wait for local training, are awaited until `2 x step_timeout` before the round's
//! deadline (at least one step timeout), which leaves the last two steps time to finish before
//! the state machine gives up on the round. Closing a step with fewer than `t` clients fails the
//! session ([`Event::SecureAggregationFailed`]); finishing it yields the decoded sum
//! ([`Event::SecureSumReceived`]).
//!
//! A client whose message is refused (bad signature, wrong step, another session), or whose
//! connection closes, is left out of the rest of the session: the others no longer wait for it.
//! Whatever it already contributed stays protected and correct: if its masked input is in, its
//! self mask is removed with the survivors' shares; if not, its pairwise masks are.
//!
//! Protects the coordinator's sum against clients mixing up sessions (every upload must name
//! the session's round and nonce) and against stragglers holding a round forever (deadlines).
//! It does not make the protocol robust against a client that answers every step but with wrong
//! shares: the reconstruction check then fails the session (a denial of service, never a wrong
//! sum).

use std::collections::{BTreeMap, BTreeSet};

use mpcl_protocol::messages::CoordinatorMessage;
use mpcl_protocol::secure_aggregation::{
    PeerId, SecAggError, SecAggServer, SecAggStep, SecAggUpload, SecureRoundSetup, ServerStage,
};

use crate::privacy::SecureRoundPlan;
use crate::round::{Event, Millis, ParticipantId};

/// Something the actor must do for the relay, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum RelayOutput {
    /// Answer the participant's waiting `SecureAggregation` request with `message`.
    Reply {
        participant: ParticipantId,
        message: CoordinatorMessage,
    },
    /// Feed this event to the state machine (the sum, or the session's failure).
    Event(Event),
}

/// One round's session as the coordinator relays it (see the module documentation).
#[derive(Debug)]
pub struct SecureRelay {
    plan: SecureRoundPlan,
    setup: SecureRoundSetup,
    server: SecAggServer,
    /// Cohort members that were sent the round (and so may take part).
    handed_out: BTreeSet<ParticipantId>,
    /// Members whose upload for the current step awaits the step's close.
    waiting: BTreeSet<ParticipantId>,
    /// Members left out of the rest of the session.
    excluded: BTreeSet<ParticipantId>,
    step_deadline: Millis,
    /// When the masked-input step closes at the latest.
    masked_deadline: Millis,
    /// The session ended (sum out, failed or aborted): everything further is refused.
    over: bool,
}

fn peer(participant: &ParticipantId) -> PeerId {
    PeerId(participant.0)
}

fn participant(peer: &PeerId) -> ParticipantId {
    ParticipantId(peer.0)
}

impl SecureRelay {
    /// A session for `plan`'s round starting at `now`, with session nonce `nonce`, steps of
    /// `step_timeout_ms` and the round's state-machine deadline at `round_deadline_at`.
    pub fn new(
        plan: SecureRoundPlan,
        nonce: [u8; 16],
        step_timeout_ms: u64,
        now: Millis,
        round_deadline_at: Millis,
    ) -> Result<Self, SecAggError> {
        let setup = plan.wire_setup(nonce, step_timeout_ms)?;
        let server = SecAggServer::new(setup.params.clone())?;
        let masked_deadline = round_deadline_at
            .saturating_sub(step_timeout_ms.saturating_mul(2))
            .max(now.saturating_add(step_timeout_ms.saturating_mul(2)));
        Ok(Self {
            plan,
            setup,
            server,
            handed_out: BTreeSet::new(),
            waiting: BTreeSet::new(),
            excluded: BTreeSet::new(),
            step_deadline: now.saturating_add(step_timeout_ms),
            masked_deadline,
            over: false,
        })
    }

    /// The session's round.
    pub fn round(&self) -> u64 {
        self.plan.round
    }

    /// The cohort (sorted).
    pub fn cohort(&self) -> &[ParticipantId] {
        &self.plan.cohort
    }

    /// What the session is doing, in words (for logs).
    pub fn stage(&self) -> &'static str {
        if self.over {
            "over"
        } else {
            self.server.stage().name()
        }
    }

    /// The setup to send `participant` with the round, or `None` when it cannot join (not in
    /// the cohort, left out, already sent it, or key advertisement is over).
    pub fn hand_out(&mut self, participant: ParticipantId) -> Option<SecureRoundSetup> {
        let joinable = !self.over
            && self.server.stage() == ServerStage::Advertisements
            && self.plan.cohort.contains(&participant)
            && !self.excluded.contains(&participant)
            && self.handed_out.insert(participant);
        joinable.then(|| self.setup.clone())
    }

    /// When the current step closes at the latest (`None` once the session is over).
    pub fn next_deadline(&self) -> Option<Millis> {
        (!self.over).then_some(self.step_deadline)
    }

    fn aborted(&self, reason: String) -> CoordinatorMessage {
        CoordinatorMessage::SecureAggregationAborted {
            round: self.plan.round,
            reason,
        }
    }

    /// A `SecureAggregation` upload from `participant` (authenticated by the transport) at
    /// `now`. Its answer, and those of every other waiting client when this closes the step,
    /// are in the outputs.
    pub fn receive(
        &mut self,
        now: Millis,
        from: ParticipantId,
        round: u64,
        nonce: [u8; 16],
        upload: SecAggUpload,
    ) -> Vec<RelayOutput> {
        let refuse = |relay: &Self, reason: String| {
            vec![RelayOutput::Reply {
                participant: from,
                message: relay.aborted(reason),
            }]
        };
        if round != self.plan.round || nonce != self.setup.params.nonce {
            // Another session's message: refused without touching this one.
            return refuse(
                self,
                format!(
                    "the {} belongs to another secure-aggregation session than round {}'s current one",
                    upload.kind(),
                    self.plan.round
                ),
            );
        }
        if self.over {
            return refuse(self, "the session is over".into());
        }
        if self.excluded.contains(&from) {
            return refuse(
                self,
                "this participant was left out of the session at an earlier step".into(),
            );
        }
        if self.waiting.contains(&from) {
            return refuse(
                self,
                "this participant already answered the current step".into(),
            );
        }
        let kind = upload.kind();
        let sender = peer(&from);
        let received = match upload {
            SecAggUpload::Advertise(message) => self.server.receive_advertisement(sender, message),
            SecAggUpload::Shares(message) => self.server.receive_shares(sender, message),
            SecAggUpload::MaskedInput(message) => self.server.receive_masked_input(sender, message),
            SecAggUpload::Signature(message) => {
                self.server.receive_survivor_signature(sender, message)
            }
            SecAggUpload::Unmask(message) => self.server.receive_unmask_response(sender, message),
        };
        let mut outputs = Vec::new();
        match received {
            Ok(()) => {
                self.waiting.insert(from);
            }
            Err(error) => {
                // A refused message leaves the client out; the others go on without it.
                self.excluded.insert(from);
                outputs.extend(refuse(
                    self,
                    format!("{kind} refused, left out of the session: {error}"),
                ));
            }
        }
        outputs.extend(self.close_if_ready(now));
        outputs
    }

    /// `participant`'s connection closed: nobody waits for it any longer.
    pub fn participant_left(
        &mut self,
        now: Millis,
        participant: ParticipantId,
    ) -> Vec<RelayOutput> {
        if self.over || !self.plan.cohort.contains(&participant) {
            return Vec::new();
        }
        self.waiting.remove(&participant);
        self.excluded.insert(participant);
        self.close_if_ready(now)
    }

    /// Time moved on: closes the step when its deadline has passed.
    pub fn tick(&mut self, now: Millis) -> Vec<RelayOutput> {
        self.close_if_ready(now)
    }

    /// Ends the session from outside (the round closed or failed in the state machine): every
    /// waiting client is told `reason`.
    pub fn abort(&mut self, reason: &str) -> Vec<RelayOutput> {
        if self.over {
            return Vec::new();
        }
        self.over = true;
        let message = self.aborted(reason.to_string());
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|participant| RelayOutput::Reply {
                participant,
                message: message.clone(),
            })
            .collect()
    }

    fn close_if_ready(&mut self, now: Millis) -> Vec<RelayOutput> {
        if self.over {
            return Vec::new();
        }
        let everyone_answered = self
            .server
            .pending()
            .iter()
            .all(|p| self.excluded.contains(&participant(p)));
        if !everyone_answered && now < self.step_deadline {
            return Vec::new();
        }
        match self.close_step(now) {
            Ok(outputs) => outputs,
            Err(error) => {
                let reason = format!("secure aggregation failed: {error}");
                let mut outputs = self.abort(&reason);
                outputs.push(RelayOutput::Event(Event::SecureAggregationFailed {
                    round: self.plan.round,
                    error: error.to_string(),
                }));
                outputs
            }
        }
    }

    /// Closes the current step and answers every waiting client with its next input.
    fn close_step(&mut self, now: Millis) -> Result<Vec<RelayOutput>, StepError> {
        // Cleared only on success: when the step fails, `abort` still answers every waiting client.
        let waiting: Vec<ParticipantId> = self.waiting.iter().copied().collect();
        let round = self.plan.round;
        let step = |step: SecAggStep| CoordinatorMessage::SecureAggregation { round, step };
        let replies = |make: &dyn Fn(&ParticipantId) -> CoordinatorMessage| {
            waiting
                .iter()
                .map(|p| RelayOutput::Reply {
                    participant: *p,
                    message: make(p),
                })
                .collect::<Vec<_>>()
        };
        let step_timeout = self.setup.step_timeout_ms;
        let outputs = match self.server.stage() {
            ServerStage::Advertisements => {
                let list = self.server.close_advertisements()?;
                self.step_deadline = now.saturating_add(step_timeout);
                replies(&|_| step(SecAggStep::Advertisements(list.clone())))
            }
            ServerStage::Shares => {
                let routed: BTreeMap<PeerId, _> = self.server.close_shares()?;
                self.step_deadline = self.masked_deadline.max(now.saturating_add(step_timeout));
                replies(&|p| {
                    step(SecAggStep::Shares(
                        routed.get(&peer(p)).cloned().unwrap_or_default(),
                    ))
                })
            }
            ServerStage::MaskedInputs => {
                let survivors = self.server.close_masked_inputs()?;
                self.step_deadline = now.saturating_add(step_timeout);
                replies(&|_| step(SecAggStep::Survivors(survivors.clone())))
            }
            ServerStage::Signatures => {
                let request = self.server.close_signatures()?;
                self.step_deadline = now.saturating_add(step_timeout);
                replies(&|_| step(SecAggStep::UnmaskRequest(request.clone())))
            }
            ServerStage::UnmaskResponses => {
                let sum = self.server.finish()?;
                let contributors: Vec<ParticipantId> =
                    sum.contributors.iter().map(participant).collect();
                let decoded = self
                    .plan
                    .decode(&sum.values, contributors.len())
                    .map_err(|e| StepError(format!("the unmasked sum is unusable: {e}")))?;
                self.over = true;
                let count = u32::try_from(contributors.len()).unwrap_or(u32::MAX);
                let mut outputs = replies(&|_| {
                    step(SecAggStep::Done {
                        contributors: count,
                    })
                });
                outputs.push(RelayOutput::Event(Event::SecureSumReceived {
                    round,
                    contributors,
                    sum: Box::new(decoded),
                }));
                outputs
            }
            ServerStage::Finished | ServerStage::Failed => Vec::new(),
        };
        self.waiting.clear();
        Ok(outputs)
    }
}

/// Why closing a step failed.
#[derive(Debug)]
struct StepError(String);

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SecAggError> for StepError {
    fn from(error: SecAggError) -> Self {
        Self(error.to_string())
    }
}

#[cfg(test)]
mod tests;
