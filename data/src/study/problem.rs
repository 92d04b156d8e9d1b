//! Problems found in a study folder, and the collector the reader and the validator share. Both
//! run the same scan ([`super::scan`]); the reader stops at the first error and turns it into a
//! [`ReadError`], the validator keeps going and hands every problem to the user. Sharing the scan
//! is what guarantees that a folder `mpcl data validate` accepts is a folder the reader accepts.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ReadError;

/// How serious a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The folder cannot be read as it is (the reader fails on it).
    Error,
    /// The folder can be read, but something is left out or looks doubtful (a dropped row).
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One thing wrong (or doubtful) in a study folder, located as precisely as possible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file at fault (a subject CSV, `schema.toml`, or the folder itself).
    pub file: PathBuf,
    /// The 1-based row of a CSV file, the header being row 1 (so the first data row is row 2);
    /// the 1-based line of `schema.toml`. `None` when the problem concerns the whole file.
    pub row: Option<usize>,
    /// The CSV column (by its header name, or the name the schema expects when the column is
    /// missing) or the `schema.toml` key (`labels.rule`, `modality[1].tokens`).
    pub column: Option<String>,
    /// What is wrong, in words.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error at the given place.
    pub fn error(
        file: impl Into<PathBuf>,
        row: Option<usize>,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            row,
            column: column.map(str::to_string),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at the given place.
    pub fn warning(
        file: impl Into<PathBuf>,
        row: Option<usize>,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, row, column, message)
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The same problem as the reader reports it: [`ReadError::Value`] when it has a row (with
    /// column `*` when it concerns the whole row), [`ReadError::Field`] when it has only a
    /// column or key, [`ReadError::Format`] otherwise.
    pub fn to_read_error(&self) -> ReadError {
        match (self.row, &self.column) {
            (Some(row), column) => ReadError::value(
                &self.file,
                row,
                column.as_deref().unwrap_or("*"),
                self.message.clone(),
            ),
            (None, Some(column)) => {
                ReadError::field(&self.file, column.clone(), self.message.clone())
            }
            (None, None) => ReadError::Format {
                path: self.file.clone(),
                format: "study folder",
                reason: self.message.clone(),
            },
        }
    }
}

/// `file:row:column: severity: message`, with `-` for an unknown row or column, so that every
/// line has the same shape for tools and editors.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = self
            .row
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let column = self.column.as_deref().unwrap_or("-");
        write!(
            f,
            "{}:{row}:{column}: {}: {}",
            self.file.display(),
            self.severity,
            self.message
        )
    }
}

/// Most problems listed for one file; beyond that they are counted in one last problem, so that a
/// systematic mistake (a wrong delimiter, a shifted column) does not print thousands of lines.
pub const MAX_PROBLEMS_PER_FILE: usize = 50;

/// Where the scan puts what it finds.
pub(super) struct Collector {
    /// Every problem kept, in the order found.
    pub problems: Vec<Problem>,
    /// The first error, as the reader returns it.
    pub first_error: Option<ReadError>,
    /// The reader stops at the first error; the validator does not.
    stop_at_first_error: bool,
    /// Problems of the current file so far (listed or not), and how many were not listed.
    file_problems: usize,
    unlisted_errors: usize,
    unlisted_warnings: usize,
}

impl Collector {
    pub fn new(stop_at_first_error: bool) -> Self {
        Self {
            problems: Vec::new(),
            first_error: None,
            stop_at_first_error,
            file_problems: 0,
            unlisted_errors: 0,
            unlisted_warnings: 0,
        }
    }

    /// Whether the scan should stop now (the reader has its error).
    pub fn stopped(&self) -> bool {
        self.stop_at_first_error && self.first_error.is_some()
    }

    /// Records a problem (an error also becomes the reader's error if it is the first).
    pub fn push(&mut self, problem: Problem) {
        if problem.is_error() && self.first_error.is_none() {
            self.first_error = Some(problem.to_read_error());
        }
        self.file_problems += 1;
        if self.file_problems > MAX_PROBLEMS_PER_FILE {
            match problem.severity {
                Severity::Error => self.unlisted_errors += 1,
                Severity::Warning => self.unlisted_warnings += 1,
            }
            return;
        }
        self.problems.push(problem);
    }

    /// Records an error that the reader reports as `read_error` rather than as derived from the
    /// problem (for example [`ReadError::NoData`]).
    pub fn push_with(&mut self, problem: Problem, read_error: ReadError) {
        if self.first_error.is_none() {
            self.first_error = Some(read_error);
        }
        self.push(problem);
    }

    /// Records that `path` could not be read; the reader returns the I/O error itself.
    pub fn io_error(&mut self, path: &Path, source: std::io::Error) {
        let problem = Problem::error(path, None, None, format!("cannot read: {source}"));
        if self.first_error.is_none() {
            self.first_error = Some(ReadError::io(path, source));
        }
        self.push(problem);
    }

    /// Starts counting problems for a new file.
    pub fn begin_file(&mut self) {
        self.file_problems = 0;
        self.unlisted_errors = 0;
        self.unlisted_warnings = 0;
    }

    /// Ends a file: if problems went unlisted, says how many in one last problem.
    pub fn end_file(&mut self, path: &Path) {
        let (errors, warnings) = (self.unlisted_errors, self.unlisted_warnings);
        if errors + warnings == 0 {
            return;
        }
        let message = format!(
            "{} more problem(s) in this file not listed ({errors} error(s), {warnings} \
             warning(s)); only the first {MAX_PROBLEMS_PER_FILE} are shown",
            errors + warnings
        );
        self.problems.push(if errors > 0 {
            Problem::error(path, None, None, message)
        } else {
            Problem::warning(path, None, None, message)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_as_file_row_column() {
        let p = Problem::error("s/p01.csv", Some(3), Some("face_1"), "not a number");
        assert_eq!(p.to_string(), "s/p01.csv:3:face_1: error: not a number");
        let p = Problem::warning("s/p01.csv", None, None, "no rows");
        assert_eq!(p.to_string(), "s/p01.csv:-:-: warning: no rows");
        let err = Problem::error("s/p01.csv", Some(3), None, "short").to_read_error();
        assert!(matches!(err, ReadError::Value { row: 3, ref column, .. } if column == "*"));
        let err = Problem::error("s/schema.toml", None, Some("labels"), "x").to_read_error();
        assert!(matches!(err, ReadError::Field { .. }));
    }

    #[test]
    fn a_file_lists_at_most_the_cap_and_counts_the_rest() {
        let mut c = Collector::new(false);
        c.begin_file();
        for row in 0..MAX_PROBLEMS_PER_FILE + 7 {
            c.push(Problem::error("f.csv", Some(row + 2), None, "bad"));
        }
        c.end_file(Path::new("f.csv"));
        assert_eq!(c.problems.len(), MAX_PROBLEMS_PER_FILE + 1);
        let last = c.problems.last().expect("summary problem");
        assert!(last.message.starts_with("7 more problem(s)"), "{last}");
        assert!(matches!(
            c.first_error,
            Some(ReadError::Value { row: 2, .. })
        ));
    }
}
