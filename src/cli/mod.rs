//! Subcommands of `mpcl`, one file each.

mod bench;
mod client;
mod coordinator;
mod data;
mod keygen;
mod model_file;
mod simulate;
mod train;

use clap::{Parser, Subcommand};

/// Federated mixed-emotion recognition from physiological and behavioral signals.
#[derive(Debug, Parser)]
#[command(name = "mpcl", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Simulate(simulate::SimulateArgs),
    Train(train::TrainArgs),
    Keygen(keygen::KeygenArgs),
    /// Inspect, validate and convert datasets.
    #[command(long_about = data::LONG_ABOUT)]
    Data(data::DataArgs),
    Coordinator(coordinator::CoordinatorArgs),
    Client(client::ClientArgs),
    Status(client::StatusArgs),
    Bench(bench::BenchArgs),
    Export(model_file::ExportArgs),
    Evaluate(model_file::EvaluateArgs),
    Predict(model_file::PredictArgs),
    /// Internal: one measurement of `mpcl bench` in a process of its own.
    #[command(hide = true)]
    BenchChild(bench::BenchChildArgs),
}

impl Cli {
    /// The log filter when `RUST_LOG` is unset: `info`, but a simulation's own coordinator
    /// (`--network`) logs only warnings, so that its progress bar and table stay readable (the
    /// per-round details are in its round log).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Simulate(_) => "info,mpcl_coordinator=warn",
            _ => "info",
        }
    }

    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Simulate(args) => args.run(),
            Command::Train(args) => args.run(),
            Command::Keygen(args) => keygen::run(args),
            Command::Data(args) => args.run(),
            Command::Coordinator(args) => args.run(),
            Command::Client(args) => args.run(),
            Command::Status(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::Export(args) => args.run(),
            Command::Evaluate(args) => args.run(),
            Command::Predict(args) => args.run(),
            Command::BenchChild(args) => args.run(),
        }
    }
}

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides `default_filter`.
/// Colours only when stderr is a terminal, so that log files stay greppable.
pub fn init_tracing(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The model config from a JSON file (any subset of `ModelConfig`'s fields), or the defaults.
fn load_model_config(path: Option<&std::path::Path>) -> anyhow::Result<mpcl_model::ModelConfig> {
    use anyhow::Context;
    let Some(path) = path else {
        return Ok(mpcl_model::ModelConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model config `{}`", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("invalid model config `{}`", path.display()))
}
