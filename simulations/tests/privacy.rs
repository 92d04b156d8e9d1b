//! The privacy layers in the in-process simulation: secure aggregation gives the plain FedAvg
//! result up to the quantisation bound and survives a dropout; differential privacy reports
//! epsilon per round and stops the federated arms at the budget.

use anyhow::Result;
use mpcl_client::ParticipantSettings;
use mpcl_coordinator::privacy::PrivacyConfig;
use mpcl_data::Dataset;
use mpcl_model::{DeviceChoice, MpclModel};
use mpcl_protocol::PrototypeStatistics;
use mpcl_protocol::messages::{ClientUpdate, GlobalState};
use mpcl_simulations::federation::{InProcessFederation, RoundOutcome};
use mpcl_simulations::secure::DropStage;
use mpcl_simulations::simulate::{
    Arm, SimulationConfig, coordinator_config, default_simulation_privacy, run_simulation,
};
use mpcl_simulations::synthetic::{SyntheticConfig, generate};

mod common;

const SUBJECTS: usize = 4;

fn synthetic() -> Dataset {
    generate(&SyntheticConfig {
        subjects: SUBJECTS,
        trials_per_subject: 8,
        windows_per_trial: 3,
        ..SyntheticConfig::default()
    })
}

fn simulation(rounds: u64, privacy: PrivacyConfig) -> SimulationConfig {
    SimulationConfig {
        rounds,
        privacy,
        ..common::small_study(SUBJECTS, 8)
    }
}

/// One federation over the whole synthetic dataset; returns each round's outcome.
fn federate(
    rounds: u64,
    privacy: PrivacyConfig,
    drops: &[(u64, usize, DropStage)],
) -> Result<(Vec<RoundOutcome>, GlobalState)> {
    let dataset = synthetic();
    let config = simulation(rounds, privacy);
    let device = DeviceChoice::Cpu.resolve()?.device;
    let initial = MpclModel::new(&dataset.schema, &config.model, &device, 0)?.global_state();
    let mut federation = InProcessFederation::new(
        &dataset,
        None,
        &config.model,
        &ParticipantSettings {
            min_prototype_mass: 1.0,
        },
        coordinator_config(&config, SUBJECTS)?,
        initial.clone(),
        &device,
    )?;
    for (round, index, stage) in drops {
        federation.drop_from_secure_round(*round, *index, *stage);
    }
    let mut outcomes = Vec::new();
    federation.run(|outcome| {
        outcomes.push(outcome.clone());
        Ok::<(), anyhow::Error>(())
    })?;
    Ok((outcomes, initial))
}

fn secure() -> PrivacyConfig {
    PrivacyConfig {
        secure_aggregation: true,
        ..default_simulation_privacy()
    }
}

/// Per-coordinate bound on `|S'/W' - S/W|` when `S` and `W` are each off by at most `e`.
fn ratio_bound(s: f64, w: f64, e: f64) -> f64 {
    (e + (s / w).abs() * e) / (w - e)
}

#[test]
fn secure_aggregation_gives_plain_fedavg_up_to_the_quantisation_bound() -> Result<()> {
    let (plain, initial) = federate(1, default_simulation_privacy(), &[])?;
    let (masked, _) = federate(1, secure(), &[])?;
    let (plain, masked) = (&plain[0], &masked[0]);
    // The same cohort trained from the same state: the very same updates (but for timings).
    let content = |u: &ClientUpdate| {
        (
            u.delta.clone(),
            u.prototypes.clone(),
            u.cooccurrence.clone(),
            u.sample_count,
        )
    };
    assert_eq!(plain.updates.len(), masked.updates.len());
    assert!(
        plain
            .updates
            .iter()
            .zip(&masked.updates)
            .all(|(a, b)| content(a) == content(b)),
        "the two runs trained differently"
    );
    assert_eq!(masked.participants, SUBJECTS);
    assert!(masked.privacy.as_ref().unwrap().secure_aggregation);

    // Stated bound: each coordinate of a decoded sum of n inputs is within n * 0.5 / scale.
    let scale = secure().quantisation_scale;
    let e = SUBJECTS as f64 * 0.5 / scale;
    let updates: &[std::sync::Arc<ClientUpdate>] = &masked.updates;
    let total_weight: f64 = updates.iter().map(|u| u.sample_count as f64).sum();
    // Encoder: the mean is the summed numerator over the (exact) summed sample count.
    let mut worst = 0.0f64;
    for ((a, b), x) in masked
        .state
        .parameters
        .iter_values()
        .zip(plain.state.parameters.iter_values())
        .zip(initial.parameters.iter_values())
    {
        let diff = f64::from((a - b).abs());
        let allowed = e / total_weight + 2.0 * f64::from(f32::EPSILON) * f64::from(x.abs() + 1.0);
        assert!(diff <= allowed, "{a} vs {b}: {diff} > {allowed}");
        worst = worst.max(diff);
    }
    eprintln!(
        "largest encoder difference {worst:e} (bound {:e})",
        e / total_weight
    );

    // Prototypes: blend * previous + (1 - blend) * S / W, with S and W each within e.
    let blend = coordinator_config(&simulation(1, secure()), SUBJECTS)?
        .aggregation
        .prototype_blend;
    for (bank, (secure_bank, plain_bank)) in initial
        .prototypes
        .iter()
        .zip(masked.state.prototypes.iter().zip(&plain.state.prototypes))
    {
        let mut summed =
            PrototypeStatistics::zeros(&bank.group, bank.emotions, bank.prototypes, bank.width);
        for u in updates {
            if let Some(stats) = u.prototypes.iter().find(|s| s.group == bank.group) {
                summed.merge(stats)?;
            }
        }
        for cell in 0..bank.emotions * bank.prototypes {
            let w = f64::from(summed.weight.0[cell]);
            for k in 0..bank.width {
                let i = cell * bank.width + k;
                let (a, b) = (secure_bank.values.0[i], plain_bank.values.0[i]);
                let diff = f64::from((a - b).abs());
                let allowed = if w > e {
                    (1.0 - blend) * ratio_bound(f64::from(summed.sum.0[i]), w, e)
                        + 1e-5 * (1.0 + f64::from(b.abs()))
                } else {
                    // Mass within rounding of zero: quantisation may keep or drop the cell.
                    f64::INFINITY
                };
                assert!(diff <= allowed, "cell {cell}: {a} vs {b}");
            }
        }
    }
    // Co-occurrence: the summed statistics, each within e (the count is exact).
    let (a, b) = (&masked.state.cooccurrence, &plain.state.cooccurrence);
    assert_eq!(a.count, b.count);
    for (x, y) in a.sum.0.iter().zip(&b.sum.0) {
        assert!(
            f64::from((x - y).abs()) <= e + 1e-5 * f64::from(y.abs()),
            "{x} vs {y}"
        );
    }
    Ok(())
}

#[test]
fn a_participant_dropping_out_of_secure_aggregation_does_not_stop_the_round() -> Result<()> {
    let (clean, _) = federate(2, secure(), &[])?;
    // Participant 1 vanishes after masking in round 1: its input is still in the sum, so the
    // result is exactly the clean run's (its self mask is reconstructed from the others).
    let (after, _) = federate(2, secure(), &[(1, 1, DropStage::AfterMasking)])?;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].participants, SUBJECTS);
    assert_eq!(after[0].state, clean[0].state);
    assert_eq!(after[1].state, clean[1].state);
    // Participant 2 vanishes before masking in round 2: the round aggregates the other three.
    let (before, _) = federate(2, secure(), &[(2, 2, DropStage::BeforeMasking)])?;
    assert_eq!(before[0].state, clean[0].state);
    assert_eq!(before[1].participants, SUBJECTS - 1);
    assert_ne!(before[1].state, clean[1].state);
    Ok(())
}

fn dp(secure_aggregation: bool, budget: Option<f64>) -> PrivacyConfig {
    PrivacyConfig {
        secure_aggregation,
        clip_norm: Some(1.0),
        noise_multiplier: 1.0,
        epsilon_budget: budget,
        ..default_simulation_privacy()
    }
}

#[test]
fn dp_simulations_report_epsilon_and_stop_at_the_budget() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = simulation(3, dp(true, None));
    config.arms = vec![Arm::Federated, Arm::LabelPrior];
    config.deterministic_noise_for_tests = true;
    let first = run_simulation(&config, Some(dir.path()), false)?;
    let epsilons: Vec<f64> = first
        .rounds
        .iter()
        .filter(|r| r.arm == Arm::Federated)
        .map(|r| r.epsilon.expect("epsilon every DP round"))
        .collect();
    assert_eq!(epsilons.len(), 3);
    assert!(epsilons.windows(2).all(|w| w[1] > w[0]), "{epsilons:?}");
    assert!(
        first
            .rounds
            .iter()
            .filter(|r| r.arm == Arm::LabelPrior)
            .all(|r| r.epsilon.is_none())
    );
    let log = std::fs::read_to_string(dir.path().join("rounds.jsonl"))?;
    assert_eq!(log.matches("\"epsilon\"").count(), 3, "{log}");
    // Reproducible with the test-only noise.
    let second = run_simulation(&config, None, false)?;
    assert_eq!(first.final_states, second.final_states);

    // A budget between the second and the third round's epsilon stops the federated arm after
    // two rounds; the other arms run every round.
    let mut config = simulation(3, dp(false, Some((epsilons[1] + epsilons[2]) / 2.0)));
    config.arms = vec![Arm::Federated, Arm::LabelPrior];
    let stopped = run_simulation(&config, Some(dir.path()), false)?;
    let count = |arm| stopped.rounds.iter().filter(|r| r.arm == arm).count();
    assert_eq!((count(Arm::Federated), count(Arm::LabelPrior)), (2, 3));
    assert_eq!(stopped.notes.len(), 1);
    assert!(
        stopped.notes[0].contains("privacy budget exhausted after 2 rounds, epsilon = "),
        "{:?}",
        stopped.notes
    );
    assert!(std::fs::read_to_string(dir.path().join("final.md"))?.contains("budget exhausted"));
    // Plain-mode DP spends the same epsilon as under secure aggregation (same cohorts).
    let plain: Vec<f64> = stopped.rounds.iter().filter_map(|r| r.epsilon).collect();
    assert_eq!(plain, epsilons[..2].to_vec());
    Ok(())
}

#[test]
fn simulation_configs_keep_their_privacy_section() -> Result<()> {
    let config = simulation(2, dp(true, Some(5.0)));
    let json = serde_json::to_string(&config)?;
    let back: SimulationConfig = serde_json::from_str(&json)?;
    assert_eq!(back, config);
    // Robust rules are refused under secure aggregation, naming the field.
    let mut robust = simulation(1, secure());
    robust.aggregation.rule = mpcl_coordinator::AggregationRule::Median;
    let error = coordinator_config(&robust, SUBJECTS)
        .unwrap_err()
        .to_string();
    assert!(error.contains("aggregation.rule"), "{error}");
    Ok(())
}
