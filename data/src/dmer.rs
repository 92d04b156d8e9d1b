//! Reader for DMER (Yang et al., Scientific Data 2024): one MATLAB v5 file per subject,
//! `<id>.mat`, holding
//!
//! - `feas` (n x 913, one row per second): EEG differential entropy in columns 0..90 (18 channels
//!   x 5 bands, channel-major: column `5 c + b` is channel `c`, band `b`), GSR features 90..118
//!   (28), PPG features 118..145 (27) and face-video LBP-TOP features 145..913 (768);
//! - `vids` (n x 1 or 1 x n, stored as double): the clip index (0..31) of each row;
//! - `dis_label` (32 x 10): per clip the PANAS scores of Inspired, Alert, Excited, Enthusiastic,
//!   Determined, Afraid, Upset, Nervous, Scared, Distressed.
//!
//! A row's label is its clip's ten scores divided by their sum. Modalities: `eeg`
//! (physiological, 18 tokens of 5 bands), `gsr` (physiological, 1 x 28), `ppg` (physiological,
//! 1 x 27) and `face` (behavioral, **12 tokens of 64**: LBP-TOP is three 256-bin histograms, one
//! per orthogonal plane XY, XT, YT, so every 4 consecutive tokens form one plane and the network's
//! scale-4 pooling recovers exactly the three planes). Subject = file stem, trial = clip index,
//! time = the row's position among the rows of its clip.
//!
//! MAT parsing uses the `matfile` crate (v5 numeric arrays, compressed or not). MAT v7.3 files
//! are HDF5 and are rejected with a message saying so. Anything malformed becomes a
//! [`ReadError`] naming the file and the field; nothing here panics on file contents.

use std::path::{Path, PathBuf};

use super::{Dataset, LoadReport, Modality, ModalityGroup, ReadError, Sample, Schema};

/// The ten PANAS items of `dis_label`, in column (and schema) order.
pub const EMOTIONS: [&str; 10] = [
    "inspired",
    "alert",
    "excited",
    "enthusiastic",
    "determined",
    "afraid",
    "upset",
    "nervous",
    "scared",
    "distressed",
];

/// Width of a `feas` row.
pub const FEATURE_COLUMNS: usize = 913;

/// Modality name, group, token count, token width and first `feas` column, in schema order.
pub const LAYOUT: [(&str, ModalityGroup, usize, usize, usize); 4] = [
    ("eeg", ModalityGroup::Physiological, 18, 5, 0),
    ("gsr", ModalityGroup::Physiological, 1, 28, 90),
    ("ppg", ModalityGroup::Physiological, 1, 27, 118),
    ("face", ModalityGroup::Behavioral, 12, 64, 145),
];

/// The schema of DMER.
pub fn schema() -> Schema {
    Schema {
        emotions: EMOTIONS.iter().map(|e| e.to_string()).collect(),
        modalities: LAYOUT
            .iter()
            .map(|(name, group, count, width, _)| Modality::new(name, *group, *count, *width))
            .collect(),
    }
}

/// A 2-D real matrix read from a MAT file, column-major as MATLAB stores it.
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    fn get(&self, row: usize, col: usize) -> f64 {
        self.data[col * self.rows + row]
    }
}

/// Parses a MAT v5 file, turning every failure (including a panic inside the parser on a
/// malformed file) into a [`ReadError`].
fn parse_mat(path: &Path) -> Result<matfile::MatFile, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::io(path, e))?;
    if bytes.len() < 128 {
        return Err(ReadError::field(
            path,
            "header",
            format!(
                "the file has {} bytes, a MAT v5 header alone has 128",
                bytes.len()
            ),
        ));
    }
    if bytes.starts_with(b"MATLAB 7.3")
        || bytes.get(512..520) == Some(b"\x89HDF\r\n\x1a\n".as_slice())
    {
        return Err(ReadError::Format {
            path: path.to_path_buf(),
            format: "MAT v5",
            reason: "this is a MAT v7.3 (HDF5) file; re-save it in MATLAB with `save(..., '-v7')`"
                .into(),
        });
    }
    // `matfile` is young software; a malformed file must not take the process down with it.
    let parsed = std::panic::catch_unwind(|| matfile::MatFile::parse(bytes.as_slice()));
    match parsed {
        Ok(Ok(mat)) => Ok(mat),
        Ok(Err(e)) => Err(ReadError::Format {
            path: path.to_path_buf(),
            format: "MAT v5",
            reason: format!("{e} ({e:?})"),
        }),
        Err(_) => Err(ReadError::Format {
            path: path.to_path_buf(),
            format: "MAT v5",
            reason: "the MAT parser gave up on malformed contents".into(),
        }),
    }
}

/// The real 2-D matrix named `field`, as `f64`.
fn matrix(path: &Path, mat: &matfile::MatFile, field: &str) -> Result<Matrix, ReadError> {
    let Some(array) = mat.find_by_name(field) else {
        let present: Vec<&str> = mat.arrays().iter().map(|a| a.name()).collect();
        return Err(ReadError::field(
            path,
            field,
            format!(
                "missing (absent, or cut off because the file is truncated); numeric fields present: {}",
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ),
        ));
    };
    let size = array.size();
    if size.len() != 2 {
        return Err(ReadError::field(
            path,
            field,
            format!(
                "has {} dimensions {size:?}, expected a 2-D matrix",
                size.len()
            ),
        ));
    }
    use matfile::NumericData as N;
    let (data, has_imag): (Vec<f64>, bool) = match array.data() {
        N::Double { real, imag } => (real.clone(), imag.is_some()),
        N::Single { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::Int8 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::UInt8 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::Int16 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::UInt16 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::Int32 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::UInt32 { real, imag } => (real.iter().map(|v| f64::from(*v)).collect(), imag.is_some()),
        N::Int64 { real, imag } => (real.iter().map(|v| *v as f64).collect(), imag.is_some()),
        N::UInt64 { real, imag } => (real.iter().map(|v| *v as f64).collect(), imag.is_some()),
    };
    if has_imag {
        return Err(ReadError::field(
            path,
            field,
            "is complex, expected real numbers",
        ));
    }
    let (rows, cols) = (size[0], size[1]);
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(ReadError::field(
            path,
            field,
            format!("declares {rows} x {cols} but holds {} values", data.len()),
        ));
    }
    Ok(Matrix { rows, cols, data })
}

/// Reads one subject's `<id>.mat`; the subject id is the file stem.
pub fn read_dmer_file(path: &Path) -> Result<(Dataset, LoadReport), ReadError> {
    let mut report = LoadReport::new(path.display().to_string());
    let samples = read_subject(path, &mut report)?;
    let dataset = Dataset {
        name: "dmer".into(),
        schema: schema(),
        samples,
    };
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((dataset, report))
}

/// Reads every `*.mat` file of `dir` (one per subject, sorted by id, numerically where the ids are
/// numbers). Other files are ignored and noted in the report.
pub fn read_dmer_dir(dir: &Path) -> Result<(Dataset, LoadReport), ReadError> {
    let mut report = LoadReport::new(dir.display().to_string());
    let entries = std::fs::read_dir(dir).map_err(|e| ReadError::io(dir, e))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ReadError::io(dir, e))?.path();
        let is_mat = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mat"));
        if is_mat && path.is_file() {
            files.push(path);
        } else if path.is_file() {
            report.note(format!("ignored {} (not a .mat file)", path.display()));
        }
    }
    if files.is_empty() {
        return Err(ReadError::NoData {
            path: dir.to_path_buf(),
            reason: "no <id>.mat files".into(),
        });
    }
    files.sort_by_key(|p| subject_sort_key(&subject_id(p)));
    let mut samples = Vec::new();
    for file in &files {
        samples.extend(read_subject(file, &mut report)?);
    }
    let dataset = Dataset {
        name: "dmer".into(),
        schema: schema(),
        samples,
    };
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: dir.to_path_buf(),
        source,
    })?;
    tracing::info!(
        path = %dir.display(),
        subjects = files.len(),
        samples = dataset.samples.len(),
        "read DMER"
    );
    Ok((dataset, report))
}

fn subject_id(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Numbers first in numeric order, then other ids alphabetically.
pub(super) fn subject_sort_key(id: &str) -> (u8, u64, String) {
    match id.parse::<u64>() {
        Ok(n) => (0, n, String::new()),
        Err(_) => (1, 0, id.to_string()),
    }
}

fn read_subject(path: &Path, report: &mut LoadReport) -> Result<Vec<Sample>, ReadError> {
    let subject = subject_id(path);
    let mat = parse_mat(path)?;
    let feas = matrix(path, &mat, "feas")?;
    let vids = matrix(path, &mat, "vids")?;
    let labels = matrix(path, &mat, "dis_label")?;

    if feas.cols != FEATURE_COLUMNS {
        return Err(ReadError::field(
            path,
            "feas",
            format!(
                "is {} x {}, expected {FEATURE_COLUMNS} columns (EEG 90, GSR 28, PPG 27, face 768)",
                feas.rows, feas.cols
            ),
        ));
    }
    if feas.rows == 0 {
        return Err(ReadError::field(path, "feas", "has no rows"));
    }
    if !(vids.rows == 1 || vids.cols == 1) || vids.data.len() != feas.rows {
        return Err(ReadError::field(
            path,
            "vids",
            format!(
                "is {} x {}, expected one clip index per `feas` row ({} x 1 or 1 x {})",
                vids.rows, vids.cols, feas.rows, feas.rows
            ),
        ));
    }
    if labels.cols != EMOTIONS.len() || labels.rows == 0 {
        return Err(ReadError::field(
            path,
            "dis_label",
            format!(
                "is {} x {}, expected one row of {} PANAS scores per clip",
                labels.rows,
                labels.cols,
                EMOTIONS.len()
            ),
        ));
    }

    // Clip labels, checked once per clip that has rows.
    let mut clip_labels: Vec<Option<Vec<f32>>> = vec![None; labels.rows];
    let mut clip_rows: Vec<u32> = vec![0; labels.rows];
    let mut samples = Vec::with_capacity(feas.rows);
    for (row, &vid) in vids.data.iter().enumerate() {
        if !(vid.is_finite() && vid >= 0.0 && vid.fract() == 0.0 && (vid as usize) < labels.rows) {
            return Err(ReadError::value(
                path,
                row + 1,
                "vids",
                format!(
                    "clip index {vid} is not a whole number in 0..{} (the rows of `dis_label`)",
                    labels.rows - 1
                ),
            ));
        }
        let clip = vid as usize;
        if clip_labels[clip].is_none() {
            clip_labels[clip] = Some(clip_label(path, &labels, clip)?);
        }
        let label = clip_labels[clip].clone().unwrap_or_default();
        let mut features = Vec::with_capacity(LAYOUT.len());
        for (name, _, count, width, start) in LAYOUT {
            let mut values = Vec::with_capacity(count * width);
            for col in start..start + count * width {
                let v = feas.get(row, col);
                if !v.is_finite() {
                    return Err(ReadError::value(
                        path,
                        row + 1,
                        format!("feas[{col}]"),
                        format!("{name} feature is {v}, not a finite number"),
                    ));
                }
                values.push(v as f32);
            }
            features.push(values);
        }
        samples.push(Sample {
            features,
            label,
            subject: subject.clone(),
            trial: clip as u32,
            time: clip_rows[clip],
            stimulus: Some(format!("clip {clip}")),
        });
        clip_rows[clip] += 1;
    }
    let unused = clip_rows.iter().filter(|n| **n == 0).count();
    if unused > 0 {
        report.note(format!(
            "subject {subject}: {unused} of {} clips in `dis_label` have no rows in `feas`",
            labels.rows
        ));
    }
    Ok(samples)
}

/// The clip's scores divided by their sum.
fn clip_label(path: &Path, labels: &Matrix, clip: usize) -> Result<Vec<f32>, ReadError> {
    let scores: Vec<f64> = (0..labels.cols).map(|c| labels.get(clip, c)).collect();
    if let Some((c, v)) = scores
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(ReadError::field(
            path,
            "dis_label",
            format!(
                "clip {clip}: score of `{}` is {v}, not a non-negative number",
                EMOTIONS[c]
            ),
        ));
    }
    let total: f64 = scores.iter().sum();
    if total <= 0.0 {
        return Err(ReadError::field(
            path,
            "dis_label",
            format!("clip {clip}: all scores are zero, so the clip has no label distribution"),
        ));
    }
    Ok(scores.iter().map(|v| (v / total) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_every_feature_column_once() {
        let mut next = 0;
        for (_, _, count, width, start) in LAYOUT {
            assert_eq!(start, next);
            next += count * width;
        }
        assert_eq!(next, FEATURE_COLUMNS);
        assert!(schema().validate().is_ok());
    }

    #[test]
    fn subjects_sort_numerically() {
        let mut ids = vec!["10", "2", "b", "1"];
        ids.sort_by_key(|id| subject_sort_key(id));
        assert_eq!(ids, vec!["1", "2", "10", "b"]);
    }

    #[test]
    fn files_that_are_not_mat_files_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("5.mat");
        std::fs::write(&path, b"short").expect("write");
        let text = read_dmer_file(&path).unwrap_err().to_string();
        assert!(text.contains("5.mat") && text.contains("header"), "{text}");
        std::fs::write(&path, vec![b'x'; 300]).expect("write");
        let text = read_dmer_file(&path).unwrap_err().to_string();
        assert!(text.contains("5.mat") && text.contains("MAT v5"), "{text}");
        let missing = read_dmer_dir(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, ReadError::Io { .. }));
    }
}
