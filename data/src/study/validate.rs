//! `mpcl data validate`: check a whole study folder before a study starts and list *every*
//! problem, not just the first one the reader would stop at, plus whether the folder has enough
//! subjects and trials for the evaluation protocol the user means to run.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::problem::{Collector, Problem};
use super::scan::scan;
use crate::Modality;

/// What the evaluation protocol needs from the folder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// The protocol, in words, for messages (`None`: no protocol chosen).
    pub protocol: Option<String>,
    /// Every subject needs at least this many trials (0: no requirement).
    pub min_trials_per_subject: usize,
    /// The folder needs at least this many subjects (0: no requirement).
    pub min_subjects: usize,
}

impl Requirements {
    /// No protocol requirement: only the files are checked.
    pub fn none() -> Self {
        Self::default()
    }

    /// Subject-dependent evaluation: every subject's trials are split into train and test, so
    /// each subject needs at least 2 trials.
    pub fn subject_dependent() -> Self {
        Self {
            protocol: Some("subject-dependent".into()),
            min_trials_per_subject: 2,
            min_subjects: 1,
        }
    }

    /// Subject-independent evaluation with `folds` folds of held-out subjects (`0` means
    /// leave-one-subject-out): at least `folds` subjects, and never fewer than 2.
    pub fn subject_independent(folds: usize) -> Self {
        let protocol = if folds == 0 {
            "leave-one-subject-out".to_string()
        } else {
            format!("subject-independent with {folds} folds")
        };
        Self {
            protocol: Some(protocol),
            min_trials_per_subject: 1,
            min_subjects: folds.max(2),
        }
    }
}

/// Counts of what the folder holds (rows with errors included where they can be counted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The dataset name from `schema.toml` (`None` when the schema is unusable).
    pub name: Option<String>,
    /// Subject CSV files.
    pub files: usize,
    /// Subjects with at least one trial.
    pub subjects: usize,
    /// Distinct (subject, trial) pairs among the rows not dropped.
    pub trials: usize,
    /// Data rows (headers not counted).
    pub rows: usize,
    /// Rows that give a sample.
    pub samples: usize,
    /// Rows dropped and reported (missing values under `drop-row`, all-minimum ratings).
    pub dropped: usize,
    /// The schema's modalities.
    pub modalities: Vec<Modality>,
    /// The schema's emotions.
    pub emotions: Vec<String>,
    /// The label rule, in words.
    pub labels: Option<String>,
    /// The missing-value policy.
    pub missing: Option<String>,
}

/// Everything `validate_study_dir` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// What the folder holds.
    pub summary: Summary,
    /// Every problem in the order found: the folder and `schema.toml`, then each CSV file (rows
    /// in order), then the protocol requirements.
    pub problems: Vec<Problem>,
}

impl ValidationReport {
    /// The errors (problems that stop the reader).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_error())
    }

    /// Whether there is no error (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "study       {}",
            self.name.as_deref().unwrap_or("(schema.toml unusable)")
        )?;
        writeln!(
            f,
            "subjects    {} ({} CSV file(s))",
            self.subjects, self.files
        )?;
        writeln!(
            f,
            "trials      {} ({:.1} per subject)",
            self.trials,
            self.trials as f64 / self.subjects.max(1) as f64
        )?;
        writeln!(
            f,
            "rows        {} ({} give samples, {} dropped)",
            self.rows, self.samples, self.dropped
        )?;
        let modalities: Vec<String> = self
            .modalities
            .iter()
            .map(|m| {
                format!(
                    "{} ({}, {} x {})",
                    m.name, m.group, m.token_count, m.token_width
                )
            })
            .collect();
        writeln!(
            f,
            "modalities  {}: {}",
            modalities.len(),
            modalities.join(", ")
        )?;
        writeln!(
            f,
            "emotions    {}: {}",
            self.emotions.len(),
            self.emotions.join(", ")
        )?;
        if let Some(labels) = &self.labels {
            writeln!(f, "labels      {labels}")?;
        }
        if let Some(missing) = &self.missing {
            writeln!(f, "missing     {missing}")?;
        }
        Ok(())
    }
}

/// The summary, then one line per problem (`file:row:column: severity: message`), then the
/// counts.
impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary)?;
        if !self.problems.is_empty() {
            writeln!(f)?;
        }
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        writeln!(f)?;
        if errors == 0 {
            writeln!(f, "ok: no errors, {warnings} warning(s)")
        } else {
            writeln!(f, "{errors} error(s), {warnings} warning(s)")
        }
    }
}

/// Checks the study folder `dir` against its `schema.toml` and against `requirements`, and
/// returns every problem found. Never fails: an unreadable folder is itself a problem.
pub fn validate_study_dir(dir: &Path, requirements: &Requirements) -> ValidationReport {
    let mut sink = Collector::new(false);
    let scan = scan(dir, &mut sink);
    let mut summary = Summary {
        files: scan.files.len(),
        rows: scan.files.iter().map(|f| f.rows).sum(),
        samples: scan.samples.len(),
        dropped: scan.files.iter().map(|f| f.dropped).sum(),
        subjects: scan.files.iter().filter(|f| !f.trials.is_empty()).count(),
        trials: scan.files.iter().map(|f| f.trials.len()).sum(),
        ..Summary::default()
    };
    if let Some(study) = &scan.schema {
        summary.name = Some(study.name.clone());
        summary.modalities = study.schema.modalities.clone();
        summary.emotions = study.schema.emotions.clone();
        summary.labels = Some(study.labels.rule.describe());
        summary.missing = Some(study.missing.name().to_string());
    }
    let mut problems = sink.problems;

    // Requirements of the protocol; only meaningful once the CSV files could be matched.
    if let (Some(protocol), Some(_)) = (&requirements.protocol, &scan.schema) {
        let mut requirement_problems = Vec::new();
        for file in &scan.files {
            let trials = file.trials.len();
            if trials > 0 && trials < requirements.min_trials_per_subject {
                requirement_problems.push(Problem::error(
                    &file.path,
                    None,
                    Some("trial"),
                    format!(
                        "subject `{}` has {trials} trial(s); {protocol} needs at least {} per \
                         subject",
                        file.subject, requirements.min_trials_per_subject
                    ),
                ));
            }
        }
        if summary.subjects < requirements.min_subjects {
            requirement_problems.push(Problem::error(
                dir,
                None,
                None,
                format!(
                    "{} subject(s) with trials; {protocol} needs at least {}",
                    summary.subjects, requirements.min_subjects
                ),
            ));
        }
        problems.extend(requirement_problems);
    }
    ValidationReport { summary, problems }
}
