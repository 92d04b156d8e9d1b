//! Subcommands of `mpcl`, one file each.

mod ablate;
mod bench;
mod client;
mod coordinator;
mod data;
mod docs;
mod init;
mod keygen;
mod model_file;
mod rerun;
mod simulate;
mod train;

use clap::{ArgMatches, Parser, Subcommand, ValueEnum};

/// Where `RUST_LOG` and `--log-format` are explained (the end of `mpcl --help`).
const LOGGING_HELP: &str = "\
Logs go to stderr; results and per-round progress lines go to stdout.
  --log-format text|json   text (default) or one JSON object per line (for log collectors)
  RUST_LOG=FILTER          which logs to show, e.g. RUST_LOG=debug or
                           RUST_LOG=info,mpcl_coordinator=debug (default: info; `simulate`
                           and `ablate` show only warnings of their own coordinators and
                           virtual participants, `bench` of its participants)";

/// Federated mixed-emotion recognition from physiological and behavioral signals.
#[derive(Debug, Parser)]
#[command(name = "mpcl", version, about, long_about = None, after_help = LOGGING_HELP)]
pub struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for machines.
    /// `RUST_LOG` chooses which logs to show.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The two ways logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line (tracing-subscriber's JSON layer).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    Simulate(simulate::SimulateArgs),
    Train(train::TrainArgs),
    Ablate(ablate::AblateArgs),
    Keygen(keygen::KeygenArgs),
    /// Inspect, validate and convert datasets.
    #[command(long_about = data::LONG_ABOUT)]
    Data(data::DataArgs),
    Init(init::InitArgs),
    Coordinator(coordinator::CoordinatorArgs),
    Client(client::ClientArgs),
    Status(client::StatusArgs),
    Bench(bench::BenchArgs),
    Completions(docs::CompletionsArgs),
    Man(docs::ManArgs),
    Export(model_file::ExportArgs),
    Evaluate(model_file::EvaluateArgs),
    Predict(model_file::PredictArgs),
    /// Internal: one measurement of `mpcl bench` in a process of its own.
    #[command(hide = true)]
    BenchChild(bench::BenchChildArgs),
    /// Internal: one (partition, arm) job of `mpcl simulate` in a process of its own.
    #[command(hide = true, name = mpcl_simulations::job_process::SIMULATE_JOB_COMMAND)]
    SimulateJob(simulate::SimulateJobArgs),
}

impl Cli {
    /// The log filter when `RUST_LOG` is unset: `info`, but a simulation's own coordinator
    /// (`--network`) and its virtual participants (one per subject, each logging every round)
    /// log only warnings, so that its progress bar and table stay readable (the per-round
    /// details are in its round log).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Simulate(_) | Command::SimulateJob(_) | Command::Ablate(_) => {
                "info,mpcl_coordinator=warn,mpcl_client=warn"
            }
            // Up to 200 participants of one process log every round to one stderr: the
            // writes would count as the round's overhead, which a participant on a machine of
            // its own does not add to anyone's round.
            Command::Bench(_) => "info,mpcl_client=warn",
            _ => "info",
        }
    }

    /// The chosen log format.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Runs the chosen subcommand. `matches` are the parsed arguments, for the commands that
    /// need to know which flags were given explicitly (`--config` re-runs).
    pub fn run(self, matches: &ArgMatches) -> anyhow::Result<()> {
        let sub = |name: &str| {
            matches
                .subcommand_matches(name)
                .cloned()
                .unwrap_or_default()
        };
        match self.command {
            Command::Simulate(args) => args.run(&sub("simulate")),
            Command::Train(args) => args.run(&sub("train")),
            Command::Ablate(args) => args.run(),
            Command::Keygen(args) => keygen::run(args),
            Command::Data(args) => args.run(),
            Command::Init(args) => args.run(),
            Command::Coordinator(args) => args.run(),
            Command::Client(args) => args.run(),
            Command::Status(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::Completions(args) => args.run(),
            Command::Man(args) => args.run(),
            Command::Export(args) => args.run(),
            Command::Evaluate(args) => args.run(),
            Command::Predict(args) => args.run(),
            Command::BenchChild(args) => args.run(),
            Command::SimulateJob(args) => args.run(),
        }
    }
}

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides `default_filter`.
/// Colours only when stderr is a terminal, so that log files stay greppable.
pub fn init_tracing(default_filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Warnings and errors also go to the coordinator's dashboard (`mpcl_dashboard::warnings`).
    let warnings = mpcl_dashboard::WarningLog::global().layer();
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(warnings)
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .finish()
            .with(warnings)
            .init(),
    }
}

/// The model config: `None` gives the defaults; text starting with `{` is inline JSON; anything
/// else is the path of a JSON file. Either holds any subset of `ModelConfig`'s fields.
fn load_model_config(spec: Option<&str>) -> anyhow::Result<mpcl_data::ModelConfig> {
    use anyhow::Context;
    let Some(spec) = spec else {
        return Ok(mpcl_data::ModelConfig::default());
    };
    if spec.trim_start().starts_with('{') {
        return serde_json::from_str(spec)
            .with_context(|| format!("invalid inline model config `{spec}`"));
    }
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("cannot read model config file `{spec}`"))?;
    serde_json::from_str(&text).with_context(|| format!("invalid model config file `{spec}`"))
}

/// The help of `--model-config`, shared by `simulate` and `train`.
const MODEL_CONFIG_HELP: &str = "Model config: a JSON file, or inline JSON such as \
     '{\"width\":8}' (any subset of ModelConfig's fields; the rest keep their defaults)";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_model_config_is_a_file_or_inline_json() -> anyhow::Result<()> {
        let inline = load_model_config(Some(r#"{"width":8}"#))?;
        assert_eq!(inline.width, 8);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("model.json");
        std::fs::write(&path, r#"{"width": 12}"#)?;
        assert_eq!(load_model_config(Some(path.to_str().unwrap()))?.width, 12);
        let error = format!("{:#}", load_model_config(Some("missing.json")).unwrap_err());
        assert!(
            error.contains("cannot read model config file `missing.json`"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            load_model_config(Some(r#"{"widht":8}"#)).unwrap_err()
        );
        assert!(error.contains("invalid inline model config"), "{error}");
        Ok(())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_texts_match_behaviour() {
        let mut command = Cli::command();
        let top = command.render_long_help().to_string();
        assert!(
            top.contains("RUST_LOG") && top.contains("--log-format"),
            "{top}"
        );
        for name in ["simulate", "train"] {
            let help = command
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(help.contains("study:DIR"), "{name} --dataset: {help}");
            assert!(
                help.contains("inline JSON"),
                "{name} --model-config: {help}"
            );
            assert!(
                help.contains("--force") && help.contains("--config"),
                "{help}"
            );
        }
        let coordinator = command
            .find_subcommand_mut("coordinator")
            .unwrap()
            .render_help()
            .to_string();
        let usage = coordinator
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            usage.contains("--config <FILE>") && !usage.contains("[--config"),
            "{usage}"
        );
    }
}
