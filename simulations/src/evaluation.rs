//! Evaluation protocols: which samples train and which test. Subject-dependent holds out trials
//! of every subject; subject-independent holds out whole subjects, fold by fold, so that every
//! sample is tested exactly once by a model that never saw its subject. Metrics are always pooled
//! over every test sample of every fold, never computed on a subset.

use std::str::FromStr;

use mpcl_model::data::Dataset;
use mpcl_model::data::split::{self, SplitError};
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
    /// `subject-independent:5`, `loso`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
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
            "subject-independent" => {
                let folds = value
                    .map(|v| {
                        v.parse::<usize>()
                            .map_err(|e| format!("bad fold count `{v}`: {e}"))
                    })
                    .transpose()?
                    .unwrap_or(5);
                Ok(Self::SubjectIndependent { folds })
            }
            "loso" | "leave-one-subject-out" => Ok(Self::SubjectIndependent { folds: 0 }),
            other => Err(format!(
                "unknown protocol `{other}` (expected subject-dependent[:FRACTION], \
                 subject-independent[:FOLDS] or loso)"
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
        }
    }
}

/// One train/test partition of a protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// A short name for logs (`trials`, `fold 2/5`).
    pub name: String,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// The partitions of `protocol` on `dataset`.
pub fn partitions(
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
                test: split.test,
            }])
        }
        EvaluationProtocol::SubjectIndependent { folds } => {
            let folds = if folds == 0 {
                split::leave_one_subject_out(dataset)?
            } else {
                split::k_fold_subjects(dataset, folds, seed)?
            };
            let count = folds.len();
            Ok(folds
                .into_iter()
                .enumerate()
                .map(|(i, fold)| Partition {
                    name: format!("fold {}/{count}", i + 1),
                    train: fold.train,
                    test: fold.test,
                })
                .collect())
        }
    }
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
            1,
        )
        .unwrap();
        let mut tested: Vec<usize> = parts.iter().flat_map(|p| p.test.clone()).collect();
        tested.sort();
        assert_eq!(tested, (0..data.samples.len()).collect::<Vec<_>>());
        for part in &parts {
            for &i in &part.test {
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
