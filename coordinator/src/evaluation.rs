//! The coordinator's side of federated evaluation, as pure functions and plain data: the
//! `[evaluation]` settings, the order-independent totals of the participants' reports for a
//! round, the round's federated metrics, the choice of the best round (on validation KL, never
//! on test), and the final table beside the label prior.
//!
//! Participants send sample-weighted sums ([`EvaluationReport`]); the totals divided by the
//! total counts are the means over every evaluated sample of the federation. Totals are exact
//! sums ([`ExactSum`]), so they do not depend on the order in which reports arrive and the
//! in-process simulation and a networked run agree. Under secure aggregation a report travels
//! inside the masked sum in [`EvaluationReport::to_values`]'s layout and the coordinator gets
//! only the unmasked total, which [`EvaluationTotals::from_summed_values`] reads.

use std::collections::BTreeMap;

use mpcl_protocol::messages::EvaluationSplit;
use mpcl_protocol::metrics::{DistributionMetrics, EvaluationReport, EvaluationReportError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::exact_sum::{ExactSum, ExactSumError};
use crate::prior_comparison::PriorComparison;
use crate::round::ParticipantId;

/// The `[evaluation]` settings of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Whether participants keep data out of training and evaluate the global models (default
    /// on).
    pub enabled: bool,
    /// Share of each participant's trials kept out of training as its test part (default 0.25).
    pub test_fraction: f64,
    /// Share of the remaining (training) trials kept as the validation part, used only to
    /// choose the best round (default 0.2).
    pub validation_fraction: f64,
    /// Evaluate after every `every_rounds`-th round, and always after the last (default 1).
    pub every_rounds: u64,
    /// Share of a round's sampled participants that evaluate, in (0, 1] (default 1: all). The
    /// final evaluation asks this share of every connected participant.
    pub evaluate_fraction: f64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            test_fraction: 0.25,
            validation_fraction: 0.2,
            every_rounds: 1,
            evaluate_fraction: 1.0,
        }
    }
}

/// An `[evaluation]` setting out of range.
#[derive(Debug, Error, PartialEq)]
#[error("[evaluation] {field} = {value}: {reason}")]
pub struct EvaluationConfigError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl EvaluationConfig {
    /// No federated evaluation (participants train on all their data): for benchmarks that
    /// measure the protocol alone.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), EvaluationConfigError> {
        let open_unit = |field, value: f64| {
            if value > 0.0 && value < 1.0 {
                Ok(())
            } else {
                Err(EvaluationConfigError {
                    field,
                    value: value.to_string(),
                    reason: "must be strictly between 0 and 1",
                })
            }
        };
        open_unit("test_fraction", self.test_fraction)?;
        open_unit("validation_fraction", self.validation_fraction)?;
        if self.every_rounds == 0 {
            return Err(EvaluationConfigError {
                field: "every_rounds",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if !(self.evaluate_fraction > 0.0 && self.evaluate_fraction <= 1.0) {
            return Err(EvaluationConfigError {
                field: "evaluate_fraction",
                value: self.evaluate_fraction.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        Ok(())
    }

    /// The split every participant makes of its data (`None` when evaluation is off).
    pub fn split(&self) -> Option<EvaluationSplit> {
        self.enabled.then_some(EvaluationSplit {
            test_fraction: self.test_fraction,
            validation_fraction: self.validation_fraction,
        })
    }

    /// Whether the global model after `round` (0 = the initial model) of `rounds` is evaluated.
    pub fn is_due(&self, round: u64, rounds: u64) -> bool {
        round == rounds || (self.every_rounds > 0 && round.is_multiple_of(self.every_rounds))
    }

    /// How many of `sampled` participants evaluate (at least one).
    pub fn evaluators(&self, sampled: usize) -> usize {
        ((sampled as f64 * self.evaluate_fraction).ceil() as usize).clamp(1, sampled.max(1))
    }
}

/// A report or sum that cannot be added.
#[derive(Debug, Error, PartialEq)]
pub enum EvaluationError {
    #[error("evaluation report: {0}")]
    Report(#[from] EvaluationReportError),
    #[error("evaluation report out of range: {0}")]
    Range(#[from] ExactSumError),
}

/// The exact running total of one round's reports.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationTotals {
    sum: ExactSum,
    reports: usize,
    /// Each participant's test `(sum of KL(model) - KL(prior), samples)`, by participant id,
    /// for the interval over participants; empty when the reports arrived summed.
    test_differences: BTreeMap<ParticipantId, (f64, usize)>,
}

impl Default for EvaluationTotals {
    fn default() -> Self {
        Self {
            sum: ExactSum::zeros(EvaluationReport::LEN),
            reports: 0,
            test_differences: BTreeMap::new(),
        }
    }
}

impl EvaluationTotals {
    /// Adds `participant`'s report (checked: finite, non-negative, whole counts).
    pub fn add(
        &mut self,
        participant: ParticipantId,
        report: &EvaluationReport,
    ) -> Result<(), EvaluationError> {
        let values = report.to_values();
        EvaluationReport::from_values(&values)?;
        self.sum.add(values.iter().copied())?;
        self.reports += 1;
        self.test_differences.insert(
            participant,
            (
                report.test.sums[DistributionMetrics::KL]
                    - report.prior_test.sums[DistributionMetrics::KL],
                report.test.samples as usize,
            ),
        );
        Ok(())
    }

    /// Totals that arrived already summed (secure aggregation), from `reports` participants.
    pub fn from_summed_values(values: &[f64], reports: usize) -> Result<Self, EvaluationError> {
        let mut totals = Self::default();
        EvaluationReport::from_values(values)?;
        totals.sum.add(values.iter().copied())?;
        totals.reports = reports;
        Ok(totals)
    }

    /// Reports added.
    pub fn reports(&self) -> usize {
        self.reports
    }

    /// The round's federated metrics. The interval over participants needs each one's own
    /// report, so under secure aggregation (totals only) there is none, nor with fewer than two
    /// participants; the bootstrap is seeded by the round and resamples in participant order,
    /// so it does not depend on the order in which reports arrived.
    pub fn finish(&self, round: u64) -> Result<FederatedMetrics, EvaluationError> {
        let total = EvaluationReport::from_values(&self.sum.to_f64())?;
        let groups: Vec<(f64, usize)> = self
            .test_differences
            .values()
            .copied()
            .filter(|&(_, samples)| samples > 0)
            .collect();
        let prior_comparison = if groups.len() >= 2 {
            PriorComparison::from_groups(&groups, round)
        } else {
            None
        };
        Ok(FederatedMetrics {
            round,
            clients: self.reports,
            validation: total.validation.means(),
            test: total.test.means(),
            prior_validation: total.prior_validation.means(),
            prior_test: total.prior_test.means(),
            prior_comparison,
        })
    }
}

/// The global model's metrics after one round, over every evaluating participant's samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FederatedMetrics {
    pub round: u64,
    /// Participants whose reports are in the totals.
    pub clients: usize,
    pub validation: DistributionMetrics,
    pub test: DistributionMetrics,
    /// The label prior on the same validation and test samples.
    pub prior_validation: DistributionMetrics,
    pub prior_test: DistributionMetrics,
    /// Test KL minus the prior's, with a 95% bootstrap interval over participants; `None` when
    /// the coordinator saw only totals (secure aggregation) or fewer than two participants.
    #[serde(default)]
    pub prior_comparison: Option<PriorComparison>,
}

/// The best round: the lowest validation KL (the earliest among equals; rounds evaluated on no
/// validation sample do not compete). Test metrics are never read, so they cannot leak into
/// model selection.
pub fn best_round(history: &[FederatedMetrics]) -> Option<u64> {
    history
        .iter()
        .filter(|m| m.validation.samples > 0)
        .map(|m| (m.round, m.validation.kl))
        .filter(|(_, kl)| kl.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .map(|(round, _)| round)
}

/// One row of the final table.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalRow {
    /// What the row is (`global model, last round (20)`, `label prior`).
    pub name: String,
    /// Its metrics on the evaluating participants' test parts.
    pub test: DistributionMetrics,
    /// Its test KL against the label prior on the same samples, with the interval over
    /// participants (`None` for the prior itself, and see [`FederatedMetrics::prior_comparison`]).
    pub prior_comparison: Option<PriorComparison>,
}

/// The rows of the final table: the global model at the last round and at the best round, and
/// the label prior, each on the test parts (`None` when nothing was evaluated).
pub fn final_rows(history: &[FederatedMetrics]) -> Option<Vec<FinalRow>> {
    let last = history.iter().max_by_key(|m| m.round)?;
    let best_round = best_round(history)?;
    let best = history.iter().find(|m| m.round == best_round)?;
    Some(vec![
        FinalRow {
            name: format!("global model, last round ({})", last.round),
            test: last.test,
            prior_comparison: last.prior_comparison,
        },
        FinalRow {
            name: format!("global model, best round ({best_round}, by validation KL)"),
            test: best.test,
            prior_comparison: best.prior_comparison,
        },
        FinalRow {
            name: "label prior".to_string(),
            test: last.prior_test,
            prior_comparison: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpcl_protocol::metrics::MetricSums;

    fn id(index: u64) -> ParticipantId {
        ParticipantId::from_index(index)
    }

    fn sums(kl: f64, samples: u64) -> MetricSums {
        MetricSums {
            sums: [0.1, 0.2, 0.3, kl, 0.5, 0.6].map(|v| v * samples as f64),
            samples,
        }
    }

    fn report(validation_kl: f64, test_kl: f64, samples: u64) -> EvaluationReport {
        EvaluationReport {
            validation: sums(validation_kl, samples),
            test: sums(test_kl, samples),
            prior_validation: sums(0.9, samples),
            prior_test: sums(0.9, samples),
        }
    }

    fn round(number: u64, validation_kl: f64, test_kl: f64) -> FederatedMetrics {
        let mut totals = EvaluationTotals::default();
        totals
            .add(id(0), &report(validation_kl, test_kl, 4))
            .unwrap();
        totals.finish(number).unwrap()
    }

    #[test]
    fn totals_are_sample_weighted_and_order_independent() {
        let (a, b) = (report(0.2, 0.3, 2), report(0.5, 0.6, 6));
        let mut ab = EvaluationTotals::default();
        ab.add(id(0), &a).unwrap();
        ab.add(id(1), &b).unwrap();
        let mut ba = EvaluationTotals::default();
        ba.add(id(1), &b).unwrap();
        ba.add(id(0), &a).unwrap();
        let (m_ab, m_ba) = (ab.finish(3).unwrap(), ba.finish(3).unwrap());
        assert_eq!(m_ab, m_ba);
        assert_eq!(m_ab.clients, 2);
        assert_eq!(m_ab.test.samples, 8);
        assert!((m_ab.validation.kl - (0.2 * 2.0 + 0.5 * 6.0) / 8.0).abs() < 1e-15);
        // The same totals, arriving summed (secure aggregation), give the same metrics.
        let summed: Vec<f64> = a
            .to_values()
            .iter()
            .zip(b.to_values())
            .map(|(x, y)| x + y)
            .collect();
        let secure = EvaluationTotals::from_summed_values(&summed, 2).unwrap();
        let m_secure = secure.finish(3).unwrap();
        assert!((m_secure.validation.kl - m_ab.validation.kl).abs() < 1e-15);
        let mut bad = report(0.2, 0.3, 2);
        bad.test.sums[0] = f64::INFINITY;
        assert!(ab.add(id(2), &bad).is_err());
        assert_eq!(ab.reports(), 2, "a refused report adds nothing");
    }

    #[test]
    fn the_best_round_never_reads_test_metrics() {
        let history = vec![round(1, 0.8, 0.7), round(2, 0.4, 0.5), round(3, 0.6, 0.1)];
        assert_eq!(best_round(&history), Some(2));
        // Corrupt every test metric (as if test labels were wrong): the choice stays.
        let mut corrupted = history.clone();
        for (m, kl) in corrupted.iter_mut().zip([0.0, 99.0, -5.0]) {
            m.test.kl = kl;
            m.test.cosine = f64::NAN;
        }
        assert_eq!(best_round(&corrupted), Some(2));
        let rows = final_rows(&history).unwrap();
        assert_eq!(rows[0].name, "global model, last round (3)");
        assert_eq!(rows[0].test, history[2].test);
        assert_eq!(
            rows[1].name,
            "global model, best round (2, by validation KL)"
        );
        assert_eq!(rows[1].test, history[1].test);
        assert_eq!(rows[2].test, history[2].prior_test);
        assert_eq!(rows[2].prior_comparison, None);
        assert_eq!(final_rows(&[]), None);
    }

    #[test]
    fn settings_are_checked_and_the_last_round_is_always_due() {
        let config = EvaluationConfig {
            every_rounds: 3,
            evaluate_fraction: 0.5,
            ..EvaluationConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let due: Vec<u64> = (1..=7).filter(|r| config.is_due(*r, 7)).collect();
        assert_eq!(due, vec![3, 6, 7]);
        assert_eq!(config.evaluators(5), 3);
        assert_eq!(config.evaluators(1), 1);
        for broken in [
            EvaluationConfig {
                test_fraction: 1.0,
                ..EvaluationConfig::default()
            },
            EvaluationConfig {
                every_rounds: 0,
                ..EvaluationConfig::default()
            },
            EvaluationConfig {
                evaluate_fraction: 0.0,
                ..EvaluationConfig::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
