//! `mpcl data ...`: look at datasets before training on them. The work is done by
//! `mpcl_model::data` (`open` picks the reader, `inspect::summarize` writes the text); this file
//! only parses arguments.

use clap::{Args, Subcommand};
use mpcl_model::data::{inspect, open};

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
        /// `larwood2019` (bundled), `larwood:DIR`, `dmer:DIR` (or `dmer:FILE.mat`) or `wesad:DIR`.
        dataset: String,
    },
}

impl DataArgs {
    /// Runs the chosen `data` subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            DataCommand::Inspect { dataset } => {
                let (data, report) = open(&dataset)?;
                print!("{}", inspect::summarize(&data, &report));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Data(DataArgs),
    }

    #[test]
    fn inspect_parses_and_runs_on_the_bundled_dataset() -> anyhow::Result<()> {
        let Top::Data(args) =
            Wrapper::try_parse_from(["mpcl", "data", "inspect", "larwood2019"])?.command;
        args.run()
    }

    #[test]
    fn an_unknown_dataset_is_an_error() -> anyhow::Result<()> {
        let Top::Data(args) = Wrapper::try_parse_from(["mpcl", "data", "inspect", "nope"])?.command;
        let err = args.run().unwrap_err().to_string();
        assert!(err.contains("unknown dataset `nope`"), "{err}");
        Ok(())
    }
}
