//! An in-process `mpcl simulate` on one thread and on every thread: wall time, CPU time (this
//! process and its job processes) and the speed-up. Jobs run in child processes of the `mpcl`
//! executable when a launcher is given, as `mpcl simulate` runs them; without one they run on
//! threads of this process, which share burn-autodiff's graph registry and gain less.

use mpcl_simulations::job_process::JobProgram;
use mpcl_simulations::simulate::{ExecutionMode, SimulationConfig, run_simulation_with};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::stats::{children_cpu_seconds, median, process_cpu_seconds, seconds};

/// One thread count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulationRow {
    /// What was simulated (dataset, subjects, rounds, arms).
    pub workload: String,
    pub threads: usize,
    /// Whether the jobs ran in child processes.
    pub job_processes: bool,
    /// Median wall time, seconds.
    pub wall_seconds: f64,
    /// Median CPU time of this process and its job processes, seconds.
    pub cpu_seconds: f64,
    /// One thread's median wall time over this one's.
    pub speedup: f64,
}

/// Runs `config` `repeats` times for each of `threads` (the first should be 1: the speed-ups
/// are against it).
pub fn measure(
    workload: &str,
    config: &SimulationConfig,
    threads: &[usize],
    program: Option<&JobProgram>,
    repeats: usize,
) -> Result<Vec<SimulationRow>, BenchError> {
    let mode = match program {
        Some(program) => ExecutionMode::JobProcesses(program.clone()),
        None => ExecutionMode::InProcess,
    };
    let mut rows: Vec<SimulationRow> = Vec::new();
    for &count in threads {
        let config = SimulationConfig {
            threads: Some(count),
            ..config.clone()
        };
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..repeats.max(1) {
            let cpu = process_cpu_seconds() + children_cpu_seconds();
            let (result, wall) = seconds(|| {
                run_simulation_with(&config, &mode, None, false).map_err(|e| e.to_string())
            });
            result.map_err(|message| BenchError::Measure {
                what: format!("simulation on {count} thread(s)"),
                message,
            })?;
            walls.push(wall);
            cpus.push(process_cpu_seconds() + children_cpu_seconds() - cpu);
        }
        let wall_seconds = median(&walls);
        rows.push(SimulationRow {
            workload: workload.to_string(),
            threads: count,
            job_processes: program.is_some() && count > 1,
            wall_seconds,
            cpu_seconds: median(&cpus),
            speedup: rows
                .first()
                .map_or(1.0, |one| one.wall_seconds / wall_seconds),
        });
    }
    Ok(rows)
}
