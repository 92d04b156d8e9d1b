//! Local training throughput of the MPCL network: samples per second of `train` (forward,
//! backward, Adam step, prototype-bank update) on synthetic data in the DMER layout, per device
//! and batch size. The first epoch of each configuration is a warm-up and is not counted (it
//! allocates, and on wgpu compiles and autotunes kernels). Samples per CPU-second divide by the
//! process's CPU time over the epoch (every thread: burn's own worker threads count), the
//! figure the PyTorch twin of the network reports too ([`crate::twin`]).

use mpcl_data::ModelConfig;
use mpcl_data::Standardizer;
use mpcl_model::{DeviceChoice, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_simulations::synthetic::{SyntheticConfig, generate};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::stats::{median, process_cpu_seconds, seconds};

/// One (device, batch size) configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// The device as resolved (for example `cpu (burn flex)`).
    pub device: String,
    pub model: String,
    pub parameters: usize,
    pub batch_size: usize,
    pub samples: usize,
    /// Median samples per second over the timed epochs.
    pub samples_per_second: f64,
    /// Every timed epoch, samples per second.
    pub runs: Vec<f64>,
    /// Median samples per CPU-second of the process over the timed epochs.
    #[serde(default)]
    pub samples_per_cpu_second: f64,
    /// Every timed epoch, samples per CPU-second.
    #[serde(default)]
    pub cpu_runs: Vec<f64>,
}

/// Measures `batch_sizes` on `device` with `samples` training samples, `repeats` timed epochs
/// each.
pub fn measure(
    device: DeviceChoice,
    model_name: &str,
    model_config: &ModelConfig,
    batch_sizes: &[usize],
    samples: usize,
    repeats: usize,
) -> Result<Vec<ThroughputRow>, BenchError> {
    let selected = device
        .resolve()
        .map_err(|e| BenchError::setup("device", e))?;
    let windows = 4;
    let subjects = 4;
    let data = generate(&SyntheticConfig {
        seed: 13,
        subjects,
        trials_per_subject: samples.div_ceil(subjects * windows),
        windows_per_trial: windows,
        ..SyntheticConfig::default()
    });
    let standardizer = Standardizer::fit(&data);
    let tensors = TensorDataset::new(&data, &standardizer, &selected.device);
    let mut rows = Vec::new();
    for &batch_size in batch_sizes {
        let mut model = MpclModel::new(&data.schema, model_config, &selected.device, 1)
            .map_err(|e| BenchError::setup("model", e))?;
        let parameters = model.parameters().value_count();
        let options = |seed| TrainOptions {
            epochs: 1,
            batch_size,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            seed,
            proximal_mu: 0.0,
            progress: false,
        };
        train(&mut model, &tensors, &options(0), None);
        let (runs, cpu_runs): (Vec<f64>, Vec<f64>) = (0..repeats)
            .map(|i| {
                let cpu = process_cpu_seconds();
                let (_, secs) =
                    seconds(|| train(&mut model, &tensors, &options(i as u64 + 1), None));
                let cpu = process_cpu_seconds() - cpu;
                (tensors.len() as f64 / secs, tensors.len() as f64 / cpu)
            })
            .unzip();
        rows.push(ThroughputRow {
            device: selected.description.clone(),
            model: model_name.to_string(),
            parameters,
            batch_size,
            samples: tensors.len(),
            samples_per_second: median(&runs),
            runs,
            samples_per_cpu_second: median(&cpu_runs),
            cpu_runs,
        });
    }
    Ok(rows)
}
