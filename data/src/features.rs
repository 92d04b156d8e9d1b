//! Features computed from raw signal windows, for users (and readers such as WESAD) that have raw
//! recordings instead of the precomputed features of DMER.
//!
//! - **EEG differential entropy** ([`differential_entropy`], [`eeg_de_windows`]): per band (delta
//!   1-4, theta 4-8, alpha 8-14, beta 14-31, gamma 31-49 Hz) the signal is band-passed by an ideal
//!   FFT filter (keep the bins with `lo <= |f| < hi`, zero the rest), and
//!   `DE = 0.5 ln(2 pi e var)` of the band-passed signal. Its variance is computed from the kept
//!   bins by Parseval's theorem, `var = sum_kept |X_k|^2 / N^2` (the band excludes DC, so the
//!   band-passed mean is zero). The variance is floored at [`VARIANCE_FLOOR`] so that a silent band
//!   gives a finite value. Windows are 1 s long.
//! - **Window statistics** ([`window_statistics`], 20 values in four groups of five): median, mean, std
//!   (population), min, max of the signal, of its first difference and of its second difference,
//!   then five spectral statistics of the mean-removed window's one-sided power spectrum
//!   `P_k = |X_k|^2`, `k = 1..=N/2` (DC excluded): centroid `sum f P / sum P`, spread
//!   `sqrt(sum (f - centroid)^2 P / sum P)`, normalised entropy `-sum p ln p / ln K` with
//!   `p = P / sum P` over the `K` bins, dominant frequency (first bin of maximal power) and the 85 %
//!   roll-off frequency (the lowest `f_k` whose cumulative power reaches 85 % of the total). A flat
//!   window (no power) has all five spectral statistics zero. Windows are 5 s with a 1 s hop
//!   ([`sliding_windows`]).
//!
//! FFTs come from `rustfft`; everything is computed in `f64` and returned as `f32`. The values are
//! checked against an independent numpy implementation (`tools/make_feature_references.py`).

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use thiserror::Error;

/// The five EEG bands: name, low edge (inclusive), high edge (exclusive), in Hz.
pub const EEG_BANDS: [(&str, f64, f64); 5] = [
    ("delta", 1.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 14.0),
    ("beta", 14.0, 31.0),
    ("gamma", 31.0, 49.0),
];

/// Smallest band variance used in the differential entropy (so that `ln` stays finite).
pub const VARIANCE_FLOOR: f64 = 1e-12;

/// Length of an EEG differential-entropy window, in seconds.
pub const DE_WINDOW_SECONDS: f64 = 1.0;

/// Length and hop of a statistics window, in seconds.
pub const STAT_WINDOW_SECONDS: f64 = 5.0;
/// Hop between consecutive statistics windows, in seconds.
pub const STAT_HOP_SECONDS: f64 = 1.0;

/// Number of values [`window_statistics`] returns.
pub const STATISTICS_WIDTH: usize = 20;

/// The roll-off fraction of the spectral roll-off frequency.
pub const ROLLOFF_FRACTION: f64 = 0.85;

/// Names of the [`window_statistics`] values, in order (four groups of five).
pub const STATISTICS_NAMES: [&str; STATISTICS_WIDTH] = [
    "median",
    "mean",
    "std",
    "min",
    "max",
    "diff1_median",
    "diff1_mean",
    "diff1_std",
    "diff1_min",
    "diff1_max",
    "diff2_median",
    "diff2_mean",
    "diff2_std",
    "diff2_min",
    "diff2_max",
    "spectral_centroid",
    "spectral_spread",
    "spectral_entropy",
    "dominant_frequency",
    "spectral_rolloff",
];

/// Why features could not be computed.
#[derive(Debug, Error, PartialEq)]
pub enum FeatureError {
    /// The window is too short for the statistic.
    #[error("window of {len} samples is too short (need at least {min})")]
    TooShort {
        /// Samples given.
        len: usize,
        /// Samples needed.
        min: usize,
    },
    /// The sampling rate is not a positive finite number.
    #[error("sampling rate {0} Hz is not positive")]
    BadRate(f64),
    /// The signal holds NaN or infinity.
    #[error("sample {index} is not finite")]
    NonFinite {
        /// Index of the first bad sample.
        index: usize,
    },
}

fn check(signal: &[f32], rate: f64, min: usize) -> Result<(), FeatureError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(FeatureError::BadRate(rate));
    }
    if signal.len() < min {
        return Err(FeatureError::TooShort {
            len: signal.len(),
            min,
        });
    }
    if let Some(index) = signal.iter().position(|v| !v.is_finite()) {
        return Err(FeatureError::NonFinite { index });
    }
    Ok(())
}

/// Plans FFTs once per length; a reader computing thousands of windows keeps one of these.
pub struct Spectra {
    planner: FftPlanner<f64>,
}

impl Default for Spectra {
    fn default() -> Self {
        Self {
            planner: FftPlanner::new(),
        }
    }
}

impl std::fmt::Debug for Spectra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spectra")
    }
}

impl Spectra {
    /// A new planner cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn fft(&mut self, len: usize) -> Arc<dyn Fft<f64>> {
        self.planner.plan_fft_forward(len)
    }

    /// The full complex spectrum of `values`.
    fn spectrum(&mut self, values: &[f64]) -> Vec<Complex<f64>> {
        let mut buffer: Vec<Complex<f64>> = values.iter().map(|v| Complex::new(*v, 0.0)).collect();
        self.fft(buffer.len()).process(&mut buffer);
        buffer
    }

    /// Differential entropy of `signal` (sampled at `rate` Hz) in each band of `bands`.
    pub fn differential_entropy(
        &mut self,
        signal: &[f32],
        rate: f64,
        bands: &[(&str, f64, f64)],
    ) -> Result<Vec<f32>, FeatureError> {
        check(signal, rate, 2)?;
        let n = signal.len();
        let values: Vec<f64> = signal.iter().map(|v| f64::from(*v)).collect();
        let spectrum = self.spectrum(&values);
        let n_f = n as f64;
        Ok(bands
            .iter()
            .map(|(_, lo, hi)| {
                let power: f64 = spectrum
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| {
                        // |frequency| of bin k, counting bins above N/2 as negative frequencies.
                        let k = (*k).min(n - *k) as f64;
                        let f = k * rate / n_f;
                        *lo <= f && f < *hi
                    })
                    .map(|(_, c)| c.norm_sqr())
                    .sum();
                let var = (power / (n_f * n_f)).max(VARIANCE_FLOOR);
                (0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * var).ln()) as f32
            })
            .collect())
    }

    /// The 20 [`STATISTICS_NAMES`] of one window of `signal` sampled at `rate` Hz.
    pub fn window_statistics(
        &mut self,
        signal: &[f32],
        rate: f64,
    ) -> Result<Vec<f32>, FeatureError> {
        check(signal, rate, 3)?;
        let x: Vec<f64> = signal.iter().map(|v| f64::from(*v)).collect();
        let d1: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let d2: Vec<f64> = d1.windows(2).map(|w| w[1] - w[0]).collect();
        let mut out = Vec::with_capacity(STATISTICS_WIDTH);
        for series in [&x, &d1, &d2] {
            out.extend(five_number_summary(series));
        }
        out.extend(self.spectral_statistics(&x, rate));
        Ok(out.into_iter().map(|v| v as f32).collect())
    }

    /// Centroid, spread, normalised entropy, dominant frequency and roll-off of the mean-removed
    /// window.
    fn spectral_statistics(&mut self, x: &[f64], rate: f64) -> [f64; 5] {
        let n = x.len();
        let mean = x.iter().sum::<f64>() / n as f64;
        let centred: Vec<f64> = x.iter().map(|v| v - mean).collect();
        let spectrum = self.spectrum(&centred);
        let bins: Vec<(f64, f64)> = (1..=n / 2)
            .map(|k| (k as f64 * rate / n as f64, spectrum[k].norm_sqr()))
            .collect();
        let total: f64 = bins.iter().map(|(_, p)| p).sum();
        // Relative to the window's own energy: anything below rounding noise counts as flat.
        let energy: f64 = x.iter().map(|v| v * v).sum::<f64>() * n as f64;
        if bins.is_empty() || total <= 1e-20 * energy.max(f64::MIN_POSITIVE) {
            return [0.0; 5];
        }
        let centroid = bins.iter().map(|(f, p)| f * p).sum::<f64>() / total;
        let spread = (bins
            .iter()
            .map(|(f, p)| (f - centroid).powi(2) * p)
            .sum::<f64>()
            / total)
            .sqrt();
        let entropy = if bins.len() > 1 {
            -bins
                .iter()
                .map(|(_, p)| p / total)
                .filter(|p| *p > 0.0)
                .map(|p| p * p.ln())
                .sum::<f64>()
                / (bins.len() as f64).ln()
        } else {
            0.0
        };
        let mut dominant = bins[0];
        for bin in &bins {
            if bin.1 > dominant.1 {
                dominant = *bin;
            }
        }
        let mut cumulative = 0.0;
        let mut rolloff = bins[bins.len() - 1].0;
        for (f, p) in &bins {
            cumulative += p;
            if cumulative >= ROLLOFF_FRACTION * total {
                rolloff = *f;
                break;
            }
        }
        [centroid, spread, entropy, dominant.0, rolloff]
    }
}

/// Median, mean, population std, min, max (all zero for an empty series).
fn five_number_summary(values: &[f64]) -> [f64; 5] {
    if values.is_empty() {
        return [0.0; 5];
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    };
    [
        median,
        mean,
        var.sqrt(),
        sorted[0],
        sorted[sorted.len() - 1],
    ]
}

/// Differential entropy of one window in the five [`EEG_BANDS`].
pub fn differential_entropy(signal: &[f32], rate: f64) -> Result<Vec<f32>, FeatureError> {
    Spectra::new().differential_entropy(signal, rate, &EEG_BANDS)
}

/// Differential entropy in the five [`EEG_BANDS`] for each whole 1 s window of an EEG channel
/// (a trailing partial window is ignored).
pub fn eeg_de_windows(signal: &[f32], rate: f64) -> Result<Vec<Vec<f32>>, FeatureError> {
    let mut spectra = Spectra::new();
    sliding_windows(signal.len(), rate, DE_WINDOW_SECONDS, DE_WINDOW_SECONDS)?
        .into_iter()
        .map(|range| spectra.differential_entropy(&signal[range], rate, &EEG_BANDS))
        .collect()
}

/// The 20 [`STATISTICS_NAMES`] of one window.
pub fn window_statistics(signal: &[f32], rate: f64) -> Result<Vec<f32>, FeatureError> {
    Spectra::new().window_statistics(signal, rate)
}

/// Sample ranges of the whole windows of `window_s` seconds every `hop_s` seconds over a signal of
/// `len` samples at `rate` Hz (window length and hop rounded to whole samples).
pub fn sliding_windows(
    len: usize,
    rate: f64,
    window_s: f64,
    hop_s: f64,
) -> Result<Vec<std::ops::Range<usize>>, FeatureError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(FeatureError::BadRate(rate));
    }
    let window = (window_s * rate).round().max(1.0) as usize;
    let hop = (hop_s * rate).round().max(1.0) as usize;
    let mut out = Vec::new();
    let mut start = 0;
    while start + window <= len {
        out.push(start..start + window);
        start += hop;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pure_tone_lands_in_its_band() {
        let rate = 200.0;
        let tone: Vec<f32> = (0..200)
            .map(|i| (2.0 * std::f64::consts::PI * 10.0 * i as f64 / rate).sin() as f32)
            .collect();
        let de = differential_entropy(&tone, rate).expect("de");
        // A unit sine has variance 1/2: DE = 0.5 ln(pi e).
        let expected = 0.5 * (std::f64::consts::PI * std::f64::consts::E).ln();
        assert!((f64::from(de[2]) - expected).abs() < 1e-5, "{de:?}");
        for (i, v) in de.iter().enumerate() {
            if i != 2 {
                assert!(*v < -10.0, "band {i} should be silent: {de:?}");
            }
        }
    }

    #[test]
    fn statistics_of_a_ramp() {
        let ramp: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let stats = window_statistics(&ramp, 4.0).expect("stats");
        assert_eq!(stats.len(), STATISTICS_WIDTH);
        assert_eq!(
            &stats[..5],
            &[9.5, 9.5, (399.0f32 / 12.0).sqrt(), 0.0, 19.0]
        );
        assert_eq!(&stats[5..10], &[1.0, 1.0, 0.0, 1.0, 1.0]);
        assert_eq!(&stats[10..15], &[0.0; 5]);
        let flat = window_statistics(&[3.0; 20], 4.0).expect("stats");
        assert_eq!(&flat[15..], &[0.0; 5]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            window_statistics(&[1.0, 2.0], 4.0),
            Err(FeatureError::TooShort { len: 2, min: 3 })
        );
        assert_eq!(
            window_statistics(&[1.0, f32::NAN, 2.0], 4.0),
            Err(FeatureError::NonFinite { index: 1 })
        );
        assert!(matches!(
            differential_entropy(&[1.0; 8], 0.0),
            Err(FeatureError::BadRate(_))
        ));
    }

    #[test]
    fn windows_are_whole_and_hop_by_the_given_step() {
        let w = sliding_windows(28, 4.0, 5.0, 1.0).expect("windows");
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], 0..20);
        assert_eq!(w[2], 8..28);
        assert!(
            sliding_windows(19, 4.0, 5.0, 1.0)
                .expect("windows")
                .is_empty()
        );
        let de = eeg_de_windows(&vec![0.5; 450], 200.0).expect("de");
        assert_eq!(de.len(), 2);
    }
}
