//! The stimulus prior: each test sample gets the mean training distribution of its stimulus
//! (the label prior when no training sample saw that stimulus). It uses no signal at all, so
//! beside the label prior it shows how much of the label the stimulus alone explains; a model
//! that cannot beat it has learned about the stimuli, not about the person's signals.

use std::collections::BTreeMap;

use mpcl_data::Dataset;

/// The stimulus prior's prediction for every sample of `test`, from `train`; `None` when a
/// sample of either lacks a stimulus id.
pub fn stimulus_prior(train: &Dataset, test: &Dataset) -> Option<Vec<Vec<f32>>> {
    let emotions = train.schema.emotion_count();
    let mut sums: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
    for sample in &train.samples {
        let (sum, count) = sums
            .entry(sample.stimulus.as_deref()?)
            .or_insert_with(|| (vec![0.0; emotions], 0));
        for (s, v) in sum.iter_mut().zip(&sample.label) {
            *s += f64::from(*v);
        }
        *count += 1;
    }
    let prior = train.label_prior();
    test.samples
        .iter()
        .map(|sample| {
            let stimulus = sample.stimulus.as_deref()?;
            Some(match sums.get(stimulus) {
                Some((sum, count)) => sum.iter().map(|s| (s / *count as f64) as f32).collect(),
                None => prior.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    #[test]
    fn each_sample_gets_its_stimulus_mean_or_the_prior_when_unseen() {
        let mut data = generate(&SyntheticConfig {
            subjects: 2,
            trials_per_subject: 3,
            windows_per_trial: 1,
            ..SyntheticConfig::default()
        });
        assert!(
            stimulus_prior(&data, &data).is_none(),
            "synthetic data has no stimuli"
        );
        for sample in &mut data.samples {
            sample.stimulus = Some(format!("clip {}", sample.trial));
        }
        let train = data.subset(&[0, 1, 3, 4]);
        let test = data.subset(&[2, 5, 0]);
        let predicted = stimulus_prior(&train, &test).expect("stimuli known");
        // Clip 2 was never trained on: the label prior.
        assert_eq!(predicted[0], train.label_prior());
        assert_eq!(predicted[1], train.label_prior());
        // Clip 0: the mean of the two subjects' clip-0 labels.
        let mean: Vec<f32> = data.samples[0]
            .label
            .iter()
            .zip(&data.samples[3].label)
            .map(|(a, b)| ((f64::from(*a) + f64::from(*b)) / 2.0) as f32)
            .collect();
        assert_eq!(predicted[2], mean);
    }
}
