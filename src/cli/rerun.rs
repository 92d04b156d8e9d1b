//! Re-running `simulate` and `train` from a saved `config.json` (`--config FILE`): which flags
//! were given explicitly (they override the file), and dataset paths that stay valid when the
//! file is read from another working directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::de::DeserializeOwned;

/// The dataset kinds whose spec carries a path (`KIND:PATH`).
const PATH_KINDS: [&str; 4] = ["larwood", "dmer", "wesad", "study"];

/// Whether the flag `id` was typed on the command line (not a default).
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine))
}

/// `spec` with a relative path made relative to `base` (`study:data` -> `study:BASE/data`);
/// named datasets (`synthetic`, `larwood2019`) and absolute paths are unchanged.
pub fn rebase_dataset_spec(spec: &str, base: &Path) -> String {
    let spec = spec.trim();
    if spec == "synthetic" || spec == "larwood2019" {
        return spec.to_string();
    }
    let (prefix, path) = match spec.split_once(':') {
        Some((kind, path)) if PATH_KINDS.contains(&kind) => (format!("{kind}:"), path),
        _ => (String::new(), spec),
    };
    let path = Path::new(path);
    if path.is_absolute() {
        return spec.to_string();
    }
    let joined = base.join(path);
    let joined = std::path::absolute(&joined).unwrap_or(joined);
    format!("{prefix}{}", joined.display())
}

/// `spec` with its path made absolute (against the working directory), so that the
/// `config.json` it is saved in re-runs from anywhere.
pub fn absolute_dataset_spec(spec: &str) -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let rebased = rebase_dataset_spec(spec, &cwd);
    // A path that does not exist stays as typed, so that its error names it as typed.
    let path = rebased.split_once(':').map_or(rebased.as_str(), |(_, p)| p);
    if Path::new(path).exists() {
        rebased
    } else {
        spec.trim().to_string()
    }
}

/// Reads a saved `config.json`; a relative dataset path in it is resolved against the file's
/// folder (via `dataset_of`).
pub fn load_saved_config<T: DeserializeOwned>(
    path: &Path,
    dataset_of: impl FnOnce(&mut T) -> &mut String,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the saved config {}", path.display()))?;
    let mut config: T = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a config.json of this command (written by a run of it)",
            path.display()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let dataset = dataset_of(&mut config);
    *dataset = rebase_dataset_spec(dataset, base);
    Ok(config)
}

/// The error of a run that failed, saying where its partial results are when there are any
/// (the results folder itself is untouched).
pub fn failed_run(
    error: anyhow::Error,
    staging: mpcl_simulations::output_dir::Staging,
) -> anyhow::Error {
    let out = staging.out().to_path_buf();
    match staging.abandon() {
        Some(kept) => error.context(format!(
            "the run failed; {} is unchanged, the rounds logged before the failure are in {}",
            out.display(),
            kept.display()
        )),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dataset_paths_follow_the_config_folder() {
        let base = Path::new("/runs/old");
        assert_eq!(rebase_dataset_spec("synthetic", base), "synthetic");
        assert_eq!(rebase_dataset_spec("larwood2019", base), "larwood2019");
        assert_eq!(
            rebase_dataset_spec("study:data/mine", base),
            "study:/runs/old/data/mine"
        );
        assert_eq!(rebase_dataset_spec("mine", base), "/runs/old/mine");
        assert_eq!(
            rebase_dataset_spec("dmer:/abs/DMER", base),
            "dmer:/abs/DMER"
        );
        assert_eq!(
            absolute_dataset_spec("study:no/such/dir"),
            "study:no/such/dir"
        );
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_dataset_spec("study:."),
            format!(
                "study:{}",
                std::path::absolute(here.join(".")).unwrap().display()
            )
        );
    }
}
