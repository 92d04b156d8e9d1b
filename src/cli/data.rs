//! `mpcl data ...`: look at datasets before training on them, check a study folder of one's own,
//! and write any dataset as such a folder. The work is done by `mpcl_data` (`open` picks
//! the reader, `inspect::summarize` writes the text, `study` validates and writes study folders);
//! this file only parses arguments and prints.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use mpcl_data::inspect;
use mpcl_data::study::{self, Requirements};
use mpcl_simulations::dataset::load_dataset;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::synthetic::SyntheticConfig;

/// The study-folder format with a tiny example, shared by the help texts (a macro, so that
/// `concat!` can splice it into them).
macro_rules! study_format {
    () => {
        "A study folder is how you hand mpcl your own features and ratings:

  my-study/
    schema.toml   what the columns mean
    p01.csv       one CSV per subject; the file name without .csv is the subject id
    p02.csv

schema.toml:

  name = \"my-study\"
  emotions = [\"happy\", \"sad\", \"calm\"]

  [[modality]]
  name = \"gsr\"
  group = \"physiological\"      # or \"behavioral\"
  tokens = 2                   # the modality has tokens x token_width values
  token_width = 1

  [labels]
  rule = \"subtract-minimum\"    # p_k = (r_k - minimum) / sum_j (r_j - minimum)
  minimum = 1                  # rows rated 1 on every emotion are dropped and reported
  # or: rule = \"normalize\" (p_k = r_k / sum_j r_j; for probabilities)
  # or: rule = \"softmax\" with temperature = 1.0 (for any scores)

  [missing]                    # optional
  policy = \"error\"             # or \"drop-row\" (empty, NA, NaN, inf cells)

p01.csv (one row per sample):

  trial,time,gsr_0,gsr_1,happy,sad,calm
  1,0,0.51,0.48,5,1,3
  1,1,0.53,0.47,5,1,3
  2,0,0.40,0.41,1,4,2

Columns, in any order: `trial` (whole number), `time` (whole number, the window within the
trial; optional, 0 when absent), each modality's values named <modality>_<index> (0-based, token
by token), and one column per emotion named exactly as in schema.toml holding a rating or a
probability. Any other column is an error unless listed in `ignore_columns = [...]`.
Rows are numbered as a spreadsheet shows them: the header is row 1.

Open a study folder anywhere a dataset is asked for as `study:DIR` or just `DIR`. Full
description: docs/dataset-format.md."
    };
}

/// The long help of `mpcl data` (set where the subcommand is declared, in `cli/mod.rs`).
pub const LONG_ABOUT: &str = concat!(
    "Look at datasets before training on them: inspect what a dataset holds, validate a study \
     folder of your own, or convert any dataset into one.\n\n",
    study_format!()
);

/// Arguments of `mpcl data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Print what a dataset holds: subjects, trials, samples, modalities, emotions, label
    /// statistics and anything the reader skipped.
    Inspect {
        /// `synthetic` (generated), `larwood2019` (bundled), `larwood:DIR`, `dmer:DIR` (or
        /// `dmer:FILE.mat`), `wesad:DIR`, `study:DIR` or a study folder.
        dataset: String,
    },
    /// Check a study folder before a study starts and list every problem.
    #[command(long_about = concat!(
        "Check a study folder before a study starts and list every problem, not just the \
         first: every CSV matches schema.toml (columns present, widths right, no unknown \
         columns), no missing or non-finite values (unless [missing] policy = \"drop-row\"), \
         every row gives a label distribution under the rule, and, with --protocol, enough \
         subjects and trials for it.\n\n\
         Prints a summary (subjects, trials, rows, modalities, emotions), then each problem as \
         `file:row:column: error|warning: message` (`-` where a row or column does not apply), \
         and exits non-zero if there is any error.\n\n",
        study_format!()
    ))]
    Validate {
        /// The study folder (`DIR` or `study:DIR`).
        path: String,
        /// Also check the folder suits this protocol: `subject-dependent` (every subject needs
        /// at least 2 trials), `subject-independent[:K]` (at least K subjects, default 5) or
        /// `loso` (at least 2 subjects).
        #[arg(long)]
        protocol: Option<EvaluationProtocol>,
    },
    /// Write any dataset as a study folder (schema.toml plus one CSV per subject).
    ///
    /// The emotion columns hold the label distributions the dataset's reader produced, under rule
    /// `normalize`, so reading the folder back gives the same samples. Features are written as
    /// the model sees them (for larwood2019: the log of the EMG means). Trials the reader
    /// dropped are not written.
    Convert {
        /// Any dataset `mpcl data inspect` takes, e.g. `larwood2019`.
        dataset: String,
        /// The folder to write; it must not exist or be empty.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Any dataset a command names, `synthetic` (the seeded generator's default) included.
fn load(spec: &str) -> anyhow::Result<(mpcl_data::Dataset, mpcl_data::LoadReport)> {
    Ok(load_dataset(spec, &SyntheticConfig::default())?)
}

/// `DIR` from `study:DIR` or `DIR`.
fn study_path(path: &str) -> &Path {
    Path::new(path.strip_prefix("study:").unwrap_or(path))
}

fn requirements(protocol: Option<EvaluationProtocol>) -> Requirements {
    match protocol {
        None => Requirements::none(),
        Some(EvaluationProtocol::SubjectDependent { .. }) => Requirements::subject_dependent(),
        Some(EvaluationProtocol::SubjectIndependent { folds }) => {
            Requirements::subject_independent(folds)
        }
        // Whole stimuli held out: the files' checks plus one subject; whether every row has a
        // stimulus and there are enough stimuli is checked when the split is made.
        Some(protocol @ EvaluationProtocol::StimulusIndependent { .. }) => Requirements {
            protocol: Some(protocol.to_string()),
            min_trials_per_subject: 1,
            min_subjects: 1,
        },
        Some(EvaluationProtocol::SubjectStimulusIndependent { folds }) => Requirements {
            protocol: Some(format!(
                "subject- and stimulus-independent with {folds} folds"
            )),
            ..Requirements::subject_independent(folds)
        },
    }
}

impl DataArgs {
    /// Runs the chosen `data` subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            DataCommand::Inspect { dataset } => {
                let (data, report) = load(&dataset)?;
                print!("{}", inspect::summarize(&data, &report));
                Ok(())
            }
            DataCommand::Validate { path, protocol } => {
                let dir = study_path(&path);
                let report = study::validate_study_dir(dir, &requirements(protocol));
                print!("{report}");
                let errors = report.errors().count();
                if errors > 0 {
                    anyhow::bail!(
                        "{}: {errors} error(s); fix them before starting a study",
                        dir.display()
                    );
                }
                Ok(())
            }
            DataCommand::Convert { dataset, out } => {
                let (data, report) = load(&dataset)?;
                let files = study::write_study_dir(&data, &out)
                    .with_context(|| format!("writing `{dataset}` to {}", out.display()))?;
                println!(
                    "wrote {} ({} subjects, {} samples) to {} ({} files)",
                    data.name,
                    data.subjects().len(),
                    data.samples.len(),
                    out.display(),
                    files.len()
                );
                if !report.skipped.is_empty() {
                    println!(
                        "{} trial(s) or subject(s) the reader skipped are not in the folder \
                         (see `mpcl data inspect {dataset}`)",
                        report.skipped.len()
                    );
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        #[command(long_about = LONG_ABOUT)]
        Data(DataArgs),
    }

    fn parse(args: &[&str]) -> anyhow::Result<DataArgs> {
        let Top::Data(args) = Wrapper::try_parse_from(args)?.command;
        Ok(args)
    }

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/tests/fixtures/study")
            .join(name)
            .display()
            .to_string()
    }

    #[test]
    fn inspect_parses_and_runs_on_the_bundled_dataset() -> anyhow::Result<()> {
        parse(&["mpcl", "data", "inspect", "larwood2019"])?.run()
    }

    #[test]
    fn inspect_takes_synthetic_as_listed() -> anyhow::Result<()> {
        parse(&["mpcl", "data", "inspect", "synthetic"])?.run()
    }

    #[test]
    fn an_unknown_dataset_is_an_error() -> anyhow::Result<()> {
        let err = parse(&["mpcl", "data", "inspect", "nope"])?
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown dataset `nope`"), "{err}");
        Ok(())
    }

    #[test]
    fn validate_passes_a_good_folder_and_fails_a_bad_one() -> anyhow::Result<()> {
        let valid = fixture("valid");
        parse(&["mpcl", "data", "validate", &valid])?.run()?;
        let prefixed = format!("study:{valid}");
        parse(&[
            "mpcl",
            "data",
            "validate",
            &prefixed,
            "--protocol",
            "subject-dependent",
        ])?
        .run()?;
        let err = parse(&[
            "mpcl",
            "data",
            "validate",
            &valid,
            "--protocol",
            "subject-independent:5",
        ])?
        .run()
        .unwrap_err()
        .to_string();
        assert!(err.contains("1 error(s)"), "{err}");
        let err = parse(&["mpcl", "data", "validate", &fixture("many_problems")])?
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("8 error(s)"), "{err}");
        assert!(parse(&["mpcl", "data", "validate", &valid, "--protocol", "nope"]).is_err());
        Ok(())
    }

    #[test]
    fn convert_writes_a_folder_that_inspect_and_validate_accept() -> anyhow::Result<()> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let out =
            std::env::temp_dir().join(format!("mpcl-convert-test-{}-{unique}", std::process::id()));
        let out_text = out.display().to_string();
        let result = (|| -> anyhow::Result<()> {
            parse(&["mpcl", "data", "convert", "larwood2019", "--out", &out_text])?.run()?;
            parse(&["mpcl", "data", "inspect", &out_text])?.run()?;
            parse(&["mpcl", "data", "validate", &out_text])?.run()?;
            // A second conversion into the same folder refuses to overwrite it.
            let err = parse(&["mpcl", "data", "convert", "larwood2019", "--out", &out_text])?
                .run()
                .unwrap_err();
            assert!(format!("{err:#}").contains("not empty"), "{err:#}");
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&out);
        result
    }

    #[test]
    fn the_help_describes_the_format() {
        let mut command = Wrapper::command();
        let data = command
            .find_subcommand_mut("data")
            .expect("data subcommand");
        let help = data.render_long_help().to_string();
        assert!(
            help.contains("schema.toml") && help.contains("<modality>_<index>"),
            "{help}"
        );
        let validate = data
            .find_subcommand_mut("validate")
            .expect("validate subcommand");
        let help = validate.render_long_help().to_string();
        assert!(
            help.contains("file:row:column") && help.contains("rule = \"subtract-minimum\""),
            "{help}"
        );
    }
}
