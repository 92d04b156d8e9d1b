//! Train/test splits, in one place so that every experiment splits the same way. Consecutive
//! windows of a trial overlap and share a label, so a split at window level leaks: every split
//! here keeps all samples of a (subject, trial) on one side.
//!
//! - [`subject_dependent`]: each subject's *trials* are divided between train and test; every
//!   subject with at least two trials has at least one on each side (a subject with a single
//!   trial goes wholly to training).
//! - [`leave_one_subject_out`] and [`k_fold_subjects`]: whole subjects are held out.
//!
//! All randomness comes from a ChaCha8 generator seeded with the caller's seed: the same seed on
//! the same dataset gives the same split everywhere.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Dataset;

/// Sample indices on each side of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Indices into `dataset.samples` used for training.
    pub train: Vec<usize>,
    /// Indices into `dataset.samples` used for testing.
    pub test: Vec<usize>,
}

/// One fold of a subject-independent protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// The subjects whose samples are all in `test`.
    pub held_out: Vec<String>,
    /// Indices of the samples of every other subject.
    pub train: Vec<usize>,
    /// Indices of the samples of the held-out subjects.
    pub test: Vec<usize>,
}

/// Why a split cannot be made.
#[derive(Debug, Error, PartialEq)]
pub enum SplitError {
    /// The test fraction is not strictly between 0 and 1.
    #[error("test fraction {0} must be strictly between 0 and 1")]
    BadFraction(f64),
    /// No subject has two trials, so no trial can be held out without emptying a subject.
    #[error(
        "dataset `{0}`: no subject has at least 2 trials, so a subject-dependent split is impossible"
    )]
    TooFewTrials(String),
    /// After the test trials are taken, no subject has two training trials, so no validation
    /// trial can be held out without emptying a subject's training part.
    #[error(
        "dataset `{0}`: after the test split no subject has 2 training trials, so no validation trial can be held out (a validation fraction of 0 reports the last round instead)"
    )]
    NoValidationTrial(String),
    /// Fewer subjects than the protocol needs.
    #[error("dataset `{dataset}` has {subjects} subject(s); {protocol} needs at least {needed}")]
    TooFewSubjects {
        /// Dataset name.
        dataset: String,
        /// Subjects in the dataset.
        subjects: usize,
        /// Subjects needed.
        needed: usize,
        /// The protocol asked for.
        protocol: String,
    },
    /// A stimulus protocol on data without stimulus ids.
    #[error(
        "dataset `{0}` has samples without a stimulus id; the stimulus-independent protocols need \
         one for every sample (a `stimulus` column in a study folder)"
    )]
    NoStimuli(String),
    /// k outside 2..=stimuli.
    #[error(
        "k = {k} stimulus folds is not possible with {stimuli} stimuli (need 2 <= k <= stimuli)"
    )]
    BadStimulusK {
        /// Folds asked for.
        k: usize,
        /// Stimuli in the dataset.
        stimuli: usize,
    },
    /// k outside 2..=subjects.
    #[error("k = {k} folds is not possible with {subjects} subjects (need 2 <= k <= subjects)")]
    BadK {
        /// Folds asked for.
        k: usize,
        /// Subjects in the dataset.
        subjects: usize,
    },
}

/// Sample indices grouped by subject (in order of first appearance) and trial.
fn by_subject_and_trial(dataset: &Dataset) -> Vec<(String, BTreeMap<u32, Vec<usize>>)> {
    let mut groups: Vec<(String, BTreeMap<u32, Vec<usize>>)> = Vec::new();
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, sample) in dataset.samples.iter().enumerate() {
        let slot = *position.entry(sample.subject.as_str()).or_insert_with(|| {
            groups.push((sample.subject.clone(), BTreeMap::new()));
            groups.len() - 1
        });
        groups[slot].1.entry(sample.trial).or_default().push(index);
    }
    groups
}

/// Splits each subject's trials into train and test, about `test_fraction` of the trials (at least
/// one, at most all but one) going to test.
pub fn subject_dependent(
    dataset: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<Split, SplitError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(SplitError::BadFraction(test_fraction));
    }
    let groups = by_subject_and_trial(dataset);
    if !groups.iter().any(|(_, trials)| trials.len() >= 2) {
        return Err(SplitError::TooFewTrials(dataset.name.clone()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        test: Vec::new(),
    };
    for (_, trials) in groups {
        let mut ids: Vec<u32> = trials.keys().copied().collect();
        ids.shuffle(&mut rng);
        let n = ids.len();
        let n_test = if n < 2 {
            0
        } else {
            ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1)
        };
        for (i, trial) in ids.iter().enumerate() {
            let side = if i < n_test {
                &mut split.test
            } else {
                &mut split.train
            };
            side.extend(&trials[trial]);
        }
    }
    split.train.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

fn fold(dataset: &Dataset, held_out: Vec<String>) -> Fold {
    let (test, train) =
        (0..dataset.samples.len()).partition(|&i| held_out.contains(&dataset.samples[i].subject));
    Fold {
        held_out,
        train,
        test,
    }
}

/// One fold per subject, that subject held out.
pub fn leave_one_subject_out(dataset: &Dataset) -> Result<Vec<Fold>, SplitError> {
    let subjects = dataset.subjects();
    if subjects.len() < 2 {
        return Err(SplitError::TooFewSubjects {
            dataset: dataset.name.clone(),
            subjects: subjects.len(),
            needed: 2,
            protocol: "leave-one-subject-out".into(),
        });
    }
    Ok(subjects
        .into_iter()
        .map(|s| fold(dataset, vec![s]))
        .collect())
}

/// `k` folds of whole subjects: the subjects are shuffled with `seed` and dealt round-robin, so
/// fold sizes differ by at most one subject.
pub fn k_fold_subjects(dataset: &Dataset, k: usize, seed: u64) -> Result<Vec<Fold>, SplitError> {
    let mut subjects = dataset.subjects();
    if subjects.len() < 2 {
        return Err(SplitError::TooFewSubjects {
            dataset: dataset.name.clone(),
            subjects: subjects.len(),
            needed: 2,
            protocol: format!("{k}-fold subject cross-validation"),
        });
    }
    if k < 2 || k > subjects.len() {
        return Err(SplitError::BadK {
            k,
            subjects: subjects.len(),
        });
    }
    subjects.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); k];
    for (i, subject) in subjects.into_iter().enumerate() {
        groups[i % k].push(subject);
    }
    Ok(groups.into_iter().map(|g| fold(dataset, g)).collect())
}

/// The stimuli of `dataset`, in order of first appearance; an error naming the dataset when a
/// sample has none.
pub fn stimuli(dataset: &Dataset) -> Result<Vec<String>, SplitError> {
    let mut seen: Vec<String> = Vec::new();
    for sample in &dataset.samples {
        let Some(stimulus) = &sample.stimulus else {
            return Err(SplitError::NoStimuli(dataset.name.clone()));
        };
        if !seen.contains(stimulus) {
            seen.push(stimulus.clone());
        }
    }
    Ok(seen)
}

/// Deals `items` (shuffled with `seed`) round-robin into `k` groups.
fn deal(mut items: Vec<String>, k: usize, seed: u64) -> Vec<Vec<String>> {
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); k];
    for (i, item) in items.into_iter().enumerate() {
        groups[i % k].push(item);
    }
    groups
}

/// `k` folds of whole stimuli: every sample of a held-out stimulus is tested, whichever subject
/// saw it, and no sample of it trains. `Fold::held_out` lists the stimuli.
pub fn k_fold_stimuli(dataset: &Dataset, k: usize, seed: u64) -> Result<Vec<Fold>, SplitError> {
    let all = stimuli(dataset)?;
    if k < 2 || k > all.len() {
        return Err(SplitError::BadStimulusK {
            k,
            stimuli: all.len(),
        });
    }
    Ok(deal(all, k, seed)
        .into_iter()
        .map(|held_out| {
            let (test, train) = (0..dataset.samples.len()).partition(|&i| {
                held_out.contains(dataset.samples[i].stimulus.as_ref().expect("checked"))
            });
            Fold {
                held_out,
                train,
                test,
            }
        })
        .collect())
}

/// `k` folds holding out subjects and stimuli together: fold i tests the samples of subject
/// group i on stimulus group i and trains on the other subjects' samples of the other stimuli;
/// samples that mix a held-out subject with a seen stimulus (or the reverse) are in neither
/// part, so the model meets neither the person nor the stimulus. `Fold::held_out` lists the
/// held-out subjects, then the held-out stimuli.
pub fn k_fold_subjects_and_stimuli(
    dataset: &Dataset,
    k: usize,
    seed: u64,
) -> Result<Vec<Fold>, SplitError> {
    let stimuli_all = stimuli(dataset)?;
    let subjects = dataset.subjects();
    if k < 2 || k > subjects.len() {
        return Err(SplitError::BadK {
            k,
            subjects: subjects.len(),
        });
    }
    if k > stimuli_all.len() {
        return Err(SplitError::BadStimulusK {
            k,
            stimuli: stimuli_all.len(),
        });
    }
    let subject_groups = deal(subjects, k, seed);
    let stimulus_groups = deal(stimuli_all, k, seed ^ 0x5354_494d);
    Ok(subject_groups
        .into_iter()
        .zip(stimulus_groups)
        .map(|(subjects, stimuli)| {
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (i, sample) in dataset.samples.iter().enumerate() {
                let new_subject = subjects.contains(&sample.subject);
                let new_stimulus = stimuli.contains(sample.stimulus.as_ref().expect("checked"));
                match (new_subject, new_stimulus) {
                    (true, true) => test.push(i),
                    (false, false) => train.push(i),
                    _ => {}
                }
            }
            Fold {
                held_out: subjects.into_iter().chain(stimuli).collect(),
                train,
                test,
            }
        })
        .collect())
}

/// Carves a validation part out of the training samples `train` by holding out whole
/// training stimuli (about `fraction` of them, at least one, at most all but one), for the
/// stimulus-independent protocols.
pub fn validation_stimuli(
    dataset: &Dataset,
    train: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), SplitError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(SplitError::BadFraction(fraction));
    }
    let all = stimuli(&dataset.subset(train))?;
    if all.len() < 2 {
        return Err(SplitError::BadStimulusK {
            k: 2,
            stimuli: all.len(),
        });
    }
    Ok(hold_out(train, all, seed, fraction, |i| {
        dataset.samples[i].stimulus.as_deref().expect("checked")
    }))
}

/// Splits `train` into (fit, validation) by holding out about `fraction` of `keys` (shuffled with
/// `seed`; at least one, at most all but one): a sample is in validation when its key
/// (`key_of(index)`) is held out.
fn hold_out<'a>(
    train: &[usize],
    mut keys: Vec<String>,
    seed: u64,
    fraction: f64,
    key_of: impl Fn(usize) -> &'a str,
) -> (Vec<usize>, Vec<usize>) {
    keys.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = keys.len();
    let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let held_out = &keys[..held];
    let (validation, fit): (Vec<usize>, Vec<usize>) = train
        .iter()
        .copied()
        .partition(|&i| held_out.iter().any(|k| k == key_of(i)));
    (fit, validation)
}

/// Carves a validation part out of the training samples `train`, for model selection only:
/// `fraction` of every subject's training trials (trial-wise, as [`subject_dependent`]; a
/// subject with a single training trial keeps it for training). Returns (fit, validation), both
/// sorted, together exactly `train`.
pub fn validation_trials(
    dataset: &Dataset,
    train: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), SplitError> {
    let inner = subject_dependent(&dataset.subset(train), fraction, seed).map_err(|e| match e {
        SplitError::TooFewTrials(name) => SplitError::NoValidationTrial(name),
        other => other,
    })?;
    Ok((
        inner.train.iter().map(|&i| train[i]).collect(),
        inner.test.iter().map(|&i| train[i]).collect(),
    ))
}

/// Carves a validation part out of the training samples `train` by holding out whole training
/// subjects: about `fraction` of them (at least one, at most all but one), seeded. Used by the
/// subject-independent protocols, whose model selection must also be on unseen subjects.
pub fn validation_subjects(
    dataset: &Dataset,
    train: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), SplitError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(SplitError::BadFraction(fraction));
    }
    let subjects = dataset.subset(train).subjects();
    if subjects.len() < 2 {
        return Err(SplitError::TooFewSubjects {
            dataset: dataset.name.clone(),
            subjects: subjects.len(),
            needed: 2,
            protocol: "a validation part of held-out training subjects".into(),
        });
    }
    Ok(hold_out(train, subjects, seed, fraction, |i| {
        dataset.samples[i].subject.as_str()
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::{Modality, ModalityGroup, Sample, Schema};

    /// `trials[s]` trials for subject s, each with `windows` windows.
    fn dataset(trials: &[u32], windows: u32) -> Dataset {
        let mut samples = Vec::new();
        for (s, &n) in trials.iter().enumerate() {
            for trial in 0..n {
                for time in 0..windows {
                    samples.push(Sample {
                        features: vec![vec![0.0]],
                        label: vec![0.5, 0.5],
                        subject: format!("s{s}"),
                        trial: trial * 3 + 1,
                        time,
                        stimulus: None,
                    });
                }
            }
        }
        Dataset {
            name: "t".into(),
            schema: Schema {
                emotions: vec!["a".into(), "b".into()],
                modalities: vec![Modality::new("x", ModalityGroup::Physiological, 1, 1)],
            },
            samples,
        }
    }

    fn keys(d: &Dataset, idx: &[usize]) -> HashSet<(String, u32)> {
        idx.iter()
            .map(|&i| (d.samples[i].subject.clone(), d.samples[i].trial))
            .collect()
    }

    fn subjects(d: &Dataset, idx: &[usize]) -> HashSet<String> {
        idx.iter().map(|&i| d.samples[i].subject.clone()).collect()
    }

    #[test]
    fn subject_dependent_keeps_trials_whole_and_every_subject_on_both_sides() {
        let d = dataset(&[2, 5, 8, 1, 32], 4);
        for seed in 0..20 {
            let split = subject_dependent(&d, 0.25, seed).expect("split");
            let (train, test) = (keys(&d, &split.train), keys(&d, &split.test));
            assert!(train.is_disjoint(&test), "a trial is on both sides");
            assert_eq!(split.train.len() + split.test.len(), d.samples.len());
            let mut all: Vec<usize> = split.train.iter().chain(&split.test).copied().collect();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), d.samples.len());
            for s in ["s0", "s1", "s2", "s4"] {
                assert!(
                    train.iter().any(|(x, _)| x == s) && test.iter().any(|(x, _)| x == s),
                    "{s}"
                );
            }
            // The single-trial subject trains only.
            assert!(!test.iter().any(|(x, _)| x == "s3"));
            // 25 % of 32 trials.
            assert_eq!(test.iter().filter(|(x, _)| x == "s4").count(), 8);
        }
        assert_eq!(
            subject_dependent(&d, 0.25, 7),
            subject_dependent(&d, 0.25, 7)
        );
        assert_ne!(
            subject_dependent(&d, 0.25, 7),
            subject_dependent(&d, 0.25, 8)
        );
    }

    #[test]
    fn subject_dependent_errors() {
        let d = dataset(&[2, 3], 1);
        assert_eq!(
            subject_dependent(&d, 0.0, 1),
            Err(SplitError::BadFraction(0.0))
        );
        assert_eq!(
            subject_dependent(&d, 1.0, 1),
            Err(SplitError::BadFraction(1.0))
        );
        assert!(matches!(
            subject_dependent(&dataset(&[1, 1, 1], 5), 0.5, 1),
            Err(SplitError::TooFewTrials(_))
        ));
        // Two trials per subject: one goes to test, and the one left cannot be split again.
        let two = dataset(&[2, 2], 1);
        let split = subject_dependent(&two, 0.25, 1).unwrap();
        let error = validation_trials(&two, &split.train, 0.2, 1).unwrap_err();
        assert!(matches!(error, SplitError::NoValidationTrial(_)), "{error}");
        assert!(error.to_string().contains("validation fraction of 0"));
    }

    #[test]
    fn leave_one_subject_out_holds_each_subject_out_once() {
        let d = dataset(&[2, 3, 4], 2);
        let folds = leave_one_subject_out(&d).expect("folds");
        assert_eq!(folds.len(), 3);
        for fold in &folds {
            let held: HashSet<String> = fold.held_out.iter().cloned().collect();
            assert_eq!(subjects(&d, &fold.test), held);
            assert!(subjects(&d, &fold.train).is_disjoint(&held));
            assert_eq!(fold.train.len() + fold.test.len(), d.samples.len());
        }
        assert!(matches!(
            leave_one_subject_out(&dataset(&[3], 2)),
            Err(SplitError::TooFewSubjects { subjects: 1, .. })
        ));
    }

    #[test]
    fn k_folds_partition_the_subjects() {
        let d = dataset(&[2, 3, 4, 2, 2, 6, 1], 3);
        let folds = k_fold_subjects(&d, 3, 11).expect("folds");
        assert_eq!(folds.len(), 3);
        let mut seen: Vec<String> = Vec::new();
        for fold in &folds {
            assert!(fold.held_out.len() == 2 || fold.held_out.len() == 3);
            let held: HashSet<String> = fold.held_out.iter().cloned().collect();
            assert_eq!(subjects(&d, &fold.test), held);
            assert!(subjects(&d, &fold.train).is_disjoint(&held));
            assert!(keys(&d, &fold.train).is_disjoint(&keys(&d, &fold.test)));
            seen.extend(fold.held_out.iter().cloned());
        }
        seen.sort();
        let mut all = d.subjects();
        all.sort();
        assert_eq!(seen, all);
        assert_eq!(k_fold_subjects(&d, 3, 11), k_fold_subjects(&d, 3, 11));
        assert_eq!(
            k_fold_subjects(&d, 8, 1),
            Err(SplitError::BadK { k: 8, subjects: 7 })
        );
        assert_eq!(
            k_fold_subjects(&d, 1, 1),
            Err(SplitError::BadK { k: 1, subjects: 7 })
        );
        let text = k_fold_subjects(&d, 8, 1).unwrap_err().to_string();
        assert!(
            text.contains("k = 8") && text.contains("7 subjects"),
            "{text}"
        );
    }

    #[test]
    fn validation_parts_come_from_training_samples_only() {
        let d = dataset(&[4, 6, 8, 1, 5], 3);
        let split = subject_dependent(&d, 0.25, 3).expect("split");
        let (fit, validation) = validation_trials(&d, &split.train, 0.25, 9).expect("trials");
        let mut both: Vec<usize> = fit.iter().chain(&validation).copied().collect();
        both.sort_unstable();
        assert_eq!(
            both, split.train,
            "fit and validation are exactly the training samples"
        );
        assert!(keys(&d, &fit).is_disjoint(&keys(&d, &validation)));
        assert!(keys(&d, &validation).is_disjoint(&keys(&d, &split.test)));
        assert!(!validation.is_empty());

        let folds = k_fold_subjects(&d, 2, 1).expect("folds");
        for fold in &folds {
            let (fit, validation) = validation_subjects(&d, &fold.train, 0.3, 5).expect("subjects");
            let mut both: Vec<usize> = fit.iter().chain(&validation).copied().collect();
            both.sort_unstable();
            assert_eq!(both, fold.train);
            assert!(subjects(&d, &fit).is_disjoint(&subjects(&d, &validation)));
            assert!(subjects(&d, &validation).is_disjoint(&subjects(&d, &fold.test)));
            assert!(!validation.is_empty() && !fit.is_empty());
        }
    }

    fn with_stimuli(trials: &[u32], windows: u32) -> Dataset {
        let mut d = dataset(trials, windows);
        for sample in &mut d.samples {
            // Trial ids are 3t + 1: the same trial index is the same stimulus for everyone.
            sample.stimulus = Some(format!("clip {}", (sample.trial - 1) / 3));
        }
        d
    }

    fn stimuli_of(d: &Dataset, idx: &[usize]) -> HashSet<String> {
        idx.iter()
            .map(|&i| d.samples[i].stimulus.clone().unwrap())
            .collect()
    }

    #[test]
    fn stimulus_folds_never_share_a_stimulus_across_sides() {
        let d = with_stimuli(&[6, 6, 6, 6], 2);
        let folds = k_fold_stimuli(&d, 3, 4).expect("folds");
        let mut tested: Vec<usize> = folds.iter().flat_map(|f| f.test.clone()).collect();
        tested.sort_unstable();
        assert_eq!(tested, (0..d.samples.len()).collect::<Vec<_>>());
        for fold in &folds {
            assert!(stimuli_of(&d, &fold.train).is_disjoint(&stimuli_of(&d, &fold.test)));
            let (fit, validation) =
                validation_stimuli(&d, &fold.train, 0.25, 1).expect("validation");
            assert!(stimuli_of(&d, &fit).is_disjoint(&stimuli_of(&d, &validation)));
            assert!(!validation.is_empty());
        }
        let both = k_fold_subjects_and_stimuli(&d, 2, 4).expect("folds");
        for fold in &both {
            assert!(stimuli_of(&d, &fold.train).is_disjoint(&stimuli_of(&d, &fold.test)));
            assert!(subjects(&d, &fold.train).is_disjoint(&subjects(&d, &fold.test)));
            assert!(!fold.test.is_empty() && !fold.train.is_empty());
        }
        assert!(matches!(
            k_fold_stimuli(&dataset(&[3, 3], 1), 2, 1),
            Err(SplitError::NoStimuli(_))
        ));
        assert!(matches!(
            k_fold_stimuli(&d, 7, 1),
            Err(SplitError::BadStimulusK { k: 7, stimuli: 6 })
        ));
    }
}
