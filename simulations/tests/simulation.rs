//! The simulation harness end to end on synthetic data (in-process mode): the federated arm
//! learns, centralized training is the upper reference, and the run is reproducible.

use anyhow::Result;
use mpcl_simulations::simulate::{Arm, SimulationConfig, SimulationResult, run_simulation};

mod common;

fn config(arms: Vec<Arm>) -> SimulationConfig {
    let mut config = SimulationConfig {
        rounds: 6,
        arms,
        ..common::small_study(4, 12)
    };
    config.training.local_epochs = 4;
    config
}

fn final_kl(result: &SimulationResult, arm: Arm) -> f64 {
    result
        .rounds
        .iter()
        .rev()
        .find(|r| r.arm == arm)
        .map(|r| r.metrics.kl)
        .expect("arm ran")
}

/// The federated arm must reach at most 60% of the label prior's KL.
const FEDERATED_MARGIN: f64 = 0.6;
/// Centralized may be worse than federated by at most this much KL (noise of a small run).
const CENTRALIZED_TOLERANCE: f64 = 0.05;

#[test]
fn federated_beats_the_label_prior_and_centralized_is_at_least_as_good() -> Result<()> {
    let result = run_simulation(
        &config(vec![Arm::Federated, Arm::Centralized, Arm::LabelPrior]),
        None,
        false,
    )?;
    let federated = final_kl(&result, Arm::Federated);
    let centralized = final_kl(&result, Arm::Centralized);
    let prior = final_kl(&result, Arm::LabelPrior);
    eprintln!(
        "final KL: federated {federated:.4}, centralized {centralized:.4}, label prior {prior:.4}"
    );
    assert!(
        federated < FEDERATED_MARGIN * prior,
        "federated KL {federated} vs label prior {prior}"
    );
    assert!(
        centralized <= federated + CENTRALIZED_TOLERANCE,
        "centralized KL {centralized} vs federated {federated}"
    );
    // Every test sample is evaluated, every round, for every arm.
    let samples = result.rounds[0].metrics.samples;
    assert!(result.rounds.iter().all(|r| r.metrics.samples == samples));
    assert_eq!(result.rounds.len(), 3 * 6);
    // The federated arm moved bytes; the others did not.
    assert!(
        result
            .rounds
            .iter()
            .filter(|r| r.arm == Arm::Federated)
            .all(|r| r.bytes_up > 0)
    );
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_simulation() -> Result<()> {
    let mut small = config(vec![Arm::Federated, Arm::LocalOnly]);
    small.rounds = 2;
    small.training.local_epochs = 1;
    let first = run_simulation(&small, None, false)?;
    let second = run_simulation(&small, None, false)?;
    assert_eq!(first.rounds.len(), second.rounds.len());
    for (a, b) in first.rounds.iter().zip(&second.rounds) {
        assert_eq!((a.arm, a.round, a.metrics), (b.arm, b.round, b.metrics));
    }
    assert_eq!(first.final_states, second.final_states);
    Ok(())
}

#[test]
fn outputs_are_written_with_the_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut small = config(vec![Arm::Federated, Arm::LabelPrior]);
    small.rounds = 2;
    small.training.local_epochs = 1;
    run_simulation(&small, Some(dir.path()), false)?;
    for file in [
        "config.json",
        "rounds.jsonl",
        "rounds_pooled.jsonl",
        "final.csv",
        "final.md",
        "per_subject.csv",
        "kl_vs_round.svg",
        "cosine_vs_round.svg",
        "per_subject_kl.svg",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
    let saved: SimulationConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json"))?)?;
    assert_eq!(saved, small);
    // Two arms x two rounds, one line each.
    let lines = std::fs::read_to_string(dir.path().join("rounds.jsonl"))?;
    assert_eq!(lines.lines().count(), 4);
    let svg = std::fs::read_to_string(dir.path().join("kl_vs_round.svg"))?;
    assert!(svg.contains("<svg") && svg.contains("federated MPCL"));
    Ok(())
}

/// Model selection reads validation KL only: corrupting every test label changes the test
/// metrics but neither the chosen rounds nor anything the validation part saw.
#[test]
fn corrupted_test_labels_leave_the_chosen_rounds_unchanged() -> Result<()> {
    use mpcl_simulations::evaluation::partitions;
    use mpcl_simulations::simulate::{ExecutionMode, run_simulation_on};
    use mpcl_simulations::synthetic::generate;

    let mut small = config(vec![Arm::Federated, Arm::Centralized, Arm::LocalOnly]);
    small.rounds = 4;
    small.training.local_epochs = 1;
    let data = generate(&small.synthetic);
    let parts = partitions(
        &data,
        small.protocol,
        small.selection.validation_fraction,
        small.seed,
    )?;
    let mut corrupted = data.clone();
    for &i in &parts[0].test {
        let label = &mut corrupted.samples[i].label;
        label.reverse();
    }
    let started = std::time::Instant::now();
    let clean = run_simulation_on(
        &data,
        &small,
        &ExecutionMode::InProcess,
        None,
        false,
        started,
    )?;
    let dirty = run_simulation_on(
        &corrupted,
        &small,
        &ExecutionMode::InProcess,
        None,
        false,
        started,
    )?;
    for (a, b) in clean.final_table.rows.iter().zip(&dirty.final_table.rows) {
        assert_eq!(a.rounds, b.rounds, "{}: chosen rounds", a.name);
        assert_ne!(
            a.metrics.kl, b.metrics.kl,
            "{}: the test labels did change",
            a.name
        );
    }
    assert_eq!(clean.best_states, dirty.best_states);
    // The participants' own federated evaluation chooses the same way: on validation only.
    use mpcl_coordinator::evaluation::best_round;
    let federated = |r: &SimulationResult| r.federated_evaluations[&Arm::Federated][0].clone();
    let (clean_eval, dirty_eval) = (federated(&clean), federated(&dirty));
    assert_eq!(
        clean_eval.len(),
        small.rounds as usize + 1,
        "models 0..=rounds"
    );
    assert!(best_round(&clean_eval).is_some());
    assert_eq!(best_round(&clean_eval), best_round(&dirty_eval));
    for (a, b) in clean_eval.iter().zip(&dirty_eval) {
        assert_eq!(a.validation, b.validation);
        assert_ne!(
            a.test.kl, b.test.kl,
            "round {}: the test labels did change",
            a.round
        );
    }
    Ok(())
}

/// Every arm's reported model is chosen on validation, and an untrained start is the prior: no
/// arm's chosen model is worse than the label prior on validation by construction of the head,
/// and the table says in words how each arm compares with the prior on test.
#[test]
fn the_final_table_reports_validation_selected_rounds_and_the_prior_comparison() -> Result<()> {
    let result = run_simulation(
        &config(vec![Arm::Federated, Arm::Centralized, Arm::LabelPrior]),
        None,
        false,
    )?;
    for row in &result.final_table.rows {
        assert_eq!(row.rounds.len(), 1, "{}: one partition", row.name);
        assert!((1..=6).contains(&row.rounds[0]));
        if row.name == "label prior" {
            assert!(row.prior.is_none());
        } else {
            let comparison = row.prior.expect("compared with the prior");
            assert!(
                comparison.low <= comparison.difference && comparison.difference <= comparison.high
            );
            // Planted structure: both model arms clearly beat the prior.
            assert_eq!(
                comparison.verdict(),
                "beats the label prior",
                "{}",
                row.name
            );
        }
    }
    let text = result.final_table.to_text();
    assert!(text.contains("beats the label prior") && text.contains("KL − prior"));
    Ok(())
}
