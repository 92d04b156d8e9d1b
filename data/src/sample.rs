//! Samples and datasets, with the checks every reader's output must pass before training.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::schema::{Schema, SchemaError};

/// How far a label's sum may stray from one and still count as a distribution.
pub const LABEL_SUM_TOLERANCE: f32 = 1e-3;

/// One time window of one trial of one subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// One feature vector per modality, in schema order.
    pub features: Vec<Vec<f32>>,
    /// The label distribution over the schema's emotions (non-negative, sums to one).
    pub label: Vec<f32>,
    /// Subject (participant) id.
    pub subject: String,
    /// Trial id within the subject; windows of one trial share a label and must stay on one side
    /// of any split.
    pub trial: u32,
    /// Position of the window within its trial.
    pub time: u32,
    /// What the subject was exposed to in this trial (a clip, a song, a condition), when the
    /// dataset says: trials of different subjects with the same stimulus share it. Labels are
    /// often largely stimulus-driven, so the stimulus-independent protocols hold out whole
    /// stimuli and tables show the stimulus prior beside the label prior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stimulus: Option<String>,
}

/// A sample or dataset that does not fit its schema.
#[derive(Debug, Error, PartialEq)]
pub enum DatasetError {
    #[error("invalid schema: {0}")]
    Schema(#[from] SchemaError),
    #[error(
        "sample {index} (subject {subject}, trial {trial}): has {found} modalities, schema has {expected}"
    )]
    ModalityCount {
        index: usize,
        subject: String,
        trial: u32,
        expected: usize,
        found: usize,
    },
    #[error(
        "sample {index} (subject {subject}, trial {trial}): modality `{modality}` has {found} values, schema says {expected}"
    )]
    FeatureWidth {
        index: usize,
        subject: String,
        trial: u32,
        modality: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "sample {index} (subject {subject}, trial {trial}): modality `{modality}` holds a non-finite value"
    )]
    NonFiniteFeature {
        index: usize,
        subject: String,
        trial: u32,
        modality: String,
    },
    #[error(
        "sample {index} (subject {subject}, trial {trial}): label is not a distribution over {emotions} emotions: {reason}"
    )]
    InvalidLabel {
        index: usize,
        subject: String,
        trial: u32,
        emotions: usize,
        reason: String,
    },
    #[error("dataset `{0}` has no samples")]
    Empty(String),
}

/// Why `label` is not a distribution over `emotions` emotions, if it is not one.
pub fn label_problem(label: &[f32], emotions: usize) -> Option<String> {
    if label.len() != emotions {
        return Some(format!("{} values", label.len()));
    }
    if let Some(v) = label.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Some(format!("value {v} is negative or not finite"));
    }
    let sum: f32 = label.iter().sum();
    if (sum - 1.0).abs() > LABEL_SUM_TOLERANCE {
        return Some(format!("values sum to {sum}, not 1"));
    }
    None
}

/// A named collection of samples under one schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub schema: Schema,
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// Checks the schema and every sample against it.
    pub fn validate(&self) -> Result<(), DatasetError> {
        self.schema.validate()?;
        if self.samples.is_empty() {
            return Err(DatasetError::Empty(self.name.clone()));
        }
        for (index, sample) in self.samples.iter().enumerate() {
            self.validate_sample(index, sample)?;
        }
        Ok(())
    }

    fn validate_sample(&self, index: usize, sample: &Sample) -> Result<(), DatasetError> {
        let modalities = &self.schema.modalities;
        if sample.features.len() != modalities.len() {
            return Err(DatasetError::ModalityCount {
                index,
                subject: sample.subject.clone(),
                trial: sample.trial,
                expected: modalities.len(),
                found: sample.features.len(),
            });
        }
        for (modality, values) in modalities.iter().zip(&sample.features) {
            if values.len() != modality.width() {
                return Err(DatasetError::FeatureWidth {
                    index,
                    subject: sample.subject.clone(),
                    trial: sample.trial,
                    modality: modality.name.clone(),
                    expected: modality.width(),
                    found: values.len(),
                });
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(DatasetError::NonFiniteFeature {
                    index,
                    subject: sample.subject.clone(),
                    trial: sample.trial,
                    modality: modality.name.clone(),
                });
            }
        }
        if let Some(reason) = label_problem(&sample.label, self.schema.emotion_count()) {
            return Err(DatasetError::InvalidLabel {
                index,
                subject: sample.subject.clone(),
                trial: sample.trial,
                emotions: self.schema.emotion_count(),
                reason,
            });
        }
        Ok(())
    }

    /// Subject ids in order of first appearance.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects: Vec<String> = Vec::new();
        for sample in &self.samples {
            if subjects.last() != Some(&sample.subject) && !subjects.contains(&sample.subject) {
                subjects.push(sample.subject.clone());
            }
        }
        subjects
    }

    /// Positions of `subject`'s samples, in order.
    pub fn indices_of_subject(&self, subject: &str) -> Vec<usize> {
        (0..self.samples.len())
            .filter(|&i| self.samples[i].subject == subject)
            .collect()
    }

    /// A dataset with the same schema holding only `subject`'s samples (none when it has none).
    pub fn subject_subset(&self, subject: &str) -> Dataset {
        self.subset(&self.indices_of_subject(subject))
    }

    /// A dataset with the same schema holding only the samples at `indices`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            schema: self.schema.clone(),
            samples: indices.iter().map(|&i| self.samples[i].clone()).collect(),
        }
    }

    /// The mean label distribution: the label-prior baseline's prediction.
    pub fn label_prior(&self) -> Vec<f32> {
        let c = self.schema.emotion_count();
        let mut prior = vec![0.0f64; c];
        for sample in &self.samples {
            for (p, v) in prior.iter_mut().zip(&sample.label) {
                *p += f64::from(*v);
            }
        }
        let n = self.samples.len().max(1) as f64;
        prior.iter().map(|p| (p / n) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup};

    fn dataset(label: Vec<f32>, features: Vec<f32>) -> Dataset {
        Dataset {
            name: "t".into(),
            schema: Schema {
                emotions: vec!["a".into(), "b".into()],
                modalities: vec![Modality::new("x", ModalityGroup::Physiological, 1, 2)],
            },
            samples: vec![Sample {
                features: vec![features],
                label,
                subject: "s1".into(),
                trial: 3,
                time: 0,
                stimulus: None,
            }],
        }
    }

    #[test]
    fn a_valid_dataset_passes() {
        assert_eq!(dataset(vec![0.25, 0.75], vec![1.0, 2.0]).validate(), Ok(()));
    }

    #[test]
    fn a_label_that_is_not_a_distribution_is_named() {
        let err = dataset(vec![0.5, 0.6], vec![1.0, 2.0])
            .validate()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("subject s1, trial 3"), "{text}");
        assert!(text.contains("sum to 1.1"), "{text}");
        let err = dataset(vec![-0.5, 1.5], vec![1.0, 2.0])
            .validate()
            .unwrap_err();
        assert!(matches!(err, DatasetError::InvalidLabel { .. }));
    }

    #[test]
    fn wrong_widths_and_nan_features_are_rejected() {
        let err = dataset(vec![0.5, 0.5], vec![1.0]).validate().unwrap_err();
        assert!(matches!(
            err,
            DatasetError::FeatureWidth {
                expected: 2,
                found: 1,
                ..
            }
        ));
        let err = dataset(vec![0.5, 0.5], vec![1.0, f32::NAN])
            .validate()
            .unwrap_err();
        assert!(matches!(err, DatasetError::NonFiniteFeature { .. }));
    }

    #[test]
    fn label_prior_is_the_mean_label() {
        let mut d = dataset(vec![1.0, 0.0], vec![1.0, 2.0]);
        let mut second = d.samples[0].clone();
        second.label = vec![0.0, 1.0];
        d.samples.push(second);
        assert_eq!(d.label_prior(), vec![0.5, 0.5]);
    }

    #[test]
    fn a_subject_subset_keeps_that_subject_in_order() {
        let mut d = dataset(vec![1.0, 0.0], vec![1.0, 2.0]);
        for (subject, trial) in [("s2", 4), ("s1", 5)] {
            let mut sample = d.samples[0].clone();
            sample.subject = subject.into();
            sample.trial = trial;
            d.samples.push(sample);
        }
        assert_eq!(d.indices_of_subject("s1"), vec![0, 2]);
        let s1 = d.subject_subset("s1");
        assert_eq!(
            s1.samples.iter().map(|s| s.trial).collect::<Vec<_>>(),
            [3, 5]
        );
        assert!(d.subject_subset("s9").samples.is_empty());
    }
}
