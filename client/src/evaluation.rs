//! A participant's side of federated evaluation: its data split trial-wise into a training,
//! a validation and a test part (seeded, so the same data and seed always give the same
//! parts, and the windows of one trial never on two sides), and the evaluation of a global
//! model on the validation and test parts as sample-weighted metric sums
//! ([`EvaluationReport`]), beside the federation's label prior on the same samples.
//!
//! The validation part is carved from the training trials and serves only to choose the best
//! round; the test part is never trained on and never chooses anything.

use mpcl_data::split::{SplitError, subject_dependent};
use mpcl_data::{Dataset, Standardizer};
use mpcl_model::metrics::metric_sums;
use mpcl_model::{Device, MpclModel, TensorDataset};
use mpcl_protocol::messages::GlobalState;
use mpcl_protocol::metrics::{EvaluationReport, MetricSums};

/// Mixed into the seed of the validation split.
const VALIDATION_SEED_SALT: u64 = 0x0005_eed0_f7a1_11d0;

/// A participant's data in three parts.
#[derive(Clone, Debug)]
pub struct LocalSplit {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
}

/// Splits `dataset` by trial: `test_fraction` of each subject's trials for the test part, then
/// `validation_fraction` of the remaining trials for the validation part.
pub fn split_for_evaluation(
    dataset: &Dataset,
    test_fraction: f64,
    validation_fraction: f64,
    seed: u64,
) -> Result<LocalSplit, SplitError> {
    let outer = subject_dependent(dataset, test_fraction, seed)?;
    let rest = dataset.subset(&outer.train);
    // A seed of its own, so the validation draw is not the test draw repeated.
    let inner = subject_dependent(&rest, validation_fraction, seed ^ VALIDATION_SEED_SALT)?;
    Ok(LocalSplit {
        train: rest.subset(&inner.train),
        validation: rest.subset(&inner.test),
        test: dataset.subset(&outer.test),
    })
}

/// A participant's validation and test parts as tensors, standardised with the statistics of
/// its training part (as it trains).
pub struct EvaluationParts {
    /// `None` for an empty part (a participant may have no samples on one side).
    validation: Option<TensorDataset>,
    test: Option<TensorDataset>,
}

impl EvaluationParts {
    /// The parts of `split`, standardised with `standardizer` (the participant's own).
    pub fn new(split: &LocalSplit, standardizer: &Standardizer, device: &Device) -> Self {
        let tensors = |part: &Dataset| {
            (!part.samples.is_empty()).then(|| TensorDataset::new(part, standardizer, device))
        };
        Self {
            validation: tensors(&split.validation),
            test: tensors(&split.test),
        }
    }

    /// The metric sums of `model` (holding the global state `state`) on the validation and test
    /// parts, and of the label prior the state's co-occurrence statistics imply on the same
    /// samples.
    pub fn report(&self, model: &MpclModel, state: &GlobalState) -> EvaluationReport {
        let prior = state.cooccurrence.label_prior();
        let sums = |data: &Option<TensorDataset>| {
            let Some(data) = data else {
                return (MetricSums::default(), MetricSums::default());
            };
            let predictions = model.predict(data);
            let labels = data.host_labels();
            (
                metric_sums(
                    labels
                        .iter()
                        .zip(&predictions)
                        .map(|(l, p)| (l.as_slice(), p.as_slice())),
                ),
                metric_sums(labels.iter().map(|l| (l.as_slice(), prior.as_slice()))),
            )
        };
        let (validation, prior_validation) = sums(&self.validation);
        let (test, prior_test) = sums(&self.test);
        EvaluationReport {
            validation,
            test,
            prior_validation,
            prior_test,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpcl_data::ModelConfig;
    use mpcl_data::{Modality, ModalityGroup, Sample, Schema};
    use mpcl_model::metrics::evaluate;

    fn dataset() -> Dataset {
        let schema = Schema {
            emotions: vec!["a".into(), "b".into()],
            modalities: vec![Modality::new("x", ModalityGroup::Physiological, 2, 2)],
        };
        let mut samples = Vec::new();
        for trial in 0..12u32 {
            for time in 0..3u32 {
                let v = trial as f32 / 12.0;
                samples.push(Sample {
                    features: vec![vec![v, v * 2.0, time as f32, 1.0]],
                    label: vec![v, 1.0 - v],
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

    fn trials(d: &Dataset) -> std::collections::BTreeSet<u32> {
        d.samples.iter().map(|s| s.trial).collect()
    }

    #[test]
    fn the_parts_are_trial_wise_disjoint_seeded_and_cover_the_data() {
        let data = dataset();
        let split = split_for_evaluation(&data, 0.25, 0.25, 9).unwrap();
        let (tr, va, te) = (
            trials(&split.train),
            trials(&split.validation),
            trials(&split.test),
        );
        assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
        assert_eq!(te.len(), 3);
        assert_eq!(va.len(), 2);
        assert_eq!(
            split.train.samples.len() + split.validation.samples.len() + split.test.samples.len(),
            data.samples.len()
        );
        let again = split_for_evaluation(&data, 0.25, 0.25, 9).unwrap();
        assert_eq!(trials(&again.test), te);
        assert_eq!(trials(&again.validation), va);
        let other = split_for_evaluation(&data, 0.25, 0.25, 10).unwrap();
        assert!(trials(&other.test) != te || trials(&other.validation) != va);
    }

    #[test]
    fn a_report_holds_the_sums_of_a_direct_evaluation() {
        let data = dataset();
        let split = split_for_evaluation(&data, 0.25, 0.25, 1).unwrap();
        let standardizer = Standardizer::fit(&split.train);
        let device = Device::flex();
        let model = MpclModel::new(&data.schema, &ModelConfig::tiny(), &device, 4).unwrap();
        let state = model.global_state();
        let parts = EvaluationParts::new(&split, &standardizer, model.device());
        let report = parts.report(&model, &state);
        let test = TensorDataset::new(&split.test, &standardizer, model.device());
        let direct = model.evaluate(&test);
        assert_eq!(report.test.means(), direct);
        assert_eq!(report.test.samples as usize, split.test.samples.len());
        assert_eq!(
            report.validation.samples as usize,
            split.validation.samples.len()
        );
        let prior = state.cooccurrence.label_prior();
        let direct_prior = evaluate(
            split
                .test
                .samples
                .iter()
                .map(|s| (s.label.as_slice(), prior.as_slice())),
        );
        assert_eq!(report.prior_test.means(), direct_prior);
    }
}
