//! `mpcl bench`: measures what the framework costs on this machine (aggregation time, round
//! overhead over QUIC, coordinator memory, bytes on the wire with compression, training
//! throughput, a 1,000-client simulation) and writes `bench.json` and `bench.md`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mpcl_bench::{BenchConfig, ChildLauncher, ChildTask, Part, run_and_write, run_child};
use mpcl_model::DeviceChoice;

/// Benchmark the framework on this machine: aggregation time per round vs clients (10, 100,
/// 1,000) and parameters (1e4, 1e5, 1e6); system overhead per round over QUIC on loopback
/// (round wall time minus the slowest client's training time); coordinator peak memory vs
/// clients (each configuration in a child process); bytes per client per round uncompressed,
/// f16 and int8, with the final KL of each; local training samples/s for batch 32 and 128; and
/// 1,000 simulated clients in one process; round overhead on Flower's workload (10 to 200
/// clients with a trivial trainer) against Flower 1.41, with the coordinator's CPU per
/// client-round against 0.2 ms + 1 ns per parameter and against quinn alone moving the same
/// bytes, and mpcl's own work per client-round on each end, stage by stage, beside quinn alone
/// moving the tiny and the default model's messages. Each figure is the median of --repeats
/// runs.
///
/// Writes bench.json (every run) and bench.md (the tables) to --out, prints the tables, and exits
/// non-zero if a check failed (coordinator memory at 1,000 clients within 2x of 10 clients;
/// int8 upload at most 0.3x of dense with final KL within 2%; round overhead at most 1/10 of
/// Flower's; a simulation on every core at least 1.8x faster than on one). Build in release for
/// real figures.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Output folder.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Small sizes, one repetition: a smoke test (seconds, even in a debug build).
    #[arg(long)]
    quick: bool,
    /// Repetitions of each timed measurement (default 5, or 1 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
    /// Also measure training throughput on `wgpu` (build with --features wgpu). With `cpu` (the
    /// default) wgpu is still measured when a hardware GPU is found.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Run only these parts (comma-separated): aggregation, overhead, flower, memory, bytes,
    /// simulation, throughput. Default: all.
    #[arg(long, value_delimiter = ',', value_parser = parse_part)]
    only: Vec<Part>,
    /// Folder of the PyTorch twin's results (`*.jsonl` from `twin.py bench --out`), printed
    /// beside mpcl's training throughput when present.
    #[arg(long, default_value = "../shared/reference/pytorch_twin")]
    pytorch_twin: PathBuf,
    /// Folder of Flower runs from the reference harness (`sim_run.py 10000 N 5 OUT.json`, or
    /// `run_all.sh`'s `results/raw`), shown beside the fixed Flower figures when present: the
    /// same machine in the same session. The checks keep the fixed figures.
    #[arg(long, default_value = "../shared/reference/flower_bench/results/raw")]
    flower_runs: PathBuf,
}

fn parse_part(name: &str) -> Result<Part, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        format!(
            "unknown bench part `{name}` (aggregation, overhead, flower, memory, bytes, simulation, throughput)"
        )
    })
}

impl BenchArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let child = ChildLauncher {
            program: std::env::current_exe().context("cannot locate the mpcl binary")?,
            args: vec!["bench-child".into()],
        };
        let mut config = if self.quick {
            BenchConfig::quick(Some(child))
        } else {
            BenchConfig::full(Some(child))
        };
        if let Some(repeats) = self.repeats {
            config.repeats = repeats.max(1);
        }
        config.gpu = self.device == DeviceChoice::Wgpu;
        if !self.only.is_empty() {
            config.parts = self.only;
        }
        config.twin_results = Some(self.pytorch_twin);
        config.flower_runs = Some(self.flower_runs);
        let report = run_and_write(&config, &self.out, |part| {
            tracing::info!("measuring {part}");
        })
        .with_context(|| format!("bench failed (results folder {})", self.out.display()))?;
        println!("{}", mpcl_bench::markdown(&report));
        println!(
            "wrote {} and {}",
            self.out.join("bench.json").display(),
            self.out.join("bench.md").display()
        );
        let failed = report.failed_checks();
        if !failed.is_empty() {
            anyhow::bail!(
                "{} check(s) failed: {}",
                failed.len(),
                failed
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(())
    }
}

/// The hidden child of `mpcl bench`: runs one measurement given as JSON and prints the result as
/// JSON (one line on stdout).
#[derive(Debug, Args)]
pub struct BenchChildArgs {
    /// A `ChildTask` as JSON.
    spec: String,
}

impl BenchChildArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let task: ChildTask =
            serde_json::from_str(&self.spec).context("invalid bench child task")?;
        let result = run_child(&task)?;
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    }
}
