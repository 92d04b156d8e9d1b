//! The DMER reader on MAT files written by scipy (`tools/make_dmer_fixtures.py`), including
//! corrupt ones that must yield errors naming the file and the field.

use std::path::{Path, PathBuf};

use mpcl_data::dmer::{EMOTIONS, read_dmer_dir, read_dmer_file};
use mpcl_data::{ModalityGroup, ReadError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `feas[r, c]` as the fixture script wrote it.
fn feas(subject: f64, row: usize, col: usize) -> f32 {
    (1000.0 * subject + 10.0 * row as f64 + col as f64 / 1000.0) as f32
}

#[test]
fn reads_both_subjects_with_layout_labels_and_clip_times() -> anyhow::Result<()> {
    let (dataset, report) = read_dmer_dir(&fixtures().join("dmer"))?;
    dataset.validate()?;
    assert_eq!(dataset.subjects(), vec!["1", "2"]);
    assert_eq!(dataset.samples.len(), 12);
    assert_eq!(dataset.schema.emotions.len(), 10);
    assert_eq!(dataset.schema.emotions[0], EMOTIONS[0]);
    let layout: Vec<(&str, ModalityGroup, usize, usize)> = dataset
        .schema
        .modalities
        .iter()
        .map(|m| (m.name.as_str(), m.group, m.token_count, m.token_width))
        .collect();
    assert_eq!(
        layout,
        vec![
            ("eeg", ModalityGroup::Physiological, 18, 5),
            ("gsr", ModalityGroup::Physiological, 1, 28),
            ("ppg", ModalityGroup::Physiological, 1, 27),
            ("face", ModalityGroup::Behavioral, 12, 64),
        ]
    );
    assert!(report.skipped.is_empty());

    // Subject 1: vids (column) 0,0,1,2,2,1.
    let s1: Vec<_> = dataset
        .samples
        .iter()
        .filter(|s| s.subject == "1")
        .collect();
    let clips: Vec<(u32, u32)> = s1.iter().map(|s| (s.trial, s.time)).collect();
    assert_eq!(clips, vec![(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (1, 1)]);
    for (row, sample) in s1.iter().enumerate() {
        // Every modality slices its own columns of the row.
        assert_eq!(sample.features[0][0], feas(1.0, row, 0));
        assert_eq!(sample.features[0][89], feas(1.0, row, 89));
        assert_eq!(sample.features[1][0], feas(1.0, row, 90));
        assert_eq!(sample.features[1][27], feas(1.0, row, 117));
        assert_eq!(sample.features[2][0], feas(1.0, row, 118));
        assert_eq!(sample.features[2][26], feas(1.0, row, 144));
        assert_eq!(sample.features[3][0], feas(1.0, row, 145));
        assert_eq!(sample.features[3][767], feas(1.0, row, 912));
        // dis_label[clip, k] = clip + k + 1, normalised.
        let clip = sample.trial as f64;
        let total: f64 = (0..10).map(|k| clip + k as f64 + 1.0).sum();
        for (k, p) in sample.label.iter().enumerate() {
            assert!((f64::from(*p) - (clip + k as f64 + 1.0) / total).abs() < 1e-6);
        }
    }

    // Subject 2: vids stored as a row, compressed file: 2,2,0,0,1,1; labels 10 - k.
    let s2: Vec<_> = dataset
        .samples
        .iter()
        .filter(|s| s.subject == "2")
        .collect();
    let clips: Vec<(u32, u32)> = s2.iter().map(|s| (s.trial, s.time)).collect();
    assert_eq!(clips, vec![(2, 0), (2, 1), (0, 0), (0, 1), (1, 0), (1, 1)]);
    assert_eq!(s2[3].features[3][10], feas(2.0, 3, 155));
    assert!((s2[0].label[0] - 10.0 / 55.0).abs() < 1e-6);
    assert!((s2[0].label[9] - 1.0 / 55.0).abs() < 1e-6);
    Ok(())
}

#[test]
fn a_single_file_reads_on_its_own() -> anyhow::Result<()> {
    let (dataset, _) = read_dmer_file(&fixtures().join("dmer/2.mat"))?;
    assert_eq!(dataset.subjects(), vec!["2"]);
    assert_eq!(dataset.samples.len(), 6);
    Ok(())
}

/// The error for one corrupt fixture, as text, after checking it names the file and `field`.
fn corrupt(name: &str, field: &str) -> String {
    let path = fixtures().join("dmer_corrupt").join(name);
    let err = match read_dmer_file(&path) {
        Ok((dataset, _)) => panic!("{name} was read as {} samples", dataset.samples.len()),
        Err(err) => err,
    };
    let text = err.to_string();
    assert!(
        text.contains(name),
        "{name}: error does not name the file: {text}"
    );
    assert!(
        text.contains(&format!("`{field}`"))
            || text.contains(&format!("{field}["))
            || text.contains(field),
        "{name}: error does not name `{field}`: {text}"
    );
    text
}

#[test]
fn wrong_feas_width_is_named() {
    let text = corrupt("wrong_width.mat", "feas");
    assert!(text.contains("912") && text.contains("913"), "{text}");
}

#[test]
fn missing_feas_is_named() {
    let text = corrupt("missing_feas.mat", "feas");
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn a_zero_label_row_is_named_with_its_clip() {
    let text = corrupt("zero_label.mat", "dis_label");
    assert!(text.contains("clip 1"), "{text}");
}

#[test]
fn a_truncated_file_is_an_error_naming_the_cut_field() {
    // The cut falls inside `feas`, the first variable.
    let text = corrupt("truncated.mat", "feas");
    assert!(text.contains("truncated"), "{text}");
}

#[test]
fn a_clip_index_beyond_dis_label_is_named_with_its_row() {
    let text = corrupt("bad_vids.mat", "vids");
    assert!(text.contains("row 5"), "{text}");
}

#[test]
fn every_truncation_point_is_an_error_never_a_panic_or_a_wrong_sample() -> anyhow::Result<()> {
    // Cut the compressed and the plain fixture at many points: each must fail cleanly.
    let dir = tempfile::tempdir()?;
    for name in ["1.mat", "2.mat"] {
        let bytes = std::fs::read(fixtures().join("dmer").join(name))?;
        let step = (bytes.len() / 40).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let path = dir.path().join(format!("cut{cut}.mat"));
            std::fs::write(&path, &bytes[..cut])?;
            match read_dmer_file(&path) {
                Ok(_) => panic!("{name} cut at {cut} of {} bytes was accepted", bytes.len()),
                Err(ReadError::Field { field, .. }) => {
                    assert!(
                        ["header", "feas", "vids", "dis_label"].contains(&field.as_str()),
                        "{field}"
                    )
                }
                Err(ReadError::Format { .. }) => {}
                Err(other) => panic!("{name} cut at {cut}: unexpected error {other}"),
            }
        }
    }
    Ok(())
}

#[test]
fn an_empty_folder_is_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("notes.txt"), "not data")?;
    let err = read_dmer_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ReadError::NoData { .. }), "{err}");
    Ok(())
}

#[test]
fn corrupted_bytes_give_errors_or_samples_never_a_crash() -> anyhow::Result<()> {
    // Deterministic byte scribbles over the header and tags (and, every other case, anywhere).
    // Some land in plain number data and still read (MAT v5 has no checksum there); the rest
    // must come back as errors. Reaching the end of the loop is the test.
    let dir = tempfile::tempdir()?;
    let mut state: u64 = 12345;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    for name in ["1.mat", "2.mat"] {
        let bytes = std::fs::read(fixtures().join("dmer").join(name))?;
        for i in 0..200 {
            let mut scribbled = bytes.clone();
            for _ in 0..(1 + i % 4) {
                let span = if i % 2 == 0 { 400 } else { scribbled.len() };
                let pos = next() as usize % span;
                scribbled[pos] = next() as u8;
            }
            let path = dir.path().join(format!("scribbled{i}.mat"));
            std::fs::write(&path, &scribbled)?;
            if let Ok((dataset, _)) = read_dmer_file(&path) {
                dataset.validate()?;
            }
        }
    }
    Ok(())
}
