//! Per-subject feature normalisation, applied before any arm trains so that every arm sees the
//! same inputs. Physiological levels differ a lot between people (the bundled EMG data spans an
//! order of magnitude between subjects), and a participant's node can always standardise its own
//! recordings. Statistics come from label-free features only: a subject's training samples when
//! it has any, otherwise (a held-out subject) all of its samples, which needs no label.

use mpcl_data::Dataset;

/// A copy of `dataset` with each subject's features standardised with that subject's statistics
/// (from its samples in `train`, or all its samples when it has none there). The rule lives in
/// the model crate (`data::standardize::standardize_per_subject`) because model files record it.
pub fn normalize_per_subject(dataset: &Dataset, train: &[usize]) -> Dataset {
    mpcl_data::standardize::standardize_per_subject(dataset, train)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    #[test]
    fn each_subjects_training_features_are_standardised_with_its_own_statistics() {
        let data = generate(&SyntheticConfig {
            subjects: 2,
            trials_per_subject: 4,
            windows_per_trial: 2,
            ..SyntheticConfig::default()
        });
        let train: Vec<usize> = (0..data.samples.len())
            .filter(|&i| data.samples[i].trial < 3)
            .collect();
        let normalized = normalize_per_subject(&data, &train);
        for subject in ["s01", "s02"] {
            let rows: Vec<usize> = train
                .iter()
                .copied()
                .filter(|&i| data.samples[i].subject == subject)
                .collect();
            let mean: f32 = rows
                .iter()
                .map(|&i| normalized.samples[i].features[1][0])
                .sum::<f32>()
                / rows.len() as f32;
            assert!(mean.abs() < 1e-5, "{subject}: {mean}");
        }
        // Test samples are transformed with the training statistics, not their own.
        assert_ne!(normalized.samples[6].features, data.samples[6].features);
    }
}
