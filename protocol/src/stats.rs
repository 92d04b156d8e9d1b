//! The statistics a client sends about its memories: prototype-bank sums (S, W) per group and
//! co-occurrence sums (sum of d d^T, sample count). They are additive, so the coordinator's global
//! memory is a plain sum over clients (and secure aggregation can hide each addend).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::vector::F32Vec;

/// Errors from malformed or incompatible statistics.
#[derive(Debug, Error, PartialEq)]
pub enum StatisticsError {
    /// Two statistics describe different shapes or groups.
    #[error("statistics mismatch: {0}")]
    Mismatch(String),
    /// A vector's length does not match the declared sizes.
    #[error("{what} has {found} values, expected {expected}")]
    Length {
        what: String,
        expected: usize,
        found: usize,
    },
    /// A value is NaN, infinite or negative where it must not be.
    #[error("{0} holds a non-finite or negative value")]
    InvalidValue(String),
}

/// Prototype-bank statistics of one group: for each emotion c and prototype k,
/// `sum[c,k,:] = sum_i d_i[c] a_i[c,k] z_i` and `weight[c,k] = sum_i d_i[c] a_i[c,k]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrototypeStatistics {
    /// The modality group (`physiological` or `behavioral`).
    pub group: String,
    pub emotions: usize,
    pub prototypes: usize,
    pub width: usize,
    /// Row-major `emotions x prototypes x width`.
    pub sum: F32Vec,
    /// Row-major `emotions x prototypes`.
    pub weight: F32Vec,
}

impl PrototypeStatistics {
    /// Empty statistics of the given shape.
    pub fn zeros(group: &str, emotions: usize, prototypes: usize, width: usize) -> Self {
        Self {
            group: group.to_string(),
            emotions,
            prototypes,
            width,
            sum: F32Vec(vec![0.0; emotions * prototypes * width]),
            weight: F32Vec(vec![0.0; emotions * prototypes]),
        }
    }

    /// Checks lengths against the declared sizes and that every value is finite and weights are
    /// non-negative.
    pub fn validate(&self) -> Result<(), StatisticsError> {
        let what = format!("prototype statistics of group `{}`", self.group);
        check_len(
            &format!("{what} (sum)"),
            &[self.emotions, self.prototypes, self.width],
            self.sum.len(),
        )?;
        check_len(
            &format!("{what} (weight)"),
            &[self.emotions, self.prototypes],
            self.weight.len(),
        )?;
        if !self.sum.all_finite() || self.weight.0.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(StatisticsError::InvalidValue(what));
        }
        Ok(())
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) -> Result<(), StatisticsError> {
        if self.group != other.group
            || self.emotions != other.emotions
            || self.prototypes != other.prototypes
            || self.width != other.width
        {
            return Err(StatisticsError::Mismatch(format!(
                "prototype statistics `{}` {}x{}x{} vs `{}` {}x{}x{}",
                self.group,
                self.emotions,
                self.prototypes,
                self.width,
                other.group,
                other.emotions,
                other.prototypes,
                other.width
            )));
        }
        add_into(&mut self.sum.0, &other.sum.0);
        add_into(&mut self.weight.0, &other.weight.0);
        Ok(())
    }

    /// Total label mass of emotion `c` (sum of its prototypes' weights).
    pub fn emotion_mass(&self, emotion: usize) -> f32 {
        self.weight.0[emotion * self.prototypes..(emotion + 1) * self.prototypes]
            .iter()
            .sum()
    }

    /// Zeroes the statistics of every emotion whose mass is below `minimum_mass`, so that a
    /// client does not reveal prototypes built from one or two of its samples. Returns the
    /// indices of the withheld emotions.
    pub fn withhold_below(&mut self, minimum_mass: f32) -> Vec<usize> {
        let mut withheld = Vec::new();
        for emotion in 0..self.emotions {
            if self.emotion_mass(emotion) < minimum_mass {
                withheld.push(emotion);
                let k = self.prototypes;
                self.weight.0[emotion * k..(emotion + 1) * k].fill(0.0);
                let per_emotion = k * self.width;
                self.sum.0[emotion * per_emotion..(emotion + 1) * per_emotion].fill(0.0);
            }
        }
        withheld
    }
}

/// Co-occurrence statistics: `sum = sum_i d_i d_i^T` (row-major C x C) over `count` samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CooccurrenceStatistics {
    pub emotions: usize,
    pub sum: F32Vec,
    pub count: f64,
}

impl CooccurrenceStatistics {
    /// Empty statistics for `emotions` emotions.
    pub fn zeros(emotions: usize) -> Self {
        Self {
            emotions,
            sum: F32Vec(vec![0.0; emotions * emotions]),
            count: 0.0,
        }
    }

    /// Accumulates one label distribution.
    pub fn add_label(&mut self, label: &[f32]) {
        let c = self.emotions;
        for i in 0..c {
            for j in 0..c {
                self.sum.0[i * c + j] += label[i] * label[j];
            }
        }
        self.count += 1.0;
    }

    /// Statistics that carry only label sums (`sums[c]` = the label mass of emotion `c` over
    /// `count` samples), as the diagonal of `sum`: what the opening label-prior round sends. Its
    /// [`label_prior`](Self::label_prior) is that of full statistics over the same labels, and
    /// it tells nothing about how emotions co-occur.
    pub fn of_label_sums(sums: &[f32], count: f64) -> Self {
        let mut statistics = Self::zeros(sums.len());
        for (c, value) in sums.iter().enumerate() {
            statistics.sum.0[c * sums.len() + c] = *value;
        }
        statistics.count = count;
        statistics
    }

    /// The label prior the statistics imply: row `c` of `sum` totals the label mass of emotion
    /// `c` (every label sums to 1), normalised to sum to 1; uniform when they hold no sample.
    pub fn label_prior(&self) -> Vec<f32> {
        let c = self.emotions;
        if self.count <= 0.0 || c == 0 {
            return vec![1.0 / c.max(1) as f32; c];
        }
        let rows: Vec<f64> = (0..c)
            .map(|i| {
                self.sum.0[i * c..(i + 1) * c]
                    .iter()
                    .map(|v| f64::from(*v))
                    .sum::<f64>()
            })
            .collect();
        let total: f64 = rows.iter().sum();
        rows.iter()
            .map(|r| (r / total.max(f64::MIN_POSITIVE)) as f32)
            .collect()
    }

    /// Checks lengths and values.
    pub fn validate(&self) -> Result<(), StatisticsError> {
        check_len(
            "co-occurrence statistics",
            &[self.emotions, self.emotions],
            self.sum.len(),
        )?;
        if self.sum.0.iter().any(|v| !v.is_finite() || *v < 0.0)
            || !self.count.is_finite()
            || self.count < 0.0
        {
            return Err(StatisticsError::InvalidValue(
                "co-occurrence statistics".into(),
            ));
        }
        Ok(())
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) -> Result<(), StatisticsError> {
        if self.emotions != other.emotions {
            return Err(StatisticsError::Mismatch(format!(
                "co-occurrence statistics for {} vs {} emotions",
                self.emotions, other.emotions
            )));
        }
        add_into(&mut self.sum.0, &other.sum.0);
        self.count += other.count;
        Ok(())
    }

    /// The memory M: E[d d^T] with each row normalised to sum to one. Rows with no mass become
    /// uniform (no evidence either way). With no samples at all, every row is uniform.
    pub fn memory(&self) -> Vec<f32> {
        let c = self.emotions;
        let mut memory = vec![1.0 / c as f32; c * c];
        for i in 0..c {
            let row = &self.sum.0[i * c..(i + 1) * c];
            let total: f32 = row.iter().sum();
            if total > 0.0 {
                for j in 0..c {
                    memory[i * c + j] = row[j] / total;
                }
            }
        }
        memory
    }
}

/// Checks that `found` values are what `dims` multiply out to. Declared sizes come off the
/// wire, so the product is checked: an overflow is a mismatch, not a panic or a wrap-around.
fn check_len(what: &str, dims: &[usize], found: usize) -> Result<(), StatisticsError> {
    let Some(expected) = dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d)) else {
        return Err(StatisticsError::Mismatch(format!(
            "{what}: declared sizes {dims:?} overflow"
        )));
    };
    if expected != found {
        return Err(StatisticsError::Length {
            what: what.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

fn add_into(acc: &mut [f32], values: &[f32]) {
    for (a, b) in acc.iter_mut().zip(values) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Declared sizes from the wire whose product overflows are refused, not multiplied out
    /// (found while fuzzing the same pattern in `ParameterSet::validate`).
    #[test]
    fn sizes_whose_product_overflows_are_a_mismatch() {
        let mut stats = PrototypeStatistics::zeros("physiological", 2, 2, 2);
        stats.emotions = usize::MAX / 2;
        stats.prototypes = 4;
        stats.sum = F32Vec(Vec::new());
        assert!(matches!(
            stats.validate(),
            Err(StatisticsError::Mismatch(_))
        ));
        let mut cooccurrence = CooccurrenceStatistics::zeros(2);
        cooccurrence.emotions = 1 << (usize::BITS / 2);
        cooccurrence.sum = F32Vec(Vec::new());
        assert!(matches!(
            cooccurrence.validate(),
            Err(StatisticsError::Mismatch(_))
        ));
    }

    #[test]
    fn cooccurrence_memory_is_row_normalised_expectation() {
        let mut stats = CooccurrenceStatistics::zeros(2);
        stats.add_label(&[1.0, 0.0]);
        stats.add_label(&[0.5, 0.5]);
        // sum = [[1.25, 0.25], [0.25, 0.25]]
        assert_eq!(stats.sum.0, vec![1.25, 0.25, 0.25, 0.25]);
        let memory = stats.memory();
        assert!((memory[0] - 1.25 / 1.5).abs() < 1e-6);
        assert!((memory[1] - 0.25 / 1.5).abs() < 1e-6);
        assert!((memory[2] - 0.5).abs() < 1e-6);
        assert!((memory[3] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn merging_adds_and_checks_shapes() {
        let mut a = CooccurrenceStatistics::zeros(2);
        a.add_label(&[1.0, 0.0]);
        let mut b = CooccurrenceStatistics::zeros(2);
        b.add_label(&[0.0, 1.0]);
        a.merge(&b).unwrap();
        assert_eq!(a.count, 2.0);
        assert_eq!(a.sum.0, vec![1.0, 0.0, 0.0, 1.0]);
        assert!(a.merge(&CooccurrenceStatistics::zeros(3)).is_err());
    }

    #[test]
    fn emotions_with_little_mass_are_withheld() {
        let mut stats = PrototypeStatistics::zeros("physiological", 2, 2, 1);
        stats.weight.0 = vec![0.1, 0.2, 3.0, 1.0];
        stats.sum.0 = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(stats.withhold_below(1.0), vec![0]);
        assert_eq!(stats.weight.0, vec![0.0, 0.0, 3.0, 1.0]);
        assert_eq!(stats.sum.0, vec![0.0, 0.0, 3.0, 4.0]);
    }

    #[test]
    fn negative_weights_are_invalid() {
        let mut stats = PrototypeStatistics::zeros("behavioral", 1, 1, 1);
        stats.weight.0[0] = -1.0;
        assert!(stats.validate().is_err());
    }
}
