//! Model selection on validation data: which round (or epoch) of a training run is the one to
//! report. Every arm of a simulation and `mpcl train` carve a validation part out of their
//! training data ([`crate::evaluation::partitions`]), score each round's model on it by KL, and
//! report the test metrics of the round with the lowest validation KL. Test data never enters
//! the choice: the tracker only ever sees validation KL.

use serde::{Deserialize, Serialize};

/// How a run chooses the model it reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionSettings {
    /// Part of the training data held out for model selection (0 = none: the last round is
    /// reported). Subject-dependent protocols hold out this fraction of every subject's training
    /// trials; subject-independent ones this fraction of the training subjects.
    pub validation_fraction: f64,
    /// Stop an arm when its validation KL has not improved for this many rounds (0 = run every
    /// round; the best round is reported either way).
    pub patience: u64,
}

impl Default for SelectionSettings {
    fn default() -> Self {
        Self {
            validation_fraction: 0.2,
            patience: 0,
        }
    }
}

impl SelectionSettings {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(format!(
                "validation fraction {} must be in [0, 1)",
                self.validation_fraction
            ));
        }
        Ok(())
    }
}

/// Follows validation KL round by round and remembers the best round.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BestRound {
    best: Option<(u64, f64)>,
    last: u64,
}

impl BestRound {
    /// Records `round`'s validation KL (`None` when there is no validation data: then the latest
    /// round is the best). Returns whether it is the new best. Ties keep the earlier round.
    pub fn observe(&mut self, round: u64, validation_kl: Option<f64>) -> bool {
        self.last = round;
        let better = match (validation_kl, self.best) {
            (None, _) => true,
            (Some(_), None) => true,
            (Some(kl), Some((_, best))) => kl < best,
        };
        if better {
            self.best = Some((round, validation_kl.unwrap_or(f64::NAN)));
        }
        better
    }

    /// The best round so far (1-based), if any round was observed.
    pub fn round(&self) -> Option<u64> {
        self.best.map(|(round, _)| round)
    }

    /// Its validation KL (NaN without validation data).
    pub fn validation_kl(&self) -> Option<f64> {
        self.best.map(|(_, kl)| kl)
    }

    /// Whether `patience` rounds have passed without improvement (never when `patience` is 0).
    pub fn should_stop(&self, patience: u64) -> bool {
        patience > 0
            && self
                .round()
                .is_some_and(|best| self.last - best >= patience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_lowest_validation_kl_and_the_earlier_of_ties() {
        let mut best = BestRound::default();
        for (round, kl) in [(1, 0.9), (2, 0.7), (3, 0.7), (4, 0.8), (5, 0.75)] {
            best.observe(round, Some(kl));
        }
        assert_eq!(best.round(), Some(2));
        assert_eq!(best.validation_kl(), Some(0.7));
        assert!(best.should_stop(3));
        assert!(!best.should_stop(4));
        assert!(!best.should_stop(0));
    }

    #[test]
    fn without_validation_the_last_round_is_reported() {
        let mut best = BestRound::default();
        for round in 1..=4 {
            assert!(best.observe(round, None));
        }
        assert_eq!(best.round(), Some(4));
        assert!(!best.should_stop(1));
    }
}
