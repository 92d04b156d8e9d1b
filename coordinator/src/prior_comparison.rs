//! How sure a table can be that a model beats the label prior: the mean per-sample KL
//! difference to the prior, with a 95% bootstrap interval over *groups* (subjects in a
//! simulation, participants in a federation: samples of one person are not independent, so
//! people are what is resampled), and the verdict in words. One rule for every final table:
//! `mpcl simulate`, `mpcl train`, `mpcl ablate` and the coordinator's `final.md`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A model's KL minus the label prior's KL on the same samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorComparison {
    /// Mean over every sample of `KL(model) - KL(prior)` (negative: the model is better).
    pub difference: f64,
    /// 2.5th percentile of the bootstrap over groups.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
    /// Groups (subjects or participants) resampled.
    pub subjects: usize,
}

impl PriorComparison {
    /// The comparison from per-group totals: `(sum over the group's samples of KL(model) -
    /// KL(prior), the group's sample count)`, resampled in the order given with a generator
    /// seeded by `seed` (so callers fix the order: by subject name, by participant id). `None`
    /// without samples.
    pub fn from_groups(groups: &[(f64, usize)], seed: u64) -> Option<Self> {
        let groups: Vec<(f64, usize)> = groups.iter().copied().filter(|g| g.1 > 0).collect();
        if groups.is_empty() {
            return None;
        }
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
        Some(Self {
            difference: mean(total, count),
            low: at(0.025),
            high: at(0.975),
            subjects: groups.len(),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_brackets_the_difference_and_grows_with_disagreement() {
        let agreeing: Vec<(f64, usize)> = (0..10).map(|_| (-0.5, 5)).collect();
        let tight = PriorComparison::from_groups(&agreeing, 1).unwrap();
        assert!((tight.difference + 0.1).abs() < 1e-12);
        assert_eq!(
            (tight.low, tight.high),
            (tight.difference, tight.difference)
        );
        assert_eq!(tight.verdict(), "beats the label prior");
        let spread: Vec<(f64, usize)> = (0..10)
            .map(|i| (if i % 2 == 0 { -2.0 } else { 1.5 }, 5))
            .collect();
        let wide = PriorComparison::from_groups(&spread, 1).unwrap();
        assert!(
            wide.low < wide.difference && wide.difference < wide.high,
            "{wide:?}"
        );
        assert_eq!(wide.verdict(), "not distinguishable from the label prior");
        assert_eq!(wide.subjects, 10);
        // Groups without samples do not count; nothing at all gives no comparison.
        let with_empty = [spread.clone(), vec![(0.0, 0)]].concat();
        assert_eq!(PriorComparison::from_groups(&with_empty, 1), Some(wide));
        assert!(PriorComparison::from_groups(&[(0.0, 0)], 1).is_none());
    }
}
