//! `mpcl data convert`: write any dataset as a study folder, so that a user can see the format
//! filled in with real data, edit it, or carry a dataset to a tool that only reads CSV. The label
//! columns hold the distributions the source's reader produced, under rule `normalize`, so that
//! reading the folder back gives the same samples (labels to within float rounding, features
//! exactly: each value is written with the shortest decimal that reads back to the same `f32`).

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::problem::Collector;
use super::schema_file::{
    self, SCHEMA_FILE, STIMULUS_COLUMN, TIME_COLUMN, TRIAL_COLUMN, feature_column,
};
use crate::{Dataset, DatasetError};

/// Why a dataset could not be written as a study folder.
#[derive(Debug, Error)]
pub enum WriteError {
    /// A file or folder could not be created or written.
    #[error("{path}: cannot write: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The output folder already holds files; nothing is overwritten.
    #[error("{0}: the output folder is not empty; choose a new or empty folder")]
    NotEmpty(PathBuf),
    /// The dataset does not pass its own checks.
    #[error("the dataset is not valid: {0}")]
    Invalid(#[from] DatasetError),
    /// A name cannot be expressed in the format (a subject id that is not a file name, an emotion
    /// that clashes with a column name, ...).
    #[error("cannot write dataset `{dataset}` as a study folder: {reason}")]
    Unwritable {
        /// The dataset name.
        dataset: String,
        /// What cannot be written.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn csv_io(path: &Path) -> impl FnOnce(csv::Error) -> WriteError + '_ {
    move |e| WriteError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// TOML for a string value (quoted and escaped).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `schema.toml` text for `dataset` (rule `normalize`).
pub fn schema_toml(dataset: &Dataset) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "# A study folder written by `mpcl data convert` from dataset {} (format: \
         docs/dataset-format.md).\n# The emotion columns hold the label distributions the \
         dataset's reader produced; rule\n# \"normalize\" gives them back unchanged.\n",
        quoted(&dataset.name)
    ));
    text.push_str(&format!("name = {}\n", quoted(&dataset.name)));
    let emotions: Vec<String> = dataset.schema.emotions.iter().map(|e| quoted(e)).collect();
    text.push_str(&format!("emotions = [{}]\n", emotions.join(", ")));
    for m in &dataset.schema.modalities {
        text.push_str(&format!(
            "\n[[modality]]\nname = {}\ngroup = \"{}\"\ntokens = {}\ntoken_width = {}\n",
            quoted(&m.name),
            m.group.name(),
            m.token_count,
            m.token_width
        ));
    }
    text.push_str("\n[labels]\nrule = \"normalize\"\n");
    text
}

/// Why `subject` cannot be a file stem, if it cannot.
fn subject_problem(subject: &str) -> Option<&'static str> {
    let file = format!("{subject}.csv");
    let stem = Path::new(&file).file_stem().and_then(|s| s.to_str());
    if subject.is_empty() {
        Some("is empty")
    } else if subject.starts_with('.') {
        Some("starts with a dot (hidden files are not read)")
    } else if subject.contains(['/', '\\', '\0', ':']) {
        Some("contains a path separator, colon or NUL")
    } else if stem != Some(subject) {
        Some("does not survive as a file name")
    } else {
        None
    }
}

/// Writes `dataset` into `dir` (created if absent; it must be empty) as `schema.toml` plus one
/// `<subject>.csv` per subject, rows in dataset order. Returns the files written.
pub fn write_study_dir(dataset: &Dataset, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    dataset.validate()?;
    let unwritable = |reason: String| WriteError::Unwritable {
        dataset: dataset.name.clone(),
        reason,
    };
    let schema_text = schema_toml(dataset);
    let mut sink = Collector::new(false);
    if schema_file::parse(&schema_text, Path::new(SCHEMA_FILE), "", &mut sink).is_none() {
        let reason = sink
            .problems
            .first()
            .map(|p| p.message.clone())
            .unwrap_or_else(|| "the schema cannot be written".into());
        return Err(unwritable(reason));
    }
    let subjects = dataset.subjects();
    for subject in &subjects {
        if let Some(why) = subject_problem(subject) {
            return Err(unwritable(format!(
                "subject id `{subject}` {why}, so it cannot be a file name"
            )));
        }
    }

    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(WriteError::NotEmpty(dir.to_path_buf()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let schema_path = dir.join(SCHEMA_FILE);
    std::fs::write(&schema_path, schema_text).map_err(io(&schema_path))?;
    let mut written = vec![schema_path];

    let mut header: Vec<String> = vec![TRIAL_COLUMN.into(), TIME_COLUMN.into()];
    // The stimulus column only when the data knows its stimuli.
    let stimuli = dataset.samples.iter().any(|s| s.stimulus.is_some());
    if stimuli {
        header.push(STIMULUS_COLUMN.into());
    }
    for m in &dataset.schema.modalities {
        header.extend((0..m.width()).map(|i| feature_column(&m.name, i)));
    }
    header.extend(dataset.schema.emotions.iter().cloned());
    for subject in &subjects {
        let path = dir.join(format!("{subject}.csv"));
        let mut writer = csv::Writer::from_path(&path).map_err(csv_io(&path))?;
        writer.write_record(&header).map_err(csv_io(&path))?;
        for sample in dataset.samples.iter().filter(|s| &s.subject == subject) {
            let mut record: Vec<String> = Vec::with_capacity(header.len());
            record.push(sample.trial.to_string());
            record.push(sample.time.to_string());
            if stimuli {
                record.push(sample.stimulus.clone().unwrap_or_default());
            }
            for values in &sample.features {
                record.extend(values.iter().map(f32::to_string));
            }
            record.extend(sample.label.iter().map(f32::to_string));
            writer.write_record(&record).map_err(csv_io(&path))?;
        }
        writer.flush().map_err(io(&path))?;
        written.push(path);
    }
    tracing::info!(
        dataset = %dataset.name,
        dir = %dir.display(),
        subjects = subjects.len(),
        samples = dataset.samples.len(),
        "wrote the dataset as a study folder"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup, Sample, Schema};

    fn dataset(subject: &str, emotion: &str) -> Dataset {
        Dataset {
            name: "t".into(),
            schema: Schema {
                emotions: vec!["a".into(), emotion.into()],
                modalities: vec![Modality::new("x", ModalityGroup::Physiological, 1, 2)],
            },
            samples: vec![Sample {
                features: vec![vec![0.1, -2.5e-8]],
                label: vec![0.25, 0.75],
                subject: subject.into(),
                trial: 3,
                time: 1,
                stimulus: None,
            }],
        }
    }

    #[test]
    fn a_dataset_round_trips_through_a_folder() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("new");
        let data = dataset("s1", "b");
        let files = write_study_dir(&data, &out)?;
        assert_eq!(files.len(), 2);
        let (back, _) = super::super::read_study_dir(&out)?;
        assert_eq!(back, data);
        assert!(matches!(
            write_study_dir(&data, &out),
            Err(WriteError::NotEmpty(_))
        ));
        Ok(())
    }

    #[test]
    fn names_that_do_not_fit_the_format_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (data, needle) in [
            (dataset("a/b", "b"), "path separator"),
            (dataset("s1", "trial"), "reserved"),
            (dataset("s1", "x_1"), "feature column"),
        ] {
            let err = write_study_dir(&data, dir.path()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none());
    }
}
