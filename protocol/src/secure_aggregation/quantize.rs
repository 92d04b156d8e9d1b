//! Fixed-point quantisation: real values to `u32` words modulo 2^32 and sums of words back.
//!
//! Masks are uniform in Z_{2^32}, so what is masked must be integers modulo 2^32. A client maps
//! each value `v` to `q = round(v * s)` (written in two's complement as a `u32`); the coordinator
//! adds the words with wrapping arithmetic and reads the sum back as a signed `i32` divided by
//! `s`.
//!
//! # The bound
//!
//! For the sum of `n` clients to be read back correctly it must not wrap: `|sum q_i| <= 2^31 - 1`.
//! [`Quantizer::quantize`] therefore refuses any value whose word would exceed
//! `floor((2^31 - 1) / n)` in magnitude, so that **`n * max|v| * s < 2^31`** holds by
//! construction ([`Quantizer::max_abs_value`] says what that allows). A refused value is an error,
//! never clamped silently: wrapping would corrupt everyone's sum without anyone noticing.
//!
//! # The error
//!
//! Each word is off by at most `0.5 / s` from `v * s / s`, so a dequantised sum of `n` clients is
//! within **`n * 0.5 / s`** of the exact sum of the (f64-converted) inputs, per coordinate
//! ([`Quantizer::sum_error_bound`]). Counts ([`ValueKind::Count`]) use scale 1 and are exact for
//! integer inputs.
//!
//! # What it protects against, and what not
//!
//! It protects the sum against silent wrap-around (a value outside the range is refused with the
//! segment and index named). It does not make an update private by itself, and it does not
//! bound a malicious client's influence beyond the range: any in-range value is summed.
//!
//! Choosing `s`: precision improves with `s`, range shrinks with it. With `s = 2^16` and 10
//! clients a client may send values up to about 3276 with a per-coordinate error of 7.6e-5 on the
//! sum; a sample-weighted delta divided by the total sample count then carries an error of at most
//! `0.5 / s` (usually far less).

use thiserror::Error;

/// The largest magnitude a sum may reach without wrapping: 2^31 - 1.
pub const SUM_LIMIT: u64 = i32::MAX as u64;

/// Whether a value is real (scaled by the configured scale) or a count (scale 1, exact for
/// integers: sample counts, co-occurrence counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Scaled by [`Quantizer::scale`].
    Real,
    /// Scaled by 1.
    Count,
}

/// Errors from quantising values.
#[derive(Debug, Error, PartialEq)]
pub enum QuantizationError {
    /// The scale or client count is unusable.
    #[error("invalid quantisation: {0}")]
    Invalid(String),
    /// A value is NaN or infinite.
    #[error("{segment}[{index}] is not finite ({value})")]
    NonFinite {
        segment: String,
        index: usize,
        value: f64,
    },
    /// A value is too large for the sum of all clients to fit in 31 bits.
    #[error(
        "{segment}[{index}] = {value} is outside +-{max_abs} (the most a client may send so that the sum of {clients} clients at scale {scale} fits in 31 bits; lower the quantisation scale or clip the update)"
    )]
    OutOfRange {
        segment: String,
        index: usize,
        value: f64,
        max_abs: f64,
        clients: usize,
        scale: f64,
    },
}

/// Fixed-point quantisation for the sum of up to `clients` vectors at scale `scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantizer {
    scale: f64,
    clients: usize,
}

impl Quantizer {
    /// A quantiser for sums of at most `clients` vectors. `scale` must be finite, at least 1 and
    /// at most 2^30 (`clients` at least 1 and at most 2^31 - 1).
    pub fn new(scale: f64, clients: usize) -> Result<Self, QuantizationError> {
        if !(scale.is_finite() && (1.0..=(1u64 << 30) as f64).contains(&scale)) {
            return Err(QuantizationError::Invalid(format!(
                "scale {scale} must be in [1, 2^30]"
            )));
        }
        if clients == 0 || clients as u64 > SUM_LIMIT {
            return Err(QuantizationError::Invalid(format!(
                "client count {clients} must be in 1..=2^31-1"
            )));
        }
        Ok(Self { scale, clients })
    }

    /// The largest power-of-two scale (at most 2^30) at which a client may send values up to
    /// `max_abs_value` in a sum of `clients`; `None` when not even scale 1 allows it.
    pub fn largest_power_of_two_scale(max_abs_value: f64, clients: usize) -> Option<f64> {
        if !(max_abs_value.is_finite() && max_abs_value >= 0.0) || clients == 0 {
            return None;
        }
        let limit = (SUM_LIMIT / clients as u64) as f64;
        (0..=30)
            .rev()
            .map(|k| (1u64 << k) as f64)
            .find(|scale| (max_abs_value * scale).round() <= limit)
    }

    /// The scale of real values.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The number of clients whose sum must fit.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// The scale applied to values of `kind`.
    pub fn scale_of(&self, kind: ValueKind) -> f64 {
        match kind {
            ValueKind::Real => self.scale,
            ValueKind::Count => 1.0,
        }
    }

    /// The largest word magnitude one client may send: `floor((2^31 - 1) / clients)`.
    pub fn word_limit(&self) -> u64 {
        SUM_LIMIT / self.clients as u64
    }

    /// The largest value magnitude one client may send for `kind` (values a little above may
    /// still round into range).
    pub fn max_abs_value(&self, kind: ValueKind) -> f64 {
        self.word_limit() as f64 / self.scale_of(kind)
    }

    /// The most a dequantised sum of `clients` vectors can differ from the exact sum, per
    /// coordinate: `clients * 0.5 / scale` (for [`ValueKind::Count`], 0 when every input is an
    /// integer).
    pub fn sum_error_bound(&self, kind: ValueKind) -> f64 {
        self.clients as f64 * 0.5 / self.scale_of(kind)
    }

    /// One value as a word; `segment` and `index` only name it in errors.
    pub fn quantize(
        &self,
        value: f64,
        kind: ValueKind,
        segment: &str,
        index: usize,
    ) -> Result<u32, QuantizationError> {
        if !value.is_finite() {
            return Err(QuantizationError::NonFinite {
                segment: segment.to_string(),
                index,
                value,
            });
        }
        let scaled = (value * self.scale_of(kind)).round();
        if scaled.abs() > self.word_limit() as f64 {
            return Err(QuantizationError::OutOfRange {
                segment: segment.to_string(),
                index,
                value,
                max_abs: self.max_abs_value(kind),
                clients: self.clients,
                scale: self.scale_of(kind),
            });
        }
        Ok((scaled as i64 as i32) as u32)
    }

    /// Appends the words of `values` to `out`; on error nothing is appended.
    pub fn quantize_into(
        &self,
        values: impl IntoIterator<Item = f64>,
        kind: ValueKind,
        segment: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), QuantizationError> {
        let start = out.len();
        for (index, value) in values.into_iter().enumerate() {
            match self.quantize(value, kind, segment, index) {
                Ok(word) => out.push(word),
                Err(error) => {
                    out.truncate(start);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// A summed word back as a value: the word read as a signed 32-bit integer, divided by the
    /// scale. Correct as long as at most `clients` in-range words were summed.
    pub fn dequantize_sum(&self, word: u32, kind: ValueKind) -> f64 {
        f64::from(word as i32) / self.scale_of(kind)
    }
}

/// Adds `values` into `acc` word by word, modulo 2^32.
pub fn wrapping_add_into(acc: &mut [u32], values: &[u32]) {
    for (a, v) in acc.iter_mut().zip(values) {
        *a = a.wrapping_add(*v);
    }
}

/// Subtracts `values` from `acc` word by word, modulo 2^32.
pub fn wrapping_sub_into(acc: &mut [u32], values: &[u32]) {
    for (a, v) in acc.iter_mut().zip(values) {
        *a = a.wrapping_sub(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_values_round_trip_through_twos_complement() {
        let q = Quantizer::new(1024.0, 3).unwrap();
        let words: Vec<u32> = [-1.5, 0.25, 2.0]
            .iter()
            .map(|v| q.quantize(*v, ValueKind::Real, "x", 0).unwrap())
            .collect();
        let mut sum = vec![0u32];
        for w in &words {
            wrapping_add_into(&mut sum, &[*w]);
        }
        assert_eq!(q.dequantize_sum(sum[0], ValueKind::Real), 0.75);
    }

    #[test]
    fn the_sum_of_the_largest_allowed_values_does_not_wrap() {
        for clients in [1, 2, 7, 100, 255] {
            let q = Quantizer::new(65536.0, clients).unwrap();
            let max = q.max_abs_value(ValueKind::Real);
            for sign in [1.0, -1.0] {
                let word = q.quantize(sign * max, ValueKind::Real, "x", 0).unwrap();
                let mut sum = 0u32;
                for _ in 0..clients {
                    sum = sum.wrapping_add(word);
                }
                let back = q.dequantize_sum(sum, ValueKind::Real);
                let exact = sign * max * clients as f64;
                assert!(
                    (back - exact).abs() <= q.sum_error_bound(ValueKind::Real),
                    "{clients}: {back} vs {exact}"
                );
            }
            let above = max + 1.0 / 65536.0;
            assert!(matches!(
                q.quantize(above, ValueKind::Real, "delta", 3),
                Err(QuantizationError::OutOfRange { index: 3, .. })
            ));
        }
    }

    #[test]
    fn rounding_error_is_within_half_a_step() {
        let q = Quantizer::new(100.0, 1).unwrap();
        for i in 0..1000 {
            let v = (i as f64) * 0.0137 - 6.0;
            let w = q.quantize(v, ValueKind::Real, "x", i).unwrap();
            assert!((q.dequantize_sum(w, ValueKind::Real) - v).abs() <= 0.005 + 1e-12);
        }
    }

    #[test]
    fn counts_are_exact_and_nan_is_refused() {
        let q = Quantizer::new(65536.0, 10).unwrap();
        let w = q.quantize(123456.0, ValueKind::Count, "n", 0).unwrap();
        assert_eq!(q.dequantize_sum(w, ValueKind::Count), 123456.0);
        assert!(matches!(
            q.quantize(f64::NAN, ValueKind::Real, "x", 0),
            Err(QuantizationError::NonFinite { .. })
        ));
        let mut out = vec![7];
        assert!(
            q.quantize_into([1.0, f64::INFINITY], ValueKind::Real, "x", &mut out)
                .is_err()
        );
        assert_eq!(out, vec![7], "nothing appended on error");
    }

    #[test]
    fn invalid_scales_are_refused_and_scales_can_be_suggested() {
        assert!(Quantizer::new(0.5, 2).is_err());
        assert!(Quantizer::new(f64::NAN, 2).is_err());
        assert!(Quantizer::new(2.0, 0).is_err());
        let scale = Quantizer::largest_power_of_two_scale(100.0, 20).unwrap();
        assert_eq!(scale, 1048576.0); // (2^31 - 1) / 20 / 100 = 1.07e6 -> 2^20; 2^21 is too large
        let q = Quantizer::new(scale, 20).unwrap();
        assert!(q.quantize(100.0, ValueKind::Real, "x", 0).is_ok());
        assert!(Quantizer::largest_power_of_two_scale(1e12, 2).is_none());
    }
}
