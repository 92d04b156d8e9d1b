//! Evaluation protocols: which samples train and which test. Subject-dependent holds out trials
//! of every subject; subject-independent holds out whole subjects, fold by fold, so that every
//! sample is tested exactly once by a model that never saw its subject. Metrics are always pooled
//! over every test sample of every fold, never computed on a subset.
//!
//! Each partition also carves a validation part out of its training data, for model selection
//! only (see [`crate::selection`]): trial-wise within subjects for subject-dependent protocols,
//! whole training subjects for subject-independent ones. Validation samples never train, and
//! test samples are never validation samples.

use std::str::FromStr;

use mpcl_data::Dataset;
use mpcl_data::split::{self, SplitError};
use serde::{Deserialize, Serialize};

/// How to split a dataset for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EvaluationProtocol {
    /// Each subject's trials split into train and test.
    SubjectDependent { test_fraction: f64 },
    /// Subjects split into `folds` groups, each held out once (`folds` = number of subjects is
    /// leave-one-subject-out).
    SubjectIndependent { folds: usize },
    /// Stimuli split into `folds` groups, each held out once: no stimulus is seen in training
    /// and testing, so the labels' stimulus-driven part cannot be memorised.
    StimulusIndependent { folds: usize },
    /// Subjects and stimuli split into `folds` groups each; fold i tests group i's subjects on
    /// group i's stimuli and trains on the other subjects' other stimuli.
    SubjectStimulusIndependent { folds: usize },
}

impl Default for EvaluationProtocol {
    fn default() -> Self {
        Self::SubjectDependent {
            test_fraction: 0.25,
        }
    }
}

impl FromStr for EvaluationProtocol {
    type Err = String;

    /// `subject-dependent`, `subject-dependent:0.3`, `subject-independent`,
    /// `subject-independent:5`, `loso`, `stimulus-independent[:FOLDS]`,
    /// `subject-stimulus-independent[:FOLDS]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folds = |value: Option<&str>| {
            value
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|e| format!("bad fold count `{v}`: {e}"))
                })
                .transpose()
                .map(|f| f.unwrap_or(5))
        };
        let (kind, value) = match s.split_once(':') {
            Some((kind, value)) => (kind, Some(value)),
            None => (s, None),
        };
        match kind {
            "subject-dependent" => {
                let test_fraction = value
                    .map(|v| {
                        v.parse::<f64>()
                            .map_err(|e| format!("bad test fraction `{v}`: {e}"))
                    })
                    .transpose()?
                    .unwrap_or(0.25);
                Ok(Self::SubjectDependent { test_fraction })
            }
            "subject-independent" => Ok(Self::SubjectIndependent {
                folds: folds(value)?,
            }),
            "loso" | "leave-one-subject-out" => Ok(Self::SubjectIndependent { folds: 0 }),
            "stimulus-independent" => Ok(Self::StimulusIndependent {
                folds: folds(value)?,
            }),
            "subject-stimulus-independent" => Ok(Self::SubjectStimulusIndependent {
                folds: folds(value)?,
            }),
            other => Err(format!(
                "unknown protocol `{other}` (expected subject-dependent[:FRACTION], \
                 subject-independent[:FOLDS], loso, stimulus-independent[:FOLDS] or \
                 subject-stimulus-independent[:FOLDS])"
            )),
        }
    }
}

impl EvaluationProtocol {
    /// The protocol as the command line writes it (`subject-dependent:0.25`,
    /// `subject-independent:5`, `loso`); parses back to the same protocol.
    pub fn spec(&self) -> String {
        match self {
            Self::SubjectDependent { test_fraction } => {
                format!("subject-dependent:{test_fraction}")
            }
            Self::SubjectIndependent { folds: 0 } => "loso".to_string(),
            Self::SubjectIndependent { folds } => format!("subject-independent:{folds}"),
            Self::StimulusIndependent { folds } => format!("stimulus-independent:{folds}"),
            Self::SubjectStimulusIndependent { folds } => {
                format!("subject-stimulus-independent:{folds}")
            }
        }
    }
}

impl std::fmt::Display for EvaluationProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SubjectDependent { test_fraction } => {
                write!(f, "subject-dependent (test fraction {test_fraction})")
            }
            Self::SubjectIndependent { folds: 0 } => f.write_str("leave-one-subject-out"),
            Self::SubjectIndependent { folds } => write!(f, "subject-independent ({folds} folds)"),
            Self::StimulusIndependent { folds } => {
                write!(f, "stimulus-independent ({folds} folds)")
            }
            Self::SubjectStimulusIndependent { folds } => {
                write!(f, "subject- and stimulus-independent ({folds} folds)")
            }
        }
    }
}

/// One train/validation/test partition of a protocol (disjoint sample indices).
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// A short name for logs (`trials`, `fold 2/5`).
    pub name: String,
    /// Samples that train.
    pub train: Vec<usize>,
    /// Samples carved from the training side for model selection (empty when the validation
    /// fraction is 0).
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// Salt of the validation split's seed, so it is not the test split's shuffle again.
const VALIDATION_SALT: u64 = 0x7661_6c69_6461_7465;

/// The partitions of `protocol` on `dataset`, each with `validation_fraction` of its training
/// side held out for model selection.
pub fn partitions(
    dataset: &Dataset,
    protocol: EvaluationProtocol,
    validation_fraction: f64,
    seed: u64,
) -> Result<Vec<Partition>, SplitError> {
    let mut parts = train_test_partitions(dataset, protocol, seed)?;
    if validation_fraction > 0.0 {
        for part in &mut parts {
            let seed = seed ^ VALIDATION_SALT;
            let (fit, validation) = match protocol {
                EvaluationProtocol::SubjectDependent { .. } => {
                    split::validation_trials(dataset, &part.train, validation_fraction, seed)?
                }
                EvaluationProtocol::SubjectIndependent { .. } => {
                    split::validation_subjects(dataset, &part.train, validation_fraction, seed)?
                }
                EvaluationProtocol::StimulusIndependent { .. }
                | EvaluationProtocol::SubjectStimulusIndependent { .. } => {
                    split::validation_stimuli(dataset, &part.train, validation_fraction, seed)?
                }
            };
            part.train = fit;
            part.validation = validation;
        }
    }
    Ok(parts)
}

fn train_test_partitions(
    dataset: &Dataset,
    protocol: EvaluationProtocol,
    seed: u64,
) -> Result<Vec<Partition>, SplitError> {
    match protocol {
        EvaluationProtocol::SubjectDependent { test_fraction } => {
            let split = split::subject_dependent(dataset, test_fraction, seed)?;
            Ok(vec![Partition {
                name: "held-out trials".to_string(),
                train: split.train,
                validation: Vec::new(),
                test: split.test,
            }])
        }
        EvaluationProtocol::SubjectIndependent { folds } => {
            let folds = if folds == 0 {
                split::leave_one_subject_out(dataset)?
            } else {
                split::k_fold_subjects(dataset, folds, seed)?
            };
            Ok(named_folds(folds))
        }
        EvaluationProtocol::StimulusIndependent { folds } => {
            Ok(named_folds(split::k_fold_stimuli(dataset, folds, seed)?))
        }
        EvaluationProtocol::SubjectStimulusIndependent { folds } => Ok(named_folds(
            split::k_fold_subjects_and_stimuli(dataset, folds, seed)?,
        )),
    }
}

fn named_folds(folds: Vec<split::Fold>) -> Vec<Partition> {
    let count = folds.len();
    folds
        .into_iter()
        .enumerate()
        .map(|(i, fold)| Partition {
            name: format!("fold {}/{count}", i + 1),
            train: fold.train,
            validation: Vec::new(),
            test: fold.test,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    #[test]
    fn protocols_parse() {
        assert_eq!(
            "subject-independent:3".parse::<EvaluationProtocol>(),
            Ok(EvaluationProtocol::SubjectIndependent { folds: 3 })
        );
        assert_eq!(
            "subject-dependent".parse::<EvaluationProtocol>(),
            Ok(EvaluationProtocol::SubjectDependent {
                test_fraction: 0.25
            })
        );
        assert!("random".parse::<EvaluationProtocol>().is_err());
        for spec in ["subject-dependent:0.3", "subject-independent:4", "loso"] {
            let protocol: EvaluationProtocol = spec.parse().unwrap();
            assert_eq!(protocol.spec(), spec);
        }
    }

    #[test]
    fn subject_independent_folds_test_every_sample_once() {
        let data = generate(&SyntheticConfig {
            subjects: 5,
            trials_per_subject: 4,
            windows_per_trial: 2,
            ..SyntheticConfig::default()
        });
        let parts = partitions(
            &data,
            EvaluationProtocol::SubjectIndependent { folds: 3 },
            0.25,
            1,
        )
        .unwrap();
        let mut tested: Vec<usize> = parts.iter().flat_map(|p| p.test.clone()).collect();
        tested.sort();
        assert_eq!(tested, (0..data.samples.len()).collect::<Vec<_>>());
        for part in &parts {
            assert!(!part.validation.is_empty());
            for &i in &part.test {
                let subject = &data.samples[i].subject;
                assert!(
                    part.train
                        .iter()
                        .chain(&part.validation)
                        .all(|&j| &data.samples[j].subject != subject)
                );
            }
            for &i in &part.validation {
                let subject = &data.samples[i].subject;
                assert!(
                    part.train
                        .iter()
                        .all(|&j| &data.samples[j].subject != subject)
                );
            }
        }
    }
}
