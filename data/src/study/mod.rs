//! A user's own study, on disk: the way to hand mpcl features and ratings from any sensors and
//! any questionnaire without writing Rust. The format is documented for users in
//! `docs/dataset-format.md`; in short:
//!
//! ```text
//! my-study/
//!   schema.toml     name, emotions, [[modality]] tables, [labels] rule, optional [missing]
//!   p01.csv         one file per subject; the file stem is the subject id
//!   p02.csv         columns: trial, time (optional), <modality>_<index>..., one per emotion
//! ```
//!
//! - [`read_study_dir`] reads a folder into a [`Dataset`]; [`open`](crate::open) calls it
//!   for `study:DIR` and for any folder holding a `schema.toml`.
//! - [`validate_study_dir`] checks a folder and lists every problem (`mpcl data validate`).
//! - [`write_study_dir`] writes any dataset in this form (`mpcl data convert`).
//!
//! Reader and validator share one scan, so they cannot disagree about what is acceptable.

mod problem;
mod scan;
mod schema_file;
mod validate;
mod write;

use std::path::Path;

pub use problem::{MAX_PROBLEMS_PER_FILE, Problem, Severity};
pub use schema_file::{
    ColumnRole, LabelOutcome, LabelRule, Labels, MAX_MODALITY_WIDTH, MissingPolicy, SCHEMA_FILE,
    STIMULUS_COLUMN, StudySchema, TIME_COLUMN, TRIAL_COLUMN, feature_column, read_schema_file,
};
pub use validate::{Requirements, Summary, ValidationReport, validate_study_dir};
pub use write::{WriteError, schema_toml, write_study_dir};

use crate::{Dataset, LoadReport, ReadError};
use problem::Collector;

/// Whether `path` is a folder holding a `schema.toml` (a study folder, for [`crate::open`]).
pub fn is_study_dir(path: &Path) -> bool {
    path.join(SCHEMA_FILE).is_file()
}

/// Reads the study folder `dir`: `schema.toml` plus one `<subject>.csv` per subject.
///
/// Subjects come in file-name order, rows in file order. Rows dropped by the rules (all ratings at
/// the scale minimum under `subtract-minimum`, missing values under `policy = "drop-row"`) are
/// listed in the [`LoadReport`]. The first problem is an error naming the file, the row (the
/// header is row 1, so the first data row is row 2; for `schema.toml`, the line) and the column
/// or key; [`validate_study_dir`] lists them all.
pub fn read_study_dir(dir: &Path) -> Result<(Dataset, LoadReport), ReadError> {
    let mut sink = Collector::new(true);
    let scan = scan::scan(dir, &mut sink);
    if let Some(error) = sink.first_error {
        return Err(error);
    }
    let Some(study) = scan.schema else {
        // Without an error the schema is always there; this is a backstop.
        return Err(ReadError::field(
            dir.join(SCHEMA_FILE),
            "schema",
            "unusable schema",
        ));
    };
    if scan.samples.is_empty() {
        return Err(ReadError::NoData {
            path: dir.to_path_buf(),
            reason: "no row gives a sample (every row was dropped)".into(),
        });
    }
    let dataset = Dataset {
        name: study.name,
        schema: study.schema,
        samples: scan.samples,
    };
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: dir.to_path_buf(),
        source,
    })?;
    tracing::info!(
        path = %dir.display(),
        subjects = dataset.subjects().len(),
        samples = dataset.samples.len(),
        dropped = scan.report.skipped.len(),
        "read the study folder"
    );
    Ok((dataset, scan.report))
}
