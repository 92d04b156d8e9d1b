//! The privacy ledger: the run's accumulated Rényi-DP cost, reported as (epsilon, delta) after
//! each round and refusing rounds past the budget.
//!
//! Each aggregated round is one application of the sampled Gaussian mechanism with the
//! configured noise multiplier and that round's sampling rate (cohort size / population). RDP
//! composes by addition at every order, so the ledger keeps one running sum per order (Opacus'
//! default grid, [`super::rdp::default_orders`]) and converts to epsilon for the target delta on
//! demand. Rounds may have different sampling rates.
//!
//! The contract with the round state machine: after aggregating a round (noise added) and
//! **before** publishing or persisting its model, call [`PrivacyLedger::record_round`]. On `Ok`
//! the round is on the books and its (epsilon, delta) is what to report. On
//! [`LedgerError::BudgetExhausted`] nothing was recorded: discard the round's aggregate and end
//! the run ("privacy budget exhausted"). [`PrivacyLedger::peek_round`] answers the same question
//! before a round starts, so no client trains for a round that could not be released. The
//! ledger is serde-serialisable for checkpoints.
//!
//! What the numbers assume (and so what they do not cover): that each client's contribution
//! to the sum is clipped to `clip_norm` and weighted 1; that the Gaussian noise on the sum has
//! standard deviation `noise_multiplier * clip_norm` (with distributed noise, that at least the
//! threshold number of clients added their share); that clients are sampled independently with
//! probability `q` (Poisson sampling, as the analysis assumes; a fixed-size cohort drawn
//! uniformly is the usual approximation); and that the adjacency is adding or removing one
//! client's whole data (client-level DP). They say nothing about what leaks outside the
//! noised sum: local metrics, prototype statistics and co-occurrence statistics are not noised
//! here.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::rdp::{compute_rdp, default_orders, epsilon_from_rdp};

/// The (epsilon, delta) guarantee after some rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Epsilon at `delta`, minimised over the orders.
    pub epsilon: f64,
    /// The target delta.
    pub delta: f64,
    /// The RDP order that gave epsilon.
    pub order: f64,
    /// Rounds accounted for.
    pub rounds: u64,
}

/// The budget would be exceeded: the round must not be released and the run ends.
#[derive(Clone, Debug, Error, PartialEq)]
#[error(
    "privacy budget exhausted: round {round} would raise epsilon from {spent_epsilon:.4} to {epsilon:.4} (delta {delta:e}), above the budget of {budget}"
)]
pub struct BudgetExhausted {
    /// The round that was refused (1-based count of accounted rounds it would have been).
    pub round: u64,
    /// Epsilon with that round.
    pub epsilon: f64,
    /// Epsilon without it (what has been spent).
    pub spent_epsilon: f64,
    /// The target delta.
    pub delta: f64,
    /// The configured budget.
    pub budget: f64,
}

/// Errors from the ledger.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum LedgerError {
    /// Recording the round would exceed the epsilon budget; nothing was recorded.
    #[error(transparent)]
    BudgetExhausted(#[from] BudgetExhausted),
    /// The sampling rate is not in [0, 1].
    #[error("sampling rate {0} must be in [0, 1]")]
    InvalidSamplingRate(f64),
    /// The ledger's parameters are unusable.
    #[error("invalid privacy ledger: {0}")]
    Invalid(String),
}

/// The accumulated privacy cost of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    noise_multiplier: f64,
    target_delta: f64,
    epsilon_budget: Option<f64>,
    orders: Vec<f64>,
    rdp: Vec<f64>,
    rounds: u64,
}

impl PrivacyLedger {
    /// An empty ledger for Gaussian noise with `noise_multiplier` (> 0), reporting epsilon at
    /// `target_delta` (in (0, 1)) and refusing rounds past `epsilon_budget` (if any).
    pub fn new(
        noise_multiplier: f64,
        target_delta: f64,
        epsilon_budget: Option<f64>,
    ) -> Result<Self, LedgerError> {
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(LedgerError::Invalid(format!(
                "noise multiplier {noise_multiplier} must be positive (without noise there is no bound to account)"
            )));
        }
        if !(target_delta > 0.0 && target_delta < 1.0) {
            return Err(LedgerError::Invalid(format!(
                "target delta {target_delta} must be in (0, 1)"
            )));
        }
        if let Some(budget) = epsilon_budget
            && !(budget.is_finite() && budget > 0.0)
        {
            return Err(LedgerError::Invalid(format!(
                "epsilon budget {budget} must be positive"
            )));
        }
        let orders = default_orders();
        Ok(Self {
            noise_multiplier,
            target_delta,
            epsilon_budget,
            rdp: vec![0.0; orders.len()],
            orders,
            rounds: 0,
        })
    }

    /// The noise multiplier accounted for.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The budget, if any.
    pub fn epsilon_budget(&self) -> Option<f64> {
        self.epsilon_budget
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// The guarantee so far (epsilon 0 before any round).
    pub fn spent(&self) -> PrivacySpent {
        self.spent_with(&self.rdp, self.rounds)
    }

    fn spent_with(&self, rdp: &[f64], rounds: u64) -> PrivacySpent {
        if rounds == 0 {
            return PrivacySpent {
                epsilon: 0.0,
                delta: self.target_delta,
                order: f64::NAN,
                rounds,
            };
        }
        let (epsilon, order) = epsilon_from_rdp(&self.orders, rdp, self.target_delta);
        PrivacySpent {
            epsilon: epsilon.max(0.0),
            delta: self.target_delta,
            order,
            rounds,
        }
    }

    fn with_round(&self, sampling_rate: f64) -> Result<(Vec<f64>, PrivacySpent), LedgerError> {
        if !(0.0..=1.0).contains(&sampling_rate) {
            return Err(LedgerError::InvalidSamplingRate(sampling_rate));
        }
        let step = compute_rdp(sampling_rate, self.noise_multiplier, 1, &self.orders);
        let rdp: Vec<f64> = self.rdp.iter().zip(&step).map(|(a, b)| a + b).collect();
        let spent = self.spent_with(&rdp, self.rounds + 1);
        if let Some(budget) = self.epsilon_budget
            && (spent.epsilon.is_nan() || spent.epsilon > budget)
        {
            return Err(BudgetExhausted {
                round: self.rounds + 1,
                epsilon: spent.epsilon,
                spent_epsilon: self.spent().epsilon,
                delta: self.target_delta,
                budget,
            }
            .into());
        }
        Ok((rdp, spent))
    }

    /// What recording a round with `sampling_rate` would give, without recording it.
    pub fn peek_round(&self, sampling_rate: f64) -> Result<PrivacySpent, LedgerError> {
        self.with_round(sampling_rate).map(|(_, spent)| spent)
    }

    /// Records one aggregated round with `sampling_rate` (cohort / population) and returns the
    /// guarantee including it; refuses, recording nothing, when that would exceed the budget.
    pub fn record_round(&mut self, sampling_rate: f64) -> Result<PrivacySpent, LedgerError> {
        let (rdp, spent) = self.with_round(sampling_rate)?;
        self.rdp = rdp;
        self.rounds += 1;
        Ok(spent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_grows_with_rounds_and_the_budget_stops_the_run() {
        let mut ledger = PrivacyLedger::new(1.1, 1e-5, Some(1.0)).unwrap();
        assert_eq!(ledger.spent().epsilon, 0.0);
        let mut last = 0.0;
        let mut recorded = 0;
        let error = loop {
            match ledger.record_round(0.01) {
                Ok(spent) => {
                    assert!(spent.epsilon > last);
                    assert!(spent.epsilon <= 1.0);
                    assert_eq!(spent.delta, 1e-5);
                    last = spent.epsilon;
                    recorded += 1;
                    assert_eq!(spent.rounds, recorded);
                }
                Err(error) => break error,
            }
            assert!(recorded < 10_000);
        };
        let LedgerError::BudgetExhausted(exhausted) = error else {
            panic!("expected budget exhaustion, got {error:?}");
        };
        assert_eq!(exhausted.round, recorded + 1);
        assert!(exhausted.epsilon > 1.0);
        assert_eq!(exhausted.spent_epsilon, last);
        // Nothing was recorded by the refused round, and it stays refused.
        assert_eq!(ledger.rounds(), recorded);
        assert_eq!(ledger.spent().epsilon, last);
        assert!(ledger.peek_round(0.01).is_err());
        assert!(exhausted.to_string().contains("privacy budget exhausted"));
        // Opacus: sigma 1.1, q 0.01 reaches epsilon 0.956 after 100 steps, 1.71 after 1000.
        assert!((100..1000).contains(&recorded), "{recorded}");
    }

    #[test]
    fn the_ledger_round_trips_through_serde_and_keeps_accounting() {
        let mut ledger = PrivacyLedger::new(0.8, 1e-5, None).unwrap();
        ledger.record_round(0.1).unwrap();
        ledger.record_round(0.2).unwrap();
        // Checkpoints use bincode, which round-trips floats exactly.
        let bytes = bincode::serde::encode_to_vec(&ledger, bincode::config::standard()).unwrap();
        let (mut back, _): (PrivacyLedger, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, ledger);
        // JSON (for logs) keeps it readable.
        let json = serde_json::to_string(&ledger).unwrap();
        assert!(json.contains("\"rounds\":2"), "{json}");
        assert_eq!(
            back.record_round(0.1).unwrap(),
            ledger.record_round(0.1).unwrap()
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(PrivacyLedger::new(0.0, 1e-5, None).is_err());
        assert!(PrivacyLedger::new(1.0, 0.0, None).is_err());
        assert!(PrivacyLedger::new(1.0, 1e-5, Some(-1.0)).is_err());
        let mut ledger = PrivacyLedger::new(1.0, 1e-5, None).unwrap();
        assert_eq!(
            ledger.record_round(1.5),
            Err(LedgerError::InvalidSamplingRate(1.5))
        );
        assert_eq!(ledger.rounds(), 0);
    }
}
