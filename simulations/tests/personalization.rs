//! Issue 13, item 3: on synthetic data where every subject rates with a bias of its own,
//! personalizing the federated model on each client's own training data lowers the KL on the
//! clients' own test samples below the global model's on the same samples. The federation runs
//! long enough (10 rounds) for its model to have converged on the shared structure, so that the
//! gain measures the subjects' biases and not merely extra training: without the label shift the
//! same personalization gains next to nothing (the control).

use std::sync::OnceLock;

use anyhow::Result;
use mpcl_model::metrics::evaluate;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::simulate::{Arm, SimulationConfig, SimulationResult, run_simulation};

mod common;

fn config(protocol: EvaluationProtocol, subject_label_shift: f64) -> SimulationConfig {
    let mut config = SimulationConfig {
        protocol,
        rounds: 10,
        arms: vec![Arm::Federated, Arm::Personalized],
        personalize_epochs: 8,
        ..common::small_study(4, 12)
    };
    config.synthetic.subject_label_shift = subject_label_shift;
    config.training.local_epochs = 2;
    config
}

/// Each subject mixes half of its ratings from a bias of its own.
const LABEL_SHIFT: f64 = 0.5;

/// Pooled test KL of the federated and the personalized arm over the same samples, and the run.
fn global_and_personal_kl(subject_label_shift: f64) -> Result<(f64, f64, SimulationResult)> {
    let result = run_simulation(
        &config(
            EvaluationProtocol::SubjectDependent {
                test_fraction: 0.25,
            },
            subject_label_shift,
        ),
        None,
        false,
    )?;
    let labels = &result.test_samples.labels;
    let kl_of = |arm: Arm| {
        let predictions = &result.selected_predictions[&arm];
        assert_eq!(
            predictions.len(),
            labels.len(),
            "{arm:?} covers every test sample"
        );
        evaluate(
            labels
                .iter()
                .zip(predictions)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        )
        .kl
    };
    let (global, personal) = (kl_of(Arm::Federated), kl_of(Arm::Personalized));
    Ok((global, personal, result))
}

/// The run with rating biases, shared by the tests that need it (it is the slow part).
fn shifted_run() -> &'static (f64, f64, SimulationResult) {
    static RUN: OnceLock<(f64, f64, SimulationResult)> = OnceLock::new();
    RUN.get_or_init(|| global_and_personal_kl(LABEL_SHIFT).expect("the simulation runs"))
}

#[test]
fn personalization_lowers_the_clients_own_test_kl_below_the_global_models() -> Result<()> {
    let (global, personal, result) = shifted_run();
    let (global, personal) = (*global, *personal);
    assert!(
        personal < global,
        "personalized KL {personal:.4} is not below the global model's {global:.4}"
    );
    // The table shows the row over the same samples as the federated one, compared with the
    // label prior, and a note says which epochs the clients kept.
    let table = &result.final_table;
    let row = table
        .row(Arm::Personalized.label())
        .expect("the personalized row");
    assert_eq!(row.metrics.kl, personal);
    assert_eq!(
        row.metrics.samples,
        table.row(Arm::Federated.label()).unwrap().metrics.samples
    );
    assert!(row.prior.is_some(), "compared with the label prior");
    assert!(
        result
            .notes
            .iter()
            .any(|n| n.starts_with(Arm::Personalized.label()) && n.contains("of 4 clients")),
        "{:?}",
        result.notes
    );
    Ok(())
}

#[test]
fn the_gain_comes_from_the_subjects_biases() -> Result<()> {
    let (global, personal, _) = shifted_run();
    let (plain_global, plain_personal, _) = global_and_personal_kl(0.0)?;
    let (gain, plain_gain) = (global - personal, plain_global - plain_personal);
    assert!(
        gain > 2.0 * plain_gain.max(0.0) && gain > 0.0,
        "gain with rating biases {gain:.4}, without {plain_gain:.4}"
    );
    Ok(())
}

#[test]
fn without_clients_among_the_test_subjects_the_arm_is_omitted_with_a_note() -> Result<()> {
    let mut config = config(
        EvaluationProtocol::SubjectIndependent { folds: 2 },
        LABEL_SHIFT,
    );
    config.rounds = 1;
    config.personalize_epochs = 1;
    let result = run_simulation(&config, None, false)?;
    assert!(result.final_table.row(Arm::Personalized.label()).is_none());
    assert!(result.final_table.row(Arm::Federated.label()).is_some());
    assert!(
        result
            .notes
            .iter()
            .any(|n| n.starts_with(Arm::Personalized.label()) && n.contains("omitted")),
        "{:?}",
        result.notes
    );
    Ok(())
}

#[test]
fn the_personalized_arm_needs_the_federated_arm() {
    let mut config = config(EvaluationProtocol::default(), LABEL_SHIFT);
    config.arms = vec![Arm::Personalized];
    assert!(run_simulation(&config, None, false).is_err());
}
