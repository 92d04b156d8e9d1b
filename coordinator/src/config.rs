//! The coordinator's run configuration: how many rounds, who takes part in each, how long a round
//! may last, how clients train and how their updates are combined.
//!
//! It is read from a TOML file (every field has a default, unknown fields are errors so a typo
//! never silently falls back to a default) and checked by [`CoordinatorConfig::validate`] before a
//! run starts. The same struct is what the CLI and the simulation harness build in code.
//!
//! ```toml
//! name = "dmer-federated"
//! seed = 7
//! rounds = 50
//! clients_per_round = 10
//! min_clients_to_aggregate = 8
//! round_deadline_secs = 600
//! start_at_label_prior = true                     # round 0 sets the head at the label prior
//!
//! [training]
//! local_epochs = 2
//! learning_rate = 0.003
//! learning_rate_schedule = "constant"            # or "cosine" (to a tenth at the last round)
//! weight_decay = 0.0                              # > 0: AdamW
//! compression = "none"                            # or "f16" / "int8"; not with secure aggregation
//!
//! [aggregation]
//! rule = { name = "fedadam", server_lr = 0.01 }   # or rule = "fedavg" / "median"
//! prototype_blend = 0.5
//!
//! [privacy]                                        # see crate::privacy::config
//! secure_aggregation = true
//! clip_norm = 1.0
//! noise_multiplier = 1.1
//! epsilon_budget = 8.0
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use mpcl_protocol::Compression;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::evaluation::EvaluationConfig;

/// Errors from reading or checking a configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read coordinator config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds an unknown field or a value of the wrong type (the
    /// TOML error names the field, line and column).
    #[error("coordinator config {} is malformed: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid coordinator config{}: `{field}` {message}", match path { Some(p) => format!(" {}", p.display()), None => String::new() })]
    Invalid {
        /// The file it came from, when loaded from one.
        path: Option<PathBuf>,
        /// Dotted path of the offending field, for example `aggregation.rule.trim_fraction`.
        field: String,
        message: String,
    },
    /// The configuration could not be written as TOML.
    #[error("cannot serialise coordinator config: {0}")]
    Serialize(#[from] toml::ser::Error),
}

/// Everything that decides how a federated run proceeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Human-readable run name (default `"mpcl"`), written to logs and checkpoints.
    pub name: String,
    /// Seed for client sampling and the per-round training seeds (default 0).
    pub seed: u64,
    /// Number of rounds to run (default 10; must be > 0).
    pub rounds: u64,
    /// Absolute number of clients sampled per round (default: unset).
    ///
    /// With [`fraction`](Self::fraction) also set, the smaller of the two counts is used. With
    /// neither set, every available participant takes part in every round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients_per_round: Option<usize>,
    /// Fraction of the available participants sampled per round, in (0, 1] (default: unset);
    /// the count is rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Fewest accepted updates a round may be aggregated from (default 2). A round never
    /// aggregates fewer; the cohort is never sampled smaller than this.
    pub min_clients_to_aggregate: usize,
    /// How many participants must be connected before a round starts (default: unset, meaning
    /// `clients_per_round` when that is set, otherwise `min_clients_to_aggregate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_available_clients: Option<usize>,
    /// Seconds a round waits for its sampled clients before aggregating what arrived
    /// (default 600).
    pub round_deadline_secs: u64,
    /// Open the run with a label-prior round (round 0, default on): every connected
    /// participant sends only the label sums of its training data (under secure aggregation,
    /// masked), and the head's logit offsets become `ln` of the summed prior, so that round 1
    /// trains from a model that already predicts the label prior of all training data (the
    /// simulations' arms start there too). Off, the head starts as the initial state has it.
    pub start_at_label_prior: bool,
    /// How clients train locally.
    pub training: TrainingSettings,
    /// How updates are combined.
    pub aggregation: AggregationConfig,
    /// Bounds past which an update is rejected as oversized.
    pub limits: UpdateLimits,
    /// Privacy settings: secure aggregation, differential privacy, prototype withholding.
    pub privacy: PrivacyConfig,
    /// Federated evaluation: how participants split their data, how often the global model is
    /// evaluated, by how many.
    pub evaluation: EvaluationConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            name: "mpcl".to_string(),
            seed: 0,
            rounds: 10,
            clients_per_round: None,
            fraction: None,
            min_clients_to_aggregate: 2,
            min_available_clients: None,
            round_deadline_secs: 600,
            start_at_label_prior: true,
            training: TrainingSettings::default(),
            aggregation: AggregationConfig::default(),
            limits: UpdateLimits::default(),
            privacy: PrivacyConfig::default(),
            evaluation: EvaluationConfig::default(),
        }
    }
}

/// Local training settings sent to every sampled client (the per-round seed is derived from the
/// run seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSettings {
    /// Local epochs per round (default 2).
    pub local_epochs: u32,
    /// Local mini-batch size (default 32).
    pub batch_size: u32,
    /// Local (Adam) learning rate at the first round (default 3e-3).
    pub learning_rate: f64,
    /// How the learning rate changes over the rounds of the run (default constant).
    pub learning_rate_schedule: LearningRateSchedule,
    /// Decoupled weight decay of the local optimiser (AdamW); 0 (the default) trains with plain
    /// Adam.
    pub weight_decay: f64,
    /// FedProx proximal weight mu (default 0 = plain FedAvg local training). FedProx changes only
    /// the clients' objective; the server side is FedAvg (or whichever rule is configured).
    pub proximal_mu: f64,
    /// Clients send prototype and co-occurrence statistics (default true). Off, they send the
    /// encoder delta only and the global memories never learn: plain FedAvg of the encoder, the
    /// ablation that shows what the memories add.
    pub share_memories: bool,
    /// How clients encode their encoder delta for upload: `"none"` (dense f32, the default),
    /// `"f16"` or `"int8"` (8-bit with per-chunk scales and error feedback); see
    /// [`mpcl_protocol::compression`]. Cannot be combined with secure aggregation.
    pub compression: Compression,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            local_epochs: 2,
            batch_size: 32,
            learning_rate: mpcl_protocol::messages::DEFAULT_LEARNING_RATE,
            learning_rate_schedule: LearningRateSchedule::Constant,
            weight_decay: 0.0,
            share_memories: true,
            proximal_mu: 0.0,
            compression: Compression::None,
        }
    }
}

/// How the local learning rate changes from round to round. Every round's rate is computed by
/// the coordinator and sent with the round, so clients need not know the schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LearningRateSchedule {
    /// The same rate every round.
    #[default]
    Constant,
    /// Cosine decay from the rate at round 1 to a tenth of it at the last round.
    Cosine,
}

impl LearningRateSchedule {
    /// The rate of `round` (1-based) of `rounds`, starting from `initial`.
    pub fn rate(self, initial: f64, round: u64, rounds: u64) -> f64 {
        match self {
            Self::Constant => initial,
            Self::Cosine => {
                const FLOOR: f64 = 0.1;
                let progress = if rounds <= 1 {
                    0.0
                } else {
                    (round.clamp(1, rounds) - 1) as f64 / (rounds - 1) as f64
                };
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                initial * (FLOOR + (1.0 - FLOOR) * cosine)
            }
        }
    }
}

impl std::str::FromStr for LearningRateSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            other => Err(format!(
                "unknown learning-rate schedule `{other}` (expected constant or cosine)"
            )),
        }
    }
}

/// The `[aggregation]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// How encoder deltas are combined (default `fedavg`).
    pub rule: AggregationRule,
    /// Weight of the previous global prototype bank when blending in this round's
    /// `sum S / sum W`, in [0, 1] (default 0.5; 0 replaces the bank wherever clients sent mass).
    pub prototype_blend: f64,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            rule: AggregationRule::FedAvg,
            prototype_blend: 0.5,
        }
    }
}

/// How the encoder deltas of a round are combined into the global update.
///
/// In TOML either a bare name (`rule = "fedadam"`, parameters at their defaults) or a table with a
/// `name` (`rule = { name = "trimmed_mean", trim_fraction = 0.2 }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
#[serde(remote = "Self")]
pub enum AggregationRule {
    /// Sample-weighted mean of the deltas (McMahan et al. 2017); streams, memory independent of
    /// the number of clients.
    FedAvg,
    /// FedAdam (Reddi et al. 2021): the weighted mean delta is a pseudo-gradient fed to a
    /// server-side Adam whose moments persist across rounds.
    FedAdam {
        /// Server learning rate eta (default 0.01).
        #[serde(default = "default_server_lr")]
        server_lr: f64,
        /// First-moment decay (default 0.9).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay (default 0.99).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Adaptivity tau (default 1e-3).
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
    /// Coordinate-wise median of the deltas (unweighted; buffers every update of the round).
    Median,
    /// Coordinate-wise trimmed mean: per coordinate drop the `floor(trim_fraction * n)` largest
    /// and smallest values and average the rest (unweighted; buffers every update of the round).
    #[serde(rename = "trimmed_mean")]
    TrimmedMean {
        /// Fraction trimmed from each end, in [0, 0.5) (default 0.1).
        #[serde(default = "default_trim_fraction")]
        trim_fraction: f64,
    },
}

fn default_server_lr() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_epsilon() -> f64 {
    1e-3
}
fn default_trim_fraction() -> f64 {
    0.1
}

impl AggregationRule {
    /// FedAdam with the default hyper-parameters.
    pub fn fedadam() -> Self {
        Self::FedAdam {
            server_lr: default_server_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
        }
    }

    /// The rule's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FedAvg => "fedavg",
            Self::FedAdam { .. } => "fedadam",
            Self::Median => "median",
            Self::TrimmedMean { .. } => "trimmed_mean",
        }
    }

    /// Whether the rule needs every update of the round at once (median, trimmed mean) rather
    /// than a running sum.
    pub fn buffers_updates(&self) -> bool {
        matches!(self, Self::Median | Self::TrimmedMean { .. })
    }
}

impl Serialize for AggregationRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AggregationRule::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for AggregationRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;

        impl<'de> serde::de::Visitor<'de> for RuleVisitor {
            type Value = AggregationRule;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a rule name (\"fedavg\", \"fedadam\", \"median\", \"trimmed_mean\") or a table with a `name`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match name {
                    "fedavg" => Ok(AggregationRule::FedAvg),
                    "fedadam" => Ok(AggregationRule::fedadam()),
                    "median" => Ok(AggregationRule::Median),
                    "trimmed_mean" => Ok(AggregationRule::TrimmedMean {
                        trim_fraction: default_trim_fraction(),
                    }),
                    other => Err(E::unknown_variant(
                        other,
                        &["fedavg", "fedadam", "median", "trimmed_mean"],
                    )),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                AggregationRule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_any(RuleVisitor)
    }
}

/// Bounds on what one update may hold; anything beyond is rejected as oversized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateLimits {
    /// Largest absolute value allowed in an encoder delta (default 1e4).
    pub max_abs_value: f64,
    /// Largest L2 norm allowed for an encoder delta (default: unset, no bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_update_norm: Option<f64>,
    /// Largest sample count a client may claim (default 10,000,000): bounds how much one client
    /// can weigh in FedAvg.
    pub max_sample_count: u64,
}

impl Default for UpdateLimits {
    fn default() -> Self {
        Self {
            max_abs_value: 1e4,
            max_update_norm: None,
            max_sample_count: 10_000_000,
        }
    }
}

/// The `[privacy]` section: secure aggregation, differential privacy, prototype withholding
/// (defined with the privacy building blocks, [`crate::privacy::config`]).
pub use crate::privacy::PrivacyConfig;

impl CoordinatorConfig {
    /// Reads, parses and validates a TOML file; errors name the file and the offending field.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate().map_err(|err| match err {
            ConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                field,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text (no file involved).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML (what a run writes next to its results).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks ranges and consistency; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                path: None,
                field: field.to_string(),
                message,
            })
        };
        if self.rounds == 0 {
            return fail("rounds", "must be at least 1".into());
        }
        if self.min_clients_to_aggregate == 0 {
            return fail("min_clients_to_aggregate", "must be at least 1".into());
        }
        if let Some(per_round) = self.clients_per_round {
            if per_round == 0 {
                return fail("clients_per_round", "must be at least 1".into());
            }
            if self.min_clients_to_aggregate > per_round {
                return fail(
                    "min_clients_to_aggregate",
                    format!(
                        "is {} but clients_per_round is only {per_round}: a round could never be aggregated",
                        self.min_clients_to_aggregate
                    ),
                );
            }
        }
        if let Some(fraction) = self.fraction
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return fail("fraction", format!("is {fraction}, must be in (0, 1]"));
        }
        if let Some(available) = self.min_available_clients
            && available < self.min_clients_to_aggregate
        {
            return fail(
                "min_available_clients",
                format!(
                    "is {available}, below min_clients_to_aggregate ({})",
                    self.min_clients_to_aggregate
                ),
            );
        }
        if self.round_deadline_secs == 0 {
            return fail("round_deadline_secs", "must be at least 1".into());
        }
        if let Err(e) = self.evaluation.validate() {
            return fail(
                &format!("evaluation.{}", e.field),
                format!("is {}, {}", e.value, e.reason),
            );
        }
        let t = &self.training;
        if t.local_epochs == 0 {
            return fail("training.local_epochs", "must be at least 1".into());
        }
        if t.batch_size == 0 {
            return fail("training.batch_size", "must be at least 1".into());
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return fail(
                "training.weight_decay",
                format!("is {}, must be a non-negative number", t.weight_decay),
            );
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return fail(
                "training.learning_rate",
                format!("is {}, must be a positive number", t.learning_rate),
            );
        }
        if !(t.proximal_mu.is_finite() && t.proximal_mu >= 0.0) {
            return fail(
                "training.proximal_mu",
                format!("is {}, must be zero or positive", t.proximal_mu),
            );
        }
        let blend = self.aggregation.prototype_blend;
        if !(0.0..=1.0).contains(&blend) {
            return fail(
                "aggregation.prototype_blend",
                format!("is {blend}, must be in [0, 1]"),
            );
        }
        match self.aggregation.rule {
            AggregationRule::FedAvg | AggregationRule::Median => {}
            AggregationRule::FedAdam {
                server_lr,
                beta1,
                beta2,
                epsilon,
            } => {
                if !(server_lr.is_finite() && server_lr > 0.0) {
                    return fail(
                        "aggregation.rule.server_lr",
                        format!("is {server_lr}, must be positive"),
                    );
                }
                if !(0.0..1.0).contains(&beta1) {
                    return fail(
                        "aggregation.rule.beta1",
                        format!("is {beta1}, must be in [0, 1)"),
                    );
                }
                if !(0.0..1.0).contains(&beta2) {
                    return fail(
                        "aggregation.rule.beta2",
                        format!("is {beta2}, must be in [0, 1)"),
                    );
                }
                if !(epsilon.is_finite() && epsilon > 0.0) {
                    return fail(
                        "aggregation.rule.epsilon",
                        format!("is {epsilon}, must be positive"),
                    );
                }
            }
            AggregationRule::TrimmedMean { trim_fraction } => {
                if !(0.0..0.5).contains(&trim_fraction) {
                    return fail(
                        "aggregation.rule.trim_fraction",
                        format!(
                            "is {trim_fraction}, must be in [0, 0.5) so that something is left to average"
                        ),
                    );
                }
            }
        }
        let l = &self.limits;
        if !(l.max_abs_value.is_finite() && l.max_abs_value > 0.0) {
            return fail(
                "limits.max_abs_value",
                format!("is {}, must be positive", l.max_abs_value),
            );
        }
        if let Some(norm) = l.max_update_norm
            && !(norm.is_finite() && norm > 0.0)
        {
            return fail(
                "limits.max_update_norm",
                format!("is {norm}, must be positive"),
            );
        }
        if l.max_sample_count == 0 {
            return fail("limits.max_sample_count", "must be at least 1".into());
        }
        if l.max_sample_count as f64 * l.max_abs_value > crate::exact_sum::MAX_ADDEND {
            return fail(
                "limits.max_sample_count",
                format!(
                    "times limits.max_abs_value is {:e}, above the {:e} that aggregation sums exactly",
                    l.max_sample_count as f64 * l.max_abs_value,
                    crate::exact_sum::MAX_ADDEND
                ),
            );
        }
        if let Err((field, message)) = self
            .privacy
            .validate(&self.aggregation.rule, self.clients_per_round)
        {
            return fail(&field, message);
        }
        if self.privacy.secure_aggregation && self.training.compression.is_compressed() {
            return fail(
                "training.compression",
                format!(
                    "is \"{}\"; update compression cannot be combined with secure aggregation (secure aggregation quantises updates itself): set it to \"none\" or turn privacy.secure_aggregation off",
                    self.training.compression
                ),
            );
        }
        if self.privacy.secure_aggregation && self.min_clients_to_aggregate < 2 {
            return fail(
                "min_clients_to_aggregate",
                format!(
                    "is {}; secure aggregation needs at least 2 contributors (the sum of one client is its update)",
                    self.min_clients_to_aggregate
                ),
            );
        }
        Ok(())
    }

    /// How many participants must be connected before a round starts.
    pub fn start_threshold(&self) -> usize {
        self.min_available_clients
            .or(self.clients_per_round)
            .unwrap_or(self.min_clients_to_aggregate)
            .max(self.min_clients_to_aggregate)
    }

    /// The cohort size for a round when `available` participants are connected: the smaller of
    /// `clients_per_round` and `ceil(fraction * available)` (all of them when neither is set),
    /// raised to `min_clients_to_aggregate`, capped at `available`.
    pub fn cohort_size(&self, available: usize) -> usize {
        let mut size = available;
        if let Some(per_round) = self.clients_per_round {
            size = size.min(per_round);
        }
        if let Some(fraction) = self.fraction {
            // The small tolerance keeps 0.3 of 10 at 3 despite 0.3 * 10 = 3.0000000000000004.
            let by_fraction = (fraction * available as f64 - 1e-9).ceil() as usize;
            size = size.min(by_fraction);
        }
        size.max(self.min_clients_to_aggregate).min(available)
    }

    /// The round deadline in milliseconds.
    pub fn round_deadline_ms(&self) -> u64 {
        self.round_deadline_secs.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = CoordinatorConfig::from_toml_str("").unwrap();
        assert_eq!(config, CoordinatorConfig::default());
        assert_eq!(config.aggregation.prototype_blend, 0.5);
        assert_eq!(config.aggregation.rule, AggregationRule::FedAvg);
    }

    #[test]
    fn compression_is_read_from_training_and_refused_with_secure_aggregation() {
        let config =
            CoordinatorConfig::from_toml_str("[training]\ncompression = \"int8\"").unwrap();
        assert_eq!(config.training.compression, Compression::Int8);
        let error = CoordinatorConfig::from_toml_str("[training]\ncompression = \"int4\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("int4"), "{error}");
        let text = "min_clients_to_aggregate = 3\n[training]\ncompression = \"f16\"\n[privacy]\nsecure_aggregation = true";
        let error = CoordinatorConfig::from_toml_str(text)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("training.compression") && error.contains("secure aggregation"),
            "{error}"
        );
    }

    #[test]
    fn full_file_parses_every_section() {
        let text = r#"
            name = "dmer"
            seed = 7
            rounds = 50
            clients_per_round = 10
            fraction = 0.5
            min_clients_to_aggregate = 3
            min_available_clients = 12
            round_deadline_secs = 90

            [training]
            local_epochs = 2
            batch_size = 64
            learning_rate = 0.01
            proximal_mu = 0.1

            [aggregation]
            rule = { name = "fedadam", server_lr = 0.1, beta2 = 0.999 }
            prototype_blend = 0.25

            [limits]
            max_abs_value = 100.0
            max_update_norm = 10.0
            max_sample_count = 1000

            [privacy]
        "#;
        let config = CoordinatorConfig::from_toml_str(text).unwrap();
        assert_eq!(config.name, "dmer");
        assert_eq!(config.clients_per_round, Some(10));
        assert_eq!(config.fraction, Some(0.5));
        assert_eq!(config.training.proximal_mu, 0.1);
        assert_eq!(
            config.aggregation.rule,
            AggregationRule::FedAdam {
                server_lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-3
            }
        );
        assert_eq!(config.limits.max_update_norm, Some(10.0));
        assert_eq!(config.start_threshold(), 12);
    }

    #[test]
    fn rule_can_be_a_bare_name_or_a_table() {
        for (text, rule) in [
            ("rule = \"fedavg\"", AggregationRule::FedAvg),
            ("rule = \"median\"", AggregationRule::Median),
            ("rule = \"fedadam\"", AggregationRule::fedadam()),
            (
                "rule = \"trimmed_mean\"",
                AggregationRule::TrimmedMean { trim_fraction: 0.1 },
            ),
            (
                "rule = { name = \"trimmed_mean\", trim_fraction = 0.3 }",
                AggregationRule::TrimmedMean { trim_fraction: 0.3 },
            ),
            (
                "[aggregation.rule]\nname = \"median\"",
                AggregationRule::Median,
            ),
        ] {
            let text = if text.starts_with('[') {
                text.to_string()
            } else {
                format!("[aggregation]\n{text}")
            };
            let config = CoordinatorConfig::from_toml_str(&text).unwrap();
            assert_eq!(config.aggregation.rule, rule, "{text}");
        }
    }

    #[test]
    fn toml_round_trip_is_exact() {
        let mut config = CoordinatorConfig {
            clients_per_round: Some(4),
            fraction: Some(0.3),
            ..CoordinatorConfig::default()
        };
        config.aggregation.rule = AggregationRule::FedAdam {
            server_lr: 0.1,
            beta1: 0.8,
            beta2: 0.95,
            epsilon: 1e-7,
        };
        config.training.learning_rate = 0.1 + 0.2;
        let text = config.to_toml_string().unwrap();
        assert_eq!(CoordinatorConfig::from_toml_str(&text).unwrap(), config);
        for rule in [
            AggregationRule::FedAvg,
            AggregationRule::Median,
            AggregationRule::TrimmedMean { trim_fraction: 0.2 },
        ] {
            config.aggregation.rule = rule;
            let text = config.to_toml_string().unwrap();
            assert_eq!(CoordinatorConfig::from_toml_str(&text).unwrap(), config);
        }
    }

    #[test]
    fn unknown_field_is_reported_with_file_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "rounds = 3\n[training]\nlocal_epoch = 2\n").unwrap();
        let message = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("run.toml"), "{message}");
        assert!(message.contains("local_epoch"), "{message}");

        std::fs::write(
            &path,
            "[aggregation]\nrule = { name = \"fedadam\", server_lrr = 1.0 }\n",
        )
        .unwrap();
        let message = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("server_lrr"), "{message}");

        std::fs::write(&path, "[aggregation]\nrule = \"krum\"\n").unwrap();
        let message = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("krum"), "{message}");

        std::fs::write(&path, "[privacy]\nepsilon = 1.0\n").unwrap();
        let message = CoordinatorConfig::load(&path).unwrap_err().to_string();
        assert!(message.contains("epsilon"), "{message}");
    }

    #[test]
    fn invalid_values_name_the_field_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        for (text, field) in [
            ("rounds = 0", "rounds"),
            (
                "clients_per_round = 2\nmin_clients_to_aggregate = 3",
                "min_clients_to_aggregate",
            ),
            ("fraction = 1.5", "fraction"),
            ("round_deadline_secs = 0", "round_deadline_secs"),
            (
                "min_available_clients = 1\nmin_clients_to_aggregate = 2",
                "min_available_clients",
            ),
            (
                "[aggregation]\nrule = { name = \"trimmed_mean\", trim_fraction = 0.5 }",
                "aggregation.rule.trim_fraction",
            ),
            (
                "[aggregation]\nprototype_blend = 1.5",
                "aggregation.prototype_blend",
            ),
            (
                "[aggregation]\nrule = { name = \"fedadam\", beta1 = 1.0 }",
                "aggregation.rule.beta1",
            ),
            ("[training]\nlearning_rate = -1.0", "training.learning_rate"),
            ("[limits]\nmax_update_norm = 0.0", "limits.max_update_norm"),
        ] {
            std::fs::write(&path, text).unwrap();
            match CoordinatorConfig::load(&path) {
                Err(ConfigError::Invalid {
                    path: Some(p),
                    field: f,
                    ..
                }) => {
                    assert_eq!(p, path);
                    assert_eq!(f, field, "{text}");
                }
                other => panic!("{text}: expected an invalid-field error, got {other:?}"),
            }
            let message = CoordinatorConfig::load(&path).unwrap_err().to_string();
            assert!(message.contains("bad.toml") && message.contains(field));
        }
    }

    #[test]
    fn missing_file_is_named() {
        let message = CoordinatorConfig::load("/nonexistent/run.toml")
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/run.toml"), "{message}");
    }

    #[test]
    fn cohort_size_combines_absolute_fraction_and_minimum() {
        let mut config = CoordinatorConfig::default();
        assert_eq!(config.cohort_size(7), 7, "neither set: everyone");
        config.clients_per_round = Some(5);
        assert_eq!(config.cohort_size(7), 5);
        assert_eq!(config.cohort_size(3), 3);
        config.fraction = Some(0.5);
        assert_eq!(config.cohort_size(7), 4, "ceil(3.5) < 5");
        assert_eq!(config.cohort_size(20), 5, "capped by clients_per_round");
        config.clients_per_round = None;
        config.min_clients_to_aggregate = 3;
        assert_eq!(config.cohort_size(4), 3, "raised to the minimum");
        assert_eq!(config.cohort_size(2), 2, "never more than available");
        assert_eq!(config.start_threshold(), 3);
    }
}
