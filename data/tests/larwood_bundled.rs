//! The bundled Larwood (2019) dataset read end to end, checked against the figures its README
//! reports (computed there by the conversion script, independently of this reader).

use mpcl_data::inspect::{entropy, summarize};
use mpcl_data::larwood::EMOTIONS;
use mpcl_data::{ModalityGroup, bundled_larwood_dir, open};

#[test]
fn bundled_dataset_has_the_documented_counts_and_label_statistics() -> anyhow::Result<()> {
    let (dataset, report) = open("larwood2019")?;
    dataset.validate()?;
    assert_eq!(dataset.name, "larwood2019");
    assert_eq!(dataset.subjects().len(), 87);
    assert_eq!(dataset.samples.len(), 2758);
    assert_eq!(report.skipped.len(), 26);
    // "mostly from subjects 032 (11) and 039 (8)"
    assert_eq!(
        report.skipped.iter().filter(|s| s.subject == "032").count(),
        11
    );
    assert_eq!(
        report.skipped.iter().filter(|s| s.subject == "039").count(),
        8
    );
    assert_eq!(dataset.schema.emotions, EMOTIONS.map(String::from).to_vec());
    let m = &dataset.schema.modalities;
    assert_eq!(m.len(), 1);
    assert_eq!(
        (
            m[0].name.as_str(),
            m[0].group,
            m[0].token_count,
            m[0].token_width
        ),
        ("facial_emg", ModalityGroup::Behavioral, 4, 2)
    );
    assert_eq!(dataset.samples[0].subject, "004");

    // README: mean p by word (3 decimals) and mean entropy 1.473 nats.
    let prior = dataset.label_prior();
    for (word, mean) in [
        ("happy", 0.139),
        ("alert", 0.137),
        ("tender", 0.137),
        ("angry", 0.021),
        ("sad", 0.104),
    ] {
        let k = EMOTIONS.iter().position(|e| *e == word).expect("word");
        assert!(
            (f64::from(prior[k]) - mean).abs() < 0.0006,
            "{word}: {}",
            prior[k]
        );
    }
    let mean_entropy: f64 = dataset
        .samples
        .iter()
        .map(|s| entropy(&s.label))
        .sum::<f64>()
        / dataset.samples.len() as f64;
    assert!((mean_entropy - 1.473).abs() < 0.0006, "{mean_entropy}");

    let text = summarize(&dataset, &report);
    assert!(
        text.contains("subjects  87")
            && text.contains("samples   2758")
            && text.contains("skipped   26"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_notice_travels_with_the_data() {
    let dir = bundled_larwood_dir();
    for file in ["trials.csv", "README.md", "NOTICE.md"] {
        assert!(
            dir.join(file).is_file(),
            "{file} missing from {}",
            dir.display()
        );
    }
}
