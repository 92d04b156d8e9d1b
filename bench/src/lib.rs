//! `mpcl bench`: how much of a study's time, memory and bandwidth goes to the framework rather
//! than to learning, measured on the machine it runs on. Each figure is the median of several
//! runs. [`run_bench`] measures; [`write_outputs`] writes `bench.json` and `bench.md`.
//!
//! | module | measures |
//! |---|---|
//! | [`aggregation`] | aggregation time per round vs clients and parameters (in-process) |
//! | [`network`] | system overhead per round over real QUIC on loopback |
//! | [`flower`] | round overhead on Flower's workload (trivial trainer, 10 to 200 clients) vs Flower 1.41 |
//! | [`transport_floor`] | what quinn alone takes to move those rounds' bytes (the floor under any QUIC protocol), and the tiny and default model's messages |
//! | [`own_work`] | mpcl's own work per client-round on each end, stage by stage, without a network |
//! | [`child`] | coordinator peak memory vs clients; 1,000 simulated clients (child processes) |
//! | [`bytes`] | bytes per client per round with and without compression, and its effect on KL |
//! | [`simulation`] | an in-process simulation's wall and CPU time on one thread and on every thread |
//! | [`throughput`] | local training samples per second (and per CPU-second) per device and batch size |
//! | [`twin`] | the PyTorch twin's throughput, read from its results when present |

pub mod aggregation;
pub mod bytes;
pub mod child;
mod federation_setup;
pub mod flower;
pub mod network;
pub mod own_work;
mod report;
pub mod simulation;
pub mod stats;
mod synthetic_state;
pub mod throughput;
pub mod transport_floor;
pub mod twin;

use std::path::{Path, PathBuf};

use mpcl_data::ModelConfig;
use mpcl_model::DeviceChoice;
use mpcl_protocol::Compression;
use mpcl_simulations::job_process::JobProgram;
use mpcl_simulations::simulate::SimulationConfig;
use mpcl_simulations::synthetic::SyntheticConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use aggregation::AggregationRow;
pub use child::{ChildLauncher, ChildResult, ChildTask, run_child};
pub use report::{markdown, write_outputs};

/// Errors of a bench run, naming what was being measured.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("cannot set up {what}: {message}")]
    Setup { what: String, message: String },
    #[error("measuring {what} failed: {message}")]
    Measure { what: String, message: String },
    #[error("child process for {task} failed: {message}")]
    Child { task: String, message: String },
    #[error("cannot write `{path}`: {message}")]
    Write { path: String, message: String },
}

impl BenchError {
    pub(crate) fn setup(what: &str, error: impl std::fmt::Display) -> Self {
        Self::Setup {
            what: what.to_string(),
            message: error.to_string(),
        }
    }
}

/// A part of the bench (`mpcl bench --only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Aggregation time vs clients and parameters.
    Aggregation,
    /// Round overhead of the burn-training federation over QUIC.
    Overhead,
    /// Round overhead on Flower's workload vs Flower, the QUIC floor under it, and mpcl's own
    /// work per client-round.
    Flower,
    /// Coordinator memory and the many-client simulation (child processes).
    Memory,
    /// Bytes on the wire with and without compression.
    Bytes,
    /// An in-process simulation on one thread and on every thread.
    Simulation,
    /// Local training throughput.
    Throughput,
}

impl Part {
    /// Every part, in the order they run.
    pub const ALL: [Part; 7] = [
        Part::Aggregation,
        Part::Overhead,
        Part::Flower,
        Part::Memory,
        Part::Bytes,
        Part::Simulation,
        Part::Throughput,
    ];
}

/// What to measure and how often.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The parts to run (all by default).
    pub parts: Vec<Part>,
    /// Where the PyTorch twin's results may be (see [`twin`]); read if present.
    pub twin_results: Option<PathBuf>,
    /// Where runs of the Flower harness's `sim_run.py` may be (see [`flower::flower_runs`]);
    /// read if present, beside the fixed anchors the checks use.
    pub flower_runs: Option<PathBuf>,
    /// Small sizes everywhere: a smoke test that finishes in seconds even in a debug build.
    pub quick: bool,
    /// Repetitions of each timed measurement (the median is reported).
    pub repeats: usize,
    /// Also measure training throughput on wgpu (needs a build with the `wgpu` feature); without
    /// it, wgpu is measured only when a hardware GPU is found.
    pub gpu: bool,
    /// Starts the child processes of the memory and scale measurements; without one they are
    /// skipped (noted in the report).
    pub child: Option<ChildLauncher>,
}

impl BenchConfig {
    /// The full bench (5 repetitions).
    pub fn full(child: Option<ChildLauncher>) -> Self {
        Self {
            parts: Part::ALL.to_vec(),
            twin_results: None,
            flower_runs: None,
            quick: false,
            repeats: 5,
            gpu: false,
            child,
        }
    }

    /// The smoke test (1 repetition, small sizes).
    pub fn quick(child: Option<ChildLauncher>) -> Self {
        Self {
            parts: Part::ALL.to_vec(),
            twin_results: None,
            flower_runs: None,
            quick: true,
            repeats: 1,
            gpu: false,
            child,
        }
    }
}

/// Peak coordinator memory for one (clients, parameters) configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryRow {
    pub clients: usize,
    pub parameters: usize,
    /// Median over repetitions of the peak memory the round added, MiB.
    pub added_mib: f64,
    /// Dense size of one update's delta, MiB (for scale).
    pub delta_mib: f64,
    /// Median wall time of the round, seconds.
    pub seconds: f64,
}

/// 1,000 (or, quick, a few) simulated clients in one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    pub clients: usize,
    pub rounds: u64,
    pub seconds: f64,
    pub added_mib: f64,
    pub peak_mib: f64,
    pub final_kl: Option<f64>,
}

/// A property the bench must show, and whether it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Everything measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub quick: bool,
    pub repeats: usize,
    /// Threads available to this process.
    pub threads: usize,
    pub build: String,
    pub aggregation: Vec<AggregationRow>,
    pub overhead: Vec<network::OverheadRow>,
    /// Round overhead on Flower's workload.
    #[serde(default)]
    pub flower: Vec<flower::FlowerRow>,
    /// What quinn alone takes to move the same rounds' bytes.
    #[serde(default)]
    pub transport_floor: Vec<transport_floor::FloorRow>,
    /// mpcl's own work per client-round on each end, stage by stage, without a network.
    #[serde(default)]
    pub own_work: Vec<own_work::OwnWorkRow>,
    pub memory: Vec<MemoryRow>,
    pub bytes_setups: Vec<bytes::BytesSetup>,
    pub bytes: Vec<bytes::BytesRow>,
    /// An in-process simulation on one thread and on every thread.
    #[serde(default)]
    pub simulation: Vec<simulation::SimulationRow>,
    pub throughput: Vec<throughput::ThroughputRow>,
    /// The PyTorch twin's throughput, when its results were found.
    #[serde(default)]
    pub twin: Vec<twin::TwinRow>,
    pub scale: Option<ScaleRow>,
    pub checks: Vec<Check>,
    /// What was skipped or could not be measured, and why.
    pub notes: Vec<String>,
    pub wall_seconds: f64,
}

impl BenchReport {
    /// The checks that failed.
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs every measurement; `progress` is called with a line before each part.
pub fn run_bench(
    config: &BenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let started = std::time::Instant::now();
    let repeats = config.repeats.max(1);
    let quick = config.quick;
    let mut notes = Vec::new();
    let mut checks = Vec::new();

    let runs = |part: Part| config.parts.contains(&part);
    let mut aggregation = Vec::new();
    if runs(Part::Aggregation) {
        progress("aggregation time vs clients and parameters");
        let (clients, parameters): (&[usize], &[usize]) = if quick {
            (&[10, 100], &[10_000])
        } else {
            (&[10, 100, 1000], &[10_000, 100_000, 1_000_000])
        };
        aggregation = aggregation::measure(clients, parameters, repeats)?;
    }

    let overhead = if !runs(Part::Overhead) {
        Vec::new()
    } else if quick {
        progress("round overhead over QUIC on loopback");
        vec![network::measure(2, 2, 100, Compression::None)?]
    } else {
        progress("round overhead over QUIC on loopback");
        let mut rows = Vec::new();
        for (clients, poll) in [(4, 1000), (4, 100), (16, 100)] {
            rows.push(network::measure(
                clients,
                2 * repeats as u64,
                poll,
                Compression::None,
            )?);
        }
        rows.push(network::measure(
            4,
            2 * repeats as u64,
            100,
            Compression::Int8,
        )?);
        rows
    };

    let mut flower = Vec::new();
    let mut transport_floor = Vec::new();
    let mut own_work = Vec::new();
    if runs(Part::Flower) {
        progress("round overhead on Flower's workload");
        let clients: &[usize] = if quick { &[4] } else { &[10, 50, 100, 200] };
        for &n in clients {
            flower.push(flower::measure(n)?);
        }
        if let Some(folder) = &config.flower_runs {
            let same_session = flower::flower_runs(folder);
            if same_session.is_empty() {
                notes.push(format!(
                    "no Flower runs in {} (the harness's `sim_run.py 10000 N 5 OUT.json` writes them)",
                    folder.display()
                ));
            }
            for row in &mut flower {
                row.flower_same_session_seconds = same_session.get(&row.clients).copied();
            }
        }
        progress("the QUIC floor under those rounds");
        let (bytes_down, bytes_up) = own_work::message_bytes(&flower::workload_model())?;
        for row in &flower {
            transport_floor.push(transport_floor::measure(
                row.clients,
                flower::ROUNDS,
                bytes_down,
                bytes_up,
            )?);
        }
        progress("mpcl's own work per client-round, stage by stage");
        let models: Vec<(&str, ModelConfig, usize)> = if quick {
            vec![("tiny", flower::workload_model(), 4)]
        } else {
            vec![
                ("tiny", flower::workload_model(), 100),
                ("default", ModelConfig::default(), 50),
            ]
        };
        for (name, model, clients) in &models {
            let mut row = own_work::measure(name, model, *clients, repeats)?;
            // The floor under the Flower rounds already moved this network's messages with
            // this many clients (`message_bytes` sizes them on a one-client round: an update
            // may differ by a byte); other sizes and counts get a floor of their own.
            let measured = flower
                .iter()
                .zip(&transport_floor)
                .find(|(f, _)| f.clients == row.clients && f.parameters == row.parameters)
                .map(|(_, floor)| floor.clone());
            let floor = match measured {
                Some(floor) => floor,
                None => transport_floor::measure(
                    row.clients,
                    flower::ROUNDS,
                    row.start_round_bytes,
                    row.update_bytes,
                )?,
            };
            row.floor_server_cpu_per_client_round = floor.server_cpu_per_client_round;
            own_work.push(row);
        }
        for row in &flower {
            if let Some(ratio) = row.ratio() {
                checks.push(Check {
                    name: format!(
                        "round overhead at most 1/10 of Flower's ({} clients)",
                        row.clients
                    ),
                    passed: ratio <= 0.1,
                    detail: format!(
                        "{:.1} ms vs {:.0} ms ({ratio:.3}x)",
                        row.overhead_seconds * 1e3,
                        row.flower_overhead_seconds.unwrap_or(f64::NAN) * 1e3
                    ),
                });
            }
        }
    }

    let mut memory = Vec::new();
    let mut scale = None;
    match &config.child {
        _ if !runs(Part::Memory) => {}
        None => notes.push(
            "coordinator memory and the many-client simulation were skipped: no child process launcher".into(),
        ),
        Some(launcher) => {
            progress("coordinator peak memory vs clients");
            let (clients, parameters): (&[usize], &[usize]) = if quick {
                (&[10, 100], &[10_000])
            } else {
                (&[10, 100, 1000], &[100_000, 1_000_000])
            };
            for &p in parameters {
                for &n in clients {
                    let mut added = Vec::new();
                    let mut secs = Vec::new();
                    for _ in 0..repeats.min(3) {
                        let result = launcher.run(&ChildTask::CoordinatorRound {
                            clients: n,
                            parameters: p,
                        })?;
                        added.push(result.added_bytes() as f64 / MIB);
                        secs.push(result.seconds);
                    }
                    memory.push(MemoryRow {
                        clients: n,
                        parameters: p,
                        added_mib: stats::median(&added),
                        delta_mib: 4.0 * p as f64 / MIB,
                        seconds: stats::median(&secs),
                    });
                }
                let of = |n: usize| {
                    memory
                        .iter()
                        .find(|m| m.clients == n && m.parameters == p)
                        .map(|m| m.added_mib)
                };
                let (fewest, most) = (clients[0], clients[clients.len() - 1]);
                if let (Some(low), Some(high)) = (of(fewest), of(most)) {
                    checks.push(Check {
                        name: format!(
                            "coordinator memory with {most} clients within 2x of {fewest} clients ({p} parameters)"
                        ),
                        passed: high <= 2.0 * low,
                        detail: format!("{high:.1} MiB vs {low:.1} MiB ({:.2}x)", high / low),
                    });
                }
            }
            progress("many simulated clients in one process");
            let (clients, rounds) = if quick { (20, 1) } else { (1000, 3) };
            let result = launcher.run(&ChildTask::ManyClients { clients, rounds })?;
            scale = Some(ScaleRow {
                clients,
                rounds,
                seconds: result.seconds,
                added_mib: result.added_bytes() as f64 / MIB,
                peak_mib: result.peak_bytes as f64 / MIB,
                final_kl: result.final_kl,
            });
        }
    }

    let mut bytes_setups = Vec::new();
    let mut bytes = Vec::new();
    if runs(Part::Bytes) {
        progress("bytes on the wire with and without compression");
        // The tiny model at the tests' learning rate, the default model at `mpcl simulate`'s (at
        // 1e-2 the default model's run is chaotic: even f16 moves its final KL by 5%).
        let models: Vec<(&str, ModelConfig, usize, u64, u32, f64)> = if quick {
            vec![("tiny", ModelConfig::tiny(), 3, 2, 1, 1e-2)]
        } else {
            vec![
                ("tiny", ModelConfig::tiny(), 8, 10, 2, 1e-2),
                ("default", ModelConfig::default(), 8, 10, 2, 3e-3),
            ]
        };
        for (name, model, subjects, rounds, epochs, lr) in &models {
            let (setup, rows) = bytes::measure(name, model, *subjects, *rounds, *epochs, *lr)?;
            if let Some(int8) = rows.iter().find(|r| r.compression == Compression::Int8) {
                checks.push(Check {
                    name: format!("int8 upload at most 0.3x of dense f32 ({name} model)"),
                    passed: int8.up_ratio <= 0.3,
                    detail: format!("{:.3}x", int8.up_ratio),
                });
                checks.push(Check {
                    name: format!("int8 final KL within 2% of uncompressed ({name} model)"),
                    passed: int8.kl_change_percent.abs() <= 2.0,
                    detail: format!("{:+.3}%", int8.kl_change_percent),
                });
            }
            bytes_setups.push(setup);
            bytes.extend(rows);
        }
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut simulation = Vec::new();
    if runs(Part::Simulation) {
        progress("an in-process simulation on one thread and on every thread");
        let (workload, simulated) = if quick {
            (
                "synthetic, 4 subjects, tiny model, 2 rounds, every arm",
                SimulationConfig {
                    dataset: "synthetic".into(),
                    synthetic: SyntheticConfig {
                        subjects: 4,
                        trials_per_subject: 6,
                        windows_per_trial: 3,
                        ..SyntheticConfig::default()
                    },
                    model: ModelConfig::tiny(),
                    rounds: 2,
                    ..SimulationConfig::default()
                },
            )
        } else {
            (
                "the default `mpcl simulate` (Larwood, 87 clients, 20 rounds, every arm)",
                SimulationConfig::default(),
            )
        };
        let program = config
            .child
            .as_ref()
            .map(|launcher| JobProgram::mpcl(launcher.program.clone()));
        if program.is_none() {
            notes.push(
                "the simulation's jobs ran on threads, not in job processes: no child process launcher".into(),
            );
        }
        let counts: Vec<usize> = if threads > 1 {
            vec![1, threads]
        } else {
            vec![1]
        };
        simulation = simulation::measure(
            workload,
            &simulated,
            &counts,
            program.as_ref(),
            repeats.min(2),
        )?;
        // The quick bench's simulation is too small for its speed-up to mean anything.
        if let ([one, all], false) = (simulation.as_slice(), quick) {
            checks.push(Check {
                name: format!("simulation at least 1.8x faster on {threads} threads than on one"),
                passed: all.speedup >= 1.8,
                detail: format!(
                    "{:.1} s vs {:.1} s ({:.2}x)",
                    all.wall_seconds, one.wall_seconds, all.speedup
                ),
            });
            let cpu_ratio = all.cpu_seconds / one.cpu_seconds;
            checks.push(Check {
                name: format!(
                    "simulation CPU time on {threads} threads within 10% of one thread's"
                ),
                passed: cpu_ratio <= 1.1,
                detail: format!(
                    "{:.1} s vs {:.1} s ({cpu_ratio:.2}x)",
                    all.cpu_seconds, one.cpu_seconds
                ),
            });
        }
    }

    let mut throughput = Vec::new();
    let mut twin = Vec::new();
    if runs(Part::Throughput) {
        progress("local training throughput");
        let (model_name, model, samples) = if quick {
            ("tiny", ModelConfig::tiny(), 64)
        } else {
            ("default", ModelConfig::default(), 512)
        };
        throughput = throughput::measure(
            DeviceChoice::Cpu,
            model_name,
            &model,
            &[32, 128],
            samples,
            repeats,
        )?;
        let gpu = if config.gpu {
            Some(DeviceChoice::Wgpu)
        } else {
            match DeviceChoice::Auto.resolve() {
                Ok(selected) if selected.description.starts_with("wgpu") => {
                    Some(DeviceChoice::Auto)
                }
                _ => None,
            }
        };
        match gpu {
        Some(device) => match throughput::measure(device, model_name, &model, &[32, 128], samples, repeats) {
            Ok(rows) => throughput.extend(rows),
            Err(error) => notes.push(format!("wgpu throughput not measured: {error}")),
        },
        None => notes.push(
            "wgpu throughput not measured: no hardware GPU found (or built without the `wgpu` feature)".into(),
        ),
    }
        if let Some(folder) = &config.twin_results {
            twin = twin::read(folder);
            if twin.is_empty() {
                notes.push(format!(
                "no PyTorch twin results in {} (run its `twin.py bench --out FILE.jsonl` there to compare)",
                folder.display()
            ));
            }
        }
    }

    Ok(BenchReport {
        quick,
        repeats,
        threads,
        build: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
        aggregation,
        overhead,
        flower,
        transport_floor,
        own_work,
        memory,
        bytes_setups,
        bytes,
        simulation,
        throughput,
        twin,
        scale,
        checks,
        notes,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Convenience for callers that write the results: runs, then writes into `out`.
pub fn run_and_write(
    config: &BenchConfig,
    out: &Path,
    progress: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let report = run_bench(config, progress)?;
    write_outputs(&report, out)?;
    Ok(report)
}
