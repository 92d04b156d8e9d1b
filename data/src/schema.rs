//! The schema of a dataset: which emotions the label distribution ranges over, and which
//! modalities a sample carries, with how each modality's feature vector is cut into tokens.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The two modality groups of the MPCL network; each group has its own fusion module and
/// prototype bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModalityGroup {
    /// Signals of the body: EEG, skin conductance, pulse, temperature, ...
    Physiological,
    /// Signals of behaviour: face features, facial EMG, movement, ...
    Behavioral,
}

impl ModalityGroup {
    /// Both groups, in the order the network processes them.
    pub const ALL: [ModalityGroup; 2] = [ModalityGroup::Physiological, ModalityGroup::Behavioral];

    /// The group's name as it appears in files and parameter paths.
    pub fn name(self) -> &'static str {
        match self {
            ModalityGroup::Physiological => "physiological",
            ModalityGroup::Behavioral => "behavioral",
        }
    }
}

impl std::fmt::Display for ModalityGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModalityGroup {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "physiological" => Ok(ModalityGroup::Physiological),
            "behavioral" | "behavioural" => Ok(ModalityGroup::Behavioral),
            other => Err(SchemaError::UnknownGroup(other.to_string())),
        }
    }
}

/// One modality: its feature vector has `token_count * token_width` values, read as
/// `token_count` consecutive tokens of `token_width` values each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Modality {
    pub name: String,
    pub group: ModalityGroup,
    pub token_count: usize,
    pub token_width: usize,
}

impl Modality {
    /// A modality with the given token layout.
    pub fn new(name: &str, group: ModalityGroup, token_count: usize, token_width: usize) -> Self {
        Self {
            name: name.to_string(),
            group,
            token_count,
            token_width,
        }
    }

    /// Number of feature values (`token_count * token_width`).
    pub fn width(&self) -> usize {
        self.token_count * self.token_width
    }

    /// The modality in words, for messages that compare layouts: `eeg (physiological, 4x5)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {}x{})",
            self.name, self.group, self.token_count, self.token_width
        )
    }
}

/// Problems with a schema itself.
#[derive(Debug, Error, PartialEq)]
pub enum SchemaError {
    #[error("schema has no emotions")]
    NoEmotions,
    #[error("schema needs at least 2 emotions for a distribution, found {0}")]
    TooFewEmotions(usize),
    #[error("emotion `{0}` appears twice in the schema")]
    DuplicateEmotion(String),
    #[error("schema has no modalities")]
    NoModalities,
    #[error("modality `{0}` appears twice in the schema")]
    DuplicateModality(String),
    #[error("modality `{name}` has an empty token layout ({count} tokens of width {width})")]
    EmptyModality {
        name: String,
        count: usize,
        width: usize,
    },
    #[error("unknown modality group `{0}` (expected `physiological` or `behavioral`)")]
    UnknownGroup(String),
}

/// Emotions and modalities of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub emotions: Vec<String>,
    pub modalities: Vec<Modality>,
}

impl Schema {
    /// Number of emotions C.
    pub fn emotion_count(&self) -> usize {
        self.emotions.len()
    }

    /// Indices of the modalities belonging to `group`, in schema order.
    pub fn modalities_in(&self, group: ModalityGroup) -> Vec<usize> {
        self.modalities
            .iter()
            .enumerate()
            .filter(|(_, m)| m.group == group)
            .map(|(i, _)| i)
            .collect()
    }

    /// The groups that have at least one modality.
    pub fn groups(&self) -> Vec<ModalityGroup> {
        ModalityGroup::ALL
            .into_iter()
            .filter(|g| !self.modalities_in(*g).is_empty())
            .collect()
    }

    /// Checks that the schema is usable.
    pub fn validate(&self) -> Result<(), SchemaError> {
        match self.emotions.len() {
            0 => return Err(SchemaError::NoEmotions),
            1 => return Err(SchemaError::TooFewEmotions(1)),
            _ => {}
        }
        for (i, emotion) in self.emotions.iter().enumerate() {
            if self.emotions[..i].contains(emotion) {
                return Err(SchemaError::DuplicateEmotion(emotion.clone()));
            }
        }
        if self.modalities.is_empty() {
            return Err(SchemaError::NoModalities);
        }
        for (i, modality) in self.modalities.iter().enumerate() {
            if self.modalities[..i].iter().any(|m| m.name == modality.name) {
                return Err(SchemaError::DuplicateModality(modality.name.clone()));
            }
            if modality.width() == 0 {
                return Err(SchemaError::EmptyModality {
                    name: modality.name.clone(),
                    count: modality.token_count,
                    width: modality.token_width,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            emotions: vec!["happy".into(), "sad".into()],
            modalities: vec![
                Modality::new("eeg", ModalityGroup::Physiological, 18, 5),
                Modality::new("face", ModalityGroup::Behavioral, 4, 8),
            ],
        }
    }

    #[test]
    fn groups_and_widths() {
        let schema = schema();
        assert_eq!(schema.modalities[0].width(), 90);
        assert_eq!(schema.groups(), ModalityGroup::ALL.to_vec());
        assert_eq!(schema.modalities_in(ModalityGroup::Behavioral), vec![1]);
        assert!(schema.validate().is_ok());
    }

    #[test]
    fn invalid_schemas_name_the_problem() {
        let mut s = schema();
        s.emotions.push("happy".into());
        assert_eq!(
            s.validate(),
            Err(SchemaError::DuplicateEmotion("happy".into()))
        );
        let mut s = schema();
        s.modalities[1].token_count = 0;
        assert!(matches!(
            s.validate(),
            Err(SchemaError::EmptyModality { .. })
        ));
        assert!("facial".parse::<ModalityGroup>().is_err());
    }
}
