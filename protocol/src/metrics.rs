//! Metric values as they travel: the means of the six label-distribution metrics
//! ([`DistributionMetrics`], computed in `mpcl_model::metrics`), their sample-weighted sums
//! ([`MetricSums`]) and one participant's evaluation of a global model ([`EvaluationReport`]).
//!
//! Federated evaluation sends sums, not means, so the coordinator's totals divided by the total
//! sample count are exactly the means over all participants' samples. A report flattens to a
//! fixed-length vector ([`EvaluationReport::to_values`]) so that under secure aggregation it can
//! travel inside the masked sum and the coordinator sees only totals.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Mean of each metric over a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DistributionMetrics {
    /// max_c |d_c - p_c| (lower is better).
    pub chebyshev: f64,
    /// sqrt(sum_c (d_c - p_c)^2 / (d_c + p_c)^2) (lower is better).
    pub clark: f64,
    /// sum_c |d_c - p_c| / (d_c + p_c) (lower is better).
    pub canberra: f64,
    /// sum_c d_c ln(d_c / p_c) (lower is better).
    pub kl: f64,
    /// cosine similarity (higher is better).
    pub cosine: f64,
    /// sum_c min(d_c, p_c) (higher is better).
    pub intersection: f64,
    /// Number of samples averaged.
    pub samples: usize,
}

impl DistributionMetrics {
    /// Position of KL in table order: in [`Self::values`], [`MetricSums::sums`] and
    /// `mpcl_model::metrics::pair_metrics`.
    pub const KL: usize = 3;

    /// The six values in table order.
    pub fn values(&self) -> [f64; 6] {
        [
            self.chebyshev,
            self.clark,
            self.canberra,
            self.kl,
            self.cosine,
            self.intersection,
        ]
    }
}

/// Sums of the six metrics over some samples, and how many samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSums {
    /// In [`DistributionMetrics::values`] order.
    pub sums: [f64; 6],
    pub samples: u64,
}

impl MetricSums {
    /// Values of one flattened `MetricSums` (six sums and the count).
    pub const LEN: usize = 7;

    /// Adds one sample's six metric values.
    pub fn add_sample(&mut self, values: [f64; 6]) {
        for (sum, value) in self.sums.iter_mut().zip(values) {
            *sum += value;
        }
        self.samples += 1;
    }

    /// Adds another set of sums (another participant's).
    pub fn merge(&mut self, other: &MetricSums) {
        for (sum, value) in self.sums.iter_mut().zip(other.sums) {
            *sum += value;
        }
        self.samples += other.samples;
    }

    /// The means (zeros when there are no samples).
    pub fn means(&self) -> DistributionMetrics {
        let n = self.samples.max(1) as f64;
        DistributionMetrics {
            chebyshev: self.sums[0] / n,
            clark: self.sums[1] / n,
            canberra: self.sums[2] / n,
            kl: self.sums[3] / n,
            cosine: self.sums[4] / n,
            intersection: self.sums[5] / n,
            samples: self.samples as usize,
        }
    }
}

/// A report that cannot be right.
#[derive(Debug, Error, PartialEq)]
pub enum EvaluationReportError {
    #[error("{0} values, an evaluation report has {n}", n = EvaluationReport::LEN)]
    Length(usize),
    #[error("value {index} ({value}) is not a finite non-negative number")]
    BadValue { index: usize, value: f64 },
    #[error("a sample count ({0}) is not a whole number")]
    BadCount(f64),
}

/// One participant's evaluation of a global model: the six metrics' sums on its validation part
/// (used to choose the best round) and on its test part, and the same for the label prior
/// (the mean training label of the federation) on the same samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub validation: MetricSums,
    pub test: MetricSums,
    pub prior_validation: MetricSums,
    pub prior_test: MetricSums,
}

impl EvaluationReport {
    /// Values of a flattened report.
    pub const LEN: usize = 4 * MetricSums::LEN;

    fn parts(&self) -> [&MetricSums; 4] {
        [
            &self.validation,
            &self.test,
            &self.prior_validation,
            &self.prior_test,
        ]
    }

    /// Adds another participant's report.
    pub fn merge(&mut self, other: &EvaluationReport) {
        self.validation.merge(&other.validation);
        self.test.merge(&other.test);
        self.prior_validation.merge(&other.prior_validation);
        self.prior_test.merge(&other.prior_test);
    }

    /// The report as [`Self::LEN`] numbers (per part: six sums, then the count), the layout in
    /// which it joins a masked sum.
    pub fn to_values(&self) -> Vec<f64> {
        let mut values = Vec::with_capacity(Self::LEN);
        for part in self.parts() {
            values.extend(part.sums);
            values.push(part.samples as f64);
        }
        values
    }

    /// The report from [`Self::to_values`]'s layout (a single report or a sum of them); every
    /// value must be finite and non-negative and every count whole.
    pub fn from_values(values: &[f64]) -> Result<Self, EvaluationReportError> {
        if values.len() != Self::LEN {
            return Err(EvaluationReportError::Length(values.len()));
        }
        if let Some((index, &value)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(EvaluationReportError::BadValue { index, value });
        }
        let part = |i: usize| -> Result<MetricSums, EvaluationReportError> {
            let chunk = &values[i * MetricSums::LEN..(i + 1) * MetricSums::LEN];
            let count = chunk[6];
            if count.fract() != 0.0 || count > u64::MAX as f64 {
                return Err(EvaluationReportError::BadCount(count));
            }
            let mut sums = [0.0; 6];
            sums.copy_from_slice(&chunk[..6]);
            Ok(MetricSums {
                sums,
                samples: count as u64,
            })
        };
        Ok(Self {
            validation: part(0)?,
            test: part(1)?,
            prior_validation: part(2)?,
            prior_test: part(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(scale: f64) -> EvaluationReport {
        let sums = |offset: f64, samples: u64| MetricSums {
            sums: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(|v| (v + offset) * scale),
            samples,
        };
        EvaluationReport {
            validation: sums(0.0, 3),
            test: sums(0.5, 4),
            prior_validation: sums(1.0, 3),
            prior_test: sums(1.5, 4),
        }
    }

    #[test]
    fn a_report_round_trips_through_its_values() {
        let r = report(0.25);
        assert_eq!(r.to_values().len(), EvaluationReport::LEN);
        assert_eq!(EvaluationReport::from_values(&r.to_values()), Ok(r));
    }

    #[test]
    fn the_sum_of_flattened_reports_is_the_flattened_merge() {
        let (a, b) = (report(1.0), report(2.0));
        let summed: Vec<f64> = a
            .to_values()
            .iter()
            .zip(b.to_values())
            .map(|(x, y)| x + y)
            .collect();
        let mut merged = a;
        merged.merge(&b);
        assert_eq!(EvaluationReport::from_values(&summed), Ok(merged));
        assert_eq!(merged.test.samples, 8);
        // Means of the merge are sample-weighted: (4.5 * 1 + 4.5 * 2) / 8 for KL on test.
        assert_eq!(merged.test.means().kl, (4.5 + 9.0) / 8.0);
    }

    #[test]
    fn impossible_values_are_refused() {
        let mut values = report(1.0).to_values();
        values[3] = f64::NAN;
        assert!(matches!(
            EvaluationReport::from_values(&values),
            Err(EvaluationReportError::BadValue { index: 3, .. })
        ));
        let mut values = report(1.0).to_values();
        values[6] = 2.5;
        assert_eq!(
            EvaluationReport::from_values(&values),
            Err(EvaluationReportError::BadCount(2.5))
        );
        assert_eq!(
            EvaluationReport::from_values(&[0.0; 3]),
            Err(EvaluationReportError::Length(3))
        );
    }
}
