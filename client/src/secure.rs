//! A participant's side of one round under secure aggregation, as pure steps: each takes the
//! coordinator's answer to the previous upload and returns the next message to send, so that
//! the node ([`crate::node`]) only carries messages and the steps are tested without sockets.
//!
//! The update itself never leaves the node: it is clipped, given this client's share of the
//! differential-privacy noise, laid out, quantised ([`SecureRoundPlan::prepare_input`], with the
//! numbers the coordinator sent in [`SecureRoundSetup`]) and masked ([`SecAggClient`]) before
//! anything is sent. Local metrics are not sent at all.
//!
//! Protects the update as the protocol does ([`mpcl_protocol::secure_aggregation`]): the node
//! checks every peer's signed keys, encrypts its shares end to end and reveals at most one secret
//! per peer. It trusts the coordinator's roster (the node does not hold the enrolment), so a
//! coordinator that invents participants could collect shares from them; and it trusts the
//! coordinator's setup to ask for enough noise (it checks only that the setup is consistent).

use mpcl_protocol::NodeIdentity;
use mpcl_protocol::messages::{
    ClientMessage, ClientUpdate, CoordinatorMessage, GlobalState, RunId,
};
use mpcl_protocol::privacy_noise::NoiseSource;
use mpcl_protocol::secure_aggregation::{
    ClientOptions, EncryptedShare, KeyAdvertisement, SecAggClient, SecAggError, SecAggStep,
    SecAggUpload, SecureRoundSetup, SurvivorList, UnmaskRequest,
};
use mpcl_protocol::secure_aggregation::{PreparedInput, SecureRoundPlan, SecureSetupError};
use thiserror::Error;

/// Why this node takes no further part in a round's session.
#[derive(Debug, Error)]
pub enum SecureRoundError {
    /// The coordinator's setup is unusable or does not fit the round.
    #[error("unusable secure-aggregation setup for round {round}: {reason}")]
    Setup { round: u64, reason: String },
    /// A protocol step failed on this side (a peer's bad signature, too few peers, ...).
    #[error("secure aggregation of round {round} failed here: {source}")]
    Protocol {
        round: u64,
        #[source]
        source: SecAggError,
    },
    /// The update could not be laid out or quantised.
    #[error("cannot prepare the update of round {round} for masking: {reason}")]
    Input { round: u64, reason: String },
    /// The coordinator ended the session for this node.
    #[error("the coordinator left this node out of round {round}'s secure aggregation: {reason}")]
    Aborted { round: u64, reason: String },
    /// The coordinator answered something the protocol does not allow here.
    #[error(
        "unexpected answer in round {round}'s secure aggregation: expected {expected}, got {got}"
    )]
    Unexpected {
        round: u64,
        expected: &'static str,
        got: String,
    },
}

/// One round's session on this node.
#[derive(Debug)]
pub struct SecureParticipation {
    plan: SecureRoundPlan,
    client: SecAggClient,
    nonce: [u8; 16],
    shares: Option<Vec<EncryptedShare>>,
}

impl SecureParticipation {
    /// Step 0: checks the setup against the round (`run_id`, `round`, `state`), makes this
    /// session's keys and returns the key advertisement to send.
    pub fn start(
        setup: &SecureRoundSetup,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        identity: &NodeIdentity,
    ) -> Result<(Self, ClientMessage), SecureRoundError> {
        let setup_error = |reason: String| SecureRoundError::Setup { round, reason };
        if setup.params.run_id != run_id || setup.params.round != round {
            return Err(setup_error(format!(
                "it names round {} of another run or round",
                setup.params.round
            )));
        }
        let plan = SecureRoundPlan::from_wire_setup(setup, state)
            .map_err(|e: SecureSetupError| setup_error(e.to_string()))?;
        let options = ClientOptions {
            trusted_peers: None,
            min_threshold_fraction: 0.5,
        };
        let (client, advertisement) = SecAggClient::with_os_randomness(
            setup.params.clone(),
            identity.signing_key(),
            &options,
        )
        .map_err(|source| SecureRoundError::Protocol { round, source })?;
        let participation = Self {
            plan,
            client,
            nonce: setup.params.nonce,
            shares: None,
        };
        let message = participation.wrap(SecAggUpload::Advertise(advertisement));
        Ok((participation, message))
    }

    /// The round.
    pub fn round(&self) -> u64 {
        self.plan.round
    }

    fn wrap(&self, upload: SecAggUpload) -> ClientMessage {
        ClientMessage::SecureAggregation {
            round: self.plan.round,
            nonce: self.nonce,
            upload,
        }
    }

    fn protocol(&self, source: SecAggError) -> SecureRoundError {
        SecureRoundError::Protocol {
            round: self.plan.round,
            source,
        }
    }

    /// The step in the coordinator's `reply`, or why there is none.
    pub fn expect_step(&self, reply: CoordinatorMessage) -> Result<SecAggStep, SecureRoundError> {
        let round = self.plan.round;
        match reply {
            CoordinatorMessage::SecureAggregation { round: r, step } if r == round => Ok(step),
            CoordinatorMessage::SecureAggregationAborted { reason, .. } => {
                Err(SecureRoundError::Aborted { round, reason })
            }
            other => Err(SecureRoundError::Unexpected {
                round,
                expected: "a secure-aggregation step",
                got: other.kind().to_string(),
            }),
        }
    }

    fn unexpected(&self, expected: &'static str, got: &SecAggStep) -> SecureRoundError {
        SecureRoundError::Unexpected {
            round: self.plan.round,
            expected,
            got: got.kind().to_string(),
        }
    }

    /// Step 1: the advertisements of the peers that made it; returns the encrypted shares.
    pub fn share_keys(&mut self, step: SecAggStep) -> Result<ClientMessage, SecureRoundError> {
        let SecAggStep::Advertisements(list) = step else {
            return Err(self.unexpected("advertisements", &step));
        };
        let list: Vec<KeyAdvertisement> = list;
        let bundle = self
            .client
            .share_keys(&list)
            .map_err(|e| self.protocol(e))?;
        Ok(self.wrap(SecAggUpload::Shares(bundle)))
    }

    /// After step 1: keeps the shares the peers encrypted for this node (used when masking).
    pub fn receive_shares(&mut self, step: SecAggStep) -> Result<(), SecureRoundError> {
        let SecAggStep::Shares(shares) = step else {
            return Err(self.unexpected("shares", &step));
        };
        self.shares = Some(shares);
        Ok(())
    }

    /// Step 2: clips the trained `update`, adds this node's noise share (from `noise`: the
    /// operating system in a study), quantises and masks it; returns the masked input to send
    /// and what preparing did.
    pub fn mask(
        &mut self,
        update: &ClientUpdate,
        noise: NoiseSource,
    ) -> Result<(ClientMessage, PreparedInput), SecureRoundError> {
        let round = self.plan.round;
        let shares = self
            .shares
            .take()
            .ok_or_else(|| SecureRoundError::Unexpected {
                round,
                expected: "shares before masking",
                got: "nothing".into(),
            })?;
        let prepared = self
            .plan
            .prepare_input(update, &mut noise.rng(round))
            .map_err(|e| SecureRoundError::Input {
                round,
                reason: e.to_string(),
            })?;
        let masked = self
            .client
            .mask_input(&shares, &prepared.words)
            .map_err(|e| self.protocol(e))?;
        Ok((self.wrap(SecAggUpload::MaskedInput(masked)), prepared))
    }

    /// The survivor list in the coordinator's answer to the masked input.
    pub fn survivors(&self, step: SecAggStep) -> Result<SurvivorList, SecureRoundError> {
        match step {
            SecAggStep::Survivors(list) => Ok(list),
            other => Err(self.unexpected("survivor list", &other)),
        }
    }

    /// Whether this node's input is in the survivor list (and so in the sum, if it completes).
    pub fn in_sum(&self, list: &SurvivorList) -> bool {
        list.survivors.contains(&self.client.peer())
    }

    /// Step 3: signs the survivor list.
    pub fn sign(&mut self, list: &SurvivorList) -> Result<ClientMessage, SecureRoundError> {
        let signature = self
            .client
            .sign_survivors(list)
            .map_err(|e| self.protocol(e))?;
        Ok(self.wrap(SecAggUpload::Signature(signature)))
    }

    /// Step 4: reveals this node's shares for unmasking.
    pub fn unmask(&mut self, step: SecAggStep) -> Result<ClientMessage, SecureRoundError> {
        let SecAggStep::UnmaskRequest(request) = step else {
            return Err(self.unexpected("unmask request", &step));
        };
        let request: UnmaskRequest = request;
        let response = self.client.unmask(&request).map_err(|e| self.protocol(e))?;
        Ok(self.wrap(SecAggUpload::Unmask(response)))
    }

    /// The end: how many inputs the coordinator's sum holds.
    pub fn done(&self, step: SecAggStep) -> Result<u32, SecureRoundError> {
        match step {
            SecAggStep::Done { contributors } => Ok(contributors),
            other => Err(self.unexpected("done", &other)),
        }
    }
}
