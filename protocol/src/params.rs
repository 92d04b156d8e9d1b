//! Named parameter tensors: what the model's gradient-trained parameters look like once
//! flattened, and the arithmetic the federation needs on them (deltas, weighted sums).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::vector::F32Vec;

/// Errors from combining parameter sets whose layouts differ.
#[derive(Debug, Error, PartialEq)]
pub enum ParameterSetError {
    /// The two sets do not hold the same tensors in the same order.
    #[error("parameter layout mismatch at index {index}: expected `{expected}`, found `{found}`")]
    NameMismatch {
        index: usize,
        expected: String,
        found: String,
    },
    /// A tensor has a different shape on the two sides.
    #[error("parameter `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The number of tensors differs.
    #[error("parameter set has {found} tensors, expected {expected}")]
    CountMismatch { expected: usize, found: usize },
    /// A tensor's value count does not match its shape.
    #[error("parameter `{name}` has {found} values but its shape {shape:?} needs {expected}")]
    LengthMismatch {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    /// A tensor holds NaN or infinity.
    #[error("parameter `{name}` holds a non-finite value")]
    NonFinite { name: String },
    /// A tensor's shape multiplies out beyond any possible length.
    #[error("parameter `{name}` has an impossible shape {shape:?} (its size overflows)")]
    ShapeOverflow { name: String, shape: Vec<usize> },
}

/// One parameter tensor: its path in the model (for example `fusion.physiological.scale_1.query.weight`),
/// its shape and its values in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: F32Vec,
}

impl NamedTensor {
    /// How many values the shape needs; `None` when the product overflows (a shape that came
    /// off the wire or out of a file can claim anything).
    pub fn shape_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))
    }
}

/// An ordered list of named tensors: a model's trainable parameters or a delta of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterSet {
    pub tensors: Vec<NamedTensor>,
}

impl ParameterSet {
    /// Total number of scalar values.
    pub fn value_count(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    /// The tensor with the given name, if present.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A set of the same layout filled with zeros.
    pub fn zeros_like(&self) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .map(|t| NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    values: F32Vec(vec![0.0; t.values.len()]),
                })
                .collect(),
        }
    }

    /// Checks that every tensor's length matches its shape and every value is finite.
    pub fn validate(&self) -> Result<(), ParameterSetError> {
        for tensor in &self.tensors {
            let Some(expected) = tensor.shape_len() else {
                return Err(ParameterSetError::ShapeOverflow {
                    name: tensor.name.clone(),
                    shape: tensor.shape.clone(),
                });
            };
            if expected != tensor.values.len() {
                return Err(ParameterSetError::LengthMismatch {
                    name: tensor.name.clone(),
                    shape: tensor.shape.clone(),
                    expected,
                    found: tensor.values.len(),
                });
            }
            if !tensor.values.all_finite() {
                return Err(ParameterSetError::NonFinite {
                    name: tensor.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks that `other` has the same names and shapes in the same order.
    pub fn check_same_layout(&self, other: &Self) -> Result<(), ParameterSetError> {
        if self.tensors.len() != other.tensors.len() {
            return Err(ParameterSetError::CountMismatch {
                expected: self.tensors.len(),
                found: other.tensors.len(),
            });
        }
        for (index, (mine, theirs)) in self.tensors.iter().zip(&other.tensors).enumerate() {
            if mine.name != theirs.name {
                return Err(ParameterSetError::NameMismatch {
                    index,
                    expected: mine.name.clone(),
                    found: theirs.name.clone(),
                });
            }
            if mine.shape != theirs.shape || mine.values.len() != theirs.values.len() {
                return Err(ParameterSetError::ShapeMismatch {
                    name: mine.name.clone(),
                    expected: mine.shape.clone(),
                    found: theirs.shape.clone(),
                });
            }
        }
        Ok(())
    }

    /// `self - base`, tensor by tensor: the update a client sends.
    pub fn delta_from(&self, base: &Self) -> Result<Self, ParameterSetError> {
        base.check_same_layout(self)?;
        Ok(self.zip_map(base, |new, old| new - old))
    }

    /// `self + delta`, tensor by tensor.
    pub fn plus(&self, delta: &Self) -> Result<Self, ParameterSetError> {
        self.check_same_layout(delta)?;
        Ok(self.zip_map(delta, |value, change| value + change))
    }

    /// Adds `weight * other` into `self` in place (the streaming step of a weighted average).
    pub fn add_scaled(&mut self, other: &Self, weight: f32) -> Result<(), ParameterSetError> {
        self.check_same_layout(other)?;
        for (mine, theirs) in self.tensors.iter_mut().zip(&other.tensors) {
            for (a, b) in mine.values.0.iter_mut().zip(&theirs.values.0) {
                *a += weight * b;
            }
        }
        Ok(())
    }

    /// Multiplies every value by `factor` in place.
    pub fn scale(&mut self, factor: f32) {
        for tensor in &mut self.tensors {
            for value in &mut tensor.values.0 {
                *value *= factor;
            }
        }
    }

    /// Euclidean norm over all values (tensor by tensor, each with
    /// [`crate::vector::sum_of_squares`]).
    pub fn l2_norm(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| crate::vector::sum_of_squares(&t.values.0))
            .sum::<f64>()
            .sqrt()
    }

    /// All values in order, across tensors.
    pub fn iter_values(&self) -> impl Iterator<Item = f32> + Clone + '_ {
        self.tensors.iter().flat_map(|t| t.values.0.iter().copied())
    }

    /// All values concatenated into one vector (tensor order).
    pub fn to_flat(&self) -> Vec<f32> {
        self.iter_values().collect()
    }

    /// A set of this layout holding `flat` (which must have `value_count()` elements).
    pub fn with_flat(&self, flat: &[f32]) -> Result<Self, ParameterSetError> {
        if flat.len() != self.value_count() {
            return Err(ParameterSetError::CountMismatch {
                expected: self.value_count(),
                found: flat.len(),
            });
        }
        let mut offset = 0;
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let len = t.values.len();
                let values = F32Vec(flat[offset..offset + len].to_vec());
                offset += len;
                NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    values,
                }
            })
            .collect();
        Ok(Self { tensors })
    }

    fn zip_map(&self, other: &Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .zip(&other.tensors)
                .map(|(a, b)| NamedTensor {
                    name: a.name.clone(),
                    shape: a.shape.clone(),
                    values: F32Vec(
                        a.values
                            .0
                            .iter()
                            .zip(&b.values.0)
                            .map(|(x, y)| f(*x, *y))
                            .collect(),
                    ),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzzing, `coordinator_message`): a `StartRound` whose tensor shape multiplies
    /// beyond `usize` made `validate` panic (overflow) instead of refusing the state.
    #[test]
    fn a_shape_whose_size_overflows_is_refused() {
        let set = ParameterSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![usize::MAX / 2, 3],
                values: F32Vec(vec![0.0; 6]),
            }],
        };
        assert!(matches!(
            set.validate(),
            Err(ParameterSetError::ShapeOverflow { .. })
        ));
        assert_eq!(set.tensors[0].shape_len(), None);
    }

    fn set(values: &[(&str, Vec<f32>)]) -> ParameterSet {
        ParameterSet {
            tensors: values
                .iter()
                .map(|(name, v)| NamedTensor {
                    name: name.to_string(),
                    shape: vec![v.len()],
                    values: F32Vec(v.clone()),
                })
                .collect(),
        }
    }

    #[test]
    fn delta_then_plus_restores_the_new_parameters() {
        let old = set(&[("a", vec![1.0, 2.0]), ("b", vec![3.0])]);
        let new = set(&[("a", vec![1.5, 1.0]), ("b", vec![-3.0])]);
        let delta = new.delta_from(&old).unwrap();
        assert_eq!(delta.to_flat(), vec![0.5, -1.0, -6.0]);
        assert_eq!(old.plus(&delta).unwrap(), new);
    }

    #[test]
    fn layout_mismatch_is_reported_with_the_name() {
        let a = set(&[("a", vec![1.0])]);
        let b = set(&[("x", vec![1.0])]);
        let err = a.delta_from(&b).unwrap_err();
        assert!(err.to_string().contains("`a`") || err.to_string().contains("`x`"));
    }

    #[test]
    fn validate_rejects_nan_and_wrong_lengths() {
        let nan = set(&[("w", vec![f32::NAN])]);
        assert_eq!(
            nan.validate(),
            Err(ParameterSetError::NonFinite { name: "w".into() })
        );
        let mut bad = set(&[("w", vec![1.0, 2.0])]);
        bad.tensors[0].shape = vec![3];
        assert!(matches!(
            bad.validate(),
            Err(ParameterSetError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn add_scaled_accumulates_a_weighted_sum() {
        let mut acc = set(&[("w", vec![0.0, 0.0])]);
        acc.add_scaled(&set(&[("w", vec![1.0, 2.0])]), 0.25)
            .unwrap();
        acc.add_scaled(&set(&[("w", vec![3.0, 4.0])]), 0.75)
            .unwrap();
        assert_eq!(acc.to_flat(), vec![2.5, 3.5]);
    }
}
