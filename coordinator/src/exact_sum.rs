//! Order-independent sums of floating-point values, for aggregation.
//!
//! Floating-point addition is not associative, so summing the same client updates in another
//! order gives (slightly) different bits. Over the network updates arrive in whatever order the
//! clients finish, so an in-process simulation, a networked run and a resumed run would disagree
//! in the last bits and then drift apart over rounds. [`ExactSum`] makes every sum independent
//! of the order of its addends: each addend is cut once to a fixed-point integer (a multiple of
//! 2^-64, truncated toward zero) and integers add exactly. The cut depends only on the addend
//! itself, so the total is a pure function of the multiset of addends.
//!
//! Precision: addends are kept to 2^-64 (about 5e-20) absolute, finer than an f32 delta's own
//! resolution for any value above about 1e-12; the one conversion back to `f64` rounds to
//! nearest. Speed: the conversion works on the float's bits (a shift of its mantissa), so a sum
//! costs a few nanoseconds per value, not a library call per value. Range: an addend's magnitude must stay below [`MAX_ADDEND`] (about 1.1e12), and up to
//! [`MAX_ADDENDS`] addends fit a sum without any chance of overflow.

use thiserror::Error;

/// Fractional bits of the fixed-point representation.
const FRACTION_BITS: i32 = 64;

/// Largest magnitude an addend may have (2^40).
pub const MAX_ADDEND: f64 = 1_099_511_627_776.0;

/// How many addends per coordinate a sum accepts: at most 2^104 each, 2^22 of them stay well
/// inside `i128`.
pub const MAX_ADDENDS: u64 = 1 << 22;

/// An addend out of the exact sum's range.
#[derive(Debug, Error, PartialEq)]
pub enum ExactSumError {
    #[error("value {value} at position {index} is not finite or exceeds {MAX_ADDEND:e}")]
    OutOfRange { index: usize, value: f64 },
    #[error("more than {MAX_ADDENDS} vectors in one sum")]
    TooManyAddends,
    #[error("vector of {found} values added to a sum of {expected}")]
    Length { expected: usize, found: usize },
}

/// An exact, order-independent running sum of vectors of a fixed length.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactSum {
    values: Vec<i128>,
    addends: u64,
}

impl ExactSum {
    /// A zero sum of `len` coordinates.
    pub fn zeros(len: usize) -> Self {
        Self {
            values: vec![0; len],
            addends: 0,
        }
    }

    /// Number of coordinates.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the sum has no coordinates.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether [`Self::add_scaled`] would accept `scale * values` (length, range, count), so a
    /// caller can check every part of an update before adding any.
    pub fn check_scaled<I>(&self, scale: f64, values: I) -> Result<(), ExactSumError>
    where
        I: IntoIterator,
        I::Item: Into<f64>,
    {
        if self.addends >= MAX_ADDENDS {
            return Err(ExactSumError::TooManyAddends);
        }
        let mut found = 0;
        for (index, value) in values.into_iter().enumerate() {
            let value = scale * value.into();
            if !in_range(value) {
                return Err(ExactSumError::OutOfRange { index, value });
            }
            found += 1;
        }
        if found != self.values.len() {
            return Err(ExactSumError::Length {
                expected: self.values.len(),
                found,
            });
        }
        Ok(())
    }

    /// Adds `scale * values[i]` to coordinate `i` (`scale * value` in `f64`: exact for f32
    /// values and integer scales below 2^29). Checked first: on error nothing is added.
    pub fn add_scaled<I>(&mut self, scale: f64, values: I) -> Result<(), ExactSumError>
    where
        I: IntoIterator + Clone,
        I::Item: Into<f64>,
    {
        self.check_scaled(scale, values.clone())?;
        for (acc, value) in self.values.iter_mut().zip(values) {
            *acc += to_fixed(scale * value.into());
        }
        self.addends += 1;
        Ok(())
    }

    /// Adds `values` (each coordinate its own addend). Checked first, like [`Self::add_scaled`].
    pub fn add<I>(&mut self, values: I) -> Result<(), ExactSumError>
    where
        I: IntoIterator + Clone,
        I::Item: Into<f64>,
    {
        self.add_scaled(1.0, values)
    }

    /// The sum, each coordinate rounded once to the nearest `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        self.values.iter().map(|&v| from_fixed(v)).collect()
    }

    /// The sum rounded to `f32` (through `f64`).
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| from_fixed(v) as f32).collect()
    }
}

fn in_range(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_ADDEND
}

/// `value * 2^64` truncated toward zero, for `value` within range (checked by the caller).
///
/// Two hardware float-to-integer conversions instead of one to `i128` (a library call):
/// `high = trunc(value * 2^20)` (at most 2^60, so it fits an `i64`), and the remainder
/// `value * 2^20 - high` (exact, in (-1, 1), of the same sign) times 2^44, truncated. Both parts
/// truncate toward zero with the same sign, so `high * 2^44 + low` is exactly
/// `trunc(value * 2^64)`.
fn to_fixed(value: f64) -> i128 {
    debug_assert!(in_range(value));
    let scaled = value * HIGH_SCALE;
    let high = scaled as i64;
    let low = ((scaled - high as f64) * LOW_SCALE) as i64;
    (i128::from(high) << LOW_BITS) + i128::from(low)
}

/// `FRACTION_BITS` split as 20 bits converted with the high part and 44 with the low part.
const LOW_BITS: i32 = 44;
const HIGH_SCALE: f64 = (1u64 << (FRACTION_BITS - LOW_BITS)) as f64;
const LOW_SCALE: f64 = (1u64 << LOW_BITS) as f64;

fn from_fixed(value: i128) -> f64 {
    value as f64 * 2f64.powi(-FRACTION_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_sum_does_not_depend_on_the_order_of_addends() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let vectors: Vec<Vec<f32>> = (0..50)
            .map(|_| {
                (0..64)
                    .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-8..4)))
                    .collect()
            })
            .collect();
        let weights: Vec<f64> = (0..50).map(|_| rng.random_range(1..500) as f64).collect();
        let sum_in = |order: &[usize]| {
            let mut sum = ExactSum::zeros(64);
            for &i in order {
                sum.add_scaled(weights[i], vectors[i].iter().copied())
                    .unwrap();
            }
            sum.to_f64()
        };
        let mut order: Vec<usize> = (0..50).collect();
        let first = sum_in(&order);
        // Plain f64 summation in two orders differs somewhere (the problem being solved) ...
        let naive = |order: &[usize]| {
            let mut acc = vec![0.0f64; 64];
            for &i in order {
                for (a, v) in acc.iter_mut().zip(&vectors[i]) {
                    *a += weights[i] * f64::from(*v);
                }
            }
            acc
        };
        let mut reversed = order.clone();
        reversed.reverse();
        assert_ne!(naive(&order), naive(&reversed));
        // ... the exact sum never does.
        for _ in 0..5 {
            order.shuffle(&mut rng);
            assert_eq!(sum_in(&order), first);
        }
        // And it is the true sum to within f64 rounding.
        let truth = naive(&(0..50).collect::<Vec<_>>());
        for (a, b) in first.iter().zip(&truth) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-6), "{a} vs {b}");
        }
    }

    #[test]
    fn the_bit_level_conversion_is_truncation_of_value_times_2_to_the_64() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            MAX_ADDEND,
            -MAX_ADDEND,
            1e-30,
            5e-20,
        ];
        values.extend(
            (0..10_000)
                .map(|_| rng.random_range(-1.0f64..1.0) * 2f64.powi(rng.random_range(-70..40))),
        );
        for value in values {
            let expected = (value * 2f64.powi(FRACTION_BITS)).trunc() as i128;
            assert_eq!(to_fixed(value), expected, "{value:e}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused_and_leave_the_sum_unchanged() {
        let mut sum = ExactSum::zeros(3);
        sum.add([1.0f32, 2.0, 3.0]).unwrap();
        let before = sum.clone();
        assert!(matches!(
            sum.add([1.0f64, f64::NAN, 0.0]),
            Err(ExactSumError::OutOfRange { index: 1, .. })
        ));
        assert_eq!(sum, before);
        assert!(matches!(
            sum.add([0.0f64, 0.0, 2e12]),
            Err(ExactSumError::OutOfRange { index: 2, .. })
        ));
        assert!(matches!(
            sum.add([0.0f64, 1.0]),
            Err(ExactSumError::Length {
                expected: 3,
                found: 2
            })
        ));
        assert_eq!(sum, before);
        assert_eq!(sum.to_f32(), vec![1.0, 2.0, 3.0]);
    }
}
