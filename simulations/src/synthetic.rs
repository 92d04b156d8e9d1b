//! Seeded synthetic data in the DMER layout (EEG 18x5, GSR 28, PPG 27 physiological; a face
//! vector behavioral; the 10 PANAS emotions), with structure planted so that a model has
//! something real to find and the harness something real to measure:
//!
//! - **Valence structure.** Each trial is positive or negative. Emotions of the trial's valence
//!   share its mass (they co-occur); emotions of the opposite valence get almost none (they
//!   exclude each other).
//! - **Signal.** Each emotion has a fixed pattern per modality; a window's features are the
//!   label-weighted sum of patterns, passed through `tanh` for some nonlinearity, plus noise.
//!   The physiological and behavioral groups both carry the signal.
//! - **Subjects differ.** Every subject adds its own feature offset, so subject-independent
//!   evaluation (unseen offsets) is harder than subject-dependent.
//! - **Subjects rate differently** (optional, `subject_label_shift`). Each subject mixes a
//!   rating bias of its own (a random distribution over the emotions) into every label, while
//!   its features still come from the unbiased trial label. Per-subject standardisation removes
//!   the feature offsets but not this: a shared model can only predict the average bias, and
//!   only a subject's own ratings reveal its bias (what personalization is for).
//! - **Trials have several windows** sharing the trial's label with a small drift, like the one
//!   window per second of DMER, so a window-level split would leak.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal};
use serde::{Deserialize, Serialize};

use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema, dmer};

/// Knobs of the generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    pub seed: u64,
    pub subjects: usize,
    pub trials_per_subject: usize,
    pub windows_per_trial: usize,
    /// Width of the behavioral face vector (DMER's LBP-TOP has 768; smaller is faster).
    pub face_width: usize,
    /// Standard deviation of the per-window noise.
    pub noise: f64,
    /// Standard deviation of each subject's feature offset.
    pub subject_shift: f64,
    /// Mass left on the opposite valence's emotions (0 = strict exclusion).
    pub opposite_mass: f64,
    /// Weight of each subject's own rating bias in its labels, in [0, 1] (0 = none: labels
    /// are the trial's emotions alone).
    pub subject_label_shift: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            subjects: 8,
            trials_per_subject: 12,
            windows_per_trial: 4,
            face_width: 32,
            noise: 0.3,
            subject_shift: 0.5,
            opposite_mass: 0.02,
            subject_label_shift: 0.0,
        }
    }
}

/// The schema of synthetic data (the DMER layout with a configurable face width).
pub fn synthetic_schema(face_width: usize) -> Schema {
    Schema {
        // The DMER emotions: five positive, then five negative PANAS items.
        emotions: dmer::EMOTIONS.iter().map(|e| e.to_string()).collect(),
        modalities: vec![
            Modality::new("eeg", ModalityGroup::Physiological, 18, 5),
            Modality::new("gsr", ModalityGroup::Physiological, 1, 28),
            Modality::new("ppg", ModalityGroup::Physiological, 1, 27),
            Modality::new("face", ModalityGroup::Behavioral, 4, face_width.div_ceil(4)),
        ],
    }
}

/// Generates a dataset; the same config always gives the same data.
pub fn generate(config: &SyntheticConfig) -> Dataset {
    let schema = synthetic_schema(config.face_width);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let emotions = schema.emotion_count();
    let widths: Vec<usize> = schema.modalities.iter().map(|m| m.width()).collect();
    let standard = Normal::new(0.0, 1.0).expect("valid normal");
    // patterns[c][m] = the pattern of emotion c in modality m.
    let patterns: Vec<Vec<Vec<f64>>> = (0..emotions)
        .map(|_| {
            widths
                .iter()
                .map(|w| (0..*w).map(|_| standard.sample(&mut rng)).collect())
                .collect()
        })
        .collect();
    let shift = Normal::new(0.0, config.subject_shift.max(0.0)).expect("valid normal");
    let noise = Normal::new(0.0, config.noise.max(0.0)).expect("valid normal");
    let gamma = Gamma::new(1.5, 1.0).expect("valid gamma");
    let half = emotions / 2;
    let mut samples = Vec::new();
    for subject in 0..config.subjects {
        let offsets: Vec<Vec<f64>> = widths
            .iter()
            .map(|w| (0..*w).map(|_| shift.sample(&mut rng)).collect())
            .collect();
        let bias = rating_bias(config, subject, emotions);
        for trial in 0..config.trials_per_subject {
            let positive = rng.random_bool(0.5);
            let label = trial_label(
                &mut rng,
                &gamma,
                emotions,
                half,
                positive,
                config.opposite_mass,
            );
            let rated: Vec<f32> = match &bias {
                Some((weight, bias)) => label
                    .iter()
                    .zip(bias)
                    .map(|(l, b)| ((1.0 - weight) * f64::from(*l) + weight * b) as f32)
                    .collect(),
                None => label.clone(),
            };
            for window in 0..config.windows_per_trial {
                let features = widths
                    .iter()
                    .enumerate()
                    .map(|(m, w)| {
                        (0..*w)
                            .map(|j| {
                                let signal: f64 = (0..emotions)
                                    .map(|c| f64::from(label[c]) * patterns[c][m][j])
                                    .sum();
                                let drift = 0.05 * window as f64;
                                ((2.0 * signal).tanh()
                                    + offsets[m][j]
                                    + drift
                                    + noise.sample(&mut rng)) as f32
                            })
                            .collect()
                    })
                    .collect();
                samples.push(Sample {
                    features,
                    label: rated.clone(),
                    subject: format!("s{:02}", subject + 1),
                    trial: trial as u32,
                    time: window as u32,
                    stimulus: None,
                });
            }
        }
    }
    Dataset {
        name: format!("synthetic(seed={})", config.seed),
        schema,
        samples,
    }
}

/// Mixed into the seed of the rating biases.
const RATING_BIAS_SALT: u64 = 0x7261_7469_6e67_6269;

/// Subject `subject`'s rating bias and its weight (`None` without a label shift). Drawn from a
/// generator of its own, so that switching the shift on changes no feature and no trial label.
fn rating_bias(
    config: &SyntheticConfig,
    subject: usize,
    emotions: usize,
) -> Option<(f64, Vec<f64>)> {
    let weight = config.subject_label_shift.clamp(0.0, 1.0);
    if weight == 0.0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ RATING_BIAS_SALT ^ subject as u64);
    // Shape 0.5: a few emotions take most of a subject's bias.
    let gamma = Gamma::new(0.5, 1.0).expect("valid gamma");
    let draws: Vec<f64> = (0..emotions).map(|_| gamma.sample(&mut rng)).collect();
    let total: f64 = draws.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    Some((weight, draws.iter().map(|d| d / total).collect()))
}

/// A label with mass on the trial's valence and (almost) none on the other.
fn trial_label(
    rng: &mut ChaCha8Rng,
    gamma: &Gamma<f64>,
    emotions: usize,
    half: usize,
    positive: bool,
    opposite_mass: f64,
) -> Vec<f32> {
    let own = if positive { 0..half } else { half..emotions };
    let mut weights: Vec<f64> = (0..emotions)
        .map(|c| {
            if own.contains(&c) {
                gamma.sample(rng)
            } else {
                opposite_mass * rng.random::<f64>()
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= total;
    }
    weights.into_iter().map(|w| w as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticConfig {
        SyntheticConfig {
            subjects: 3,
            trials_per_subject: 6,
            windows_per_trial: 2,
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn same_seed_same_data_and_valid() {
        let a = generate(&small());
        assert_eq!(a, generate(&small()));
        assert_eq!(a.samples.len(), 3 * 6 * 2);
        a.validate().unwrap();
        let other = generate(&SyntheticConfig { seed: 8, ..small() });
        assert_ne!(a.samples[0].features, other.samples[0].features);
    }

    #[test]
    fn same_valence_cooccurs_and_opposite_valence_excludes() {
        let data = generate(&SyntheticConfig {
            subjects: 4,
            trials_per_subject: 20,
            windows_per_trial: 1,
            ..SyntheticConfig::default()
        });
        let (mut same, mut opposite) = (0.0f64, 0.0f64);
        for sample in &data.samples {
            let d = &sample.label;
            same += f64::from(d[0] * d[1] + d[5] * d[6]);
            opposite += f64::from(d[0] * d[5] + d[1] * d[6]);
        }
        assert!(same > 20.0 * opposite, "same {same} opposite {opposite}");
    }

    #[test]
    fn a_label_shift_moves_each_subjects_ratings_and_nothing_else() {
        let plain = generate(&small());
        let shifted = generate(&SyntheticConfig {
            subject_label_shift: 0.5,
            ..small()
        });
        assert_eq!(plain.samples.len(), shifted.samples.len());
        for (a, b) in plain.samples.iter().zip(&shifted.samples) {
            assert_eq!(a.features, b.features);
            assert!(dataset_label_sums_to_one(&b.label));
        }
        shifted.validate().unwrap();
        // Each subject's mean rating moves by its own bias, so subjects move differently.
        let mean_shift = |subject: &str| -> Vec<f32> {
            let rows: Vec<usize> = plain.indices_of_subject(subject);
            (0..plain.schema.emotion_count())
                .map(|c| {
                    rows.iter()
                        .map(|&i| shifted.samples[i].label[c] - plain.samples[i].label[c])
                        .sum::<f32>()
                        / rows.len() as f32
                })
                .collect()
        };
        let (first, second) = (mean_shift("s01"), mean_shift("s02"));
        assert!(first.iter().any(|d| d.abs() > 1e-2), "{first:?}");
        let distance: f32 = first.iter().zip(&second).map(|(a, b)| (a - b).abs()).sum();
        assert!(distance > 1e-2, "{first:?} vs {second:?}");
    }

    fn dataset_label_sums_to_one(label: &[f32]) -> bool {
        (label.iter().sum::<f32>() - 1.0).abs() < 1e-4
    }

    #[test]
    fn subjects_are_shifted() {
        let data = generate(&small());
        let mean_of = |subject: &str| -> f32 {
            let rows: Vec<&Sample> = data
                .samples
                .iter()
                .filter(|s| s.subject == subject)
                .collect();
            rows.iter().map(|s| s.features[1][0]).sum::<f32>() / rows.len() as f32
        };
        assert!((mean_of("s01") - mean_of("s02")).abs() > 1e-3);
    }
}
