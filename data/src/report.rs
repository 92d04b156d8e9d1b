//! What a reader left out, and why. Readers drop data that cannot carry a label (a trial rated at
//! the minimum on every word, a condition without a questionnaire); such drops are legitimate but
//! must never be silent, so every reader returns a [`LoadReport`] beside its [`Dataset`](super::Dataset)
//! and logs each drop through `tracing`.

use serde::{Deserialize, Serialize};

/// One trial (or whole subject, or file) a reader did not turn into samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Subject id as it would have appeared in the samples.
    pub subject: String,
    /// Trial id, or `None` when a whole subject or file was skipped.
    pub trial: Option<u32>,
    /// Why it was left out.
    pub reason: String,
}

/// Where a dataset came from and what was left out while reading it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The file or folder read.
    pub source: String,
    /// Trials, subjects or files left out, each with its reason.
    pub skipped: Vec<Skipped>,
    /// Other remarks worth showing a user (ignored files, assumptions made).
    pub notes: Vec<String>,
}

impl LoadReport {
    /// An empty report for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }

    /// Records (and logs) that `trial` of `subject` was left out.
    pub fn skip(&mut self, subject: &str, trial: Option<u32>, reason: impl Into<String>) {
        let reason = reason.into();
        match trial {
            Some(trial) => {
                tracing::debug!(source = %self.source, subject, trial, "skipped: {reason}")
            }
            None => tracing::debug!(source = %self.source, subject, "skipped: {reason}"),
        }
        self.skipped.push(Skipped {
            subject: subject.to_string(),
            trial,
            reason,
        });
    }

    /// Records (and logs) a remark.
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        tracing::info!(source = %self.source, "{note}");
        self.notes.push(note);
    }

    /// Appends another report's skips and notes (for readers that combine several files).
    pub fn merge(&mut self, other: LoadReport) {
        self.skipped.extend(other.skipped);
        self.notes.extend(other.notes);
    }
}
