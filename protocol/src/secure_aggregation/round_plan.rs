//! One secure-aggregation round as the coordinator plans it and every cohort member checks it,
//! and the two pure steps around the masking protocol: what each client does to its update
//! before masking ([`SecureRoundPlan::prepare_input`]) and how the coordinator reads the unmasked
//! sum back ([`SecureRoundPlan::decode`]). Both sides use this one definition: the coordinator
//! builds the plan from its privacy settings and sends it as a [`SecureRoundSetup`]; a client
//! rebuilds it with [`SecureRoundPlan::from_wire_setup`].
//!
//! Client side, in order: clip the delta to `clip_norm` (when set), add this client's share of
//! the Gaussian noise (with differential privacy; std `sigma * C / sqrt(t)` for threshold `t`, so
//! that any `>= t` survivors' shares add up to at least `sigma * C`), then lay the update out
//! with weight 1 (DP) or its sample count (plain FedAvg) and quantise it.
//!
//! Protects against nothing by itself; it only fixes the numbers both sides must agree on
//! (layout, quantiser, threshold, weights, noise share). The masking protocol hides the inputs;
//! clipping and noise give the differential-privacy guarantee the ledger accounts, provided each
//! client really applies them (a client that skips them is not detected: the coordinator only
//! sees the sum).

use rand::Rng;

use super::{
    LayoutError, PeerId, QuantizationError, Quantizer, SecAggError, SecAggParams, SecureRoundSetup,
    SummedUpdate, UpdateLayout, ValueKind,
};
use crate::messages::{ClientUpdate, GlobalState, RunId};
use crate::participant_id::ParticipantId;
use crate::privacy_noise::{
    ClipOutcome, ContributionPolicy, add_distributed_noise, clip_update, distributed_noise_std,
};

/// Everything the cohort and the coordinator must agree on for one secure-aggregation round.
#[derive(Clone, Debug, PartialEq)]
pub struct SecureRoundPlan {
    /// The run.
    pub run_id: RunId,
    /// The round.
    pub round: u64,
    /// The sampled participants (sorted).
    pub cohort: Vec<ParticipantId>,
    /// Survivors needed at every step of the protocol (the Shamir threshold).
    pub threshold: usize,
    /// Where each part of an update lives in the masked vector.
    pub layout: UpdateLayout,
    /// Fixed-point quantisation for a sum of up to `cohort.len()` vectors.
    pub quantizer: Quantizer,
    /// Clipping and weights each client applies to its own update.
    pub policy: ContributionPolicy,
    /// Differential-privacy noise multiplier (0: no noise).
    pub noise_multiplier: f64,
}

/// Why a client cannot use a round's [`SecureRoundSetup`].
#[derive(Debug, thiserror::Error)]
pub enum SecureSetupError {
    /// The session parameters are invalid.
    #[error(transparent)]
    Parameters(#[from] SecAggError),
    /// The quantisation scale is unusable.
    #[error(transparent)]
    Quantization(#[from] QuantizationError),
    /// The setup contradicts itself or the round's state.
    #[error("inconsistent secure-aggregation setup: {0}")]
    Inconsistent(String),
}

/// A client's update, ready to be masked.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedInput {
    /// The quantised words of the laid-out update.
    pub words: Vec<u32>,
    /// What clipping did (when a clip norm is set).
    pub clip: Option<ClipOutcome>,
    /// The weight the update was laid out with (1 under differential privacy).
    pub weight: u64,
}

impl SecureRoundPlan {
    /// The protocol parameters, with each participant's secure-aggregation key given by
    /// `peer_of` (over the network a participant id *is* its ed25519 key: `PeerId(id.0)`).
    pub fn session_params(
        &self,
        peer_of: impl Fn(&ParticipantId) -> PeerId,
    ) -> Result<SecAggParams, SecAggError> {
        SecAggParams::new(
            self.run_id,
            self.round,
            self.cohort.iter().map(peer_of).collect(),
            self.threshold,
            self.layout.len(),
        )
    }

    /// What the coordinator sends each cohort member in `StartRound` over the network, where a
    /// participant id *is* its ed25519 key. `nonce` must never repeat within the run (draw it at
    /// random); `step_timeout_ms` is how long each key-setup and unmasking step waits.
    pub fn wire_setup(
        &self,
        nonce: [u8; 16],
        step_timeout_ms: u64,
    ) -> Result<SecureRoundSetup, SecAggError> {
        Ok(SecureRoundSetup {
            params: self.session_params(|p| PeerId(p.0))?.with_nonce(nonce),
            quantisation_scale: self.quantizer.scale(),
            clip_norm: self.policy.clip_norm,
            uniform_weights: self.policy.uniform_weights,
            noise_multiplier: self.noise_multiplier,
            step_timeout_ms,
            evaluation: self.layout.evaluation,
        })
    }

    /// Client side: the plan a `StartRound` describes, for updates trained from `global` (the
    /// round's state from the same message). Checks that the setup is usable and agrees with the
    /// state (vector length) and with itself (noise needs a clip norm, a positive multiplier
    /// needs uniform weights), so that a client never masks numbers laid out differently from
    /// what the coordinator will decode.
    pub fn from_wire_setup(
        setup: &SecureRoundSetup,
        global: &GlobalState,
    ) -> Result<Self, SecureSetupError> {
        let params = &setup.params;
        params.validate()?;
        let layout = UpdateLayout::of_global(global).with_evaluation(setup.evaluation);
        if layout.len() != params.vector_len {
            return Err(SecureSetupError::Inconsistent(format!(
                "the session masks {} words but the round's state lays out {}",
                params.vector_len,
                layout.len()
            )));
        }
        let noise = setup.noise_multiplier;
        if !(noise.is_finite() && noise >= 0.0) {
            return Err(SecureSetupError::Inconsistent(format!(
                "noise multiplier {noise} is not a non-negative number"
            )));
        }
        if let Some(clip) = setup.clip_norm
            && !(clip.is_finite() && clip > 0.0)
        {
            return Err(SecureSetupError::Inconsistent(format!(
                "clip norm {clip} is not a positive number"
            )));
        }
        if noise > 0.0 && (setup.clip_norm.is_none() || !setup.uniform_weights) {
            return Err(SecureSetupError::Inconsistent(
                "differential-privacy noise needs a clip norm and uniform weights".into(),
            ));
        }
        let quantizer = Quantizer::new(setup.quantisation_scale, params.roster.len())?;
        Ok(Self {
            run_id: params.run_id,
            round: params.round,
            cohort: params.roster.iter().map(|p| ParticipantId(p.0)).collect(),
            threshold: params.threshold,
            layout,
            quantizer,
            policy: ContributionPolicy {
                clip_norm: setup.clip_norm,
                uniform_weights: setup.uniform_weights,
            },
            noise_multiplier: noise,
        })
    }

    /// Standard deviation of the noise each client adds (0 without differential privacy).
    pub fn noise_share_std(&self) -> f64 {
        match self.policy.clip_norm {
            Some(clip) if self.noise_multiplier > 0.0 => {
                distributed_noise_std(self.noise_multiplier, clip, self.threshold)
            }
            _ => 0.0,
        }
    }

    /// Client side: clips the delta (when a clip norm is set), adds this client's noise share
    /// from `noise_rng` (with differential privacy; the generator must be seeded from the
    /// operating system in a real study), lays the update out with its weight and quantises it.
    pub fn prepare_input<R: Rng + ?Sized>(
        &self,
        update: &ClientUpdate,
        noise_rng: &mut R,
    ) -> Result<PreparedInput, LayoutError> {
        let mut update = update.clone();
        let clip = self
            .policy
            .clip_norm
            .map(|c| clip_update(&mut update.delta, c));
        if let Some(clip_norm) = self.policy.clip_norm
            && self.noise_multiplier > 0.0
        {
            add_distributed_noise(
                &mut update.delta,
                self.noise_multiplier,
                clip_norm,
                self.threshold,
                noise_rng,
            );
        }
        let weight = self.policy.weight(update.sample_count);
        let words = self.layout.encode(&update, weight, &self.quantizer)?;
        Ok(PreparedInput {
            words,
            clip,
            weight,
        })
    }

    /// Coordinator side: the unmasked sum of `contributors` prepared inputs as statistics.
    pub fn decode(&self, sum: &[u32], contributors: usize) -> Result<SummedUpdate, LayoutError> {
        self.layout.decode_sum(sum, contributors, &self.quantizer)
    }

    /// The largest error quantisation may put on one coordinate of a decoded real-valued sum
    /// (`cohort * 0.5 / scale`).
    pub fn sum_error_bound(&self) -> f64 {
        self.quantizer.sum_error_bound(ValueKind::Real)
    }
}
