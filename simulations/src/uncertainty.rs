//! An arm's predictions against the label prior's, grouped by subject for the bootstrap of
//! [`PriorComparison`] (the rule every final table shares).

use std::collections::BTreeMap;

use mpcl_coordinator::prior_comparison::PriorComparison;
use mpcl_model::metrics::{DistributionMetrics, pair_metrics};

/// Compares `predictions` with `prior` (one prediction per sample each) on `labels`, resampling
/// the subjects of `subjects` (one per sample). `None` for no samples.
pub fn compare_to_prior(
    labels: &[Vec<f32>],
    predictions: &[Vec<f32>],
    prior: &[Vec<f32>],
    subjects: &[String],
    seed: u64,
) -> Option<PriorComparison> {
    if labels.is_empty() {
        return None;
    }
    // Per subject: sum of differences and sample count.
    let mut per_subject: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for (((label, p), q), subject) in labels.iter().zip(predictions).zip(prior).zip(subjects) {
        let kl = |prediction: &[f32]| pair_metrics(label, prediction)[DistributionMetrics::KL];
        let difference = kl(p) - kl(q);
        let entry = per_subject.entry(subject).or_default();
        entry.0 += difference;
        entry.1 += 1;
    }
    let groups: Vec<(f64, usize)> = per_subject.into_values().collect();
    PriorComparison::from_groups(&groups, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels, predictions, prior predictions and subjects of 12 subjects x 5 samples.
    type Samples = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<String>);

    fn data(shift: f32) -> Samples {
        let mut labels = Vec::new();
        let mut predictions = Vec::new();
        let mut prior = Vec::new();
        let mut subjects = Vec::new();
        for s in 0..12 {
            for i in 0..5 {
                let a = 0.2 + 0.05 * ((s * 5 + i) % 7) as f32;
                labels.push(vec![a, 1.0 - a]);
                let p = (a + shift).clamp(0.05, 0.95);
                predictions.push(vec![p, 1.0 - p]);
                prior.push(vec![0.5, 0.5]);
                subjects.push(format!("s{s}"));
            }
        }
        (labels, predictions, prior, subjects)
    }

    #[test]
    fn a_better_model_beats_the_prior_and_a_worse_one_does_not() {
        let (l, p, q, s) = data(0.0);
        let better = compare_to_prior(&l, &p, &q, &s, 1).unwrap();
        assert!(better.high < 0.0, "{better:?}");
        assert_eq!(better.verdict(), "beats the label prior");
        assert_eq!(better.subjects, 12);
        let (l, p, q, s) = data(0.4);
        let worse = compare_to_prior(&l, &p, &q, &s, 1).unwrap();
        assert!(worse.low > 0.0, "{worse:?}");
        assert_eq!(worse.verdict(), "worse than the label prior");
        // The prior against itself: exactly zero, not distinguishable.
        let same = compare_to_prior(&l, &q, &q, &s, 1).unwrap();
        assert_eq!((same.difference, same.low, same.high), (0.0, 0.0, 0.0));
        assert_eq!(same.verdict(), "not distinguishable from the label prior");
        assert!(compare_to_prior(&[], &[], &[], &[], 1).is_none());
    }
}
