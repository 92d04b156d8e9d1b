//! The MPCL network (multi-scale associative memory fusion, emotion-specific prototype memory
//! banks, prototype relation distillation, co-occurrence memory retrieval, hierarchical head),
//! its losses and metrics, the local training loop, the conversion of parameters and memories to
//! the plain vectors the federation exchanges, and the model file. The dataset schema, its readers
//! and the [`mpcl_data::ModelConfig`] live in `mpcl-data`, which needs no tensor library.
//!
//! Everything numeric is written against burn's run-time `Device`, so the same code trains on the
//! CPU (`flex`) and, with the `wgpu` feature, on a GPU.

pub mod device;
#[cfg(feature = "wgpu")]
mod gpu_probe;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod network;
pub mod parameters;
pub mod personalize;
pub mod pool;
pub mod tensors;
pub mod train;

/// The device type, re-exported so that other crates need not depend on burn.
pub use burn::tensor::Device;
pub use device::{DeviceChoice, DeviceError, SelectedDevice};
pub use metrics::DistributionMetrics;
pub use model::{ModelError, MpclModel};
pub use personalize::{PersonalizeOptions, PersonalizeReport, PersonalizeScope, personalize};
pub use pool::ModelPool;
pub use tensors::TensorDataset;
pub use train::{TrainOptions, TrainReport, train, train_observed};
