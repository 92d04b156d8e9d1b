//! Order-independent sums of floating-point values, for aggregation.
//!
//! Floating-point addition is not associative, so summing the same client updates in another
//! order gives (slightly) different bits. Over the network updates arrive in whatever order the
//! clients finish, so an in-process simulation, a networked run and a resumed run would disagree
//! in the last bits and then drift apart over rounds. [`ExactSum`] makes every sum independent
//! of the order of its addends: each addend is cut once to a fixed-point integer (the nearest
//! multiple of 2^-64, ties to even) and integers add exactly. The cut depends only on the addend
//! itself, so the total is a pure function of the multiset of addends.
//!
//! Precision: addends are kept to 2^-64 (about 5e-20) absolute, finer than an f32 delta's own
//! resolution for any value above about 1e-12; the one conversion back to `f64` rounds to
//! nearest. Range: an addend's magnitude must stay below [`MAX_ADDEND`] (about 1.1e12), and up to
//! [`MAX_ADDENDS`] addends fit a sum without any chance of overflow.
//!
//! Speed: each fixed-point addend is held as three 35-bit limbs in `i64` (`limbs`), found with
//! floating-point additions alone (no float-to-integer conversion instruction), and each limb has
//! its own array; so adding a vector is a loop of plain `f64` and `i64` lane operations that the
//! compiler vectorises, about a nanosecond per value.

use mpcl_protocol::vector::largest_magnitude;
use thiserror::Error;

/// Largest magnitude an addend may have (2^40).
pub const MAX_ADDEND: f64 = 1_099_511_627_776.0;

/// How many addends per coordinate a sum accepts: each limb of an addend is at most 2^34, so
/// 2^22 of them stay well inside `i64`.
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
    /// Per coordinate, the sums of its addends' [`limbs`]: the total in units of 2^-64 is
    /// `high * 2^70 + middle * 2^35 + low`. Each limb's sum is a pure function of the addends,
    /// so equal limbs mean equal sums.
    high: Vec<i64>,
    middle: Vec<i64>,
    low: Vec<i64>,
    addends: u64,
}

impl ExactSum {
    /// A zero sum of `len` coordinates.
    pub fn zeros(len: usize) -> Self {
        Self {
            high: vec![0; len],
            middle: vec![0; len],
            low: vec![0; len],
            addends: 0,
        }
    }

    /// Number of coordinates.
    pub fn len(&self) -> usize {
        self.high.len()
    }

    /// Whether the sum has no coordinates.
    pub fn is_empty(&self) -> bool {
        self.high.is_empty()
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
        if found != self.len() {
            return Err(ExactSumError::Length {
                expected: self.len(),
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
        let limb_scale = scale * HIGH_UNIT;
        for (i, value) in values.into_iter().enumerate() {
            let [high, middle, low] = limbs(limb_scale * value.into());
            self.high[i] += high;
            self.middle[i] += middle;
            self.low[i] += low;
        }
        self.addends += 1;
        Ok(())
    }

    /// [`Self::add_scaled`] for `f32` values given as consecutive slices (an update's tensors):
    /// the same sum, checked the same way, in loops over each slice that the compiler
    /// vectorises instead of one chained iterator.
    pub fn add_scaled_slices<'a, P>(&mut self, scale: f64, parts: P) -> Result<(), ExactSumError>
    where
        P: IntoIterator<Item = &'a [f32]> + Clone,
    {
        let found: usize = parts.clone().into_iter().map(<[f32]>::len).sum();
        // `|scale * v|` is largest where `|v|` is (rounding is monotone), so one vectorised pass
        // per slice tells whether every addend is in range; only when something is wrong is the
        // slow check run, to name the problem in the error.
        let fits = self.addends < MAX_ADDENDS
            && found == self.len()
            && parts.clone().into_iter().all(|part| {
                largest_magnitude(part).is_some_and(|largest| in_range(scale * f64::from(largest)))
            });
        if !fits {
            let error = self
                .check_scaled(scale, parts.into_iter().flatten().copied())
                .err();
            return Err(error.unwrap_or(ExactSumError::OutOfRange {
                index: 0,
                value: scale,
            }));
        }
        let limb_scale = scale * HIGH_UNIT;
        let mut start = 0;
        for part in parts {
            let end = start + part.len();
            add_limbs(
                &mut self.high[start..end],
                &mut self.middle[start..end],
                &mut self.low[start..end],
                part,
                limb_scale,
            );
            start = end;
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
        (0..self.len()).map(|i| self.coordinate(i)).collect()
    }

    /// The sum rounded to `f32` (through `f64`).
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.coordinate(i) as f32).collect()
    }

    /// Coordinate `i` of the sum, rounded once to the nearest `f64`.
    fn coordinate(&self, i: usize) -> f64 {
        let fixed = (i128::from(self.high[i]) << (2 * LIMB_BITS))
            + (i128::from(self.middle[i]) << LIMB_BITS)
            + i128::from(self.low[i]);
        fixed as f64 * 2f64.powi(-FRACTION_BITS)
    }
}

mpcl_protocol::avx2_or_portable! {
    /// Adds each of `values` times `limb_scale`, cut into limbs, to the limb arrays (all of one
    /// length; the caller has range-checked the addends).
    fn add_limbs / add_limbs_portable / add_limbs_avx2 (
        high: &mut [i64],
        middle: &mut [i64],
        low: &mut [i64],
        values: &[f32],
        limb_scale: f64,
    ) {
        let sums = high.iter_mut().zip(middle).zip(low);
        for (((high, middle), low), &value) in sums.zip(values) {
            let [h, m, l] = limbs(limb_scale * f64::from(value));
            *high += h;
            *middle += m;
            *low += l;
        }
    }
}

fn in_range(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_ADDEND
}

/// Fractional bits of the fixed-point representation.
const FRACTION_BITS: i32 = 64;
/// Bits per limb below the high one.
const LIMB_BITS: i32 = 35;
/// An addend's high limb counts units of `2^(2 * LIMB_BITS - FRACTION_BITS)`: multiplying the
/// addend by this gives the high limb's value before rounding.
const HIGH_UNIT: f64 = 1.0 / (1u64 << (2 * LIMB_BITS - FRACTION_BITS)) as f64;
/// `2^LIMB_BITS`.
const LIMB: f64 = (1u64 << LIMB_BITS) as f64;
/// `1.5 * 2^52`: adding it to an `f64` of magnitude below 2^51 rounds that to an integer (to
/// nearest, ties to even), which is then the difference of the sum's bits and its own.
const ROUNDER: f64 = 6_755_399_441_055_744.0;

/// `y` rounded to the nearest integer, as a float and as an `i64` (`|y| <= 2^51`).
#[inline(always)]
fn nearest(y: f64) -> (f64, i64) {
    let shifted = y + ROUNDER;
    (
        shifted - ROUNDER,
        shifted.to_bits() as i64 - ROUNDER.to_bits() as i64,
    )
}

/// The limbs `[high, middle, low]` of the addend `y / HIGH_UNIT` (the caller scales the addend
/// by [`HIGH_UNIT`]; `|y| <= MAX_ADDEND * HIGH_UNIT = 2^34`): `high * 2^70 + middle * 2^35 + low`
/// is the addend times 2^64 rounded to the nearest integer, ties to even, and each limb is at
/// most 2^34 in magnitude.
///
/// Every step is exact but the roundings: `y - round(y)` is exact for `|y| < 2^52`, and scaling
/// by a power of two is exact, so the last limb is the addend's remaining bits rounded once;
/// as the other limbs are multiples of 2^35 (even), the tie goes to even on the whole value.
#[inline(always)]
fn limbs(y: f64) -> [i64; 3] {
    let (high, high_bits) = nearest(y);
    let middle_part = (y - high) * LIMB;
    let (middle, middle_bits) = nearest(middle_part);
    let (_, low_bits) = nearest((middle_part - middle) * LIMB);
    [high_bits, middle_bits, low_bits]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_loop_gives_the_baseline_loops_limbs() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for n in [0usize, 1, 3, 4, 5, 17, 1000] {
            let values: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-12..12)))
                .collect();
            let scale = rng.random_range(1.0..1000.0) * HIGH_UNIT;
            let start: Vec<i64> = (0..n)
                .map(|_| rng.random_range(-1i64 << 40..1 << 40))
                .collect();
            let mut a = [start.clone(), start.clone(), start];
            let mut b = a.clone();
            let [ah, am, al] = &mut a;
            add_limbs_portable(ah, am, al, &values, scale);
            let [bh, bm, bl] = &mut b;
            // SAFETY: AVX2 is present (checked above).
            unsafe { add_limbs_avx2(bh, bm, bl, &values, scale) };
            assert_eq!(a, b, "n = {n}");
        }
    }

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
    fn slices_sum_and_refuse_exactly_like_values() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let values: Vec<f32> = (0..300)
            .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-30..8)))
            .collect();
        let parts = |values: &[f32]| {
            let (a, rest) = values.split_at(7);
            let (b, c) = rest.split_at(250);
            [a.to_vec(), b.to_vec(), c.to_vec()]
        };
        for scale in [1.0, 3.0, 417.0, 0.1] {
            let mut by_values = ExactSum::zeros(values.len());
            let mut by_slices = ExactSum::zeros(values.len());
            for round in 0..3 {
                let shifted: Vec<f32> = values.iter().map(|v| v * (round + 1) as f32).collect();
                by_values
                    .add_scaled(scale, shifted.iter().copied())
                    .unwrap();
                let parts = parts(&shifted);
                by_slices
                    .add_scaled_slices(scale, parts.iter().map(Vec::as_slice))
                    .unwrap();
            }
            assert_eq!(by_slices, by_values, "scale {scale}");
        }
        // Out of range in the last slice, and a wrong length: the same errors, nothing added.
        let mut sum = ExactSum::zeros(values.len());
        let before = sum.clone();
        for bad in [f32::NAN, f32::INFINITY, -2e12] {
            let mut broken = values.clone();
            broken[290] = bad;
            let parts = parts(&broken);
            let expected = sum.add_scaled(1.0, broken.iter().copied()).unwrap_err();
            let error = sum
                .add_scaled_slices(1.0, parts.iter().map(Vec::as_slice))
                .unwrap_err();
            // Debug forms, since NaN is not equal to itself.
            assert_eq!(format!("{error:?}"), format!("{expected:?}"));
            assert_eq!(sum, before);
        }
        assert!(matches!(
            sum.add_scaled_slices(1.0, [&values[..10]]),
            Err(ExactSumError::Length { found: 10, .. })
        ));
        assert!(matches!(
            sum.add_scaled_slices(f64::NAN, [values.as_slice()]),
            Err(ExactSumError::OutOfRange { index: 0, .. })
        ));
        assert_eq!(sum, before);
    }

    #[test]
    fn an_addend_is_cut_to_the_nearest_multiple_of_2_to_the_minus_64() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let unit = 2f64.powi(-FRACTION_BITS);
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
            // Ties: half a unit goes to even (0), one and a half units to 2, -2.5 units to -2.
            0.5 * unit,
            1.5 * unit,
            -2.5 * unit,
            // The largest middle and low limbs.
            (2f64.powi(35) - 1.0) * 2f64.powi(-29) + (2f64.powi(35) - 1.0) * unit,
        ];
        values.extend(
            (0..10_000)
                .map(|_| rng.random_range(-1.0f64..1.0) * 2f64.powi(rng.random_range(-70..40))),
        );
        for value in values {
            let expected = (value * 2f64.powi(FRACTION_BITS)).round_ties_even() as i128;
            let [high, middle, low] = limbs(value * HIGH_UNIT);
            for limb in [high, middle, low] {
                assert!(limb.abs() <= 1 << 34, "{value:e}: limb {limb}");
            }
            let fixed = (i128::from(high) << 70) + (i128::from(middle) << 35) + i128::from(low);
            assert_eq!(fixed, expected, "{value:e}");
        }
    }

    #[test]
    fn the_largest_sum_does_not_overflow() {
        let mut sum = ExactSum::zeros(2);
        for _ in 0..64 {
            sum.add([MAX_ADDEND, -MAX_ADDEND]).unwrap();
        }
        // The limb sums grow linearly; at MAX_ADDENDS they stay below 2^57.
        sum.high
            .iter_mut()
            .for_each(|h| *h *= (MAX_ADDENDS / 64) as i64);
        assert_eq!(
            sum.to_f64(),
            vec![
                MAX_ADDEND * MAX_ADDENDS as f64,
                -MAX_ADDEND * MAX_ADDENDS as f64
            ]
        );
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
