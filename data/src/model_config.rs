//! `ModelConfig`: every size and loss weight of the MPCL network in one serde struct, saved next
//! to every result so a run can be reproduced, and checked against the dataset's schema before
//! anything is built.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Schema;

/// A configuration that cannot build a network for the given schema.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("model config field `{field}` = {value}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "model config was made for {config} emotions but the dataset schema has {schema} ({names})"
    )]
    EmotionCount {
        config: usize,
        schema: usize,
        names: String,
    },
}

/// Sizes and weights of the MPCL network (DESIGN §3). Defaults are the paper-style defaults:
/// width 64, 4 prototypes per emotion, 16 memory slots, scales 1/2/4, loss weights 0.5/0.1/0.1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Token width D.
    pub width: usize,
    /// Prototypes per emotion K.
    pub prototypes_per_emotion: usize,
    /// Associative memory slots S per scale.
    pub memory_slots: usize,
    /// Pooling scales of the multi-scale fusion.
    pub scales: Vec<usize>,
    /// Temperature tau of the prototype assignment and prototype loss.
    pub prototype_temperature: f64,
    /// Temperature tau_d of the prototype relation distillation.
    pub distillation_temperature: f64,
    /// Momentum m of the prototype bank update.
    pub prototype_momentum: f64,
    /// Epsilon inside ln(M + eps) for the co-occurrence bias.
    pub cooccurrence_epsilon: f64,
    /// Weight of the prototype loss (0 switches it off).
    pub prototype_loss_weight: f64,
    /// Weight of the prototype relation distillation (0 switches it off).
    pub distillation_loss_weight: f64,
    /// Weight of the co-occurrence consistency loss (0 switches it off).
    pub cooccurrence_loss_weight: f64,
    /// Use the emotion-specific prototype banks. Off: emotion embeddings are plain learned
    /// vectors and the prototype loss and distillation vanish (ablation).
    pub use_prototypes: bool,
    /// Bias the emotion retrieval with ln M and use the co-occurrence loss. Off: plain attention
    /// among emotions (ablation).
    pub use_cooccurrence: bool,
    /// Fuse each group's tokens with the associative memories. Off: the group representation is
    /// the plain mean of its encoded tokens (ablation).
    pub use_memory_fusion: bool,
    /// Let the associative memory's keys and values hold the other modalities' tokens of the
    /// group (cross-modal association). Off: queries retrieve from the learned slots only
    /// (ablation).
    pub use_cross_modal: bool,
    /// Retrieve among the emotion embeddings (Hopfield attention biased by co-occurrence). Off:
    /// the emotion states are the embeddings themselves, `O = V` (ablation).
    pub use_emotion_retrieval: bool,
    /// Feed the representation `z` to the head beside `O[c]`. Off: the head scores emotions from
    /// `O[c]` alone (ablation).
    pub use_z_path: bool,
    /// Expected number of emotions, if the config was made for a particular schema (0 = take it
    /// from the schema).
    pub emotions: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            width: 64,
            prototypes_per_emotion: 4,
            memory_slots: 16,
            scales: vec![1, 2, 4],
            prototype_temperature: 0.1,
            distillation_temperature: 0.1,
            prototype_momentum: 0.9,
            cooccurrence_epsilon: 1e-4,
            prototype_loss_weight: 0.5,
            distillation_loss_weight: 0.1,
            cooccurrence_loss_weight: 0.1,
            use_prototypes: true,
            use_cooccurrence: true,
            use_memory_fusion: true,
            use_cross_modal: true,
            use_emotion_retrieval: true,
            use_z_path: true,
            emotions: 0,
        }
    }
}

impl ModelConfig {
    /// A small network for tests and quick runs.
    pub fn tiny() -> Self {
        Self {
            width: 16,
            prototypes_per_emotion: 2,
            memory_slots: 4,
            ..Self::default()
        }
    }

    /// Checks every field and the agreement with `schema`.
    pub fn validate(&self, schema: &Schema) -> Result<(), ConfigError> {
        fn invalid(
            field: &'static str,
            value: impl std::fmt::Debug,
            reason: &'static str,
        ) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: format!("{value:?}"),
                reason,
            }
        }
        if self.width == 0 {
            return Err(invalid("width", self.width, "must be at least 1"));
        }
        if self.prototypes_per_emotion == 0 {
            return Err(invalid(
                "prototypes_per_emotion",
                self.prototypes_per_emotion,
                "must be at least 1",
            ));
        }
        if self.memory_slots == 0 {
            return Err(invalid(
                "memory_slots",
                self.memory_slots,
                "must be at least 1",
            ));
        }
        if self.scales.is_empty() || self.scales.contains(&0) {
            return Err(invalid(
                "scales",
                &self.scales,
                "must be a non-empty list of positive pooling factors",
            ));
        }
        for (field, value) in [
            ("prototype_temperature", self.prototype_temperature),
            ("distillation_temperature", self.distillation_temperature),
            ("cooccurrence_epsilon", self.cooccurrence_epsilon),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(field, value, "must be a positive number"));
            }
        }
        if !(0.0..1.0).contains(&self.prototype_momentum) {
            return Err(invalid(
                "prototype_momentum",
                self.prototype_momentum,
                "must be in [0, 1)",
            ));
        }
        for (field, value) in [
            ("prototype_loss_weight", self.prototype_loss_weight),
            ("distillation_loss_weight", self.distillation_loss_weight),
            ("cooccurrence_loss_weight", self.cooccurrence_loss_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(field, value, "must be a non-negative number"));
            }
        }
        if self.emotions != 0 && self.emotions != schema.emotion_count() {
            return Err(ConfigError::EmotionCount {
                config: self.emotions,
                schema: schema.emotion_count(),
                names: schema.emotions.join(", "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup};

    fn schema() -> Schema {
        Schema {
            emotions: vec!["a".into(), "b".into(), "c".into()],
            modalities: vec![Modality::new("x", ModalityGroup::Physiological, 2, 3)],
        }
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = ModelConfig::default();
        assert_eq!(
            (
                config.width,
                config.prototypes_per_emotion,
                config.memory_slots
            ),
            (64, 4, 16)
        );
        assert_eq!(config.scales, vec![1, 2, 4]);
        assert_eq!(config.prototype_momentum, 0.9);
        assert!(config.validate(&schema()).is_ok());
    }

    #[test]
    fn inconsistent_sizes_are_clear_errors() {
        let config = ModelConfig {
            emotions: 10,
            ..ModelConfig::default()
        };
        let err = config.validate(&schema()).unwrap_err().to_string();
        assert!(
            err.contains("10 emotions") && err.contains("has 3"),
            "{err}"
        );
        let config = ModelConfig {
            scales: vec![1, 0],
            ..ModelConfig::default()
        };
        let err = config.validate(&schema()).unwrap_err().to_string();
        assert!(err.contains("`scales`"), "{err}");
        let config = ModelConfig {
            prototype_momentum: 1.0,
            ..ModelConfig::default()
        };
        assert!(config.validate(&schema()).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ModelConfig>(r#"{"widht": 3}"#).unwrap_err();
        assert!(err.to_string().contains("widht"));
    }
}
