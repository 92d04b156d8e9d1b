//! Choosing where tensors live: `cpu` (burn's pure-Rust `flex` backend, always available),
//! `wgpu` (a GPU through wgpu, with the `wgpu` cargo feature), or `auto` (wgpu only if the
//! feature is built in and the adapter is a real GPU, never a software rasteriser).

use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The device choice of a command line or config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// wgpu (Vulkan, Metal, DX12 or OpenGL), whatever adapter wgpu picks, software or not.
    Wgpu,
    /// wgpu if a hardware GPU is present, otherwise the CPU.
    Auto,
}

/// A device that cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum DeviceError {
    #[error("unknown device `{0}` (expected cpu, wgpu or auto)")]
    Unknown(String),
    #[error("this build of mpcl has no GPU support; rebuild with `--features wgpu`")]
    WgpuNotBuilt,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "auto" => Ok(Self::Auto),
            other => Err(DeviceError::Unknown(other.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Auto => "auto",
        })
    }
}

/// A resolved device and a description for logs.
#[derive(Clone, Debug)]
pub struct SelectedDevice {
    pub device: Device,
    pub description: String,
}

impl DeviceChoice {
    /// Resolves the choice to a device (without autodiff).
    pub fn resolve(self) -> Result<SelectedDevice, DeviceError> {
        match self {
            Self::Cpu => Ok(cpu()),
            Self::Wgpu => wgpu_device(),
            Self::Auto => Ok(hardware_gpu().unwrap_or_else(cpu)),
        }
    }
}

fn cpu() -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        description: "cpu (burn flex)".to_string(),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<SelectedDevice, DeviceError> {
    Ok(SelectedDevice {
        device: Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        description: format!("wgpu ({})", adapter_description()),
    })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<SelectedDevice, DeviceError> {
    Err(DeviceError::WgpuNotBuilt)
}

/// A wgpu device if wgpu finds a discrete or integrated GPU; `None` for software adapters
/// (llvmpipe, lavapipe, SwiftShader) or builds without the feature.
#[cfg(feature = "wgpu")]
fn hardware_gpu() -> Option<SelectedDevice> {
    hardware_adapter_kind().map(|kind| SelectedDevice {
        device: Device::wgpu(kind),
        description: format!("wgpu ({})", adapter_description()),
    })
}

#[cfg(not(feature = "wgpu"))]
fn hardware_gpu() -> Option<SelectedDevice> {
    None
}

#[cfg(feature = "wgpu")]
fn hardware_adapter_kind() -> Option<burn::tensor::DeviceKind> {
    crate::gpu_probe::hardware_adapter()
}

#[cfg(feature = "wgpu")]
fn adapter_description() -> String {
    crate::gpu_probe::describe_default_adapter()
}
