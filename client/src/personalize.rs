//! A participant's personalization after the federation: the run's global model fine-tuned on
//! the participant's own training part ([`mpcl_model::personalize()`]), the epoch chosen on its
//! validation part, and both models scored on its test part. The personalized model never
//! leaves the participant: it is returned to the caller, who may write it to a model file of
//! its own ([`PersonalOutcome::model_file`]); nothing of it is sent to the coordinator.
//!
//! `mpcl simulate`'s "federated + personalized" arm calls the same function for every client,
//! so the simulation measures exactly what a participant would do.

use mpcl_data::ModelConfig;
use mpcl_data::{DatasetError, Standardizer};
use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_model::personalize::{PersonalizeOptions, PersonalizeReport, PersonalizeScope};
use mpcl_model::{Device, ModelError, MpclModel, TensorDataset};
use mpcl_protocol::CooccurrenceStatistics;
use mpcl_protocol::ModelFile;
use mpcl_protocol::messages::{GlobalState, TrainingConfig};
use mpcl_protocol::model_file::{InputStandardisation, Provenance};
use thiserror::Error;

use crate::evaluation::LocalSplit;

/// Errors of local personalization.
#[derive(Debug, Error)]
pub enum PersonalizeError {
    #[error("local data: {0}")]
    Data(#[from] DatasetError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The global and the personalized model on the participant's test part.
#[derive(Clone, Debug)]
pub struct PersonalOutcome {
    /// The global model's metrics on the test part.
    pub global_test: DistributionMetrics,
    /// The personalized model's metrics on the same samples.
    pub personal_test: DistributionMetrics,
    /// The federation's label prior (implied by the global co-occurrence statistics) on the
    /// same samples: the baseline both models are read against.
    pub prior_test: DistributionMetrics,
    /// The global model's predicted distributions of the test samples, in order.
    pub global_predictions: Vec<Vec<f32>>,
    /// The personalized model's, in the same order.
    pub personal_predictions: Vec<Vec<f32>>,
    /// Validation KL per epoch and the chosen epoch.
    pub report: PersonalizeReport,
    /// The personalized model (the global model itself when epoch 0 was kept).
    pub model: MpclModel,
}

/// Personalization options from the run's local-training settings (batch size, learning rate,
/// weight decay and seed of its last round), with `epochs` and `scope` of the participant's own
/// choosing.
pub fn options_from_training(
    epochs: usize,
    scope: PersonalizeScope,
    training: &TrainingConfig,
) -> PersonalizeOptions {
    PersonalizeOptions {
        epochs,
        scope,
        batch_size: training.batch_size as usize,
        learning_rate: training.learning_rate,
        weight_decay: training.weight_decay,
        seed: training.seed,
    }
}

/// Personalizes the global model `state` on `split.train` (standardised with `standardizer`,
/// the participant's own statistics, as it trains in the rounds), choosing the epoch on
/// `split.validation`, and scores the global and the personalized model on `split.test`.
/// Fails when the validation part is empty ([`ModelError::NoValidationSamples`]).
pub fn personalize_locally(
    split: &LocalSplit,
    standardizer: &Standardizer,
    model_config: &ModelConfig,
    device: &Device,
    state: &GlobalState,
    options: &PersonalizeOptions,
) -> Result<PersonalOutcome, PersonalizeError> {
    split.train.validate()?;
    let mut model = MpclModel::new(&split.train.schema, model_config, device, 0)?;
    model.load_global_state(state)?;
    if state.cooccurrence.count == 0.0 {
        // As in a round: without a global co-occurrence memory, the participant's own.
        let mut own = CooccurrenceStatistics::zeros(split.train.schema.emotion_count());
        for sample in &split.train.samples {
            own.add_label(&sample.label);
        }
        model.memories.set_cooccurrence(own);
    }
    let tensors = |data| TensorDataset::new(data, standardizer, model.device());
    let (train, validation, test) = (
        tensors(&split.train),
        tensors(&split.validation),
        tensors(&split.test),
    );
    let global_predictions = model.predict(&test);
    let report = mpcl_model::personalize(&mut model, &train, &validation, options)?;
    let personal_predictions = model.predict(&test);
    let metrics_of = |predictions: &[Vec<f32>]| {
        evaluate(
            test.host_labels()
                .iter()
                .zip(predictions)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        )
    };
    let prior = state.cooccurrence.label_prior();
    Ok(PersonalOutcome {
        global_test: metrics_of(&global_predictions),
        personal_test: metrics_of(&personal_predictions),
        prior_test: evaluate(
            test.host_labels()
                .iter()
                .map(|l| (l.as_slice(), prior.as_slice())),
        ),
        global_predictions,
        personal_predictions,
        report,
        model,
    })
}

impl PersonalOutcome {
    /// The personalized model as a model file, for the participant's own use (`mpcl evaluate`,
    /// `mpcl predict` on its machine). `run_id` is the federation's run id (hex) and `round` the
    /// round of the global model personalization started from. Inputs are standardised with the
    /// participant's own statistics only, as it trained; the label prior is that of its own
    /// training part (the baseline a personal model must beat); the metrics are the personal
    /// model's on its test part.
    pub fn model_file(&self, split: &LocalSplit, run_id: &str, round: u64) -> ModelFile {
        let report = &self.report;
        self.model.to_file(
            InputStandardisation::per_subject_only(&split.train.schema),
            split.train.label_prior(),
            Provenance {
                source: format!(
                    "mpcl client: personalized (scope {}, epoch {} of {})",
                    report.scope,
                    report.chosen_epoch,
                    report.train_kl.len()
                ),
                run_id: run_id.to_string(),
                round,
                metrics: Some(self.personal_test),
                metrics_on: format!(
                    "the participant's own test part ({} samples); epoch chosen on its \
                     validation part ({} samples)",
                    self.personal_test.samples,
                    split.validation.samples.len()
                ),
                split: None,
                mpcl_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
    }

    /// Whether personalization kept anything but the global model.
    pub fn changed(&self) -> bool {
        self.report.chosen_epoch > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::split_for_evaluation;
    use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema};

    /// One participant who rates emotion `a` higher than the federation's prior says, whatever
    /// the features: what personalization is for.
    fn dataset() -> Dataset {
        let schema = Schema {
            emotions: vec!["a".into(), "b".into(), "c".into()],
            modalities: vec![Modality::new("x", ModalityGroup::Physiological, 2, 2)],
        };
        let mut samples = Vec::new();
        for trial in 0..16u32 {
            for time in 0..2u32 {
                let v = (trial % 4) as f32 / 4.0;
                samples.push(Sample {
                    features: vec![vec![v, 1.0 - v, time as f32, v * v]],
                    label: vec![0.6 + 0.1 * v, 0.3 - 0.1 * v, 0.1],
                    subject: "p".into(),
                    trial,
                    time,
                    stimulus: None,
                });
            }
        }
        Dataset {
            name: "local".into(),
            schema,
            samples,
        }
    }

    #[test]
    fn personalization_beats_a_global_model_that_ignores_the_participants_bias() {
        let data = dataset();
        let split = split_for_evaluation(&data, 0.25, 0.25, 3).unwrap();
        let standardizer = Standardizer::fit(&split.train);
        let device = Device::flex();
        let config = ModelConfig::tiny();
        // A "global" model at a uniform prior, with the federation's memories.
        let mut global = MpclModel::new(&data.schema, &config, &device, 5).unwrap();
        global.start_at_prior(&[1.0 / 3.0; 3]);
        let mut federation = CooccurrenceStatistics::zeros(3);
        for _ in 0..10 {
            federation.add_label(&[1.0 / 3.0; 3]);
        }
        global.memories.set_cooccurrence(federation);
        let state = global.global_state();
        let options = PersonalizeOptions {
            epochs: 6,
            batch_size: 8,
            learning_rate: 1e-2,
            ..PersonalizeOptions::default()
        };
        let outcome =
            personalize_locally(&split, &standardizer, &config, &device, &state, &options).unwrap();
        assert_eq!(outcome.global_test.samples, split.test.samples.len());
        assert_eq!(outcome.personal_test.samples, split.test.samples.len());
        assert_eq!(outcome.personal_predictions.len(), split.test.samples.len());
        assert!(outcome.changed(), "{:?}", outcome.report);
        assert!(
            outcome.personal_test.kl < outcome.global_test.kl,
            "personal {} vs global {}",
            outcome.personal_test.kl,
            outcome.global_test.kl
        );
        // The global model's metrics are those of the state itself on the same samples.
        let test = TensorDataset::new(&split.test, &standardizer, global.device());
        assert_eq!(outcome.global_test, global.evaluate(&test));

        // The model file holds the personalized model, which predicts what the outcome says.
        let file = outcome.model_file(&split, "00ff", 7);
        assert_eq!(file.provenance.round, 7);
        assert_eq!(file.provenance.metrics, Some(outcome.personal_test));
        assert_eq!(file.label_prior, split.train.label_prior());
        let decoded = ModelFile::decode(&file.encode().unwrap()).unwrap();
        let reloaded = MpclModel::from_file(&decoded, &device).unwrap();
        assert_eq!(reloaded.predict(&test), outcome.personal_predictions);
    }

    #[test]
    fn an_empty_validation_part_is_refused() {
        let data = dataset();
        let mut split = split_for_evaluation(&data, 0.25, 0.25, 3).unwrap();
        split.validation.samples.clear();
        let standardizer = Standardizer::fit(&split.train);
        let device = Device::flex();
        let config = ModelConfig::tiny();
        let state = MpclModel::new(&data.schema, &config, &device, 5)
            .unwrap()
            .global_state();
        let error = personalize_locally(
            &split,
            &standardizer,
            &config,
            &device,
            &state,
            &PersonalizeOptions::default(),
        );
        assert!(matches!(
            error,
            Err(PersonalizeError::Model(ModelError::NoValidationSamples))
        ));
    }
}
