//! The results folder of `mpcl simulate` and `mpcl train`, handled so that one folder never
//! mixes two runs and a failed run never touches the results of an earlier one.
//!
//! A run writes into a staging folder next to `--out` (`NAME.partial`); only when it has
//! finished are its files moved into `--out` ([`Staging::commit`]). A folder that already holds
//! results is refused unless the caller forces it, and then only the known outputs of a previous
//! run are replaced: a folder holding anything else (someone's data, a typo such as `--out .`)
//! is refused even with force, naming what is in the way.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::simulation_outputs::FEDERATED_EVALUATION_FILE;

/// Errors preparing or finishing a results folder; each names the folder.
#[derive(Debug, Error)]
pub enum OutputDirError {
    /// The folder already holds results and the caller did not force.
    #[error(
        "the output folder {} is not empty (it holds {}); choose another --out, or pass --force \
         to replace the previous run's results",
        path.display(),
        list(entries)
    )]
    NotEmpty { path: PathBuf, entries: Vec<String> },
    /// Forced, but the folder holds files that no run writes.
    #[error(
        "the output folder {} holds files that are not results of an earlier run ({}); \
         --force only replaces a previous run's results: choose another --out",
        path.display(),
        list(entries)
    )]
    Foreign { path: PathBuf, entries: Vec<String> },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(entries: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = entries
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > SHOWN {
        text.push_str(&format!(" and {} more", entries.len() - SHOWN));
    }
    text
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutputDirError {
    let path = path.to_path_buf();
    move |source| OutputDirError::Io {
        action,
        path,
        source,
    }
}

/// Which file names a kind of run writes into its results folder.
pub type KnownOutputs = fn(&str) -> bool;

/// The files `mpcl simulate` writes (see [`crate::simulate::run_simulation_with`]).
pub fn simulation_outputs(name: &str) -> bool {
    matches!(
        name,
        "config.json"
            | "rounds.jsonl"
            | "rounds_pooled.jsonl"
            | "final.csv"
            | "final.md"
            | "per_subject.csv"
            | FEDERATED_EVALUATION_FILE
            | "kl_vs_round.svg"
            | "cosine_vs_round.svg"
            | "per_subject_kl.svg"
            | "network"
    ) || (name.starts_with("model-") && name.ends_with(".mpcl"))
}

/// The files `mpcl ablate` writes (see [`crate::ablate::run_ablation`]).
pub fn ablation_outputs(name: &str) -> bool {
    matches!(
        name,
        "config.json" | "ablation.md" | "ablation.csv" | "ablation_kl.svg"
    )
}

/// The files `mpcl train` writes (see [`crate::train_job::run_train_job`]).
pub fn train_outputs(name: &str) -> bool {
    matches!(
        name,
        "config.json" | "metrics.json" | "metrics.md" | "model.mpcl"
    ) || (name.starts_with("model-fold-") && name.ends_with(".mpcl"))
}

/// A run's staging folder; see the module documentation.
#[derive(Debug)]
pub struct Staging {
    out: PathBuf,
    staging: PathBuf,
    known: KnownOutputs,
    committed: bool,
}

fn entries_of(dir: &Path) -> Result<Vec<String>, OutputDirError> {
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io("read", dir))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io("read", dir)(error)),
    }
    names.sort();
    Ok(names)
}

fn remove(path: &Path) -> Result<(), OutputDirError> {
    let result = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io("remove", path)(error)),
    }
}

impl Staging {
    /// Checks `out` (missing, empty, or with `force` holding only `known` outputs) and creates
    /// a fresh staging folder beside it. Nothing in `out` is changed.
    pub fn begin(out: &Path, force: bool, known: KnownOutputs) -> Result<Self, OutputDirError> {
        let entries = entries_of(out)?;
        if !entries.is_empty() {
            if !force {
                return Err(OutputDirError::NotEmpty {
                    path: out.to_path_buf(),
                    entries,
                });
            }
            let foreign: Vec<String> = entries.into_iter().filter(|e| !known(e)).collect();
            if !foreign.is_empty() {
                return Err(OutputDirError::Foreign {
                    path: out.to_path_buf(),
                    entries: foreign,
                });
            }
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "results".into());
        let staging = out.with_file_name(format!("{name}.partial"));
        // A staging folder left by an interrupted run holds nothing that was ever committed.
        remove(&staging)?;
        std::fs::create_dir_all(&staging).map_err(io("create", &staging))?;
        Ok(Self {
            out: out.to_path_buf(),
            staging,
            known,
            committed: false,
        })
    }

    /// Where the run writes while it runs.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final results folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Moves the finished run's files into `out`, first removing a previous run's outputs
    /// there, so that nothing stale survives beside the new results.
    pub fn commit(mut self) -> Result<PathBuf, OutputDirError> {
        std::fs::create_dir_all(&self.out).map_err(io("create", &self.out))?;
        for name in entries_of(&self.out)? {
            if (self.known)(&name) {
                remove(&self.out.join(name))?;
            }
        }
        for name in entries_of(&self.staging)? {
            let from = self.staging.join(&name);
            std::fs::rename(&from, self.out.join(&name)).map_err(io("move", &from))?;
        }
        remove(&self.staging)?;
        self.committed = true;
        Ok(self.out.clone())
    }

    /// The run failed: `out` stays as it was. Returns the staging folder when it is kept
    /// because it holds rounds already logged (worth a look after a crash); otherwise it is
    /// removed and `None` returned. Dropping an uncommitted staging does the same.
    pub fn abandon(mut self) -> Option<PathBuf> {
        self.committed = true;
        self.discard()
    }

    fn discard(&self) -> Option<PathBuf> {
        let logged = std::fs::metadata(self.staging.join("rounds.jsonl"))
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if logged {
            Some(self.staging.clone())
        } else {
            let _ = std::fs::remove_dir_all(&self.staging);
            None
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            self.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_folder_is_used_and_filled_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let staging = Staging::begin(&out, false, simulation_outputs).unwrap();
        assert!(
            !out.exists(),
            "nothing is written to --out before the run ends"
        );
        std::fs::write(staging.path().join("final.csv"), "new").unwrap();
        let partial = staging.path().to_path_buf();
        staging.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("final.csv")).unwrap(),
            "new"
        );
        assert!(!partial.exists());
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        Staging::begin(&dir.path().join("empty"), false, simulation_outputs).unwrap();
    }

    #[test]
    fn a_folder_with_results_is_refused_without_force_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("final.csv"), "old").unwrap();
        let message = Staging::begin(&out, false, simulation_outputs)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("--force") && message.contains(&out.display().to_string()),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("final.csv")).unwrap(),
            "old"
        );
    }

    #[test]
    fn force_replaces_every_old_output_and_keeps_them_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        for name in ["model-fold-1.mpcl", "model-fold-2.mpcl", "metrics.json"] {
            std::fs::write(out.join(name), "old").unwrap();
        }
        // A run that fails leaves the old results as they were.
        let failed = Staging::begin(&out, true, train_outputs).unwrap();
        std::fs::write(failed.path().join("config.json"), "new").unwrap();
        let partial = failed.path().to_path_buf();
        assert_eq!(failed.abandon(), None);
        assert!(!partial.exists());
        assert_eq!(entries_of(&out).unwrap().len(), 3);
        // A run that finishes replaces them all: no fold model of the old run survives.
        let staging = Staging::begin(&out, true, train_outputs).unwrap();
        std::fs::write(staging.path().join("model.mpcl"), "new").unwrap();
        std::fs::write(staging.path().join("metrics.json"), "new").unwrap();
        staging.commit().unwrap();
        assert_eq!(
            entries_of(&out).unwrap(),
            vec!["metrics.json".to_string(), "model.mpcl".to_string()]
        );
        assert_eq!(
            std::fs::read_to_string(out.join("metrics.json")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_failed_run_with_logged_rounds_keeps_its_partial_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let staging = Staging::begin(&out, false, simulation_outputs).unwrap();
        std::fs::write(staging.path().join("rounds.jsonl"), "{}\n").unwrap();
        let kept = staging.abandon().unwrap();
        assert!(kept.join("rounds.jsonl").exists());
        assert!(!out.exists());
    }

    #[test]
    fn force_refuses_a_folder_with_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.tex"), "mine").unwrap();
        std::fs::write(dir.path().join("final.csv"), "old").unwrap();
        let message = Staging::begin(dir.path(), true, simulation_outputs)
            .unwrap_err()
            .to_string();
        assert!(message.contains("thesis.tex"), "{message}");
        assert!(dir.path().join("thesis.tex").exists());
    }
}
