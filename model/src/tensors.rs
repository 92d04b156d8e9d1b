//! A dataset turned into device tensors once (standardised, cut into tokens), so that training
//! only selects rows per batch instead of rebuilding tensors from host vectors every step.

use burn::tensor::{Device, Int, Tensor, TensorData};

use mpcl_data::{Dataset, Standardizer};

/// Standardised, tokenised samples on a device.
#[derive(Clone, Debug)]
pub struct TensorDataset {
    /// One `(N, T_m, w_m)` tensor per modality.
    inputs: Vec<Tensor<3>>,
    /// `(N, C)`.
    labels: Tensor<2>,
    /// The labels on the host, for metrics.
    host_labels: Vec<Vec<f32>>,
    device: Device,
}

impl TensorDataset {
    /// Standardises `dataset` with `standardizer` and uploads it to `device`.
    pub fn new(dataset: &Dataset, standardizer: &Standardizer, device: &Device) -> Self {
        let n = dataset.samples.len();
        let inputs = dataset
            .schema
            .modalities
            .iter()
            .enumerate()
            .map(|(m, modality)| {
                let mut values = Vec::with_capacity(n * modality.width());
                for sample in &dataset.samples {
                    values.extend(standardizer.apply(m, &sample.features[m]));
                }
                Tensor::from_data(
                    TensorData::new(values, [n, modality.token_count, modality.token_width]),
                    device,
                )
            })
            .collect();
        let c = dataset.schema.emotion_count();
        let host_labels: Vec<Vec<f32>> = dataset.samples.iter().map(|s| s.label.clone()).collect();
        let labels = Tensor::from_data(TensorData::new(host_labels.concat(), [n, c]), device);
        Self {
            inputs,
            labels,
            host_labels,
            device: device.clone(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }

    /// Label distributions on the host.
    pub fn host_labels(&self) -> &[Vec<f32>] {
        &self.host_labels
    }

    /// The rows at `indices`: per-modality tokens and labels.
    pub fn batch(&self, indices: &[usize]) -> (Vec<Tensor<3>>, Tensor<2>) {
        let index: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let index =
            Tensor::<1, Int>::from_data(TensorData::new(index, [indices.len()]), &self.device);
        (
            self.inputs
                .iter()
                .map(|t| t.clone().select(0, index.clone()))
                .collect(),
            self.labels.clone().select(0, index),
        )
    }
}
