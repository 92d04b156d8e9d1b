//! A plain-text summary of a dataset, for `mpcl data inspect`: what a user needs to see before
//! training on it (how many subjects, trials and samples; the modalities and their token layout;
//! the emotions with their mean label mass; how spread the labels are; what the reader dropped).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Dataset, LoadReport};

/// Shannon entropy of a distribution, in nats (zero terms contribute nothing).
pub fn entropy(p: &[f32]) -> f64 {
    -p.iter()
        .map(|v| f64::from(*v))
        .filter(|v| *v > 0.0)
        .map(|v| v * v.ln())
        .sum::<f64>()
}

/// The summary `mpcl data inspect` prints.
pub fn summarize(dataset: &Dataset, report: &LoadReport) -> String {
    let mut out = String::new();
    let subjects = dataset.subjects();
    let trials: BTreeSet<(&str, u32)> = dataset
        .samples
        .iter()
        .map(|s| (s.subject.as_str(), s.trial))
        .collect();
    let n = dataset.samples.len();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "dataset   {}", dataset.name);
    if !report.source.is_empty() {
        let _ = writeln!(out, "source    {}", report.source);
    }
    let _ = writeln!(out, "subjects  {}", subjects.len());
    let _ = writeln!(
        out,
        "trials    {} ({:.1} per subject)",
        trials.len(),
        trials.len() as f64 / subjects.len().max(1) as f64
    );
    let _ = writeln!(
        out,
        "samples   {} ({:.1} per trial)",
        n,
        n as f64 / trials.len().max(1) as f64
    );

    let _ = writeln!(out, "\nmodalities ({}):", dataset.schema.modalities.len());
    let _ = writeln!(
        out,
        "  {:<14} {:<14} {:>6} {:>6} {:>6}",
        "name", "group", "tokens", "width", "values"
    );
    for m in &dataset.schema.modalities {
        let _ = writeln!(
            out,
            "  {:<14} {:<14} {:>6} {:>6} {:>6}",
            m.name,
            m.group.name(),
            m.token_count,
            m.token_width,
            m.width()
        );
    }

    let c = dataset.schema.emotion_count();
    let prior = dataset.label_prior();
    let entropies: Vec<f64> = dataset.samples.iter().map(|s| entropy(&s.label)).collect();
    let mean_entropy = entropies.iter().sum::<f64>() / n.max(1) as f64;
    let _ = writeln!(out, "\nemotions ({c}), mean label mass:");
    for (name, p) in dataset.schema.emotions.iter().zip(&prior) {
        let _ = writeln!(out, "  {name:<14} {p:.3}");
    }
    let _ = writeln!(
        out,
        "mean label entropy {:.3} nats (maximum ln {c} = {:.3})",
        mean_entropy,
        (c.max(1) as f64).ln()
    );

    if report.skipped.is_empty() {
        let _ = writeln!(out, "\nskipped   none");
    } else {
        let _ = writeln!(out, "\nskipped   {}:", report.skipped.len());
        for s in &report.skipped {
            match s.trial {
                Some(t) => {
                    let _ = writeln!(out, "  subject {} trial {}: {}", s.subject, t, s.reason);
                }
                None => {
                    let _ = writeln!(out, "  subject {}: {}", s.subject, s.reason);
                }
            }
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for note in &report.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup, Sample, Schema};

    #[test]
    fn summary_counts_and_describes() {
        let sample = |subject: &str, trial, time, label: Vec<f32>| Sample {
            features: vec![vec![0.0; 6], vec![1.0]],
            label,
            subject: subject.into(),
            trial,
            time,
            stimulus: None,
        };
        let dataset = Dataset {
            name: "toy".into(),
            schema: Schema {
                emotions: vec!["joy".into(), "fear".into()],
                modalities: vec![
                    Modality::new("eeg", ModalityGroup::Physiological, 3, 2),
                    Modality::new("face", ModalityGroup::Behavioral, 1, 1),
                ],
            },
            samples: vec![
                sample("a", 0, 0, vec![1.0, 0.0]),
                sample("a", 0, 1, vec![1.0, 0.0]),
                sample("a", 1, 0, vec![0.5, 0.5]),
                sample("b", 0, 0, vec![0.5, 0.5]),
            ],
        };
        let mut report = LoadReport::new("somewhere");
        report.skip("b", Some(3), "all ratings minimal");
        let text = summarize(&dataset, &report);
        assert!(text.contains("subjects  2"), "{text}");
        assert!(text.contains("trials    3"), "{text}");
        assert!(text.contains("samples   4"), "{text}");
        assert!(
            text.contains("eeg") && text.contains("physiological") && text.contains("behavioral"),
            "{text}"
        );
        // Mean label: joy (1 + 1 + .5 + .5) / 4 = .75.
        assert!(text.contains("joy            0.750"), "{text}");
        // Entropy: two samples at 0, two at ln 2 -> mean 0.347.
        assert!(text.contains("mean label entropy 0.347"), "{text}");
        assert!(
            text.contains("subject b trial 3: all ratings minimal"),
            "{text}"
        );
        assert!((entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-9);
    }
}
