//! The one error type of every dataset reader. Each variant names the file and, where there is
//! one, the field, column or row at fault, so that a user can find the bad value in their data;
//! readers return these instead of panicking on anything a file may contain.

use std::path::PathBuf;

use thiserror::Error;

use super::sample::DatasetError;

/// Why a dataset could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The file or folder could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the expected container format (CSV, MAT v5, zip).
    #[error("{path}: not a readable {format} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The container format expected.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A named field of a file (a MAT variable, a zip member, a questionnaire line) is missing or
    /// holds something unusable.
    #[error("{path}: field `{field}`: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field (for example `feas`, `dis_label`, `EDA.csv`, `# PANAS`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// One value of a table is unusable.
    #[error("{path}: row {row}, column `{column}`: {reason}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The row, counted from 1 as a spreadsheet would show it (the header is row 1 where a
        /// file has one; for MAT arrays, the 1-based matrix row).
        row: usize,
        /// The column name (or, for MAT arrays, `field[column]`).
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// The folder holds nothing the reader recognises.
    #[error("{path}: no data: {reason}")]
    NoData {
        /// The folder or file.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// The samples read do not pass the dataset checks.
    #[error("{path}: the samples read do not form a valid dataset: {source}")]
    Invalid {
        /// The file, folder or spec.
        path: PathBuf,
        /// The failed check.
        #[source]
        source: DatasetError,
    },
    /// [`open`](super::open) did not recognise the dataset spec.
    #[error("unknown dataset `{spec}`: {reason}")]
    UnknownSpec {
        /// The spec as given.
        spec: String,
        /// What is accepted instead.
        reason: String,
    },
}

impl ReadError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReadError::Io {
            path: path.into(),
            source,
        }
    }

    /// A problem with `field` of `path`.
    pub fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ReadError::Field {
            path: path.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A problem with one value of `path`.
    pub fn value(
        path: impl Into<PathBuf>,
        row: usize,
        column: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ReadError::Value {
            path: path.into(),
            row,
            column: column.into(),
            reason: reason.into(),
        }
    }
}
