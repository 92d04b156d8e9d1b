//! How a secure-aggregation session travels over the network: what the coordinator tells each
//! member of the cohort in `StartRound` ([`SecureRoundSetup`]), what a client uploads at each
//! step ([`SecAggUpload`], inside `ClientMessage::SecureAggregation`) and what the coordinator
//! answers ([`SecAggStep`], inside `CoordinatorMessage::SecureAggregation`).
//!
//! The conversation stays strictly request/response: a client uploads its message for a step and
//! the coordinator holds the answer until the step closes (every expected client answered, or
//! the step's deadline passed), then answers every waiting client with the input of its next
//! step. So each step costs one round trip and no polling:
//!
//! ```text
//! client                                          coordinator (relay around SecAggServer)
//!   | <- StartRound { .., secure_aggregation: Some(setup) }
//!   | SecureAggregation(Advertise) ----------------> |  step 0 closes
//!   | <------------- SecureAggregation(Advertisements) |
//!   | SecureAggregation(Shares) ------------------> |  step 1 closes
//!   | <-------------------- SecureAggregation(Shares) |
//!   |   ... trains locally, clips, adds its noise share, quantises, masks ...
//!   | SecureAggregation(MaskedInput) -------------> |  step 2 closes
//!   | <----------------- SecureAggregation(Survivors) |
//!   | SecureAggregation(Signature) ---------------> |  step 3 closes
//!   | <------------- SecureAggregation(UnmaskRequest) |
//!   | SecureAggregation(Unmask) ------------------> |  step 4 closes: the sum
//!   | <------------------------ SecureAggregation(Done) |
//! ```
//!
//! Any of these requests may instead be answered with `SecureAggregationAborted { reason }`:
//! the session failed (too few survivors) or this client was left out (too late, a refused
//! message); the client then asks for work again.
//!
//! Protects nothing by itself: the messages inside are signed, encrypted or masked by the
//! protocol steps ([`super`]); TLS hides them from the network.

use serde::{Deserialize, Serialize};

use super::SecAggParams;
use super::messages::{
    EncryptedShare, KeyAdvertisement, MaskedInput, ShareBundle, SurvivorList, SurvivorSignature,
    UnmaskRequest, UnmaskResponse,
};

/// Everything a cohort member needs, besides the round's global state, to take part in the
/// round's secure aggregation: the session parameters and the numbers every client must apply
/// the same way before masking (quantisation, clipping, weights, its share of the noise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureRoundSetup {
    /// The session: run, round, roster (ed25519 keys of the cohort), threshold, vector length,
    /// session nonce.
    pub params: SecAggParams,
    /// Fixed-point scale of the quantiser (for a sum of `params.roster.len()` vectors).
    pub quantisation_scale: f64,
    /// L2 bound each client clips its delta to (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Whether every client weighs 1 (differential privacy) instead of its sample count.
    pub uniform_weights: bool,
    /// Differential-privacy noise multiplier; each client adds its share
    /// `noise_multiplier * clip_norm / sqrt(threshold)` (0: no noise).
    pub noise_multiplier: f64,
    /// How long the coordinator waits for each key-setup and unmasking step, in milliseconds
    /// (the masked inputs are awaited until shortly before the round's deadline).
    pub step_timeout_ms: u64,
    /// The masked vector ends with an evaluation report (see
    /// [`crate::secure_aggregation::UpdateLayout::evaluation`]).
    pub evaluation: bool,
}

/// A client's message for one step of the session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SecAggUpload {
    /// Step 0: its keys. Answered with [`SecAggStep::Advertisements`].
    Advertise(KeyAdvertisement),
    /// Step 1: its encrypted shares. Answered with [`SecAggStep::Shares`].
    Shares(ShareBundle),
    /// Step 2: its masked input. Answered with [`SecAggStep::Survivors`].
    MaskedInput(MaskedInput),
    /// Step 3: its signature on the survivor list. Answered with [`SecAggStep::UnmaskRequest`].
    Signature(SurvivorSignature),
    /// Step 4: its shares for unmasking. Answered with [`SecAggStep::Done`].
    Unmask(UnmaskResponse),
}

impl SecAggUpload {
    /// The step's name, for logs (never the payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Advertise(_) => "key advertisement",
            Self::Shares(_) => "encrypted shares",
            Self::MaskedInput(_) => "masked input",
            Self::Signature(_) => "survivor-list signature",
            Self::Unmask(_) => "unmask response",
        }
    }
}

/// The coordinator's answer to a [`SecAggUpload`], sent when the step closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SecAggStep {
    /// After step 0: every advertisement that arrived in time (`U1`), this client's included.
    Advertisements(Vec<KeyAdvertisement>),
    /// After step 1: the shares the other members of `U2` encrypted for this client.
    Shares(Vec<EncryptedShare>),
    /// After step 2: who contributed a masked input.
    Survivors(SurvivorList),
    /// After step 3: the survivor list with at least `t` signatures.
    UnmaskRequest(UnmaskRequest),
    /// After step 4: the session is over for this client; `contributors` inputs are in the sum
    /// (0 when the sum could not be computed).
    Done { contributors: u32 },
}

impl SecAggStep {
    /// The step's name, for logs (never the payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Advertisements(_) => "advertisements",
            Self::Shares(_) => "shares",
            Self::Survivors(_) => "survivor list",
            Self::UnmaskRequest(_) => "unmask request",
            Self::Done { .. } => "done",
        }
    }
}
