//! Reader for the Larwood (2019) music-emotion study bundled in `datasets/larwood2019/`: one row
//! per listening trial with twelve emotion-word ratings and the mean facial EMG (zygomaticus,
//! corrugator) in four 10 s windows. It is the one real dataset shipped with the project, so that
//! every test and demo can run on real human data without downloads.
//!
//! - Label: `p_k = (r_k - 1) / sum_j (r_j - 1)` over the twelve words (ratings 1..5, where 1 means
//!   "not at all"). A trial rated 1 on every word has no distribution; it is dropped and listed in
//!   the [`LoadReport`].
//! - Features: one behavioral modality `facial_emg` of 4 tokens (windows w1..w4; w1 is the
//!   pre-music baseline) of width 2 (zygomaticus, corrugator), each the natural log of the EMG
//!   mean, because the values are positive and heavy-tailed.
//! - Valence, arousal and liking come from the same self-report as the labels and are never read.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::study::LabelRule;
use super::{Dataset, LoadReport, Modality, ModalityGroup, ReadError, Sample, Schema};

/// The twelve emotion words, in the column (and schema) order.
pub const EMOTIONS: [&str; 12] = [
    "active",
    "alert",
    "angry",
    "anxious",
    "ashamed",
    "excited",
    "frustrated",
    "guilty",
    "happy",
    "sad",
    "scared",
    "tender",
];

/// The EMG columns, in feature order: token w (window w1..w4) holds (zygomaticus, corrugator).
pub const EMG_COLUMNS: [&str; 8] = [
    "zygo_w1", "corr_w1", "zygo_w2", "corr_w2", "zygo_w3", "corr_w3", "zygo_w4", "corr_w4",
];

/// The name of the file inside the dataset folder.
pub const TRIALS_FILE: &str = "trials.csv";

/// The schema of the Larwood dataset.
pub fn schema() -> Schema {
    Schema {
        emotions: EMOTIONS.iter().map(|e| e.to_string()).collect(),
        modalities: vec![Modality::new("facial_emg", ModalityGroup::Behavioral, 4, 2)],
    }
}

/// One row of `trials.csv`, as far as the reader uses it.
#[derive(Debug, Deserialize)]
struct Row {
    subject: String,
    trial: u32,
    /// The music excerpt (`T2`, `S3`, ...): the stimulus.
    #[serde(default)]
    song: Option<String>,
    active: f64,
    alert: f64,
    angry: f64,
    anxious: f64,
    ashamed: f64,
    excited: f64,
    frustrated: f64,
    guilty: f64,
    happy: f64,
    sad: f64,
    scared: f64,
    tender: f64,
    zygo_w1: f64,
    zygo_w2: f64,
    zygo_w3: f64,
    zygo_w4: f64,
    corr_w1: f64,
    corr_w2: f64,
    corr_w3: f64,
    corr_w4: f64,
}

impl Row {
    fn ratings(&self) -> [f64; 12] {
        [
            self.active,
            self.alert,
            self.angry,
            self.anxious,
            self.ashamed,
            self.excited,
            self.frustrated,
            self.guilty,
            self.happy,
            self.sad,
            self.scared,
            self.tender,
        ]
    }

    /// EMG values in [`EMG_COLUMNS`] order.
    fn emg(&self) -> [f64; 8] {
        [
            self.zygo_w1,
            self.corr_w1,
            self.zygo_w2,
            self.corr_w2,
            self.zygo_w3,
            self.corr_w3,
            self.zygo_w4,
            self.corr_w4,
        ]
    }
}

/// Reads `dir/trials.csv` into a dataset named `larwood2019`.
///
/// Errors name the file, row and column of the first unusable value: a missing column, a value
/// that is not a number, a rating outside 1..5, an EMG value that is not positive, a repeated
/// (subject, trial). Trials rated 1 on every word are dropped and reported.
pub fn read_larwood(dir: &Path) -> Result<(Dataset, LoadReport), ReadError> {
    let path = dir.join(TRIALS_FILE);
    let mut report = LoadReport::new(path.display().to_string());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&path)
        .map_err(|e| csv_error(&path, e, None))?;
    let headers = reader
        .headers()
        .map_err(|e| csv_error(&path, e, None))?
        .clone();
    for column in ["subject", "trial"]
        .iter()
        .chain(EMOTIONS.iter())
        .chain(EMG_COLUMNS.iter())
    {
        if !headers.iter().any(|h| h == *column) {
            return Err(ReadError::field(
                &path,
                *column,
                "column is missing from the header",
            ));
        }
    }

    let mut samples = Vec::new();
    let mut seen: HashSet<(String, u32)> = HashSet::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&path, e, Some(&headers)))?;
        // Rows as a spreadsheet numbers them: the header is row 1.
        let row_number = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or_default();
        let row: Row = record
            .deserialize(Some(&headers))
            .map_err(|e| csv_error(&path, e, Some(&headers)))?;
        if !seen.insert((row.subject.clone(), row.trial)) {
            return Err(ReadError::value(
                &path,
                row_number,
                "trial",
                format!("subject {} has trial {} twice", row.subject, row.trial),
            ));
        }
        let ratings = row.ratings();
        for (rating, name) in ratings.iter().zip(EMOTIONS) {
            if !(1.0..=5.0).contains(rating) {
                return Err(ReadError::value(
                    &path,
                    row_number,
                    name,
                    format!("rating {rating} is outside the scale 1..5"),
                ));
            }
        }
        let mut features = Vec::with_capacity(EMG_COLUMNS.len());
        for (value, name) in row.emg().iter().zip(EMG_COLUMNS) {
            if !(value.is_finite() && *value > 0.0) {
                return Err(ReadError::value(
                    &path,
                    row_number,
                    name,
                    format!("EMG value {value} is not positive, so it has no logarithm"),
                ));
            }
            features.push(value.ln() as f32);
        }
        let Some(label) = ONE_TO_FIVE_SCALE.distribution(&ratings) else {
            report.skip(
                &row.subject,
                Some(row.trial),
                "every emotion word rated 1 (not at all): the trial has no label distribution",
            );
            continue;
        };
        samples.push(Sample {
            features: vec![features],
            label,
            subject: row.subject,
            trial: row.trial,
            time: 0,
            stimulus: row.song.filter(|s| !s.is_empty()),
        });
    }
    if samples.is_empty() {
        return Err(ReadError::NoData {
            path,
            reason: "no trial with a label distribution".into(),
        });
    }
    let dataset = Dataset {
        name: "larwood2019".into(),
        schema: schema(),
        samples,
    };
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: path.clone(),
        source,
    })?;
    tracing::info!(
        path = %path.display(),
        subjects = dataset.subjects().len(),
        samples = dataset.samples.len(),
        dropped = report.skipped.len(),
        "read the Larwood (2019) dataset"
    );
    Ok((dataset, report))
}

/// The label rule of a 1..5 scale whose 1 means "not at all" (Larwood's emotion words,
/// WESAD's PANAS items): `p_k = (r_k - 1) / sum_j (r_j - 1)`.
pub const ONE_TO_FIVE_SCALE: LabelRule = LabelRule::SubtractMinimum { minimum: 1.0 };

/// Turns a `csv` error into a [`ReadError`] naming the row and, where known, the column.
pub(super) fn csv_error(
    path: &Path,
    error: csv::Error,
    headers: Option<&csv::StringRecord>,
) -> ReadError {
    let line = error.position().map(|p| p.line() as usize);
    match error.into_kind() {
        csv::ErrorKind::Io(source) => ReadError::io(path, source),
        csv::ErrorKind::Deserialize { pos, err } => {
            let row = pos.map(|p| p.line() as usize).or(line).unwrap_or_default();
            let column = err
                .field()
                .and_then(|i| headers.and_then(|h| h.get(i as usize)))
                .unwrap_or("?")
                .to_string();
            ReadError::value(path, row, column, err.kind().to_string())
        }
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => ReadError::value(
            path,
            pos.map(|p| p.line() as usize).or(line).unwrap_or_default(),
            "*",
            format!("row has {len} fields, the header has {expected_len}"),
        ),
        csv::ErrorKind::Utf8 { pos, err } => ReadError::value(
            path,
            pos.map(|p| p.line() as usize).or(line).unwrap_or_default(),
            format!("field {}", err.field() + 1),
            "not valid UTF-8",
        ),
        other => ReadError::Format {
            path: path.to_path_buf(),
            format: "CSV",
            reason: format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "subject,trial,song,rep,target_emotion,valence_rating,arousal_rating,liking,active,alert,angry,anxious,ashamed,excited,frustrated,guilty,happy,sad,scared,tender,zygo_w1,zygo_w2,zygo_w3,zygo_w4,corr_w1,corr_w2,corr_w3,corr_w4";

    fn write(rows: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut text = String::from(HEADER);
        for row in rows {
            text.push('\n');
            text.push_str(row);
        }
        std::fs::write(dir.path().join(TRIALS_FILE), text).expect("write csv");
        dir
    }

    const GOOD: &str = "004,0,T2,1,tender,4,3,,2,3,1,2,1,3,1,2,4,4,1,5,0.1308,0.13082,0.12348,0.12329,0.08167,0.07093,0.06833,0.06982";
    const ALL_ONES: &str =
        "004,1,S3,1,sad,3,2,,1,1,1,1,1,1,1,1,1,1,1,1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1";

    #[test]
    fn a_row_becomes_a_log_emg_sample_with_a_shifted_label() {
        let dir = write(&[GOOD, ALL_ONES]);
        let (dataset, report) = read_larwood(dir.path()).expect("read");
        assert_eq!(dataset.samples.len(), 1);
        let s = &dataset.samples[0];
        assert_eq!((s.subject.as_str(), s.trial, s.time), ("004", 0, 0));
        // ratings minus one: 1,2,0,1,0,2,0,1,3,3,0,4 (sum 17)
        assert!((s.label[11] - 4.0 / 17.0).abs() < 1e-6);
        assert_eq!(s.label[2], 0.0);
        assert!((s.features[0][0] - 0.1308f64.ln() as f32).abs() < 1e-6);
        assert!((s.features[0][1] - 0.08167f64.ln() as f32).abs() < 1e-6);
        assert!((s.features[0][7] - 0.06982f64.ln() as f32).abs() < 1e-6);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].trial, Some(1));
    }

    #[test]
    fn bad_values_name_file_row_and_column() {
        let bad_rating = GOOD.replacen(",4,4,1,5,", ",4,4,1,6,", 1);
        let dir = write(&[GOOD, &bad_rating.replacen("004,0", "004,2", 1)]);
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(
            text.contains("trials.csv") && text.contains("row 3") && text.contains("`tender`"),
            "{text}"
        );

        let zero_emg = GOOD.replacen("0.08167", "0", 1);
        let dir = write(&[&zero_emg]);
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(
            text.contains("row 2") && text.contains("`corr_w1`") && text.contains("not positive"),
            "{text}"
        );

        let not_a_number = GOOD.replacen("0.1308", "abc", 1);
        let dir = write(&[&not_a_number]);
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(
            text.contains("row 2") && text.contains("`zygo_w1`"),
            "{text}"
        );

        let dir = write(&[GOOD, GOOD]);
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(text.contains("row 3") && text.contains("twice"), "{text}");

        let short = GOOD.rsplit_once(',').map(|(a, _)| a).unwrap_or(GOOD);
        let dir = write(&[short]);
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(text.contains("row 2"), "{text}");
    }

    #[test]
    fn missing_columns_and_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join(TRIALS_FILE),
            "subject,trial,active\n004,0,1\n",
        )
        .expect("write");
        let text = read_larwood(dir.path()).unwrap_err().to_string();
        assert!(
            text.contains("`alert`") && text.contains("missing"),
            "{text}"
        );
        let empty = tempfile::tempdir().expect("temp dir");
        let err = read_larwood(empty.path()).unwrap_err();
        assert!(matches!(err, ReadError::Io { .. }), "{err}");
    }

    #[test]
    fn valence_arousal_and_liking_are_not_inputs() {
        let dir = write(&[GOOD]);
        let (a, _) = read_larwood(dir.path()).expect("read");
        let changed = GOOD.replacen("tender,4,3,,", "tender,1,5,2,", 1);
        let dir = write(&[&changed]);
        let (b, _) = read_larwood(dir.path()).expect("read");
        assert_eq!(a.samples, b.samples);
    }
}
