//! `model::data::open` for every spec form, and the splits on the real bundled dataset: no
//! (subject, trial) on both sides, no held-out subject in training.

use std::collections::HashSet;
use std::path::Path;

use mpcl_data::split::{k_fold_subjects, leave_one_subject_out, subject_dependent};
use mpcl_data::{Dataset, open};

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn every_spec_form_opens() -> anyhow::Result<()> {
    let (dmer, _) = open(&format!("dmer:{}", fixture("dmer")))?;
    assert_eq!((dmer.name.as_str(), dmer.samples.len()), ("dmer", 12));
    let (one, _) = open(&format!("dmer:{}", fixture("dmer/1.mat")))?;
    assert_eq!(one.subjects(), vec!["1"]);
    let (wesad, _) = open(&format!("wesad:{}", fixture("wesad")))?;
    assert_eq!(wesad.name, "wesad");
    let bundled = mpcl_data::bundled_larwood_dir();
    let (larwood, _) = open(&format!("larwood:{}", bundled.display()))?;
    assert_eq!(larwood.samples.len(), 2758);
    Ok(())
}

fn trials(d: &Dataset, idx: &[usize]) -> HashSet<(String, u32)> {
    idx.iter()
        .map(|&i| (d.samples[i].subject.clone(), d.samples[i].trial))
        .collect()
}

fn subjects(d: &Dataset, idx: &[usize]) -> HashSet<String> {
    idx.iter().map(|&i| d.samples[i].subject.clone()).collect()
}

#[test]
fn splits_of_the_bundled_dataset_never_leak() -> anyhow::Result<()> {
    let (d, _) = open("larwood2019")?;
    let split = subject_dependent(&d, 0.2, 42)?;
    assert!(trials(&d, &split.train).is_disjoint(&trials(&d, &split.test)));
    assert_eq!(split.train.len() + split.test.len(), d.samples.len());
    // Every subject (all have at least 2 trials) is on both sides.
    assert_eq!(subjects(&d, &split.train).len(), 87);
    assert_eq!(subjects(&d, &split.test).len(), 87);

    let folds = leave_one_subject_out(&d)?;
    assert_eq!(folds.len(), 87);
    for fold in folds.iter().take(5) {
        let held: HashSet<String> = fold.held_out.iter().cloned().collect();
        assert!(subjects(&d, &fold.train).is_disjoint(&held));
        assert_eq!(subjects(&d, &fold.test), held);
    }

    let folds = k_fold_subjects(&d, 5, 3)?;
    let mut held_total = 0;
    for fold in &folds {
        let held: HashSet<String> = fold.held_out.iter().cloned().collect();
        assert!(subjects(&d, &fold.train).is_disjoint(&held));
        assert_eq!(subjects(&d, &fold.test), held);
        held_total += held.len();
    }
    assert_eq!(held_total, 87);
    assert!(k_fold_subjects(&d, 88, 3).is_err());
    Ok(())
}
