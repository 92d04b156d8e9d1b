//! The six label-distribution-learning metrics (Geng, 2016), computed on every test sample and
//! averaged; never on a subset.
//!
//! Zero handling, so that every metric is defined for every pair of distributions:
//! - Clark and Canberra: a term whose denominator `d_c + p_c` is zero is `0/0` and counts as 0
//!   (both distributions agree that the emotion is absent).
//! - KL(d || p): terms with `d_c = 0` are 0 (the limit of `x ln x`); `p_c` is floored at
//!   `1e-12` so a confident wrong prediction gives a large finite value instead of infinity.
//! - Cosine: if either vector is all zeros the similarity is 0.

/// Floor for `p_c` inside the KL logarithm.
pub const KL_EPSILON: f64 = 1e-12;

/// The metric means and sums live in the protocol crate, because federated evaluation sends
/// them; they are re-exported here where they are computed.
pub use mpcl_protocol::metrics::{DistributionMetrics, MetricSums};

/// The metric names in table order, with whether higher is better.
pub const METRIC_NAMES: [(&str, bool); 6] = [
    ("chebyshev", false),
    ("clark", false),
    ("canberra", false),
    ("kl", false),
    ("cosine", true),
    ("intersection", true),
];

/// The six metrics of one (label, prediction) pair.
pub fn pair_metrics(label: &[f32], prediction: &[f32]) -> [f64; 6] {
    let mut chebyshev = 0.0f64;
    let mut clark = 0.0;
    let mut canberra = 0.0;
    let mut kl = 0.0;
    let (mut dot, mut norm_d, mut norm_p) = (0.0, 0.0, 0.0);
    let mut intersection = 0.0;
    for (&d, &p) in label.iter().zip(prediction) {
        let (d, p) = (f64::from(d), f64::from(p));
        let diff = (d - p).abs();
        chebyshev = chebyshev.max(diff);
        let sum = d + p;
        if sum > 0.0 {
            clark += (diff / sum).powi(2);
            canberra += diff / sum;
        }
        if d > 0.0 {
            kl += d * (d / p.max(KL_EPSILON)).ln();
        }
        dot += d * p;
        norm_d += d * d;
        norm_p += p * p;
        intersection += d.min(p);
    }
    let cosine = if norm_d > 0.0 && norm_p > 0.0 {
        dot / (norm_d.sqrt() * norm_p.sqrt())
    } else {
        0.0
    };
    [chebyshev, clark.sqrt(), canberra, kl, cosine, intersection]
}

/// Sums of the metrics over all `(label, prediction)` pairs, and their count: what a
/// participant reports in federated evaluation.
pub fn metric_sums<'a>(pairs: impl IntoIterator<Item = (&'a [f32], &'a [f32])>) -> MetricSums {
    let mut sums = MetricSums::default();
    for (label, prediction) in pairs {
        sums.add_sample(pair_metrics(label, prediction));
    }
    sums
}

/// Mean metrics over all `(label, prediction)` pairs.
pub fn evaluate<'a>(
    pairs: impl IntoIterator<Item = (&'a [f32], &'a [f32])>,
) -> DistributionMetrics {
    metric_sums(pairs).means()
}

/// Metrics of the label-prior baseline: predicting `prior` for every sample of `labels`.
pub fn label_prior_metrics<'a>(
    labels: impl IntoIterator<Item = &'a [f32]>,
    prior: &'a [f32],
) -> DistributionMetrics {
    evaluate(labels.into_iter().map(|label| (label, prior)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn hand_computed_values() {
        // d = (0.5, 0.5, 0), p = (0.25, 0.25, 0.5)
        let [chebyshev, clark, canberra, kl, cosine, intersection] =
            pair_metrics(&[0.5, 0.5, 0.0], &[0.25, 0.25, 0.5]);
        close(chebyshev, 0.5);
        // (0.25/0.75)^2 * 2 + (0.5/0.5)^2 = 2/9 + 1
        close(clark, (2.0f64 / 9.0 + 1.0).sqrt());
        // 0.25/0.75 * 2 + 1
        close(canberra, 2.0 / 3.0 + 1.0);
        // 0.5 ln 2 * 2
        close(kl, 2.0f64.ln());
        // 0.25 / (sqrt(0.5) * sqrt(0.375))
        close(cosine, 0.25 / (0.5f64.sqrt() * 0.375f64.sqrt()));
        close(intersection, 0.5);
    }

    #[test]
    fn identical_distributions_are_perfect() {
        let d = [0.2f32, 0.3, 0.5, 0.0];
        let [chebyshev, clark, canberra, kl, cosine, intersection] = pair_metrics(&d, &d);
        close(chebyshev, 0.0);
        close(clark, 0.0);
        close(canberra, 0.0);
        close(kl, 0.0);
        assert!((cosine - 1.0).abs() < 1e-6);
        assert!((intersection - 1.0).abs() < 1e-6);
    }

    #[test]
    fn zero_prediction_where_label_has_mass_is_large_but_finite() {
        let [_, clark, canberra, kl, _, _] = pair_metrics(&[1.0, 0.0], &[0.0, 1.0]);
        close(clark, 2.0f64.sqrt());
        close(canberra, 2.0);
        assert!(kl.is_finite() && kl > 20.0);
    }

    #[test]
    fn evaluation_averages_every_sample() {
        let labels = [vec![1.0f32, 0.0], vec![0.0, 1.0]];
        let prior = [0.5f32, 0.5];
        let metrics = label_prior_metrics(labels.iter().map(|l| l.as_slice()), &prior);
        assert_eq!(metrics.samples, 2);
        close(metrics.kl, 2.0f64.ln());
        close(metrics.intersection, 0.5);
        close(metrics.chebyshev, 0.5);
    }
}
