//! Centralized training of the full MPCL network on synthetic data: it learns (beats the label
//! prior on held-out trials), it is deterministic, and every ablation switch changes the loss.

use anyhow::Result;
use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Standardizer};
use mpcl_model::Device;
use mpcl_model::loss::mpcl_loss;
use mpcl_model::metrics::label_prior_metrics;
use mpcl_model::{MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::CooccurrenceStatistics;
use mpcl_simulations::synthetic::{SyntheticConfig, generate};

/// Held-out trials: the last third of each subject's trials (whole trials, never windows).
fn trial_split(data: &Dataset) -> (Dataset, Dataset) {
    let (test, train): (Vec<usize>, Vec<usize>) =
        (0..data.samples.len()).partition(|&i| data.samples[i].trial % 3 == 2);
    (data.subset(&train), data.subset(&test))
}

struct Setup {
    model: MpclModel,
    train: TensorDataset,
    test: TensorDataset,
    prior: Vec<f32>,
    test_labels: Vec<Vec<f32>>,
}

fn setup(config: &ModelConfig, seed: u64) -> Result<Setup> {
    let data = generate(&SyntheticConfig {
        subjects: 4,
        trials_per_subject: 12,
        windows_per_trial: 3,
        ..SyntheticConfig::default()
    });
    let (train_set, test_set) = trial_split(&data);
    let standardizer = Standardizer::fit(&train_set);
    let device = Device::flex();
    let mut model = MpclModel::new(&data.schema, config, &device, seed)?;
    let mut cooccurrence = CooccurrenceStatistics::zeros(data.schema.emotion_count());
    for sample in &train_set.samples {
        cooccurrence.add_label(&sample.label);
    }
    model.memories.set_cooccurrence(cooccurrence);
    Ok(Setup {
        train: TensorDataset::new(&train_set, &standardizer, model.device()),
        test: TensorDataset::new(&test_set, &standardizer, model.device()),
        prior: train_set.label_prior(),
        test_labels: test_set.samples.iter().map(|s| s.label.clone()).collect(),
        model,
    })
}

fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 16,
        learning_rate: 3e-3,
        seed: 1,
        ..TrainOptions::default()
    }
}

/// Margin: the trained model's mean test KL must be at most 50% of the label prior's.
const KL_MARGIN: f64 = 0.5;

#[test]
fn training_beats_the_label_prior_on_held_out_trials() -> Result<()> {
    let mut s = setup(&ModelConfig::tiny(), 3)?;
    let report = train(&mut s.model, &s.train, &options(20), None);
    // 96 training windows / 16 per batch * 20 epochs
    assert_eq!(report.steps, 120);
    let metrics = s.model.evaluate(&s.test);
    let prior = label_prior_metrics(s.test_labels.iter().map(|l| l.as_slice()), &s.prior);
    assert_eq!(metrics.samples, s.test_labels.len());
    assert!(
        metrics.kl < KL_MARGIN * prior.kl,
        "model KL {} vs label prior KL {}",
        metrics.kl,
        prior.kl
    );
    assert!(metrics.intersection > prior.intersection);
    assert!(report.epoch_losses.last() < report.epoch_losses.first());
    Ok(())
}

#[test]
fn same_seed_gives_identical_metrics() -> Result<()> {
    let run = || -> Result<_> {
        let mut s = setup(&ModelConfig::tiny(), 5)?;
        let report = train(&mut s.model, &s.train, &options(2), None);
        Ok((report, s.model.evaluate(&s.test), s.model.parameters()))
    };
    let (first_report, first_metrics, first_parameters) = run()?;
    let (second_report, second_metrics, second_parameters) = run()?;
    assert_eq!(first_report, second_report);
    assert_eq!(first_metrics, second_metrics);
    assert_eq!(first_parameters, second_parameters);
    Ok(())
}

/// The loss of one fixed batch under `config` (same seed, so same initial weights where the
/// architecture is the same).
fn loss_of(config: &ModelConfig) -> Result<f32> {
    let s = setup(config, 11)?;
    let indices: Vec<usize> = (0..16).collect();
    let (inputs, labels) = s.train.batch(&indices);
    let output = s.model.network.forward(&inputs, &s.model.memories, config);
    let terms = mpcl_loss(&output, labels, &s.model.memories, config);
    Ok(terms.total.into_scalar::<f32>())
}

#[test]
fn every_ablation_switch_changes_the_loss() -> Result<()> {
    let full = ModelConfig::tiny();
    let baseline = loss_of(&full)?;
    let ablations = [
        (
            "prototype loss weight 0",
            ModelConfig {
                prototype_loss_weight: 0.0,
                ..full.clone()
            },
        ),
        (
            "distillation weight 0",
            ModelConfig {
                distillation_loss_weight: 0.0,
                ..full.clone()
            },
        ),
        (
            "co-occurrence loss weight 0",
            ModelConfig {
                cooccurrence_loss_weight: 0.0,
                ..full.clone()
            },
        ),
        (
            "prototype banks off",
            ModelConfig {
                use_prototypes: false,
                ..full.clone()
            },
        ),
        (
            "co-occurrence off",
            ModelConfig {
                use_cooccurrence: false,
                ..full.clone()
            },
        ),
    ];
    for (name, config) in ablations {
        let loss = loss_of(&config)?;
        assert!(
            (loss - baseline).abs() > 1e-6,
            "{name}: loss {loss} equals the full model's {baseline}"
        );
    }
    Ok(())
}
