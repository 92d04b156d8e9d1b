//! Client-level differential privacy mechanics, shared by the coordinator (plain mode) and the
//! participants (their noise shares under secure aggregation): clip each client's delta to an L2 norm bound
//! `C`, then add Gaussian noise calibrated to `C` to the **sum** of the clipped deltas (DP-FedAvg,
//! McMahan et al. 2018).
//!
//! * Plain mode: the coordinator adds noise with standard deviation `sigma * C` to the sum
//!   ([`add_central_noise`]). The coordinator sees the clean clipped updates; DP protects the
//!   released model from everyone else.
//! * Under secure aggregation the coordinator cannot touch individual updates, so each client
//!   adds its share ([`add_distributed_noise`]): std `sigma * C / sqrt(m)`, where `m` is the fewest
//!   clients whose updates may end up in the sum -- the secure-aggregation threshold, not the
//!   cohort size, so that the sum of any `>= m` survivors still carries at least `sigma * C`
//!   (more survivors add a little more noise than needed). Independent Gaussians add up, so the
//!   sum's noise is Gaussian with variance `k * sigma^2 C^2 / m >= sigma^2 C^2` for `k >= m`.
//!
//! The sensitivity of the sum to one client is `C` only if every client's clipped delta enters
//! it with weight 1: with DP on, FedAvg must weight clients uniformly (divide the noised sum by
//! the number of contributors), not by sample count.
//!
//! # What it protects against
//!
//! Anyone who sees the released model (or, with distributed noise, the coordinator that sees the
//! sum) learning much about whether one client took part, as quantified by the accountant
//! (the coordinator's privacy ledger).
//!
//! # What it does not protect against
//!
//! * The noise seed leaking: noise from a generator whose seed is known can be subtracted. Seed
//!   production generators from the operating system ([`os_noise_rng`]); the run seed written next
//!   to the results must never seed them. Fixed seeds are for tests and simulations only.
//! * A client that skips its share of distributed noise (the others' shares still help, but the
//!   guarantee assumes every contributor added its share).
//! * Floating-point artefacts of sampling a continuous Gaussian in `f32`/`f64` (Mironov 2012):
//!   the low-order bits of a noised value can carry information. A discrete Gaussian over the
//!   quantised integers would close this; it is not implemented.
//! * Statistics outside the delta: prototype and co-occurrence statistics and local metrics are
//!   not noised here (prototype statistics are withheld below a minimum mass instead).

use crate::params::ParameterSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

/// How each accepted update's delta enters the sum: the coordinator applies it to every update
/// in plain mode, each participant to its own under secure aggregation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ContributionPolicy {
    /// Scale each delta down to this L2 norm when it is longer (no clipping when `None`).
    pub clip_norm: Option<f64>,
    /// Weight every update 1 instead of its sample count. Differential privacy needs this: the
    /// noise is calibrated to the sensitivity of the sum to one client, which is `clip_norm`
    /// only if no client enters with a weight above 1 (with sample-count weights a client
    /// claiming many samples would move the mean by far more than the noise hides).
    pub uniform_weights: bool,
}

impl ContributionPolicy {
    /// The weight an update with `sample_count` samples gets.
    pub fn weight(&self, sample_count: u64) -> u64 {
        if self.uniform_weights {
            1
        } else {
            sample_count
        }
    }
}

/// What clipping did to one delta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipOutcome {
    /// The delta's L2 norm before clipping.
    pub norm: f64,
    /// The factor applied: `min(1, C / norm)` (1 for a zero delta).
    pub factor: f64,
}

impl ClipOutcome {
    /// Whether the delta was scaled down.
    pub fn clipped(&self) -> bool {
        self.factor < 1.0
    }
}

/// Scales `delta` by `min(1, clip_norm / ||delta||)` so its L2 norm is at most `clip_norm`.
pub fn clip_update(delta: &mut ParameterSet, clip_norm: f64) -> ClipOutcome {
    let norm = delta.l2_norm();
    let factor = if norm > clip_norm && norm > 0.0 {
        clip_norm / norm
    } else {
        1.0
    };
    if factor < 1.0 {
        delta.scale(factor as f32);
        // f32 rounding can leave the norm a hair above the bound; shave it off.
        let after = delta.l2_norm();
        if after > clip_norm {
            delta.scale((clip_norm / after * (1.0 - 1e-7)) as f32);
        }
    }
    ClipOutcome { norm, factor }
}

/// Standard deviation of the noise on the sum: `noise_multiplier * clip_norm`.
pub fn central_noise_std(noise_multiplier: f64, clip_norm: f64) -> f64 {
    noise_multiplier * clip_norm
}

/// Standard deviation of one client's share of the noise when at least `min_contributors`
/// clients' shares end up in the sum: `noise_multiplier * clip_norm / sqrt(min_contributors)`.
pub fn distributed_noise_std(
    noise_multiplier: f64,
    clip_norm: f64,
    min_contributors: usize,
) -> f64 {
    noise_multiplier * clip_norm / (min_contributors.max(1) as f64).sqrt()
}

/// Adds independent `N(0, std^2)` noise to every value.
pub fn add_gaussian_noise<R: Rng + ?Sized>(values: &mut [f64], std: f64, rng: &mut R) {
    if std == 0.0 {
        return;
    }
    let normal = Normal::new(0.0, std).expect("finite non-negative standard deviation");
    for value in values {
        *value += normal.sample(rng);
    }
}

/// Plain mode, at the coordinator: adds `N(0, (noise_multiplier * clip_norm)^2)` to each
/// coordinate of the sum of clipped deltas.
pub fn add_central_noise<R: Rng + ?Sized>(
    sum: &mut [f64],
    noise_multiplier: f64,
    clip_norm: f64,
    rng: &mut R,
) {
    add_gaussian_noise(sum, central_noise_std(noise_multiplier, clip_norm), rng);
}

/// Secure-aggregation mode, at each client: adds its share of the noise,
/// `N(0, (noise_multiplier * clip_norm)^2 / min_contributors)`, to its clipped delta (before
/// quantising and masking).
pub fn add_distributed_noise<R: Rng + ?Sized>(
    delta: &mut ParameterSet,
    noise_multiplier: f64,
    clip_norm: f64,
    min_contributors: usize,
    rng: &mut R,
) {
    let std = distributed_noise_std(noise_multiplier, clip_norm, min_contributors);
    if std == 0.0 {
        return;
    }
    let normal = Normal::new(0.0, std).expect("finite non-negative standard deviation");
    for tensor in &mut delta.tensors {
        for value in &mut tensor.values.0 {
            *value = (f64::from(*value) + normal.sample(rng)) as f32;
        }
    }
}

/// Where a participant's noise shares come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoiseSource {
    /// The operating system: what every real study must use.
    #[default]
    OperatingSystem,
    /// A generator seeded from this seed and the round: reproducible, so anyone who knows the
    /// seed can remove the noise. Tests and reproducible simulations only.
    SeededForTests(u64),
}

impl NoiseSource {
    /// The generator for round `round`'s noise share.
    pub fn rng(&self, round: u64) -> ChaCha20Rng {
        match self {
            Self::OperatingSystem => os_noise_rng(),
            Self::SeededForTests(seed) => seeded_noise_rng(seed ^ round.rotate_left(32)),
        }
    }
}

/// A noise generator seeded from the operating system (what production noise must use).
pub fn os_noise_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// A noise generator with a fixed seed, for tests and reproducible simulations only.
pub fn seeded_noise_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::NamedTensor;
    use crate::vector::F32Vec;

    fn delta(values: Vec<f32>) -> ParameterSet {
        ParameterSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![values.len()],
                values: F32Vec(values),
            }],
        }
    }

    #[test]
    fn clipping_scales_by_min_one_c_over_norm() {
        let mut d = delta(vec![3.0, 4.0]);
        let outcome = clip_update(&mut d, 1.0);
        assert_eq!(outcome.norm, 5.0);
        assert!((outcome.factor - 0.2).abs() < 1e-15);
        assert!(outcome.clipped());
        assert!(d.l2_norm() <= 1.0);
        assert!((d.to_flat()[0] - 0.6).abs() < 1e-6);

        let mut small = delta(vec![0.3, 0.4]);
        let outcome = clip_update(&mut small, 1.0);
        assert_eq!(outcome.factor, 1.0);
        assert_eq!(small.to_flat(), vec![0.3, 0.4]);
        let mut zero = delta(vec![0.0; 3]);
        assert_eq!(clip_update(&mut zero, 1.0).factor, 1.0);
    }

    #[test]
    fn clipped_norm_never_exceeds_the_bound() {
        let mut rng = seeded_noise_rng(1);
        for k in 0..200 {
            let values: Vec<f32> = (0..1000)
                .map(|_| rng.random::<f32>() * 10.0 - 5.0)
                .collect();
            let mut d = delta(values);
            let bound = 0.1 + k as f64 * 0.37;
            clip_update(&mut d, bound);
            assert!(d.l2_norm() <= bound, "{} > {bound}", d.l2_norm());
        }
    }

    fn sample_std(values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    #[test]
    fn central_noise_has_std_sigma_c() {
        let mut sum = vec![0.0; 200_000];
        add_central_noise(&mut sum, 1.1, 2.0, &mut seeded_noise_rng(7));
        let std = sample_std(&sum);
        // The sample std of 2e5 normals is within 0.5% of the truth with overwhelming
        // probability (its standard error is 0.16%).
        assert!((std / 2.2 - 1.0).abs() < 0.005, "{std}");
        let mean = sum.iter().sum::<f64>() / sum.len() as f64;
        assert!(mean.abs() < 5.0 * 2.2 / (sum.len() as f64).sqrt());
    }

    #[test]
    fn distributed_shares_add_up_to_the_central_noise() {
        // Four clients each add their share; the sum of the four noise vectors has std sigma*C.
        let (sigma, c, m) = (0.8, 1.5, 4);
        let len = 100_000;
        let mut total = vec![0.0f64; len];
        for client in 0..m {
            let mut d = delta(vec![0.0; len]);
            add_distributed_noise(
                &mut d,
                sigma,
                c,
                m,
                &mut seeded_noise_rng(100 + client as u64),
            );
            for (t, v) in total.iter_mut().zip(d.iter_values()) {
                *t += f64::from(v);
            }
        }
        let std = sample_std(&total);
        assert!((std / (sigma * c) - 1.0).abs() < 0.01, "{std}");
        assert!((distributed_noise_std(sigma, c, m) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn seeded_noise_is_reproducible_and_os_noise_is_not() {
        let mut a = vec![0.0; 8];
        let mut b = vec![0.0; 8];
        add_gaussian_noise(&mut a, 1.0, &mut seeded_noise_rng(3));
        add_gaussian_noise(&mut b, 1.0, &mut seeded_noise_rng(3));
        assert_eq!(a, b);
        let mut c = vec![0.0; 8];
        add_gaussian_noise(&mut c, 1.0, &mut os_noise_rng());
        assert_ne!(a, c);
    }
}
