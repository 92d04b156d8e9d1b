//! The pooling maths of a simulation: each arm's predictions per partition and round
//! ([`ArmTrace`]), pooled over the partitions' test samples into per-round metrics, the
//! validation-selected choice of every arm ([`Selected`]) and per-subject metrics. No I/O here:
//! `simulate.rs` runs the arms and writes what this computes.

use std::collections::BTreeMap;

use mpcl_coordinator::evaluation::FederatedMetrics;
use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_protocol::messages::GlobalState;
use serde::{Deserialize, Serialize};

use crate::selection::BestRound;
use crate::simulation_result::{Arm, PooledRound, SubjectMetrics};

/// Called after each round of an arm with (round, predictions on the partition's validation
/// samples followed by its test samples, (bytes down, bytes up), seconds, epsilon); returns the
/// validation metrics (`None` without validation samples).
pub(crate) type RoundObserver<'a, E> = dyn FnMut(
        u64,
        &[Vec<f32>],
        Option<&GlobalState>,
        (u64, u64),
        f64,
        Option<f64>,
    ) -> Result<Option<DistributionMetrics>, E>
    + 'a;

/// Predictions of one arm on one partition's test samples after each round, and the round
/// chosen on validation KL. Serialisable: a job run in a child process sends it back
/// ([`crate::job_process`]).
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct ArmTrace {
    /// Validation samples at the front of every prediction list the observer gets.
    pub(crate) validation_count: usize,
    /// Test predictions, one list per round.
    pub(crate) predictions: Vec<Vec<Vec<f32>>>,
    pub(crate) bytes: Vec<(u64, u64)>,
    pub(crate) epsilons: Vec<Option<f64>>,
    pub(crate) best: BestRound,
    /// The state of the round chosen on validation (arms with a model).
    pub(crate) best_state: Option<GlobalState>,
    /// The coordinator's federated evaluation of each global model (federated arms): what
    /// the participants reported on their own validation and test samples.
    pub(crate) federated: Vec<FederatedMetrics>,
}

impl ArmTrace {
    pub(crate) fn new(validation_count: usize) -> Self {
        Self {
            validation_count,
            ..Self::default()
        }
    }

    /// Reports a round to `on_round`, keeps its test predictions and follows validation KL.
    /// Returns whether `patience` rounds passed without improvement (the arm may stop).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record<E>(
        &mut self,
        on_round: &mut RoundObserver<'_, E>,
        round: u64,
        mut predictions: Vec<Vec<f32>>,
        state: Option<&GlobalState>,
        bytes: (u64, u64),
        seconds: f64,
        epsilon: Option<f64>,
        patience: u64,
    ) -> Result<bool, E> {
        let validation = on_round(round, &predictions, state, bytes, seconds, epsilon)?;
        if self.best.observe(round, validation.map(|m| m.kl)) {
            self.best_state = state.cloned();
        }
        self.predictions
            .push(predictions.split_off(self.validation_count));
        self.bytes.push(bytes);
        self.epsilons.push(epsilon);
        Ok(self.best.should_stop(patience))
    }

    /// Test predictions of the round chosen on validation.
    pub(crate) fn selected(&self) -> Option<&Vec<Vec<f32>>> {
        let round = self.best.round()?;
        self.predictions.get(round as usize - 1)
    }
}

/// What each arm chose: the test predictions of each partition's validation-selected round,
/// concatenated over partitions in test-sample order, and those rounds.
pub(crate) struct Selected {
    pub(crate) predictions: BTreeMap<Arm, Vec<Vec<f32>>>,
    pub(crate) rounds: BTreeMap<Arm, Vec<u64>>,
    pub(crate) states: BTreeMap<Arm, Vec<GlobalState>>,
}

impl Selected {
    pub(crate) fn of(traces: &BTreeMap<Arm, Vec<ArmTrace>>, labels: &[Vec<f32>]) -> Self {
        let mut selected = Self {
            predictions: BTreeMap::new(),
            rounds: BTreeMap::new(),
            states: BTreeMap::new(),
        };
        for (&arm, parts) in traces {
            let predictions: Vec<Vec<f32>> = parts
                .iter()
                .flat_map(|t| t.selected().into_iter().flatten().cloned())
                .collect();
            if predictions.len() != labels.len() {
                continue;
            }
            selected.predictions.insert(arm, predictions);
            selected
                .rounds
                .insert(arm, parts.iter().filter_map(|t| t.best.round()).collect());
            let states: Vec<GlobalState> =
                parts.iter().filter_map(|t| t.best_state.clone()).collect();
            if !states.is_empty() {
                selected.states.insert(arm, states);
            }
        }
        selected
    }
}

/// The metrics of every arm after every round, pooled over the partitions' test samples (a
/// round some partition did not reach, after an early stop, is left out).
pub(crate) fn pool_rounds(
    traces: &BTreeMap<Arm, Vec<ArmTrace>>,
    labels: &[Vec<f32>],
    rounds: u64,
) -> Vec<PooledRound> {
    let mut pooled = Vec::new();
    for (&arm, parts) in traces {
        for round in 0..rounds as usize {
            let predictions: Vec<&Vec<f32>> = parts
                .iter()
                .flat_map(|t| t.predictions.get(round).into_iter().flatten())
                .collect();
            if predictions.len() != labels.len() {
                continue;
            }
            let metrics = evaluate(
                labels
                    .iter()
                    .zip(&predictions)
                    .map(|(l, p)| (l.as_slice(), p.as_slice())),
            );
            let (down, up) = parts
                .iter()
                .filter_map(|t| t.bytes.get(round))
                .fold((0, 0), |(d, u), (bd, bu)| (d + bd, u + bu));
            let epsilon = parts
                .iter()
                .filter_map(|t| t.epsilons.get(round).copied().flatten())
                .reduce(f64::max);
            pooled.push(PooledRound {
                arm,
                round: round as u64 + 1,
                metrics,
                bytes_down: down,
                bytes_up: up,
                epsilon,
            });
        }
    }
    pooled
}

/// Each subject's metrics under each arm's validation-selected model.
pub(crate) fn per_subject_metrics(
    selection: &Selected,
    labels: &[Vec<f32>],
    subjects: &[String],
) -> Vec<SubjectMetrics> {
    let mut out = Vec::new();
    for (&arm, last) in &selection.predictions {
        let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, subject) in subjects.iter().enumerate() {
            by_subject.entry(subject).or_default().push(i);
        }
        for (subject, rows) in by_subject {
            out.push(SubjectMetrics {
                arm,
                subject: subject.to_string(),
                metrics: evaluate(
                    rows.iter()
                        .map(|&i| (labels[i].as_slice(), last[i].as_slice())),
                ),
            });
        }
    }
    out
}
