//! The WESAD reader on a subject folder written by `tools/make_wesad_fixture.py` (numpy +
//! zipfile), compared with the numbers that script computed from the same text.

use std::path::{Path, PathBuf};

use mpcl_data::features::STATISTICS_NAMES;
use mpcl_data::wesad::{EMOTIONS, read_wesad_dir};
use mpcl_data::{ModalityGroup, ReadError};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wesad")
}

fn stat(name: &str) -> usize {
    STATISTICS_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no statistic {name}"))
}

fn close(found: f32, expected: f64, what: &str) {
    let tolerance = 1e-5 * expected.abs().max(1.0);
    assert!(
        (f64::from(found) - expected).abs() <= tolerance,
        "{what}: found {found}, expected {expected}"
    );
}

#[test]
fn reads_the_synthetic_subject_like_numpy_does() -> anyhow::Result<()> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    let (dataset, report) = read_wesad_dir(&fixture())?;
    dataset.validate()?;
    assert_eq!(dataset.subjects(), vec!["S97"]);
    assert_eq!(dataset.schema.emotions.len(), EMOTIONS.len());
    let layout: Vec<(&str, ModalityGroup, usize, usize)> = dataset
        .schema
        .modalities
        .iter()
        .map(|m| (m.name.as_str(), m.group, m.token_count, m.token_width))
        .collect();
    assert_eq!(
        layout,
        vec![
            ("eda", ModalityGroup::Physiological, 1, 20),
            ("bvp", ModalityGroup::Physiological, 1, 20),
            ("temp", ModalityGroup::Physiological, 1, 20),
            ("acc", ModalityGroup::Behavioral, 4, 20),
        ]
    );

    let conditions = expected["conditions"].as_array().expect("conditions");
    let mut expected_skips = 0;
    for condition in conditions {
        let trial = condition["trial"].as_u64().expect("trial") as u32;
        let name = condition["name"].as_str().expect("name");
        let windows: Vec<_> = dataset
            .samples
            .iter()
            .filter(|s| s.trial == trial)
            .collect();
        if condition.get("skipped").is_some() {
            expected_skips += 1;
            assert!(windows.is_empty(), "{name} should be skipped");
            assert!(
                report
                    .skipped
                    .iter()
                    .any(|s| s.trial == Some(trial) && s.reason.contains(name)),
                "{name} is not in the report: {report:?}"
            );
            continue;
        }
        let count = condition["windows"].as_u64().expect("windows") as usize;
        assert_eq!(windows.len(), count, "{name}: window count");
        let times: Vec<u32> = windows.iter().map(|s| s.time).collect();
        assert_eq!(
            times,
            (0..count as u32).collect::<Vec<_>>(),
            "{name}: time indices"
        );
        let label: Vec<f64> = condition["label"]
            .as_array()
            .expect("label")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        for (k, (found, want)) in windows[0].label.iter().zip(&label).enumerate() {
            close(*found, *want, &format!("{name}: label {}", EMOTIONS[k]));
        }
        let first = &condition["first_window"];
        let f = &windows[0].features;
        let want = |key: &str| first[key].as_f64().expect("number");
        close(f[0][stat("mean")], want("eda_mean"), "eda mean");
        close(f[0][stat("std")], want("eda_std"), "eda std");
        close(f[1][stat("median")], want("bvp_median"), "bvp median");
        close(
            f[1][stat("diff1_mean")],
            want("bvp_diff1_mean"),
            "bvp diff1 mean",
        );
        close(f[2][stat("max")], want("temp_max"), "temp max");
        close(f[3][stat("min")], want("acc_x_min"), "acc x min");
        close(
            f[3][60 + stat("max")],
            want("acc_magnitude_max"),
            "acc magnitude max",
        );
    }
    assert_eq!(report.skipped.len(), expected_skips);
    // Medi 2 runs past the recording: its windows beyond the end are noted, not silently lost.
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("Medi 2") && n.contains("outside")),
        "{report:?}"
    );
    Ok(())
}

fn copy_fixture() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let to = dir.path().join("S97");
    std::fs::create_dir(&to)?;
    for entry in std::fs::read_dir(fixture().join("S97"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(dir)
}

#[test]
fn a_truncated_zip_is_named() -> anyhow::Result<()> {
    let dir = copy_fixture()?;
    let zip = dir.path().join("S97/S97_E4_Data.zip");
    let bytes = std::fs::read(&zip)?;
    std::fs::write(&zip, &bytes[..bytes.len() / 2])?;
    let err = read_wesad_dir(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("S97_E4_Data.zip"), "{text}");
    Ok(())
}

#[test]
fn a_missing_questionnaire_or_folder_is_named() -> anyhow::Result<()> {
    let dir = copy_fixture()?;
    std::fs::remove_file(dir.path().join("S97/S97_quest.csv"))?;
    let err = read_wesad_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ReadError::Io { .. }), "{err}");
    assert!(err.to_string().contains("S97_quest.csv"), "{err}");
    let empty = tempfile::tempdir()?;
    let err = read_wesad_dir(empty.path()).unwrap_err();
    assert!(matches!(err, ReadError::NoData { .. }), "{err}");
    Ok(())
}

#[test]
fn a_bad_panas_score_is_named_with_row_and_item() -> anyhow::Result<()> {
    let dir = copy_fixture()?;
    let quest = dir.path().join("S97/S97_quest.csv");
    let text = std::fs::read_to_string(&quest)?;
    let broken = text.replacen("# PANAS;1;4;", "# PANAS;1;9;", 1);
    assert_ne!(text, broken, "fixture changed: update this test");
    std::fs::write(&quest, broken)?;
    let err = read_wesad_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("S97_quest.csv") && err.contains("row 6") && err.contains("distressed"),
        "{err}"
    );
    Ok(())
}

#[test]
fn an_unanswered_panas_item_skips_the_condition_with_a_reason() -> anyhow::Result<()> {
    let dir = copy_fixture()?;
    let quest = dir.path().join("S97/S97_quest.csv");
    let text = std::fs::read_to_string(&quest)?;
    // The first PANAS row (Base) loses its Interested answer.
    let broken = text.replacen("# PANAS;1;4;1;", "# PANAS;1;4;NaN;", 1);
    assert_ne!(text, broken, "fixture changed: update this test");
    std::fs::write(&quest, broken)?;
    let (dataset, report) = read_wesad_dir(dir.path())?;
    assert!(!dataset.samples.iter().any(|s| s.trial == 0));
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.trial == Some(0) && s.reason.contains("`interested` was not answered")),
        "{report:?}"
    );
    Ok(())
}
