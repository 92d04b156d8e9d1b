//! Looking at wgpu's adapters before choosing one, so `--device auto` never picks a software
//! rasteriser (llvmpipe, lavapipe, SwiftShader run training 7-30x slower than the CPU backend).

use burn::tensor::DeviceKind;
use wgpu::{Backends, DeviceType, Instance, InstanceDescriptor};

fn adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = Instance::new(InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(Backends::all()))
        .into_iter()
        .map(|adapter| adapter.get_info())
        .collect()
}

/// The first hardware GPU wgpu can see, as a burn device kind (discrete preferred).
pub fn hardware_adapter() -> Option<DeviceKind> {
    let infos = adapters();
    if infos
        .iter()
        .any(|info| info.device_type == DeviceType::DiscreteGpu)
    {
        return Some(DeviceKind::DiscreteGpu(0));
    }
    if infos
        .iter()
        .any(|info| info.device_type == DeviceType::IntegratedGpu)
    {
        return Some(DeviceKind::IntegratedGpu(0));
    }
    None
}

/// A one-line description of the adapters wgpu sees, for logs.
pub fn describe_default_adapter() -> String {
    let infos = adapters();
    if infos.is_empty() {
        return "no adapter found".to_string();
    }
    infos
        .iter()
        .map(|info| format!("{} [{:?}, {:?}]", info.name, info.device_type, info.backend))
        .collect::<Vec<_>>()
        .join("; ")
}
