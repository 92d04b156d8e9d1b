//! The coordinator's side of planning a secure-aggregation round: the [`SecureRoundPlan`] its
//! privacy settings ask for ([`PrivacyConfig::secure_round_plan`]). The plan itself, and the
//! client's steps around the masking protocol, live in
//! [`mpcl_protocol::secure_aggregation::round_plan`], since participants use the same definition.
//!
//! The round state machine hands out the plan of its open round
//! ([`crate::Coordinator::secure_round_plan`]); the secure relay runs the protocol steps of
//! [`mpcl_protocol::secure_aggregation`] with it and feeds the decoded sum back as
//! [`crate::Event::SecureSumReceived`].

use mpcl_protocol::messages::{GlobalState, RunId};
use mpcl_protocol::secure_aggregation::{QuantizationError, SecureRoundPlan, UpdateLayout};

use super::config::PrivacyConfig;
use crate::round::ParticipantId;

impl PrivacyConfig {
    /// The plan for round `round` of `run_id` with `cohort`, for updates trained from `global`
    /// (followed by an evaluation report when `evaluation`).
    /// Fails when the quantisation scale is unusable for the cohort.
    pub fn secure_round_plan(
        &self,
        run_id: RunId,
        round: u64,
        mut cohort: Vec<ParticipantId>,
        global: &GlobalState,
        evaluation: bool,
    ) -> Result<SecureRoundPlan, QuantizationError> {
        cohort.sort();
        cohort.dedup();
        let n = cohort.len();
        Ok(SecureRoundPlan {
            run_id,
            round,
            threshold: self.threshold.for_cohort(n),
            layout: UpdateLayout::of_global(global).with_evaluation(evaluation),
            quantizer: self.quantizer(n.max(1))?,
            policy: self.contribution_policy(),
            noise_multiplier: self.noise_multiplier,
            cohort,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::seeded_noise_rng;
    use crate::test_support::{RUN, global, update};
    use mpcl_protocol::secure_aggregation::SecureRoundPlan;

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
        let plan = privacy(false)
            .secure_round_plan(RUN, 3, cohort, &g, false)
            .unwrap();
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
        let plan = privacy(true)
            .secure_round_plan(
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
        let plan = privacy(true)
            .secure_round_plan(RUN, 2, cohort, &g, false)
            .unwrap();
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
