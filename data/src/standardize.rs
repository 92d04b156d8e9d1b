//! Per-feature standardisation. Statistics come from training data only (a federated client uses
//! its own, or aggregated global ones), so that nothing about test samples leaks into training.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sample::Dataset;
use super::schema::Schema;

/// Smallest standard deviation used when dividing, so constant features map to zero.
const MIN_STD: f64 = 1e-6;

/// Mean and standard deviation of every feature of every modality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per modality, per feature.
    pub mean: Vec<Vec<f32>>,
    /// Per modality, per feature (never below `MIN_STD`).
    pub std: Vec<Vec<f32>>,
}

impl Standardizer {
    /// Statistics of `train` (population variance).
    pub fn fit(train: &Dataset) -> Self {
        let widths: Vec<usize> = train.schema.modalities.iter().map(|m| m.width()).collect();
        let mut sum: Vec<Vec<f64>> = widths.iter().map(|w| vec![0.0; *w]).collect();
        let mut sum_sq = sum.clone();
        for sample in &train.samples {
            for (m, values) in sample.features.iter().enumerate() {
                for (j, v) in values.iter().enumerate() {
                    sum[m][j] += f64::from(*v);
                    sum_sq[m][j] += f64::from(*v) * f64::from(*v);
                }
            }
        }
        let n = train.samples.len().max(1) as f64;
        let mean: Vec<Vec<f32>> = sum
            .iter()
            .map(|s| s.iter().map(|v| (v / n) as f32).collect())
            .collect();
        let std = sum
            .iter()
            .zip(&sum_sq)
            .map(|(s, sq)| {
                s.iter()
                    .zip(sq)
                    .map(|(s, sq)| {
                        let m = s / n;
                        ((sq / n - m * m).max(0.0).sqrt().max(MIN_STD)) as f32
                    })
                    .collect()
            })
            .collect();
        Self { mean, std }
    }

    /// Mean 0 and standard deviation 1 for every feature: leaves values unchanged bit for bit.
    pub fn identity(schema: &Schema) -> Self {
        let zeros: Vec<Vec<f32>> = schema
            .modalities
            .iter()
            .map(|m| vec![0.0; m.width()])
            .collect();
        let ones = zeros.iter().map(|z| vec![1.0; z.len()]).collect();
        Self {
            mean: zeros,
            std: ones,
        }
    }

    /// The standardised copy of one modality's features.
    pub fn apply(&self, modality: usize, values: &[f32]) -> Vec<f32> {
        values
            .iter()
            .zip(&self.mean[modality])
            .zip(&self.std[modality])
            .map(|((v, m), s)| (v - m) / s)
            .collect()
    }
}

/// A copy of `dataset` with each subject's features standardised with that subject's own
/// statistics: from its samples at `fit_rows` (indices into `dataset`, the training side of a
/// split) when it has any there, otherwise from all of its samples. Physiological levels differ
/// a lot between people (the bundled EMG data spans an order of magnitude between subjects), and
/// a participant's node can always standardise its own recordings; only features are used, never
/// labels, so a held-out or new subject needs no label.
pub fn standardize_per_subject(dataset: &Dataset, fit_rows: &[usize]) -> Dataset {
    let mut fit: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut all: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in fit_rows {
        fit.entry(dataset.samples[i].subject.as_str())
            .or_default()
            .push(i);
    }
    for (i, sample) in dataset.samples.iter().enumerate() {
        all.entry(sample.subject.as_str()).or_default().push(i);
    }
    let standardizers: BTreeMap<&str, Standardizer> = all
        .iter()
        .map(|(subject, rows)| {
            let rows = fit.get(subject).unwrap_or(rows);
            (*subject, Standardizer::fit(&dataset.subset(rows)))
        })
        .collect();
    let mut standardized = dataset.clone();
    for sample in &mut standardized.samples {
        let standardizer = &standardizers[sample.subject.as_str()];
        for (m, values) in sample.features.iter_mut().enumerate() {
            *values = standardizer.apply(m, values);
        }
    }
    standardized
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup, Sample, Schema};

    #[test]
    fn standardised_training_features_have_zero_mean_unit_variance() {
        let samples = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|v| Sample {
                features: vec![vec![*v, 5.0]],
                label: vec![1.0, 0.0],
                subject: "s".into(),
                trial: 0,
                time: 0,
                stimulus: None,
            })
            .collect();
        let dataset = Dataset {
            name: "t".into(),
            schema: Schema {
                emotions: vec!["a".into(), "b".into()],
                modalities: vec![Modality::new("x", ModalityGroup::Physiological, 1, 2)],
            },
            samples,
        };
        let standardizer = Standardizer::fit(&dataset);
        assert_eq!(standardizer.mean[0], vec![2.5, 5.0]);
        let z: Vec<f32> = dataset
            .samples
            .iter()
            .map(|s| standardizer.apply(0, &s.features[0])[0])
            .collect();
        let mean: f32 = z.iter().sum::<f32>() / 4.0;
        let var: f32 = z.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        // A constant feature maps to zero instead of dividing by zero.
        assert_eq!(standardizer.apply(0, &[2.5, 5.0]), vec![0.0, 0.0]);
    }
}
