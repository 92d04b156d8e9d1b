//! The coordinator's federated metrics are what a direct evaluation of the same global model on
//! the same samples gives: each participant's validation and test samples, standardised with its
//! own training statistics, summed over participants.

use anyhow::Result;
use mpcl_data::Standardizer;
use mpcl_model::metrics::metric_sums;
use mpcl_model::{MpclModel, TensorDataset};
use mpcl_protocol::metrics::MetricSums;
use mpcl_simulations::normalize::normalize_per_subject;
use mpcl_simulations::simulate::{Arm, ExecutionMode, SimulationConfig, run_simulation_on};

use mpcl_simulations::evaluation::partitions;
use mpcl_simulations::synthetic::generate;

mod common;

#[test]
fn federated_metrics_equal_a_direct_evaluation_of_the_global_model() -> Result<()> {
    let mut config = SimulationConfig {
        rounds: 2,
        arms: vec![Arm::Federated],
        seed: 3,
        ..common::small_study(3, 8)
    };
    config.training.batch_size = 8;
    let data = generate(&config.synthetic);
    let result = run_simulation_on(
        &data,
        &config,
        &ExecutionMode::InProcess,
        None,
        false,
        std::time::Instant::now(),
    )?;
    let evaluations = &result.federated_evaluations[&Arm::Federated][0];
    let rounds: Vec<u64> = evaluations.iter().map(|m| m.round).collect();
    assert_eq!(
        rounds,
        vec![0, 1, 2],
        "the initial model, each round, the final evaluation"
    );
    let last = evaluations.last().unwrap();
    assert_eq!(last.clients, 3);

    // The same final model, evaluated directly on every participant's own parts.
    let part = &partitions(
        &data,
        config.protocol,
        config.selection.validation_fraction,
        config.seed,
    )?[0];
    let normalized = normalize_per_subject(&data, &part.train);
    let state = &result.final_states[&Arm::Federated][0];
    let device = mpcl_model::Device::flex();
    let mut model = MpclModel::new(&data.schema, &config.model, &device, 0)?;
    model.load_global_state(state)?;
    let (mut validation, mut test) = (MetricSums::default(), MetricSums::default());
    for subject in data.subjects() {
        let rows_of = |rows: &[usize]| -> Vec<usize> {
            rows.iter()
                .copied()
                .filter(|&i| data.samples[i].subject == subject)
                .collect()
        };
        let train = normalized.subset(&rows_of(&part.train));
        let standardizer = Standardizer::fit(&train);
        for (rows, total) in [(&part.validation, &mut validation), (&part.test, &mut test)] {
            let own = normalized.subset(&rows_of(rows));
            let tensors = TensorDataset::new(&own, &standardizer, model.device());
            let predictions = model.predict(&tensors);
            total.merge(&metric_sums(
                own.samples
                    .iter()
                    .zip(&predictions)
                    .map(|(s, p)| (s.label.as_slice(), p.as_slice())),
            ));
        }
    }
    let (validation, test) = (validation.means(), test.means());
    assert_eq!(last.test.samples, part.test.len());
    assert_eq!(last.validation.samples, part.validation.len());
    for (a, b) in last.test.values().iter().zip(test.values()) {
        assert!((a - b).abs() < 1e-6, "test: {a} vs {b}");
    }
    for (a, b) in last.validation.values().iter().zip(validation.values()) {
        assert!((a - b).abs() < 1e-6, "validation: {a} vs {b}");
    }
    Ok(())
}
