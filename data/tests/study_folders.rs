//! Study folders written by hand (`tests/fixtures/study/`, never by mpcl's own writer): a valid
//! one read end to end, each kind of mistake giving an error at the right file, row and column,
//! and `validate_study_dir` listing every problem of a folder at once.

use std::path::{Path, PathBuf};

use mpcl_data::study::{Problem, Requirements, Severity, read_study_dir, validate_study_dir};
use mpcl_data::{ModalityGroup, ReadError, open};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/study")
        .join(name)
}

/// The reader's error for a fixture, as (file name, row, column, reason).
fn value_error(name: &str) -> (String, usize, String, String) {
    match read_study_dir(&fixture(name)) {
        Err(ReadError::Value {
            path,
            row,
            column,
            reason,
        }) => (
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            row,
            column,
            reason,
        ),
        other => panic!("{name}: expected a value error, got {other:?}"),
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn a_valid_folder_reads_into_the_schema_and_samples_it_describes() -> anyhow::Result<()> {
    let (data, report) = read_study_dir(&fixture("valid"))?;
    assert_eq!(data.name, "fixture-study");
    assert_eq!(data.schema.emotions, ["happy", "sad", "calm"]);
    let m = &data.schema.modalities;
    assert_eq!(
        m.iter()
            .map(|m| (m.name.as_str(), m.group, m.token_count, m.token_width))
            .collect::<Vec<_>>(),
        [
            ("gsr", ModalityGroup::Physiological, 2, 1),
            ("face", ModalityGroup::Behavioral, 4, 2)
        ]
    );
    assert_eq!(data.subjects(), ["p01", "p02", "p03"]);
    assert_eq!(data.samples.len(), 8);

    // p01 row 3: trial 1, time 1, ratings (5, 1, 3) -> (4, 0, 2) / 6.
    let s = &data.samples[1];
    assert_eq!((s.subject.as_str(), s.trial, s.time), ("p01", 1, 1));
    assert_eq!(s.features[0], [0.53, 0.47]);
    assert_eq!(s.features[1], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]);
    assert!(
        close(&s.label, &[4.0 / 6.0, 0.0, 2.0 / 6.0]),
        "{:?}",
        s.label
    );

    // p02: columns in another order, spaces after commas, an ignored `notes` column, an
    // exponent, and trial 2 rated 1 on every emotion (dropped and reported).
    let p02: Vec<_> = data.samples.iter().filter(|s| s.subject == "p02").collect();
    assert_eq!(p02.iter().map(|s| s.trial).collect::<Vec<_>>(), [1, 3]);
    assert!(close(&p02[0].label, &[1.0 / 3.0; 3]));
    assert_eq!(p02[1].label, [1.0, 0.0, 0.0]);
    assert_eq!(p02[1].features[1][..2], [1e-3, 200.0]);
    assert_eq!(p02[1].features[0], [0.9, 1.0]);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        (report.skipped[0].subject.as_str(), report.skipped[0].trial),
        ("p02", Some(2))
    );
    assert!(
        report.skipped[0].reason.contains("row 3"),
        "{:?}",
        report.skipped
    );
    assert!(
        report.notes.iter().any(|n| n.contains("README.md")),
        "{:?}",
        report.notes
    );

    // `open` takes the folder with or without the `study:` prefix.
    let dir = fixture("valid");
    let (prefixed, _) = open(&format!("study:{}", dir.display()))?;
    let (bare, _) = open(&dir.display().to_string())?;
    assert_eq!(prefixed, data);
    assert_eq!(bare, data);
    Ok(())
}

#[test]
fn a_missing_column_is_named_in_the_header_row() {
    let (file, row, column, reason) = value_error("missing_column");
    assert_eq!(
        (file.as_str(), row, column.as_str()),
        ("p01.csv", 1, "trial")
    );
    assert!(reason.contains("no `trial` column"), "{reason}");
}

#[test]
fn a_wrong_width_names_the_modality_and_the_missing_feature_column() {
    let (file, row, column, reason) = value_error("wrong_width");
    assert_eq!(
        (file.as_str(), row, column.as_str()),
        ("p01.csv", 1, "face_7")
    );
    assert!(
        reason.contains("modality `face` has 4 tokens x 2 = 8 values")
            && reason.contains("the header has 7 feature column(s)")
            && reason.contains("missing: face_7"),
        "{reason}"
    );
}

#[test]
fn a_non_numeric_cell_is_named_by_row_and_column() {
    let (file, row, column, reason) = value_error("non_numeric");
    assert_eq!(
        (file.as_str(), row, column.as_str()),
        ("p01.csv", 4, "gsr_1")
    );
    assert_eq!(reason, "`high` is not a number");
    let text = read_study_dir(&fixture("non_numeric"))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("p01.csv: row 4, column `gsr_1`: `high` is not a number"),
        "{text}"
    );
}

#[test]
fn an_all_zero_row_under_normalize_is_an_error_for_the_whole_row() {
    let (file, row, column, reason) = value_error("all_zero");
    assert_eq!((file.as_str(), row, column.as_str()), ("p01.csv", 3, "*"));
    assert!(
        reason.starts_with("every emotion value is 0: rule `normalize` cannot make a distribution"),
        "{reason}"
    );
}

#[test]
fn an_emotion_of_the_schema_without_a_column_is_named() {
    let (file, row, column, reason) = value_error("unknown_emotion");
    assert_eq!(
        (file.as_str(), row, column.as_str()),
        ("p01.csv", 1, "surprised")
    );
    assert!(
        reason.contains("emotion `surprised` of schema.toml has no column in the header"),
        "{reason}"
    );
}

#[test]
fn a_folder_without_schema_is_explained() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p01.csv"), "trial\n1\n").expect("write");
    let err = read_study_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ReadError::Io { .. }), "{err}");
    assert!(err.to_string().contains("schema.toml"), "{err}");
    let err = open(&dir.path().display().to_string()).unwrap_err();
    assert!(
        err.to_string()
            .contains("no `schema.toml`, so it is not a study folder"),
        "{err}"
    );
}

type Located<'a> = (&'a str, Option<usize>, Option<&'a str>, Severity);

fn located(p: &Problem) -> Located<'_> {
    (
        p.file.file_name().and_then(|f| f.to_str()).unwrap_or(""),
        p.row,
        p.column.as_deref(),
        p.severity,
    )
}

#[test]
fn validate_lists_every_problem_of_a_folder() {
    use Severity::{Error, Warning};
    let report = validate_study_dir(
        &fixture("many_problems"),
        &Requirements::subject_dependent(),
    );
    let found: Vec<Located> = report.problems.iter().map(located).collect();
    assert_eq!(
        found,
        [
            ("p01.csv", Some(2), Some("gsr_1"), Error),
            ("p01.csv", Some(3), Some("face_2"), Error),
            ("p01.csv", Some(4), Some("happy"), Error),
            ("p01.csv", Some(5), Some("time"), Error),
            ("p01.csv", Some(6), Some("gsr_1"), Error),
            ("p02.csv", Some(1), Some("notes"), Error),
            ("p02.csv", Some(1), Some("face_7"), Error),
            ("p03.csv", Some(2), None, Error),
            ("p04.csv", None, None, Warning),
            ("p02.csv", None, Some("trial"), Error),
        ],
        "{report}"
    );
    let messages: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages[0], "`oops` is not a number");
    assert!(
        messages[1].starts_with("value missing (empty cell)"),
        "{}",
        messages[1]
    );
    assert_eq!(
        messages[2],
        "rating 6 is above the scale maximum 5 (labels.maximum)"
    );
    assert_eq!(messages[3], "trial 2, time 0 already appears at row 4");
    assert!(
        messages[4].starts_with("value not finite (`inf`)"),
        "{}",
        messages[4]
    );
    assert!(
        messages[5].starts_with("unknown column `notes`"),
        "{}",
        messages[5]
    );
    assert!(messages[6].contains("missing: face_7"), "{}", messages[6]);
    assert_eq!(messages[7], "the row has 14 fields, the header has 15");
    assert!(messages[8].contains("no data rows"), "{}", messages[8]);
    assert_eq!(
        messages[9],
        "subject `p02` has 1 trial(s); subject-dependent needs at least 2 per subject"
    );
    assert!(!report.is_ok());
    assert_eq!(report.errors().count(), 9);
    assert_eq!(report.warnings().count(), 1);

    let s = &report.summary;
    assert_eq!(s.name.as_deref(), Some("many-problems"));
    assert_eq!(
        (s.files, s.subjects, s.trials, s.rows, s.samples, s.dropped),
        (4, 2, 4, 8, 0, 0)
    );
    assert_eq!(s.emotions, ["happy", "sad", "calm"]);
    assert_eq!(s.modalities.len(), 2);

    // Every line is `file:row:column: severity: message`.
    let text = report.to_string();
    assert!(
        text.contains("p01.csv:2:gsr_1: error: `oops` is not a number"),
        "{text}"
    );
    assert!(text.contains("p04.csv:-:-: warning: "), "{text}");
    assert!(text.contains("9 error(s), 1 warning(s)"), "{text}");

    // The reader stops at the first of them.
    let err = read_study_dir(&fixture("many_problems")).unwrap_err();
    assert!(
        matches!(&err, ReadError::Value { row: 2, column, .. } if column == "gsr_1"),
        "{err}"
    );
}

#[test]
fn validate_checks_the_protocol_requirements() {
    let dir = fixture("valid");
    let report = validate_study_dir(&dir, &Requirements::none());
    assert!(report.is_ok(), "{report}");
    // The all-minimum row of p02 is a warning, not an error.
    let warnings: Vec<Located> = report.warnings().map(located).collect();
    assert_eq!(
        warnings,
        [("p02.csv", Some(3), None, Severity::Warning)],
        "{report}"
    );
    let s = &report.summary;
    assert_eq!(
        (s.files, s.subjects, s.trials, s.rows, s.samples, s.dropped),
        (3, 3, 6, 9, 8, 1)
    );
    assert_eq!(s.labels.as_deref(), Some("subtract-minimum (minimum 1)"));

    assert!(validate_study_dir(&dir, &Requirements::subject_dependent()).is_ok());
    assert!(validate_study_dir(&dir, &Requirements::subject_independent(0)).is_ok());
    assert!(validate_study_dir(&dir, &Requirements::subject_independent(3)).is_ok());
    let report = validate_study_dir(&dir, &Requirements::subject_independent(5));
    let errors: Vec<&Problem> = report.errors().collect();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0].file, dir);
    assert_eq!(
        errors[0].message,
        "3 subject(s) with trials; subject-independent with 5 folds needs at least 5"
    );
}

#[test]
fn validate_reports_a_missing_folder_or_schema_instead_of_failing() {
    let report = validate_study_dir(Path::new("/no/such/study"), &Requirements::none());
    assert_eq!(report.errors().count(), 1, "{report}");
    assert!(
        report.problems[0].message.starts_with("cannot read"),
        "{report}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("schema.toml"), "emotions = [\"a\"]\n").expect("write");
    let report = validate_study_dir(dir.path(), &Requirements::subject_dependent());
    let found: Vec<Located> = report.problems.iter().take(3).map(located).collect();
    assert_eq!(
        found,
        [
            ("schema.toml", Some(1), Some("emotions"), Severity::Error),
            ("schema.toml", None, Some("modality"), Severity::Error),
            ("schema.toml", None, Some("labels"), Severity::Error),
        ],
        "{report}"
    );
    assert_eq!(report.problems.len(), 4, "{report}");
    assert_eq!(report.problems[3].file, dir.path());
    assert!(
        report.problems[3].message.contains("no subject CSV files"),
        "{report}"
    );
}

/// A study folder from hand-written text: `schema.toml` and `(file name, contents)` pairs.
fn folder(schema: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("schema.toml"), schema).expect("write schema");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write csv");
    }
    dir
}

const TWO_EMOTIONS: &str = r#"
emotions = ["joy", "fear"]
[[modality]]
name = "hr"
group = "physiological"
tokens = 1
token_width = 2
"#;

#[test]
fn drop_row_drops_and_reports_rows_with_missing_values() -> anyhow::Result<()> {
    let schema =
        format!("{TWO_EMOTIONS}[labels]\nrule = \"normalize\"\n[missing]\npolicy = \"drop-row\"\n");
    let dir = folder(
        &schema,
        &[(
            "s1.csv",
            "trial,time,hr_0,hr_1,joy,fear\n1,0,60,61,1,3\n1,1,NA,61,1,3\n2,0,62,inf,1,1\n2,1,62,63,,1\n3,0,64,65,2,2\n",
        )],
    );
    let (data, report) = read_study_dir(dir.path())?;
    assert_eq!(
        data.samples
            .iter()
            .map(|s| (s.trial, s.time))
            .collect::<Vec<_>>(),
        [(1, 0), (3, 0)]
    );
    assert_eq!(data.samples[0].label, [0.25, 0.75]);
    let reasons: Vec<&str> = report.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "row 3: value in column `hr_0` is missing",
            "row 4: value in column `hr_1` is not finite",
            "row 5: value in column `joy` is missing",
        ]
    );
    // The folder name is the dataset name when schema.toml has none.
    let expected = dir.path().canonicalize()?;
    assert_eq!(
        Some(data.name.as_str()),
        expected.file_name().and_then(|n| n.to_str())
    );
    let report = validate_study_dir(dir.path(), &Requirements::subject_dependent());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.warnings().count(), 3, "{report}");
    assert_eq!((report.summary.trials, report.summary.dropped), (2, 3));
    Ok(())
}

#[test]
fn softmax_takes_any_scores_and_time_is_optional() -> anyhow::Result<()> {
    let schema = format!("{TWO_EMOTIONS}[labels]\nrule = \"softmax\"\ntemperature = 2.0\n");
    // A byte-order mark and Windows line ends, as spreadsheet programs write them.
    let dir = folder(
        &schema,
        &[(
            "s1.csv",
            "\u{feff}trial,hr_0,hr_1,joy,fear\r\n4,1.5,2.5,-1.0,1.0\r\n",
        )],
    );
    let (data, _) = read_study_dir(dir.path())?;
    let s = &data.samples[0];
    assert_eq!((s.trial, s.time), (4, 0));
    let expected = 1.0 / (1.0 + 1f32.exp());
    assert!((s.label[0] - expected).abs() < 1e-6, "{:?}", s.label);

    let dir = folder(
        &schema,
        &[(
            "s1.csv",
            "trial,hr_0,hr_1,joy,fear\n4,1.5,2.5,-1,1\n4,1.5,2.5,0,0\n",
        )],
    );
    let err = read_study_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(
            "row 3, column `trial`: trial 4 already appears at row 2; add a `time` column"
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn header_mistakes_get_hints() {
    let schema = format!("{TWO_EMOTIONS}[labels]\nrule = \"normalize\"\n");
    let dir = folder(
        &schema,
        &[
            ("a.csv", "trial;time;hr_0;hr_1;joy;fear\n1;0;1;2;1;1\n"),
            ("b.csv", "trial,time,hr_1,hr_2,Joy,fear\n1,0,1,2,1,1\n"),
            (
                "c.csv",
                "trial,time,hr_0,hr_1,joy,fear,joy\n1,0,1,2,1,1,1\n",
            ),
            ("d.csv", "trial,time,hr_00,hr_1,joy,fear\n1,0,1,2,1,1\n"),
        ],
    );
    let report = validate_study_dir(dir.path(), &Requirements::none());
    let found: Vec<(&str, Option<&str>, &str)> = report
        .problems
        .iter()
        .map(|p| {
            (
                p.file.file_name().and_then(|f| f.to_str()).unwrap_or(""),
                p.column.as_deref(),
                p.message.as_str(),
            )
        })
        .collect();
    let has = |file: &str, column: &str, text: &str| {
        found
            .iter()
            .any(|(f, c, m)| *f == file && *c == Some(column) && m.contains(text))
    };
    assert!(
        has("a.csv", "trial;time;hr_0;hr_1;joy;fear", "semicolons"),
        "{report}"
    );
    assert!(has("b.csv", "Joy", "did you mean `joy`?"), "{report}");
    assert!(has("b.csv", "hr_0", "numbered from 0"), "{report}");
    assert!(
        has("b.csv", "joy", "has no column in the header"),
        "{report}"
    );
    assert!(
        has(
            "c.csv",
            "joy",
            "appears twice in the header (columns 5 and 7)"
        ),
        "{report}"
    );
    assert!(has("d.csv", "hr_00", "did you mean `hr_0`?"), "{report}");
    assert!(report.problems.iter().all(|p| p.row == Some(1)), "{report}");
}
