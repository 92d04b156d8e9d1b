//! The open round's secure-aggregation session, as both drivers of the round state machine keep
//! it: the QUIC server's actor and the in-process federation of a simulation. A session
//! ([`SecureRelay`]) opens when its round is first handed out, with the plan the state machine
//! gives for that round, and ends when the round does (aggregated, failed, the label prior set,
//! the run over), telling every client still waiting why.
//!
//! Pure like the relay: the driver passes the time and a fresh nonce in, carries the relay's
//! replies to the clients and feeds its events to the state machine.

use mpcl_protocol::secure_aggregation::{SecAggUpload, SecureRoundSetup};

use crate::round::{Action, Coordinator, Millis, ParticipantId};
use crate::secure_relay::{RelayOutput, SecureRelay};

/// Whether a sampled participant can join the round's session.
#[derive(Clone, Debug, PartialEq)]
pub enum HandOut {
    /// Send this setup with the round.
    Join(Box<SecureRoundSetup>),
    /// The session is under way without it (it was left out, or key advertisement is over): it
    /// must wait for the next round.
    CannotJoin { stage: &'static str },
}

/// At most one session, the open round's (see the module documentation).
#[derive(Debug)]
pub struct SecureSessions {
    relay: Option<SecureRelay>,
    step_timeout_ms: u64,
}

impl SecureSessions {
    /// No session yet; sessions will give each key-setup and unmasking step `step_timeout_ms`.
    pub fn new(step_timeout_ms: u64) -> Self {
        Self {
            relay: None,
            step_timeout_ms,
        }
    }

    /// The open session, if any.
    pub fn relay(&self) -> Option<&SecureRelay> {
        self.relay.as_ref()
    }

    /// Whether `participant` can join round `round`'s session, opening the session at `now`
    /// with a fresh `nonce` when this is the round's first hand-out. An older round's session
    /// still open is ended first: the replies to its waiting clients come back too. Fails when
    /// the state machine has no usable plan for the round.
    pub fn hand_out(
        &mut self,
        coordinator: &Coordinator,
        round: u64,
        participant: ParticipantId,
        now: Millis,
        nonce: impl FnOnce() -> [u8; 16],
    ) -> Result<(HandOut, Vec<RelayOutput>), String> {
        let mut outputs = Vec::new();
        if self.relay.as_ref().is_some_and(|r| r.round() != round) {
            outputs = self.end("a newer round started");
        }
        if self.relay.is_none() {
            let plan = coordinator
                .secure_round_plan()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("round {round} has no secure-aggregation plan"))?;
            let deadline = coordinator.next_deadline().unwrap_or(now);
            let relay = SecureRelay::new(plan, nonce(), self.step_timeout_ms, now, deadline)
                .map_err(|e| e.to_string())?;
            self.relay = Some(relay);
        }
        let relay = self.relay.as_mut().expect("opened above");
        let handed = match relay.hand_out(participant) {
            Some(setup) => HandOut::Join(Box::new(setup)),
            None => HandOut::CannotJoin {
                stage: relay.stage(),
            },
        };
        Ok((handed, outputs))
    }

    /// A `SecureAggregation` upload from `from` at `now`; `None` when no session is open.
    pub fn receive(
        &mut self,
        now: Millis,
        from: ParticipantId,
        round: u64,
        nonce: [u8; 16],
        upload: SecAggUpload,
    ) -> Option<Vec<RelayOutput>> {
        let relay = self.relay.as_mut()?;
        Some(relay.receive(now, from, round, nonce, upload))
    }

    /// `participant`'s connection closed.
    pub fn participant_left(
        &mut self,
        now: Millis,
        participant: ParticipantId,
    ) -> Vec<RelayOutput> {
        self.relay
            .as_mut()
            .map(|r| r.participant_left(now, participant))
            .unwrap_or_default()
    }

    /// Time moved on to `now`.
    pub fn tick(&mut self, now: Millis) -> Vec<RelayOutput> {
        self.relay.as_mut().map(|r| r.tick(now)).unwrap_or_default()
    }

    /// When the session's current step closes at the latest.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.relay.as_ref().and_then(SecureRelay::next_deadline)
    }

    /// Ends the session (if any): every waiting client is told `reason`.
    pub fn end(&mut self, reason: &str) -> Vec<RelayOutput> {
        self.relay
            .take()
            .map(|mut relay| relay.abort(reason))
            .unwrap_or_default()
    }

    /// Ends the session when `action` ends its round; the replies to its waiting clients.
    pub fn after(&mut self, action: &Action) -> Vec<RelayOutput> {
        match action {
            Action::Aggregated { round, .. } => self.end(&format!("round {round} was aggregated")),
            Action::LabelPriorSet { .. } => self.end("round 0 set the label prior"),
            Action::RoundFailed { round, error } => {
                self.end(&format!("round {round} failed and starts again: {error}"))
            }
            Action::Finished { .. } => self.end("the run is over"),
            _ => Vec::new(),
        }
    }
}
