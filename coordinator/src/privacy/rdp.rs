//! Rényi differential privacy of the sampled Gaussian mechanism (Mironov, Talwar and Zhang,
//! "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019) and its conversion to
//! (epsilon, delta).
//!
//! This is a line-by-line port of Opacus' `opacus/accountants/analysis/rdp.py` (1.6.0):
//! `_compute_log_a_for_int_alpha` (binomial expansion for integer orders),
//! `_compute_log_a_for_frac_alpha` (the two-sided series with `log erfc` terms for fractional
//! orders, stopped once both terms are below `e^-30`), `_compute_rdp` (with the special cases
//! `q = 0`, `sigma = 0`, `q = 1`) and `get_privacy_spent`. Google's dp-accounting computes the
//! same quantities (`compute_rdp`, `compute_epsilon`).
//!
//! The conversion to (epsilon, delta) is the improved one Opacus and dp-accounting use (Balle et
//! al. 2020, Theorem 21; Asoodeh et al. 2020):
//!
//! ```text
//! eps = min over orders a of  rdp(a) - (ln(delta) + ln(a)) / (a - 1) + ln((a - 1) / a)
//! ```
//!
//! which is never worse than the classic `rdp(a) - ln(delta) / (a - 1)` (Mironov 2017).
//!
//! Protects against nothing by itself: it measures. Its numbers hold only under the
//! assumptions listed in [`super::ledger`] (Poisson sampling, clipped unit-weight contributions,
//! noise as configured).
//!
//! `tools/make_rdp_references.py` writes Opacus' own numbers to
//! `coordinator/tests/fixtures/privacy/rdp_references.json`; `tests/rdp_references.rs` checks this
//! port against them.

/// Opacus' default orders (`RDPAccountant.DEFAULT_ALPHAS`): 1.1, 1.2, ..., 10.9 and the
/// integers 12..=63.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

/// `ln(e^x + e^y)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `ln(e^x - e^y)`; NaN when the result would be negative (Opacus raises there; a NaN order is
/// then ignored by [`epsilon_from_rdp`]).
fn log_sub(x: f64, y: f64) -> f64 {
    if x < y {
        return f64::NAN;
    }
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x == y {
        return f64::NEG_INFINITY;
    }
    let diff = (x - y).exp_m1();
    if diff.is_infinite() {
        return x;
    }
    diff.ln() + y
}

/// `ln(erfc(x))`, accurate far into the tail (where `erfc` underflows) through the asymptotic
/// expansion `erfc(x) ~ e^{-x^2} / (x sqrt(pi)) * sum_n (-1)^n (2n-1)!! / (2x^2)^n`.
fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        libm::erfc(x).ln()
    } else {
        log_erfc_asymptotic(x)
    }
}

/// The asymptotic expansion of `ln(erfc(x))` for large `x` (relative error below 1e-15 from
/// `x = 20` on).
fn log_erfc_asymptotic(x: f64) -> f64 {
    let inv = 1.0 / (2.0 * x * x);
    let mut term = 1.0;
    let mut series = 1.0;
    for n in 1..20 {
        term *= -(2.0 * f64::from(n) - 1.0) * inv;
        series += term;
        if term.abs() < 1e-17 {
            break;
        }
    }
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// The generalised binomial coefficient `binom(alpha, k) = prod_{j<k} (alpha - j) / (j + 1)`.
fn binomial(alpha: f64, k: u64) -> f64 {
    let mut value = 1.0;
    for j in 0..k {
        let j = j as f64;
        value *= (alpha - j) / (j + 1.0);
    }
    value
}

/// `ln A_alpha` for an integer order (0 < q < 1).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    // Symmetric binomials keep the products short and exact for small orders.
    for i in 0..=alpha {
        let k = i.min(alpha - i);
        let log_coef = binomial(alpha as f64, k).ln()
            + i as f64 * q.ln()
            + (alpha - i) as f64 * (1.0 - q).ln();
        let i = i as f64;
        let s = log_coef + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// The most terms [`log_a_frac`] sums before giving up (Opacus has no cap; with the orders and
/// noise levels used here it stops after at most a few hundred).
const MAX_FRACTIONAL_TERMS: u64 = 100_000;

/// `ln A_alpha` for a fractional order (0 < q < 1).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let two_var = 2.0 * sigma * sigma;
    for step in 0..MAX_FRACTIONAL_TERMS {
        let coef = binomial(alpha, step);
        let log_coef = coef.abs().ln();
        let i = step as f64;
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + i * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) / two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 {
            return log_add(log_a0, log_a1);
        }
    }
    f64::INFINITY
}

/// RDP of one application of the Gaussian mechanism with noise multiplier `sigma` on a
/// Poisson-subsampled batch (rate `q`), at order `alpha` (> 1). Infinite without noise.
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// RDP at every order of `steps` compositions (Opacus' `compute_rdp`).
pub fn compute_rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|alpha| rdp_sampled_gaussian(q, sigma, *alpha) * steps as f64)
        .collect()
}

/// The smallest epsilon over the orders for `delta`, and the order that gives it (Opacus'
/// `get_privacy_spent`). Orders whose RDP is NaN are ignored; `(inf, NaN)` when none is usable.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (alpha, r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + alpha.ln()) / (alpha - 1.0) + ((alpha - 1.0) / alpha).ln();
        if !eps.is_nan() && (best.1.is_nan() || eps < best.0) {
            best = (eps, *alpha);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sampling_is_the_plain_gaussian_mechanism() {
        // q = 1: RDP(a) = a / (2 sigma^2) per step, no series involved.
        let orders = default_orders();
        let rdp = compute_rdp(1.0, 2.0, 10, &orders);
        for (a, r) in orders.iter().zip(&rdp) {
            assert!((r - 10.0 * a / 8.0).abs() < 1e-12);
        }
    }

    #[test]
    fn integer_and_fractional_paths_agree_near_integers() {
        // The fractional series at a = 3 +- 1e-9 must bracket the binomial sum at a = 3.
        for (q, sigma) in [(0.01, 0.8), (0.1, 1.1), (0.3, 2.0)] {
            let int = rdp_sampled_gaussian(q, sigma, 3.0);
            let below = rdp_sampled_gaussian(q, sigma, 3.0 - 1e-9);
            let above = rdp_sampled_gaussian(q, sigma, 3.0 + 1e-9);
            assert!(
                (below - int).abs() < 1e-6 * int,
                "{q} {sigma}: {below} vs {int}"
            );
            assert!(
                (above - int).abs() < 1e-6 * int,
                "{q} {sigma}: {above} vs {int}"
            );
        }
    }

    #[test]
    fn log_erfc_asymptotic_branch_agrees_with_erfc_where_both_work() {
        for x in [20.0, 22.5, 25.0, 26.0] {
            let direct = libm::erfc(x).ln();
            let asymptotic = log_erfc_asymptotic(x);
            assert!(
                (direct - asymptotic).abs() < 1e-12 * direct.abs(),
                "{x}: {direct} vs {asymptotic}"
            );
        }
        assert!(log_erfc(40.0).is_finite());
        assert!((log_erfc(0.0) - 0.0).abs() < 1e-15);
        assert!((log_erfc(-3.0) - (2.0 - libm::erfc(3.0)).ln()).abs() < 1e-15);
    }

    #[test]
    fn no_sampling_costs_nothing_and_no_noise_is_unbounded() {
        assert_eq!(rdp_sampled_gaussian(0.0, 1.0, 2.0), 0.0);
        assert_eq!(rdp_sampled_gaussian(0.5, 0.0, 2.0), f64::INFINITY);
        let (eps, _) = epsilon_from_rdp(&[2.0], &[f64::INFINITY], 1e-5);
        assert_eq!(eps, f64::INFINITY);
        let (eps, order) = epsilon_from_rdp(&[2.0, 3.0], &[f64::NAN, f64::NAN], 1e-5);
        assert!(eps.is_infinite() && order.is_nan());
    }
}
