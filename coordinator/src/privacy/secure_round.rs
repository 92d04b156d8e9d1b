//! One secure-aggregation round as the coordinator plans it, and the two pure steps around the
//! masking protocol: what each client does to its update before masking
//! ([`SecureRoundPlan::prepare_input`]) and how the coordinator reads the unmasked sum back
//! ([`SecureRoundPlan::decode`]).
//!
//! The round state machine hands out the plan of its open round
//! ([`crate::Coordinator::secure_round_plan`]); a driver runs the protocol steps of
//! [`mpcl_protocol::secure_aggregation`] with it (the in-process simulation does it directly;
//! a network driver would relay the messages) and feeds the decoded sum back as
//! [`crate::Event::SecureSumReceived`].
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

use mpcl_protocol::messages::{ClientUpdate, GlobalState, RunId};
use mpcl_protocol::secure_aggregation::{
    LayoutError, PeerId, QuantizationError, Quantizer, SecAggError, SecAggParams, SecureRoundSetup,
    SummedUpdate, UpdateLayout,
};
use rand::Rng;

use super::config::PrivacyConfig;
use super::noise::{ClipOutcome, add_distributed_noise, clip_update, distributed_noise_std};
use crate::aggregation::ContributionPolicy;
use crate::round::ParticipantId;

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
    /// The plan for round `round` of `run_id` with `cohort`, for updates trained from `global`
    /// (followed by an evaluation report when `evaluation`).
    /// Fails when the quantisation scale is unusable for the cohort.
    pub fn new(
        privacy: &PrivacyConfig,
        run_id: RunId,
        round: u64,
        mut cohort: Vec<ParticipantId>,
        global: &GlobalState,
        evaluation: bool,
    ) -> Result<Self, QuantizationError> {
        cohort.sort();
        cohort.dedup();
        let n = cohort.len();
        Ok(Self {
            run_id,
            round,
            threshold: privacy.threshold.for_cohort(n),
            layout: UpdateLayout::of_global(global).with_evaluation(evaluation),
            quantizer: privacy.quantizer(n.max(1))?,
            policy: ContributionPolicy::from_privacy(privacy),
            noise_multiplier: privacy.noise_multiplier,
            cohort,
        })
    }

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
        self.quantizer
            .sum_error_bound(mpcl_protocol::secure_aggregation::ValueKind::Real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::seeded_noise_rng;
    use crate::test_support::{RUN, global, update};

    fn privacy(dp: bool) -> PrivacyConfig {
        PrivacyConfig {
            secure_aggregation: true,
            clip_norm: Some(1.0),
            noise_multiplier: if dp { 2.0 } else { 0.0 },
            ..PrivacyConfig::default()
        }
    }

    #[test]
    fn clients_clip_and_weigh_as_the_policy_says() {
        let g = global();
        let cohort: Vec<_> = (0..5).rev().map(ParticipantId::from_index).collect();
        let plan = SecureRoundPlan::new(&privacy(false), RUN, 3, cohort, &g, false).unwrap();
        assert_eq!(plan.cohort[0], ParticipantId::from_index(0), "sorted");
        assert_eq!(plan.threshold, 3);
        assert_eq!(plan.noise_share_std(), 0.0);
        // Delta 2 everywhere over 6 values: norm 2 * sqrt(6), clipped to 1; weight = 7 samples.
        let u = update(&g, 3, 7, 2.0);
        let prepared = plan.prepare_input(&u, &mut seeded_noise_rng(1)).unwrap();
        assert!(prepared.clip.unwrap().clipped());
        assert_eq!(prepared.weight, 7);
        let summed = plan.decode(&prepared.words, 1).unwrap();
        assert_eq!(summed.total_weight, 7.0);
        let norm = summed
            .weighted_delta_sum
            .iter()
            .map(|v| (v / 7.0).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");

        // With DP: weight 1 and a noise share of sigma * C / sqrt(t).
        let plan = SecureRoundPlan::new(
            &privacy(true),
            RUN,
            3,
            (0..5).map(ParticipantId::from_index).collect(),
            &g,
            false,
        )
        .unwrap();
        assert!((plan.noise_share_std() - 2.0 / 3f64.sqrt()).abs() < 1e-12);
        let prepared = plan.prepare_input(&u, &mut seeded_noise_rng(1)).unwrap();
        assert_eq!(prepared.weight, 1);
        assert_eq!(plan.decode(&prepared.words, 1).unwrap().total_weight, 1.0);
    }

    #[test]
    fn the_wire_setup_gives_clients_the_coordinators_plan() {
        let g = global();
        // Over the network participant ids are ed25519 keys.
        let cohort: Vec<_> = (1..=4u8)
            .map(|i| {
                let key = mpcl_protocol::SigningKey::from_bytes(&[i; 32]).verifying_key();
                ParticipantId(key.to_bytes())
            })
            .collect();
        let plan = SecureRoundPlan::new(&privacy(true), RUN, 2, cohort, &g, false).unwrap();
        let setup = plan.wire_setup([7; 16], 5000).unwrap();
        assert_eq!(setup.params.nonce, [7; 16]);
        assert_eq!(setup.params.vector_len, plan.layout.len());
        let back = SecureRoundPlan::from_wire_setup(&setup, &g).unwrap();
        assert_eq!(back, plan);

        // A setup that does not fit the state, or asks for noise without clipping, is refused.
        let mut other = global();
        other.cooccurrence = mpcl_protocol::CooccurrenceStatistics::zeros(5);
        let error = SecureRoundPlan::from_wire_setup(&setup, &other).unwrap_err();
        assert!(error.to_string().contains("lays out"), "{error}");
        let mut unclipped = setup.clone();
        unclipped.clip_norm = None;
        let error = SecureRoundPlan::from_wire_setup(&unclipped, &g).unwrap_err();
        assert!(error.to_string().contains("clip norm"), "{error}");
    }
}
