//! The wgpu backend trains the same network as the CPU: starting from identical parameters and
//! memories, a few training steps on each give losses that agree within a tolerance (GPU
//! reductions sum in a different order, so bit equality is not expected).
//!
//! Built only with `--features wgpu`; in CI it runs on Mesa's software Vulkan (lavapipe), which
//! is slow, so it takes a handful of steps on a tiny model.
#![cfg(feature = "wgpu")]

use anyhow::Result;
use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema, Standardizer};
use mpcl_model::{Device, DeviceChoice, MpclModel, TensorDataset, TrainOptions, train};

fn dataset() -> Dataset {
    let schema = Schema {
        emotions: vec!["a".into(), "b".into(), "c".into()],
        modalities: vec![
            Modality::new("phys", ModalityGroup::Physiological, 4, 3),
            Modality::new("face", ModalityGroup::Behavioral, 2, 4),
        ],
    };
    let samples = (0..24)
        .map(|i| {
            let t = i as f32 / 24.0;
            let label = if i % 3 == 0 {
                vec![0.7, 0.3, 0.0]
            } else {
                vec![0.1, 0.2, 0.7]
            };
            Sample {
                features: schema
                    .modalities
                    .iter()
                    .map(|m| {
                        (0..m.width())
                            .map(|j| (t * (j as f32 + 1.0)).sin() + label[0])
                            .collect()
                    })
                    .collect(),
                label,
                subject: "s".into(),
                trial: i,
                time: 0,
                stimulus: None,
            }
        })
        .collect();
    Dataset {
        name: "wgpu-check".into(),
        schema,
        samples,
    }
}

fn losses_on(device: &Device, initial: &mpcl_protocol::messages::GlobalState) -> Result<Vec<f64>> {
    let data = dataset();
    let mut model = MpclModel::new(&data.schema, &ModelConfig::tiny(), device, 0)?;
    model.load_global_state(initial)?;
    let tensors = TensorDataset::new(&data, &Standardizer::fit(&data), model.device());
    let report = train(
        &mut model,
        &tensors,
        &TrainOptions {
            epochs: 3,
            batch_size: 8,
            learning_rate: 1e-2,
            seed: 4,
            ..TrainOptions::default()
        },
        None,
    );
    Ok(report.epoch_losses)
}

#[test]
fn wgpu_training_agrees_with_the_cpu() -> Result<()> {
    let data = dataset();
    // Initialise once on the CPU and give both backends the same starting point.
    let initial =
        MpclModel::new(&data.schema, &ModelConfig::tiny(), &Device::flex(), 9)?.global_state();
    let cpu = losses_on(&Device::flex(), &initial)?;
    let gpu = DeviceChoice::Wgpu.resolve()?;
    eprintln!("wgpu adapter: {}", gpu.description);
    let wgpu = losses_on(&gpu.device, &initial)?;
    for (epoch, (c, g)) in cpu.iter().zip(&wgpu).enumerate() {
        let tolerance = 1e-3 * c.abs().max(1.0);
        assert!(
            (c - g).abs() < tolerance,
            "epoch {epoch}: cpu loss {c}, wgpu loss {g}"
        );
    }
    Ok(())
}
