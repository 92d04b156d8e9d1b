//! Model files written by `mpcl train` and `mpcl simulate` (through the library): evaluating
//! the saved model under the run's protocol reproduces the run's final metrics and label prior
//! bit for bit, and predictions are distributions.

use anyhow::Result;
use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_model::{Device, TrainOptions};
use mpcl_protocol::ModelFile;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::saved_model::{evaluate_saved, predict_saved};
use mpcl_simulations::simulate::{Arm, SimulationConfig, run_simulation};
use mpcl_simulations::synthetic::{SyntheticConfig, generate};
use mpcl_simulations::train_job::{TrainJobConfig, run_train_job};

fn synthetic() -> SyntheticConfig {
    SyntheticConfig {
        subjects: 3,
        trials_per_subject: 8,
        windows_per_trial: 2,
        ..SyntheticConfig::default()
    }
}

fn train_config(protocol: EvaluationProtocol) -> TrainJobConfig {
    TrainJobConfig {
        dataset: "synthetic".into(),
        synthetic: synthetic(),
        model: ModelConfig::tiny(),
        training: TrainOptions {
            epochs: 2,
            batch_size: 16,
            learning_rate: 1e-2,
            ..TrainOptions::default()
        },
        protocol,
        seed: 5,
        ..TrainJobConfig::default()
    }
}

#[test]
fn a_trained_model_file_reproduces_the_runs_metrics_bit_for_bit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let protocol = EvaluationProtocol::SubjectDependent {
        test_fraction: 0.25,
    };
    let result = run_train_job(&train_config(protocol), dir.path())?;
    let path = dir.path().join("model.mpcl");
    let file = ModelFile::read(&path)?;
    assert_eq!(file.provenance.metrics, Some(result.model));
    let data = generate(&synthetic());
    let evaluation = evaluate_saved(
        &file,
        &path,
        &data,
        "synthetic",
        Some(protocol),
        &Device::flex(),
    )?;
    assert_eq!(evaluation.model, result.model);
    assert_eq!(evaluation.label_prior, result.label_prior);
    // Another protocol (or none) gives other samples, so other numbers.
    let all = evaluate_saved(&file, &path, &data, "synthetic", None, &Device::flex())?;
    assert_eq!(all.model.samples, data.samples.len());
    assert_ne!(all.model, result.model);

    // Predictions are distributions, one per sample.
    let predictions = predict_saved(&file, &path, &data, "synthetic", &Device::flex())?;
    assert_eq!(predictions.len(), data.samples.len());
    for p in &predictions {
        assert!(p.iter().all(|v| *v >= 0.0));
        let sum: f64 = p.iter().map(|v| f64::from(*v)).sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
    }
    Ok(())
}

#[test]
fn each_folds_model_file_reproduces_that_folds_metrics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let protocol = EvaluationProtocol::SubjectIndependent { folds: 3 };
    run_train_job(&train_config(protocol), dir.path())?;
    let data = generate(&synthetic());
    for fold in 1..=3 {
        let path = dir.path().join(format!("model-fold-{fold}.mpcl"));
        let file = ModelFile::read(&path)?;
        let split = file
            .provenance
            .split
            .clone()
            .expect("a local run records its split");
        assert_eq!((split.partition, split.partitions), (fold - 1, 3));
        let evaluation = evaluate_saved(
            &file,
            &path,
            &data,
            "synthetic",
            Some(protocol),
            &Device::flex(),
        )?;
        assert_eq!(
            Some(evaluation.model),
            file.provenance.metrics,
            "fold {fold}"
        );
    }
    Ok(())
}

#[test]
fn a_simulated_federations_model_file_reproduces_its_final_metrics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = SimulationConfig {
        dataset: "synthetic".into(),
        synthetic: synthetic(),
        // A sample of the subjects: evaluation must split over the same ones.
        subjects: Some(2),
        model: ModelConfig::tiny(),
        rounds: 2,
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 1e-2,
            ..TrainingSettings::default()
        },
        arms: vec![Arm::Federated, Arm::Centralized],
        seed: 3,
        ..SimulationConfig::default()
    };
    let result = run_simulation(&config, Some(dir.path()), false)?;
    let data = generate(&synthetic());
    for arm in [Arm::Federated, Arm::Centralized] {
        let path = dir.path().join(format!("model-{}.mpcl", arm.name()));
        let file = ModelFile::read(&path)?;
        // The file holds the round chosen on validation.
        let row = result
            .final_table
            .row(arm.label())
            .expect("the arm is in the table");
        assert_eq!(file.state, result.best_states[&arm][0]);
        assert_eq!(file.provenance.round, row.rounds[0]);
        assert_eq!(
            file.provenance.split.as_ref().map(|s| s.subjects.len()),
            Some(2)
        );
        let evaluation = evaluate_saved(
            &file,
            &path,
            &data,
            "synthetic",
            Some(config.protocol),
            &Device::flex(),
        )?;
        assert_eq!(evaluation.model, row.metrics, "{}", arm.name());
        assert_eq!(Some(evaluation.model), file.provenance.metrics);
    }
    Ok(())
}
