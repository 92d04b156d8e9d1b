//! How sure a table can be that an arm beats the label prior: the mean per-sample KL difference
//! to the prior, with a 95% bootstrap interval over *subjects* (samples of one subject are not
//! independent, so subjects are what is resampled), and the verdict in words.

use std::collections::BTreeMap;

use mpcl_model::metrics::pair_metrics;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Position of KL in [`pair_metrics`]'s array.
const KL: usize = 3;

/// An arm's KL minus the label prior's KL on the same samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorComparison {
    /// Mean over every sample of `KL(arm) - KL(prior)` (negative: the arm is better).
    pub difference: f64,
    /// 2.5th percentile of the bootstrap over subjects.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
    pub subjects: usize,
}

impl PriorComparison {
    /// The verdict in words.
    pub fn verdict(&self) -> &'static str {
        if self.high < 0.0 {
            "beats the label prior"
        } else if self.low > 0.0 {
            "worse than the label prior"
        } else {
            "not distinguishable from the label prior"
        }
    }

    /// `-0.0123 [-0.0200, -0.0050]`.
    pub fn interval_text(&self) -> String {
        format!(
            "{:+.4} [{:+.4}, {:+.4}]",
            self.difference, self.low, self.high
        )
    }
}

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
        let difference = pair_metrics(label, p)[KL] - pair_metrics(label, q)[KL];
        let entry = per_subject.entry(subject).or_default();
        entry.0 += difference;
        entry.1 += 1;
    }
    let groups: Vec<(f64, usize)> = per_subject.into_values().collect();
    let mean = |sum: f64, count: usize| sum / count.max(1) as f64;
    let (total, count) = groups
        .iter()
        .fold((0.0, 0), |(s, n), (gs, gn)| (s + gs, n + gn));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let (s, n) = (0..groups.len()).fold((0.0, 0), |(s, n), _| {
                let (gs, gn) = groups[rng.random_range(0..groups.len())];
                (s + gs, n + gn)
            });
            mean(s, n)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((means.len() - 1) as f64 * q).round() as usize];
    Some(PriorComparison {
        difference: mean(total, count),
        low: at(0.025),
        high: at(0.975),
        subjects: groups.len(),
    })
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
