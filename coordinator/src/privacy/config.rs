//! The `[privacy]` section of the coordinator config.
//!
//! ```toml
//! [privacy]
//! secure_aggregation = true     # the coordinator sees only sums (default false)
//! threshold = 0.6               # survivors needed: a fraction of the cohort, or a count like 5
//! quantisation_scale = 65536.0  # fixed-point scale for masking (default 2^16)
//! clip_norm = 1.0               # L2 bound on each client's delta (default: none)
//! noise_multiplier = 1.1        # Gaussian noise std / clip_norm (default 0: no DP)
//! target_delta = 1e-5           # delta the accountant reports epsilon at (default 1e-5)
//! epsilon_budget = 8.0          # stop the run before epsilon exceeds this (default: none)
//! min_prototype_mass = 5.0      # clients withhold prototypes of emotions with less label mass
//! ```
//!
//! Everything is off by default except the prototype mass threshold. Validation
//! ([`PrivacyConfig::validate`], called from [`crate::CoordinatorConfig::validate`]) refuses the
//! combinations that would silently not do what they say: noise without a clip norm, a budget
//! without noise, robust aggregation rules under secure aggregation or with DP noise, cohorts
//! larger than secure aggregation supports.
//!
//! Protects against misconfiguration (a setting that would silently give less privacy than it
//! says is an error naming the field); it cannot tell whether the numbers chosen are enough.

use std::fmt;

use mpcl_protocol::privacy_noise::ContributionPolicy;
use mpcl_protocol::secure_aggregation::{MAX_PARTICIPANTS, Quantizer, SecAggParams};
use serde::{Deserialize, Serialize};

use crate::config::AggregationRule;

/// How many clients of a cohort must survive every step of secure aggregation (the Shamir
/// threshold `t`). Always raised to a strict majority and at least 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    /// An absolute count (a TOML integer).
    Count(usize),
    /// A fraction of the cohort in (0.5, 1] (a TOML float), rounded up.
    Fraction(f64),
}

impl Threshold {
    /// The threshold for a cohort of `cohort` clients (never above `cohort`; see
    /// [`SecAggParams::threshold_for`]).
    pub fn for_cohort(&self, cohort: usize) -> usize {
        match *self {
            Threshold::Count(t) => t.max(cohort / 2 + 1).max(2).min(cohort),
            Threshold::Fraction(f) => SecAggParams::threshold_for(cohort, f),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(t) => write!(f, "{t} clients"),
            // Rounded to 0.01 % so that 0.6 prints as 60, not 60.00000000000001.
            Threshold::Fraction(x) => write!(f, "{}% of the cohort", (x * 1e4).round() / 100.0),
        }
    }
}

/// Privacy settings of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Mask updates so the coordinator only learns their sum (default false). Needs a sum-based
    /// aggregation rule (fedavg or fedadam).
    pub secure_aggregation: bool,
    /// Survivors needed at every secure-aggregation step (default 0.6 of the cohort).
    pub threshold: Threshold,
    /// Fixed-point scale for secure aggregation (default 65536 = 2^16): precision `0.5 / scale`
    /// per value, range `(2^31 - 1) / (cohort * scale)` per value and client.
    pub quantisation_scale: f64,
    /// L2 bound each client's delta is clipped to (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
    /// Standard deviation of the Gaussian noise on the sum divided by `clip_norm` (default 0: no
    /// differential privacy).
    pub noise_multiplier: f64,
    /// The delta epsilon is reported at (default 1e-5; pick well below 1 / number of clients).
    pub target_delta: f64,
    /// Epsilon past which the run stops (default: none, epsilon is only reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_budget: Option<f64>,
    /// Clients withhold the prototype statistics of every emotion with less label mass than this
    /// (default 5; 0 releases all).
    pub min_prototype_mass: f64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            secure_aggregation: false,
            threshold: Threshold::Fraction(0.6),
            quantisation_scale: 65536.0,
            clip_norm: None,
            noise_multiplier: 0.0,
            target_delta: 1e-5,
            epsilon_budget: None,
            min_prototype_mass: 5.0,
        }
    }
}

impl PrivacyConfig {
    /// Whether differential-privacy noise is added (and so accounted).
    pub fn differential_privacy(&self) -> bool {
        self.noise_multiplier > 0.0
    }

    /// The policy these settings ask for: clip when `clip_norm` is set, uniform weights when
    /// differential-privacy noise is added.
    pub fn contribution_policy(&self) -> ContributionPolicy {
        ContributionPolicy {
            clip_norm: self.clip_norm,
            uniform_weights: self.differential_privacy(),
        }
    }

    /// The quantiser for a secure-aggregation cohort of `cohort` clients.
    pub fn quantizer(
        &self,
        cohort: usize,
    ) -> Result<Quantizer, mpcl_protocol::secure_aggregation::QuantizationError> {
        Quantizer::new(self.quantisation_scale, cohort)
    }

    /// Checks the section on its own and against the rest of the config; the error is the
    /// offending field's dotted path and a message.
    pub fn validate(
        &self,
        rule: &AggregationRule,
        clients_per_round: Option<usize>,
    ) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        let s = self.quantisation_scale;
        if !(s.is_finite() && (1.0..=(1u64 << 30) as f64).contains(&s)) {
            return fail(
                "privacy.quantisation_scale",
                format!("is {s}, must be in [1, 2^30]"),
            );
        }
        match self.threshold {
            Threshold::Count(t) => {
                if t < 2 {
                    return fail(
                        "privacy.threshold",
                        format!(
                            "is {t}; a count must be at least 2 (write a fraction of the cohort as a float, like 0.6)"
                        ),
                    );
                }
                if let Some(n) = clients_per_round
                    && (t > n || t <= n / 2)
                {
                    return fail(
                        "privacy.threshold",
                        format!(
                            "is {t} but clients_per_round is {n}: the threshold must be a strict majority of the cohort and at most its size"
                        ),
                    );
                }
            }
            Threshold::Fraction(f) => {
                if !(f > 0.5 && f <= 1.0) {
                    return fail(
                        "privacy.threshold",
                        format!(
                            "is {f}; a fraction must be in (0.5, 1] (a strict majority keeps the coordinator from unmasking a single client)"
                        ),
                    );
                }
            }
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return fail("privacy.clip_norm", format!("is {c}, must be positive"));
        }
        let sigma = self.noise_multiplier;
        if !(sigma.is_finite() && sigma >= 0.0) {
            return fail(
                "privacy.noise_multiplier",
                format!("is {sigma}, must be zero or positive"),
            );
        }
        if sigma > 0.0 && self.clip_norm.is_none() {
            return fail(
                "privacy.noise_multiplier",
                format!(
                    "is {sigma} but privacy.clip_norm is not set: noise is calibrated to the clip norm, without one no guarantee holds"
                ),
            );
        }
        let delta = self.target_delta;
        if !(delta > 0.0 && delta < 1.0) {
            return fail(
                "privacy.target_delta",
                format!("is {delta}, must be in (0, 1)"),
            );
        }
        if let Some(budget) = self.epsilon_budget {
            if !(budget.is_finite() && budget > 0.0) {
                return fail(
                    "privacy.epsilon_budget",
                    format!("is {budget}, must be positive"),
                );
            }
            if sigma == 0.0 {
                return fail(
                    "privacy.epsilon_budget",
                    "is set but privacy.noise_multiplier is 0: without noise epsilon is unbounded"
                        .into(),
                );
            }
        }
        let mass = self.min_prototype_mass;
        if !(mass.is_finite() && mass >= 0.0) {
            return fail(
                "privacy.min_prototype_mass",
                format!("is {mass}, must be zero or positive"),
            );
        }
        if self.secure_aggregation && rule.buffers_updates() {
            return fail(
                "aggregation.rule",
                format!(
                    "is `{}`, which needs every update in the clear; with privacy.secure_aggregation the coordinator only sees the sum: use fedavg or fedadam",
                    rule.name()
                ),
            );
        }
        if sigma > 0.0 && rule.buffers_updates() {
            return fail(
                "aggregation.rule",
                format!(
                    "is `{}`, but differential-privacy noise is calibrated for the sum of clipped updates: use fedavg or fedadam",
                    rule.name()
                ),
            );
        }
        if self.secure_aggregation
            && let Some(n) = clients_per_round
            && n > MAX_PARTICIPANTS
        {
            return fail(
                "clients_per_round",
                format!(
                    "is {n}; secure aggregation supports at most {MAX_PARTICIPANTS} clients per round"
                ),
            );
        }
        Ok(())
    }
}

impl fmt::Display for PrivacyConfig {
    /// One line for the run's output, for example `secure aggregation (threshold 60% of the
    /// cohort, scale 65536); DP: clip 1, noise multiplier 1.1, delta 1e-5, epsilon budget 8;
    /// prototypes withheld below mass 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secure_aggregation {
            write!(
                f,
                "secure aggregation (threshold {}, scale {})",
                self.threshold, self.quantisation_scale
            )?;
        } else {
            f.write_str("secure aggregation off")?;
        }
        match (self.differential_privacy(), self.clip_norm) {
            (true, Some(clip)) => {
                write!(
                    f,
                    "; DP: clip {clip}, noise multiplier {}, delta {:e}",
                    self.noise_multiplier, self.target_delta
                )?;
                match self.epsilon_budget {
                    Some(budget) => write!(f, ", epsilon budget {budget}")?,
                    None => f.write_str(", no epsilon budget")?,
                }
            }
            (_, Some(clip)) => write!(f, "; DP off (updates clipped to norm {clip})")?,
            _ => f.write_str("; DP off")?,
        }
        if self.min_prototype_mass > 0.0 {
            write!(
                f,
                "; prototypes withheld below mass {}",
                self.min_prototype_mass
            )
        } else {
            f.write_str("; all prototypes released")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, CoordinatorConfig};

    #[test]
    fn defaults_are_off_except_the_prototype_mass() {
        let config = PrivacyConfig::default();
        assert!(!config.secure_aggregation);
        assert!(!config.differential_privacy());
        assert_eq!(config.min_prototype_mass, 5.0);
        assert_eq!(
            config.to_string(),
            "secure aggregation off; DP off; prototypes withheld below mass 5"
        );
        assert!(config.validate(&AggregationRule::Median, Some(300)).is_ok());
    }

    #[test]
    fn full_section_parses_and_summarises() {
        let text = r#"
            clients_per_round = 10
            [privacy]
            secure_aggregation = true
            threshold = 7
            quantisation_scale = 4096.0
            clip_norm = 1.0
            noise_multiplier = 1.1
            target_delta = 1e-6
            epsilon_budget = 8.0
            min_prototype_mass = 2.5
        "#;
        let config = CoordinatorConfig::from_toml_str(text).unwrap();
        let p = &config.privacy;
        assert!(p.secure_aggregation);
        assert_eq!(p.threshold, Threshold::Count(7));
        assert_eq!(p.threshold.for_cohort(10), 7);
        assert_eq!(p.clip_norm, Some(1.0));
        assert_eq!(p.epsilon_budget, Some(8.0));
        assert_eq!(
            p.to_string(),
            "secure aggregation (threshold 7 clients, scale 4096); DP: clip 1, noise multiplier 1.1, delta 1e-6, epsilon budget 8; prototypes withheld below mass 2.5"
        );
        let text = config.to_toml_string().unwrap();
        assert_eq!(CoordinatorConfig::from_toml_str(&text).unwrap(), config);

        let fraction = CoordinatorConfig::from_toml_str("[privacy]\nthreshold = 0.75\n").unwrap();
        assert_eq!(fraction.privacy.threshold, Threshold::Fraction(0.75));
        assert_eq!(fraction.privacy.threshold.for_cohort(10), 8);
        assert_eq!(fraction.privacy.threshold.for_cohort(3), 3);
    }

    #[test]
    fn inconsistent_settings_name_the_field() {
        for (text, field, words) in [
            (
                "[privacy]\nnoise_multiplier = 1.0",
                "privacy.noise_multiplier",
                "clip_norm",
            ),
            (
                "[privacy]\nepsilon_budget = 3.0",
                "privacy.epsilon_budget",
                "unbounded",
            ),
            (
                "[aggregation]\nrule = \"median\"\n[privacy]\nsecure_aggregation = true",
                "aggregation.rule",
                "only sees the sum",
            ),
            (
                "[aggregation]\nrule = \"trimmed_mean\"\n[privacy]\nsecure_aggregation = true",
                "aggregation.rule",
                "trimmed_mean",
            ),
            (
                "[aggregation]\nrule = \"median\"\n[privacy]\nclip_norm = 1.0\nnoise_multiplier = 1.0",
                "aggregation.rule",
                "calibrated",
            ),
            (
                "[privacy]\nthreshold = 1",
                "privacy.threshold",
                "at least 2",
            ),
            (
                "[privacy]\nthreshold = 0.5",
                "privacy.threshold",
                "(0.5, 1]",
            ),
            (
                "clients_per_round = 10\n[privacy]\nthreshold = 5",
                "privacy.threshold",
                "strict majority",
            ),
            (
                "clients_per_round = 300\n[privacy]\nsecure_aggregation = true",
                "clients_per_round",
                "255",
            ),
            (
                "[privacy]\nclip_norm = 0.0",
                "privacy.clip_norm",
                "positive",
            ),
            (
                "[privacy]\ntarget_delta = 1.0",
                "privacy.target_delta",
                "(0, 1)",
            ),
            (
                "[privacy]\nquantisation_scale = 0.5",
                "privacy.quantisation_scale",
                "[1, 2^30]",
            ),
            (
                "[privacy]\nmin_prototype_mass = -1.0",
                "privacy.min_prototype_mass",
                "zero or positive",
            ),
        ] {
            match CoordinatorConfig::from_toml_str(text) {
                Err(ConfigError::Invalid {
                    field: f, message, ..
                }) => {
                    assert_eq!(f, field, "{text}");
                    assert!(message.contains(words), "{text}: {message}");
                }
                other => panic!("{text}: expected an invalid-field error, got {other:?}"),
            }
        }
        // Secure aggregation with a sum-based rule is fine.
        let ok = "[aggregation]\nrule = \"fedadam\"\n[privacy]\nsecure_aggregation = true\nclip_norm = 2.0\nnoise_multiplier = 0.9\nepsilon_budget = 10.0";
        let config = CoordinatorConfig::from_toml_str(ok).unwrap();
        assert_eq!(
            config.privacy.to_string(),
            "secure aggregation (threshold 60% of the cohort, scale 65536); DP: clip 2, noise multiplier 0.9, delta 1e-5, epsilon budget 10; prototypes withheld below mass 5"
        );
    }

    #[test]
    fn unknown_privacy_keys_are_errors() {
        let error = CoordinatorConfig::from_toml_str("[privacy]\nsecure_agg = true").unwrap_err();
        assert!(error.to_string().contains("secure_agg"), "{error}");
    }
}
