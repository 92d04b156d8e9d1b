//! `write_study_dir` (`mpcl data convert`): the bundled Larwood dataset written as a study folder
//! and read back gives the dataset the built-in reader gives.

use mpcl_data::study::{Requirements, read_study_dir, validate_study_dir, write_study_dir};
use mpcl_data::{larwood, open};

#[test]
fn the_converted_bundled_larwood_folder_reads_back_as_the_same_dataset() -> anyhow::Result<()> {
    let (original, _) = open("larwood2019")?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("larwood-study");
    let files = write_study_dir(&original, &out)?;
    // schema.toml and one CSV per subject.
    assert_eq!(files.len(), 1 + original.subjects().len());

    let (back, report) = read_study_dir(&out)?;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(back.name, original.name);
    assert_eq!(back.schema, original.schema);
    assert_eq!(back.schema, larwood::schema());
    assert_eq!(back.samples.len(), original.samples.len());
    for (a, b) in original.samples.iter().zip(&back.samples) {
        assert_eq!((&a.subject, a.trial, a.time), (&b.subject, b.trial, b.time));
        assert_eq!(
            a.features, b.features,
            "subject {} trial {}",
            a.subject, a.trial
        );
        for (x, y) in a.label.iter().zip(&b.label) {
            assert!(
                (x - y).abs() <= 1e-6,
                "subject {} trial {}: {:?} vs {:?}",
                a.subject,
                a.trial,
                a.label,
                b.label
            );
        }
    }

    // The folder opens as a bare path too, and passes validation without a single problem.
    let (opened, _) = open(&out.display().to_string())?;
    assert_eq!(opened, back);
    let report = validate_study_dir(&out, &Requirements::subject_dependent());
    assert!(report.problems.is_empty(), "{report}");
    assert_eq!(report.summary.subjects, 87);
    assert_eq!(report.summary.samples, 2758);
    Ok(())
}
