//! Combining one round's client updates into the next global state.
//!
//! Three things are combined, each its own way:
//!
//! * **Encoder deltas.** FedAvg and FedAdam need only the sample-weighted mean, so updates are
//!   folded into a running weighted sum (one value per parameter) and a total weight as they
//!   arrive: memory is independent of the number of clients. FedAdam then feeds the mean as
//!   a pseudo-gradient to a server-side Adam whose moments ([`FedAdamState`]) live across rounds.
//!   Coordinate-wise median and trimmed mean cannot be computed from a running sum: those rules
//!   buffer each accepted delta (as a flat `f32` vector), so their memory grows with the cohort
//!   size. Both robust rules are unweighted, so a client cannot buy influence by claiming a large
//!   sample count.
//! * **Prototype banks.** Statistics (S, W) are additive, so they are summed as they arrive
//!   (whatever the delta rule). The new bank per group is
//!   `blend * previous + (1 - blend) * sum S / sum W` for every (emotion, prototype) with
//!   `sum W > 0`; where no client sent mass the previous prototype is kept.
//! * **Co-occurrence.** Statistics are summed as they arrive; the global statistics are
//!   **replaced** each round by the round's merged sum and count (clients' label distributions do
//!   not change between rounds, so accumulating across rounds would over-count clients sampled
//!   often). A round whose clients sent no co-occurrence samples (count 0) keeps the previous
//!   statistics instead of wiping them.
//!
//! Every running sum is an [`ExactSum`]: the result does not depend on the order in which
//! updates arrive, so a networked run, an in-process simulation of it and a run resumed from a
//! checkpoint compute bit-identical global states from the same updates.
//!
//! # Privacy
//!
//! A [`ContributionPolicy`] may clip each delta to an L2 bound and weight every client the same
//! (what differential privacy needs: the noise is calibrated to one client's clipped
//! contribution, so no client may enter the sum with a weight above 1). Gaussian noise goes on
//! the running sum ([`RoundAggregator::add_sum_noise`]) before it is divided by the number of
//! contributors. Under secure aggregation the coordinator never sees single updates: the
//! unmasked sum of the round goes in at once ([`RoundAggregator::add_sum`]) and is combined
//! exactly like the sum FedAvg accumulates update by update.

use mpcl_protocol::messages::{ClientUpdate, GlobalState, PrototypeBank};
use mpcl_protocol::secure_aggregation::SummedUpdate;
use mpcl_protocol::{
    CooccurrenceStatistics, F32Vec, ParameterSetError, PrototypeStatistics, StatisticsError,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{AggregationConfig, AggregationRule};
use crate::exact_sum::{ExactSum, ExactSumError};
pub use mpcl_protocol::privacy_noise::ContributionPolicy;

use crate::privacy::{add_gaussian_noise, clip_update};

/// Errors from accumulating or finishing a round. Updates are validated before they get here
/// ([`crate::validate::validate_update`]), so these indicate a caller mistake, never bad client
/// input slipping through.
#[derive(Debug, Error, PartialEq)]
pub enum AggregationError {
    /// An update does not fit the layout the aggregator was built for.
    #[error("update does not fit the round's layout: {0}")]
    Layout(String),
    /// Parameter arithmetic failed.
    #[error(transparent)]
    Parameters(#[from] ParameterSetError),
    /// Statistics arithmetic failed.
    #[error(transparent)]
    Statistics(#[from] StatisticsError),
    /// Nothing was accumulated.
    #[error("no update was accumulated in this round")]
    Empty,
    /// The FedAdam state does not match the model (for example a checkpoint of another model).
    #[error("FedAdam state holds {found} values, the model has {expected}")]
    OptimizerState { expected: usize, found: usize },
    /// The rule needs every update on its own (median, trimmed mean), so a sum or noise on the
    /// sum cannot be used.
    #[error("the `{0}` rule needs every update in the clear; it cannot aggregate a sum")]
    NeedsIndividualUpdates(&'static str),
    /// A value is beyond what the exact running sums hold.
    #[error(transparent)]
    Range(#[from] ExactSumError),
}

/// FedAdam's server-side moments, kept across rounds (and in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FedAdamState {
    /// First moment m, one value per parameter.
    pub m: Vec<f32>,
    /// Second moment v, one value per parameter.
    pub v: Vec<f32>,
    /// Number of server steps taken.
    pub steps: u64,
}

impl FedAdamState {
    /// Fresh moments for `len` parameters: m = 0 and v = tau^2 (Reddi et al. 2021, Algorithm 2:
    /// `v_{-1} >= tau^2`).
    pub fn new(len: usize, epsilon: f64) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![(epsilon * epsilon) as f32; len],
            steps: 0,
        }
    }
}

enum DeltaAccumulator {
    /// Running `sum_i n_i * delta_i` and `sum_i n_i` (one coordinate).
    Weighted {
        sum: ExactSum,
        total_weight: ExactSum,
    },
    /// Every accepted delta, flat.
    Buffered { deltas: Vec<Vec<f32>> },
}

/// Accumulates one round's accepted updates.
pub struct RoundAggregator {
    deltas: DeltaAccumulator,
    parameter_count: usize,
    prototypes: Vec<PrototypeSums>,
    cooccurrence: CooccurrenceSums,
    accepted: usize,
    total_samples: u64,
    policy: ContributionPolicy,
    clipped: usize,
}

/// The result of a round's aggregation.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The new global state.
    pub state: GlobalState,
    /// L2 norm of the change applied to the encoder parameters.
    pub applied_norm: f64,
    /// L2 norm of the combined client delta (before any server optimizer).
    pub combined_delta_norm: f64,
}

impl RoundAggregator {
    /// An empty accumulator for updates trained from `global`, combined by `rule` (sample-count
    /// weights, no clipping).
    pub fn new(global: &GlobalState, rule: &AggregationRule) -> Self {
        Self::with_policy(global, rule, ContributionPolicy::default())
    }

    /// An empty accumulator whose updates are clipped and weighted as `policy` says.
    pub fn with_policy(
        global: &GlobalState,
        rule: &AggregationRule,
        policy: ContributionPolicy,
    ) -> Self {
        let parameter_count = global.parameters.value_count();
        let deltas = if rule.buffers_updates() {
            DeltaAccumulator::Buffered { deltas: Vec::new() }
        } else {
            DeltaAccumulator::Weighted {
                sum: ExactSum::zeros(parameter_count),
                total_weight: ExactSum::zeros(1),
            }
        };
        Self {
            deltas,
            parameter_count,
            prototypes: global
                .prototypes
                .iter()
                .map(|b| {
                    PrototypeSums::zeros(&PrototypeStatistics::zeros(
                        &b.group,
                        b.emotions,
                        b.prototypes,
                        b.width,
                    ))
                })
                .collect(),
            cooccurrence: CooccurrenceSums::zeros(global.cooccurrence.emotions),
            accepted: 0,
            total_samples: 0,
            policy,
            clipped: 0,
        }
    }

    /// How updates are clipped and weighted.
    pub fn policy(&self) -> ContributionPolicy {
        self.policy
    }

    /// Number of accumulated updates that clipping scaled down.
    pub fn clipped(&self) -> usize {
        self.clipped
    }

    /// Number of updates accumulated.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// The exact sum of the accepted co-occurrence statistics, rounded to `f32` once.
    pub fn cooccurrence_total(&self) -> CooccurrenceStatistics {
        self.cooccurrence.total()
    }

    /// Sum of the accumulated updates' sample counts.
    pub fn total_samples(&self) -> u64 {
        self.total_samples
    }

    /// Number of deltas held in memory (0 for the streaming rules).
    pub fn buffered_updates(&self) -> usize {
        match &self.deltas {
            DeltaAccumulator::Weighted { .. } => 0,
            DeltaAccumulator::Buffered { deltas } => deltas.len(),
        }
    }

    /// Folds one (validated) update in. Either all of it is accumulated or, on error, none.
    pub fn add(&mut self, update: &ClientUpdate) -> Result<(), AggregationError> {
        if update.delta.value_count() != self.parameter_count {
            return Err(AggregationError::Layout(format!(
                "delta has {} values, the model {}",
                update.delta.value_count(),
                self.parameter_count
            )));
        }
        let mut targets = Vec::with_capacity(update.prototypes.len());
        for stats in &update.prototypes {
            let Some(index) = self
                .prototypes
                .iter()
                .position(|p| p.shape.group == stats.group)
            else {
                return Err(AggregationError::Layout(format!(
                    "no prototype bank for group `{}`",
                    stats.group
                )));
            };
            if !self.prototypes[index].fits(stats) || targets.contains(&index) {
                return Err(AggregationError::Layout(format!(
                    "prototype statistics of group `{}` do not fit",
                    stats.group
                )));
            }
            targets.push(index);
        }
        if !self.cooccurrence.fits(&update.cooccurrence) {
            return Err(AggregationError::Layout(
                "co-occurrence statistics do not fit".into(),
            ));
        }

        let clipped_delta = self.policy.clip_norm.and_then(|clip| {
            let mut delta = update.delta.clone();
            clip_update(&mut delta, clip).clipped().then_some(delta)
        });
        let delta = clipped_delta.as_ref().unwrap_or(&update.delta);
        let weight = self.policy.weight(update.sample_count) as f64;
        // The small parts are range-checked first; the delta's sum checks the delta before adding
        // any of it. So either all of the update is accumulated or none, with one range pass
        // over the delta.
        if let DeltaAccumulator::Weighted { total_weight, .. } = &self.deltas {
            total_weight.check_scaled(1.0, [weight])?;
        }
        for (stats, &index) in update.prototypes.iter().zip(&targets) {
            self.prototypes[index].check(stats)?;
        }
        self.cooccurrence.check(&update.cooccurrence)?;
        match &mut self.deltas {
            DeltaAccumulator::Weighted { sum, total_weight } => {
                sum.add_scaled_slices(weight, delta.tensors.iter().map(|t| t.values.as_slice()))?;
                total_weight.add([weight])?;
            }
            DeltaAccumulator::Buffered { deltas } => deltas.push(delta.to_flat()),
        }
        for (stats, index) in update.prototypes.iter().zip(targets) {
            self.prototypes[index].add(stats)?;
        }
        self.cooccurrence.add(&update.cooccurrence)?;
        if clipped_delta.is_some() {
            self.clipped += 1;
        }
        self.accepted += 1;
        self.total_samples = self.total_samples.saturating_add(update.sample_count);
        Ok(())
    }

    /// Folds in the unmasked sum of a secure-aggregation round: `sum.weighted_delta_sum` and
    /// `sum.total_weight` join the running FedAvg numerator and denominator, the summed
    /// statistics are merged, and `sum.contributors` updates count as accepted. Checked first
    /// (lengths, shapes, finite values, positive weight); on error nothing is accumulated.
    /// `total_samples` is raised by `samples` (what the caller knows of the contributors'
    /// sample counts; the sum itself only carries their weights).
    pub fn add_sum(&mut self, sum: &SummedUpdate, samples: u64) -> Result<(), AggregationError> {
        let DeltaAccumulator::Weighted {
            sum: running,
            total_weight,
        } = &mut self.deltas
        else {
            return Err(AggregationError::NeedsIndividualUpdates(
                "median/trimmed_mean",
            ));
        };
        if sum.weighted_delta_sum.len() != self.parameter_count {
            return Err(AggregationError::Layout(format!(
                "summed delta has {} values, the model {}",
                sum.weighted_delta_sum.len(),
                self.parameter_count
            )));
        }
        if sum.contributors == 0 {
            return Err(AggregationError::Layout(
                "the sum has no contributor".into(),
            ));
        }
        if !(sum.total_weight.is_finite() && sum.total_weight > 0.0) {
            return Err(AggregationError::Layout(format!(
                "the summed weight is {}, must be positive",
                sum.total_weight
            )));
        }
        if sum.weighted_delta_sum.iter().any(|v| !v.is_finite()) {
            return Err(AggregationError::Layout(
                "the summed delta holds a non-finite value".into(),
            ));
        }
        let mut targets = Vec::with_capacity(sum.prototypes.len());
        for stats in &sum.prototypes {
            let index = self
                .prototypes
                .iter()
                .position(|p| p.fits(stats))
                .filter(|i| !targets.contains(i))
                .ok_or_else(|| {
                    AggregationError::Layout(format!(
                        "summed prototype statistics of group `{}` do not fit",
                        stats.group
                    ))
                })?;
            stats.validate()?;
            targets.push(index);
        }
        if !self.cooccurrence.fits(&sum.cooccurrence) {
            return Err(AggregationError::Layout(
                "summed co-occurrence statistics do not fit".into(),
            ));
        }
        sum.cooccurrence.validate()?;

        // As in `add`: the small parts first, the summed delta checks itself before adding.
        total_weight.check_scaled(1.0, [sum.total_weight])?;
        for (stats, &index) in sum.prototypes.iter().zip(&targets) {
            self.prototypes[index].check(stats)?;
        }
        self.cooccurrence.check(&sum.cooccurrence)?;
        running.add(sum.weighted_delta_sum.iter().copied())?;
        total_weight.add([sum.total_weight])?;
        for (stats, index) in sum.prototypes.iter().zip(targets) {
            self.prototypes[index].add(stats)?;
        }
        self.cooccurrence.add(&sum.cooccurrence)?;
        self.accepted += sum.contributors;
        self.total_samples = self.total_samples.saturating_add(samples);
        Ok(())
    }

    /// Adds independent `N(0, std^2)` noise to every coordinate of the running sum of deltas
    /// (before it is divided by the total weight): the central Gaussian mechanism of
    /// differential privacy in plain mode, with `std = noise_multiplier * clip_norm`.
    pub fn add_sum_noise<R: Rng + ?Sized>(
        &mut self,
        std: f64,
        rng: &mut R,
    ) -> Result<(), AggregationError> {
        match &mut self.deltas {
            DeltaAccumulator::Weighted { sum, .. } => {
                let mut noise = vec![0.0; sum.len()];
                add_gaussian_noise(&mut noise, std, rng);
                sum.add(noise)?;
                Ok(())
            }
            DeltaAccumulator::Buffered { .. } => Err(AggregationError::NeedsIndividualUpdates(
                "median/trimmed_mean",
            )),
        }
    }

    /// Combines what was accumulated with the previous global state. `adam` is the FedAdam state
    /// (created on first use; untouched by the other rules).
    pub fn finish(
        self,
        previous: &GlobalState,
        config: &AggregationConfig,
        adam: &mut Option<FedAdamState>,
    ) -> Result<Aggregate, AggregationError> {
        if self.accepted == 0 {
            return Err(AggregationError::Empty);
        }
        let combined: Vec<f64> = match self.deltas {
            DeltaAccumulator::Weighted { sum, total_weight } => {
                let total_weight = total_weight.to_f64()[0];
                sum.to_f64().into_iter().map(|s| s / total_weight).collect()
            }
            DeltaAccumulator::Buffered { deltas } => match config.rule {
                AggregationRule::TrimmedMean { trim_fraction } => {
                    coordinate_trimmed_mean(&deltas, trim_fraction)
                }
                _ => coordinate_median(&deltas),
            },
        };
        let combined_delta_norm = combined.iter().map(|v| v * v).sum::<f64>().sqrt();

        let step: Vec<f64> = match config.rule {
            AggregationRule::FedAdam {
                server_lr,
                beta1,
                beta2,
                epsilon,
            } => {
                let state = adam.get_or_insert_with(|| FedAdamState::new(combined.len(), epsilon));
                fedadam_step(state, &combined, server_lr, beta1, beta2, epsilon)?
            }
            _ => combined,
        };
        let applied_norm = step.iter().map(|v| v * v).sum::<f64>().sqrt();

        let new_values: Vec<f32> = previous
            .parameters
            .iter_values()
            .zip(&step)
            .map(|(x, d)| (f64::from(x) + d) as f32)
            .collect();
        let parameters = previous.parameters.with_flat(&new_values)?;

        let prototypes = previous
            .prototypes
            .iter()
            .map(
                |bank| match self.prototypes.iter().find(|s| s.shape.group == bank.group) {
                    Some(sums) => blend_prototypes(bank, &sums.total(), config.prototype_blend),
                    None => Ok(bank.clone()),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;

        let cooccurrence = self.cooccurrence.total();
        let cooccurrence = if cooccurrence.count > 0.0 {
            cooccurrence
        } else {
            previous.cooccurrence.clone()
        };

        Ok(Aggregate {
            state: GlobalState {
                parameters,
                prototypes,
                cooccurrence,
            },
            applied_norm,
            combined_delta_norm,
        })
    }
}

/// Exact running sums of one group's prototype statistics.
struct PrototypeSums {
    shape: PrototypeStatistics,
    sum: ExactSum,
    weight: ExactSum,
}

impl PrototypeSums {
    /// Zero sums shaped like `shape` (whose values are ignored).
    fn zeros(shape: &PrototypeStatistics) -> Self {
        Self {
            shape: shape.clone(),
            sum: ExactSum::zeros(shape.sum.len()),
            weight: ExactSum::zeros(shape.weight.len()),
        }
    }

    /// Whether `stats` has this bank's group and shape.
    fn fits(&self, stats: &PrototypeStatistics) -> bool {
        let s = &self.shape;
        s.group == stats.group
            && (s.emotions, s.prototypes, s.width)
                == (stats.emotions, stats.prototypes, stats.width)
            && s.sum.len() == stats.sum.len()
            && s.weight.len() == stats.weight.len()
    }

    fn check(&self, stats: &PrototypeStatistics) -> Result<(), ExactSumError> {
        self.sum.check_scaled(1.0, stats.sum.0.iter().copied())?;
        self.weight
            .check_scaled(1.0, stats.weight.0.iter().copied())
    }

    fn add(&mut self, stats: &PrototypeStatistics) -> Result<(), ExactSumError> {
        self.check(stats)?;
        self.sum.add(stats.sum.0.iter().copied())?;
        self.weight.add(stats.weight.0.iter().copied())
    }

    /// The summed statistics, rounded to `f32` once.
    fn total(&self) -> PrototypeStatistics {
        PrototypeStatistics {
            sum: F32Vec(self.sum.to_f32()),
            weight: F32Vec(self.weight.to_f32()),
            ..self.shape.clone()
        }
    }
}

/// Exact running sums of co-occurrence statistics.
struct CooccurrenceSums {
    emotions: usize,
    sum: ExactSum,
    count: ExactSum,
}

impl CooccurrenceSums {
    fn zeros(emotions: usize) -> Self {
        Self {
            emotions,
            sum: ExactSum::zeros(emotions * emotions),
            count: ExactSum::zeros(1),
        }
    }

    fn fits(&self, stats: &CooccurrenceStatistics) -> bool {
        stats.emotions == self.emotions && stats.sum.len() == self.sum.len()
    }

    fn check(&self, stats: &CooccurrenceStatistics) -> Result<(), ExactSumError> {
        self.sum.check_scaled(1.0, stats.sum.0.iter().copied())?;
        self.count.check_scaled(1.0, [stats.count])
    }

    fn add(&mut self, stats: &CooccurrenceStatistics) -> Result<(), ExactSumError> {
        self.check(stats)?;
        self.sum.add(stats.sum.0.iter().copied())?;
        self.count.add([stats.count])
    }

    fn total(&self) -> CooccurrenceStatistics {
        CooccurrenceStatistics {
            emotions: self.emotions,
            sum: F32Vec(self.sum.to_f32()),
            count: self.count.to_f64()[0],
        }
    }
}

/// One FedAdam server step on pseudo-gradient `delta`; returns the parameter change
/// `eta * m / (sqrt(v) + tau)` (Reddi et al. 2021, Algorithm 2, without bias correction).
pub fn fedadam_step(
    state: &mut FedAdamState,
    delta: &[f64],
    server_lr: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
) -> Result<Vec<f64>, AggregationError> {
    if state.m.len() != delta.len() || state.v.len() != delta.len() {
        return Err(AggregationError::OptimizerState {
            expected: delta.len(),
            found: state.m.len().min(state.v.len()),
        });
    }
    let mut step = Vec::with_capacity(delta.len());
    for ((m, v), d) in state.m.iter_mut().zip(state.v.iter_mut()).zip(delta) {
        let new_m = beta1 * f64::from(*m) + (1.0 - beta1) * d;
        let new_v = beta2 * f64::from(*v) + (1.0 - beta2) * d * d;
        *m = new_m as f32;
        *v = new_v as f32;
        step.push(server_lr * new_m / (new_v.sqrt() + epsilon));
    }
    state.steps += 1;
    Ok(step)
}

/// Coordinate-wise median of equally long vectors (mean of the two middle values for an even
/// count). Empty input gives an empty result.
pub fn coordinate_median(deltas: &[Vec<f32>]) -> Vec<f64> {
    coordinate_sorted_map(deltas, |sorted| {
        let n = sorted.len();
        if n % 2 == 1 {
            f64::from(sorted[n / 2])
        } else {
            (f64::from(sorted[n / 2 - 1]) + f64::from(sorted[n / 2])) / 2.0
        }
    })
}

/// Coordinate-wise trimmed mean: per coordinate, drop the `floor(trim_fraction * n)` smallest and
/// largest values and average the rest. `trim_fraction` is clamped to [0, 0.5), so at least one
/// value always remains.
pub fn coordinate_trimmed_mean(deltas: &[Vec<f32>], trim_fraction: f64) -> Vec<f64> {
    coordinate_sorted_map(deltas, |sorted| {
        let n = sorted.len();
        let fraction = trim_fraction.clamp(0.0, 0.499_999);
        let trim = ((fraction * n as f64).floor() as usize).min((n - 1) / 2);
        let kept = &sorted[trim..n - trim];
        kept.iter().map(|v| f64::from(*v)).sum::<f64>() / kept.len() as f64
    })
}

fn coordinate_sorted_map(deltas: &[Vec<f32>], f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    let Some(first) = deltas.first() else {
        return Vec::new();
    };
    let len = deltas.iter().map(Vec::len).min().unwrap_or(first.len());
    let mut column = Vec::with_capacity(deltas.len());
    (0..len)
        .map(|i| {
            column.clear();
            column.extend(deltas.iter().map(|d| d[i]));
            column.sort_by(f32::total_cmp);
            f(&column)
        })
        .collect()
}

/// `blend * previous + (1 - blend) * S / W` for each (emotion, prototype) with `W > 0`; the
/// previous prototype where `W = 0`.
pub fn blend_prototypes(
    previous: &PrototypeBank,
    stats: &PrototypeStatistics,
    blend: f64,
) -> Result<PrototypeBank, AggregationError> {
    let width = previous.width;
    let sizes = previous
        .emotions
        .checked_mul(previous.prototypes)
        .and_then(|cells| Some((cells, cells.checked_mul(width)?)));
    let Some((cells, values)) = sizes else {
        return Err(AggregationError::Layout(format!(
            "prototype bank `{}` declares sizes that overflow",
            previous.group
        )));
    };
    if stats.group != previous.group
        || stats.emotions != previous.emotions
        || stats.prototypes != previous.prototypes
        || stats.width != width
        || stats.weight.len() != cells
        || stats.sum.len() != values
        || previous.values.len() != values
    {
        return Err(AggregationError::Layout(format!(
            "prototype statistics of group `{}` do not match the bank `{}`",
            stats.group, previous.group
        )));
    }
    let mut bank = previous.clone();
    for cell in 0..cells {
        let weight = f64::from(stats.weight.0[cell]);
        if weight > 0.0 {
            let range = cell * width..(cell + 1) * width;
            for (value, s) in bank.values.0[range.clone()]
                .iter_mut()
                .zip(&stats.sum.0[range])
            {
                let mean = f64::from(*s) / weight;
                *value = (blend * f64::from(*value) + (1.0 - blend) * mean) as f32;
            }
        }
    }
    Ok(bank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{global, update};
    use mpcl_protocol::F32Vec;

    fn config(rule: AggregationRule, blend: f64) -> AggregationConfig {
        AggregationConfig {
            rule,
            prototype_blend: blend,
        }
    }

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((f64::from(*x) - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn with_delta(g: &GlobalState, samples: u64, delta: &[f32]) -> ClientUpdate {
        let mut u = update(g, 1, samples, 0.0);
        u.delta = g.parameters.with_flat(delta).unwrap();
        u
    }

    #[test]
    fn the_new_state_does_not_depend_on_arrival_order() {
        let g = global();
        // Values whose f32/f64 sums round differently in different orders.
        let updates: Vec<ClientUpdate> = (0..7u64)
            .map(|i| {
                let x = 0.1 + i as f32 * 1e-3;
                let mut u = with_delta(&g, 3 + i, &[x, -x / 3.0, 1e-7 * x, 7.0 * x, x, 0.3]);
                u.prototypes[0].sum.0.iter_mut().for_each(|v| *v = x / 7.0);
                u.prototypes[0]
                    .weight
                    .0
                    .iter_mut()
                    .for_each(|v| *v = 0.3 + x);
                u.cooccurrence.sum.0.iter_mut().for_each(|v| *v = x / 3.0);
                u
            })
            .collect();
        let aggregate = |order: &[usize]| {
            let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
            for &i in order {
                agg.add(&updates[i]).unwrap();
            }
            agg.finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None)
                .unwrap()
                .state
        };
        let forward = aggregate(&[0, 1, 2, 3, 4, 5, 6]);
        for order in [[6, 5, 4, 3, 2, 1, 0], [3, 0, 6, 1, 5, 2, 4]] {
            // PartialEq on the f32 vectors: bit-for-bit (no NaN here).
            assert_eq!(aggregate(&order), forward);
        }
    }

    #[test]
    fn fedavg_weights_by_sample_count() {
        let g = global(); // parameters [1, 2, 3, 4, 0, 0]
        let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        agg.add(&with_delta(&g, 1, &[4.0, 0.0, 0.0, 0.0, 1.0, -1.0]))
            .unwrap();
        agg.add(&with_delta(&g, 3, &[0.0, 4.0, 0.0, 0.0, 1.0, 1.0]))
            .unwrap();
        assert_eq!(agg.buffered_updates(), 0, "FedAvg streams");
        assert_eq!(agg.total_samples(), 4);
        let out = agg
            .finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None)
            .unwrap();
        // mean delta = (1*d1 + 3*d2) / 4 = [1, 3, 0, 0, 1, 0.5]
        close(
            &out.state.parameters.to_flat(),
            &[2.0, 5.0, 3.0, 4.0, 1.0, 0.5],
        );
        let norm = (1.0f64 + 9.0 + 1.0 + 0.25).sqrt();
        assert!((out.combined_delta_norm - norm).abs() < 1e-9);
        assert!((out.applied_norm - norm).abs() < 1e-9);
    }

    #[test]
    fn fedadam_keeps_moments_across_rounds() {
        let g = global();
        let rule = AggregationRule::FedAdam {
            server_lr: 0.1,
            beta1: 0.5,
            beta2: 0.75,
            epsilon: 0.5,
        };
        let cfg = config(rule.clone(), 0.5);
        let mut adam = None;
        let mut agg = RoundAggregator::new(&g, &rule);
        agg.add(&with_delta(&g, 2, &[2.0, -2.0, 0.0, 0.0, 0.0, 0.0]))
            .unwrap();
        let first = agg.finish(&g, &cfg, &mut adam).unwrap();
        // m = 0.5*0 + 0.5*2 = 1; v = 0.75*0.25 + 0.25*4 = 1.1875;
        // step = 0.1 * 1 / (sqrt(1.1875) + 0.5)
        let s = 0.1 / (1.1875f64.sqrt() + 0.5);
        // zero coordinates: m = 0, v = 0.1875, step 0
        close(
            &first.state.parameters.to_flat(),
            &[1.0 + s, 2.0 - s, 3.0, 4.0, 0.0, 0.0],
        );
        let state = adam.clone().unwrap();
        assert_eq!(state.steps, 1);
        assert!((f64::from(state.v[4]) - 0.1875).abs() < 1e-7);

        // Round 2 with a zero delta: momentum alone still moves the parameters.
        let mut agg = RoundAggregator::new(&first.state, &rule);
        agg.add(&with_delta(&first.state, 1, &[0.0; 6])).unwrap();
        let second = agg.finish(&first.state, &cfg, &mut adam).unwrap();
        // m = 0.5, v = 0.75 * 1.1875 = 0.890625; step = 0.1 * 0.5 / (sqrt(v) + 0.5)
        let s2 = 0.1 * 0.5 / (0.890625f64.sqrt() + 0.5);
        close(
            &second.state.parameters.to_flat(),
            &[1.0 + s + s2, 2.0 - s - s2, 3.0, 4.0, 0.0, 0.0],
        );
        assert_eq!(adam.unwrap().steps, 2);
    }

    #[test]
    fn median_is_coordinate_wise_and_unweighted() {
        let g = global();
        let mut agg = RoundAggregator::new(&g, &AggregationRule::Median);
        agg.add(&with_delta(&g, 100, &[1.0, 10.0, -1.0, 0.0, 0.0, 5.0]))
            .unwrap();
        agg.add(&with_delta(&g, 1, &[2.0, 20.0, -3.0, 0.0, 0.0, 1.0]))
            .unwrap();
        agg.add(&with_delta(&g, 1, &[100.0, 0.0, -2.0, 0.0, 0.0, 3.0]))
            .unwrap();
        assert_eq!(agg.buffered_updates(), 3);
        let out = agg
            .finish(&g, &config(AggregationRule::Median, 0.5), &mut None)
            .unwrap();
        close(
            &out.state.parameters.to_flat(),
            &[3.0, 12.0, 1.0, 4.0, 0.0, 3.0],
        );
        assert_eq!(coordinate_median(&[vec![1.0], vec![4.0]]), vec![2.5]);
    }

    #[test]
    fn trimmed_mean_drops_the_extremes() {
        // n = 5, trim 0.2 -> drop one from each end.
        let deltas = vec![
            vec![1.0, -50.0],
            vec![2.0, 1.0],
            vec![3.0, 2.0],
            vec![4.0, 3.0],
            vec![1000.0, 4.0],
        ];
        assert_eq!(coordinate_trimmed_mean(&deltas, 0.2), vec![3.0, 2.0]);
        // trim 0.1 of 5 rounds down to nothing trimmed: the plain mean.
        assert_eq!(
            coordinate_trimmed_mean(&deltas, 0.1),
            vec![1010.0 / 5.0, -40.0 / 5.0]
        );
        // Even through the aggregator.
        let g = global();
        let rule = AggregationRule::TrimmedMean {
            trim_fraction: 0.25,
        };
        let mut agg = RoundAggregator::new(&g, &rule);
        for d in [-8.0f32, 1.0, 3.0, 9.0] {
            agg.add(&with_delta(&g, 1, &[d, 0.0, 0.0, 0.0, 0.0, 0.0]))
                .unwrap();
        }
        let out = agg.finish(&g, &config(rule, 0.5), &mut None).unwrap();
        close(&out.state.parameters.to_flat()[..1], &[1.0 + 2.0]);
    }

    #[test]
    fn prototypes_are_the_weighted_combination_of_what_clients_sent() {
        let g = global(); // one bank, 2 emotions x 2 prototypes x width 2, values 0..8
        let mut a = update(&g, 1, 3, 0.0);
        let mut b = update(&g, 1, 5, 0.0);
        // cell 0: a sends S = [2, 4], W = 2; b sends S = [6, 0], W = 2 -> mean [2, 1]
        // cell 1: only a sends mass: S = [3, 3], W = 3 -> mean [1, 1]
        // cell 2: nobody -> previous kept. cell 3: b only, S = [-4, 8], W = 4 -> [-1, 2]
        a.prototypes[0].sum = F32Vec(vec![2.0, 4.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
        a.prototypes[0].weight = F32Vec(vec![2.0, 3.0, 0.0, 0.0]);
        b.prototypes[0].sum = F32Vec(vec![6.0, 0.0, 0.0, 0.0, 0.0, 0.0, -4.0, 8.0]);
        b.prototypes[0].weight = F32Vec(vec![2.0, 0.0, 0.0, 4.0]);
        let previous: Vec<f64> = g.prototypes[0]
            .values
            .0
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let expected_means = [2.0, 1.0, 1.0, 1.0, f64::NAN, f64::NAN, -1.0, 2.0];
        for blend in [0.0, 0.25] {
            let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
            agg.add(&a).unwrap();
            agg.add(&b).unwrap();
            let out = agg
                .finish(&g, &config(AggregationRule::FedAvg, blend), &mut None)
                .unwrap();
            let expected: Vec<f64> = previous
                .iter()
                .zip(expected_means)
                .map(|(p, m)| {
                    if m.is_nan() {
                        *p
                    } else {
                        blend * p + (1.0 - blend) * m
                    }
                })
                .collect();
            close(&out.state.prototypes[0].values.0, &expected);
        }
    }

    #[test]
    fn cooccurrence_is_replaced_by_the_round_and_kept_when_empty() {
        let mut g = global();
        g.cooccurrence.add_label(&[1.0, 0.0]);
        let mut a = update(&g, 1, 2, 0.0);
        a.cooccurrence = CooccurrenceStatistics::zeros(2);
        a.cooccurrence.add_label(&[0.5, 0.5]);
        let mut b = update(&g, 1, 2, 0.0);
        b.cooccurrence = CooccurrenceStatistics::zeros(2);
        b.cooccurrence.add_label(&[0.0, 1.0]);
        let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        agg.add(&a).unwrap();
        agg.add(&b).unwrap();
        let out = agg
            .finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None)
            .unwrap();
        assert_eq!(out.state.cooccurrence.count, 2.0);
        assert_eq!(out.state.cooccurrence.sum.0, vec![0.25, 0.25, 0.25, 1.25]);

        let mut empty = update(&g, 1, 2, 0.0);
        empty.cooccurrence = CooccurrenceStatistics::zeros(2);
        let mut agg = RoundAggregator::new(&out.state, &AggregationRule::FedAvg);
        agg.add(&empty).unwrap();
        let kept = agg
            .finish(&out.state, &config(AggregationRule::FedAvg, 0.5), &mut None)
            .unwrap();
        assert_eq!(kept.state.cooccurrence, out.state.cooccurrence);
    }

    #[test]
    fn a_misfit_update_changes_nothing() {
        let g = global();
        let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        let mut bad = update(&g, 1, 2, 1.0);
        bad.prototypes[0].group = "behavioral".into();
        assert!(agg.add(&bad).is_err());
        assert_eq!(agg.accepted(), 0);
        assert_eq!(
            agg.finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None),
            Err(AggregationError::Empty)
        );
    }

    #[test]
    fn an_update_out_of_the_exact_range_is_not_half_added() {
        let g = global();
        let good = update(&g, 1, 2, 0.5);
        let finish = |agg: RoundAggregator| {
            agg.finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None)
                .unwrap()
                .state
        };
        let mut reference = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        reference.add(&good).unwrap();
        // Out of range in the delta (checked by the sum itself) and in the statistics (checked
        // before the delta is added).
        let mut huge_delta = update(&g, 1, 2, 0.5);
        huge_delta.delta.tensors[1].values.0[1] = 1e12;
        let mut huge_statistics = update(&g, 1, 2, 0.5);
        huge_statistics.cooccurrence.sum.0[3] = 2e12;
        let mut agg = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        agg.add(&good).unwrap();
        for bad in [&huge_delta, &huge_statistics] {
            assert!(matches!(agg.add(bad), Err(AggregationError::Range(_))));
        }
        assert_eq!(agg.accepted(), 1);
        assert_eq!(finish(agg), finish(reference));
    }

    #[test]
    fn a_sum_aggregates_like_its_updates_one_by_one() {
        let g = global();
        let a = with_delta(&g, 3, &[1.0, 0.0, 2.0, 0.0, 1.0, -1.0]);
        let b = with_delta(&g, 5, &[0.0, 4.0, 0.0, 1.0, 1.0, 1.0]);
        let cfg = config(AggregationRule::FedAvg, 0.5);
        let mut one_by_one = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        one_by_one.add(&a).unwrap();
        one_by_one.add(&b).unwrap();
        let expected = one_by_one.finish(&g, &cfg, &mut None).unwrap();

        let mut prototypes = a.prototypes.clone();
        prototypes[0].merge(&b.prototypes[0]).unwrap();
        let mut cooccurrence = a.cooccurrence.clone();
        cooccurrence.merge(&b.cooccurrence).unwrap();
        let sum = SummedUpdate {
            weighted_delta_sum: a
                .delta
                .iter_values()
                .zip(b.delta.iter_values())
                .map(|(x, y)| 3.0 * f64::from(x) + 5.0 * f64::from(y))
                .collect(),
            prototypes,
            cooccurrence,
            total_weight: 8.0,
            contributors: 2,
            evaluation: None,
        };
        let mut summed = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        summed.add_sum(&sum, 8).unwrap();
        assert_eq!(summed.accepted(), 2);
        assert_eq!(summed.total_samples(), 8);
        assert_eq!(summed.finish(&g, &cfg, &mut None).unwrap(), expected);

        // Refused, accumulating nothing: a wrong length, no weight, a buffering rule.
        let mut short = sum.clone();
        short.weighted_delta_sum.pop();
        let mut empty = RoundAggregator::new(&g, &AggregationRule::FedAvg);
        assert!(empty.add_sum(&short, 8).is_err());
        let mut weightless = sum.clone();
        weightless.total_weight = 0.0;
        assert!(empty.add_sum(&weightless, 8).is_err());
        assert_eq!(empty.accepted(), 0);
        let mut median = RoundAggregator::new(&g, &AggregationRule::Median);
        assert!(matches!(
            median.add_sum(&sum, 8),
            Err(AggregationError::NeedsIndividualUpdates(_))
        ));
        assert!(
            median
                .add_sum_noise(1.0, &mut crate::privacy::seeded_noise_rng(1))
                .is_err()
        );
    }

    #[test]
    fn the_dp_policy_clips_and_weighs_uniformly() {
        let g = global();
        let policy = ContributionPolicy {
            clip_norm: Some(1.0),
            uniform_weights: true,
        };
        let mut agg = RoundAggregator::with_policy(&g, &AggregationRule::FedAvg, policy);
        agg.add(&with_delta(&g, 100, &[3.0, 4.0, 0.0, 0.0, 0.0, 0.0]))
            .unwrap();
        agg.add(&with_delta(&g, 1, &[0.0, 0.0, 0.5, 0.0, 0.0, 0.0]))
            .unwrap();
        assert_eq!(agg.clipped(), 1);
        let out = agg
            .finish(&g, &config(AggregationRule::FedAvg, 0.5), &mut None)
            .unwrap();
        // ([0.6, 0.8, 0, ...] + [0, 0, 0.5, ...]) / 2, sample counts ignored.
        close(
            &out.state.parameters.to_flat(),
            &[1.3, 2.4, 3.25, 4.0, 0.0, 0.0],
        );
    }

    #[test]
    fn fedadam_state_of_the_wrong_size_is_an_error() {
        let mut state = FedAdamState::new(2, 0.1);
        assert!(matches!(
            fedadam_step(&mut state, &[1.0], 0.1, 0.9, 0.99, 0.1),
            Err(AggregationError::OptimizerState { .. })
        ));
    }
}
