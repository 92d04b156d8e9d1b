//! Emotion-specific prototype memory banks (DESIGN §3.3).
//!
//! A bank `P_g` (`C x K x D`) per modality group holds K prototypes per emotion. Prototypes are
//! memories, not gradient parameters: they move toward the label- and assignment-weighted mean of
//! the representations that match them, `S / W`, with momentum. `(S, W)` are additive, which is
//! what lets the coordinator build a global bank as `sum S / sum W` without seeing a sample.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use mpcl_protocol::{F32Vec, PrototypeStatistics};

use mpcl_data::ModalityGroup;

/// Smallest norm used when normalising vectors for cosine similarity.
const NORM_EPSILON: f32 = 1e-6;
/// Prototypes whose accumulated weight is below this keep their previous value.
pub const MIN_PROTOTYPE_WEIGHT: f32 = 1e-6;

/// The prototype bank of one modality group.
#[derive(Clone, Debug)]
pub struct PrototypeBank {
    pub group: ModalityGroup,
    /// `C x K x D`.
    pub values: Tensor<3>,
}

/// `(S, W)` of one batch or pass, still as tensors.
#[derive(Clone, Debug)]
pub struct BankStatistics {
    /// `C x K x D`: `sum_i d_i[c] a_i[c,k] z_i`.
    pub sum: Tensor<3>,
    /// `C x K`: `sum_i d_i[c] a_i[c,k]`.
    pub weight: Tensor<2>,
}

impl PrototypeBank {
    /// A bank of random unit-scale prototypes (the run's initial global bank).
    pub fn random(
        group: ModalityGroup,
        emotions: usize,
        prototypes: usize,
        width: usize,
        device: &Device,
    ) -> Self {
        Self {
            group,
            values: Tensor::random(
                [emotions, prototypes, width],
                Distribution::Normal(0.0, 1.0),
                device,
            ),
        }
    }

    /// `(C, K, D)`.
    pub fn dims(&self) -> [usize; 3] {
        self.values.dims()
    }

    /// Cosine similarity of every representation with every prototype: `(B, C, K)`.
    pub fn cosine(&self, z: Tensor<2>) -> Tensor<3> {
        let [emotions, prototypes, width] = self.dims();
        let batch = z.dims()[0];
        let z = normalize_rows(z);
        let bank = normalize_rows(self.values.clone().reshape([emotions * prototypes, width]));
        z.matmul(bank.transpose())
            .reshape([batch, emotions, prototypes])
    }

    /// Soft assignment to the prototypes of each emotion, `softmax_k(cos / tau)`: `(B, C, K)`.
    pub fn assignment(cosine: Tensor<3>, temperature: f64) -> Tensor<3> {
        softmax(cosine / temperature, 2)
    }

    /// Statistics of a batch: `z` (B, D) representations, `labels` (B, C), `assignment` (B, C, K).
    /// Everything is detached: statistics never carry gradients.
    pub fn statistics(z: Tensor<2>, labels: Tensor<2>, assignment: Tensor<3>) -> BankStatistics {
        let [batch, emotions, prototypes] = assignment.dims();
        let weights = labels.detach().unsqueeze_dim::<3>(2) * assignment.detach(); // (B, C, K)
        let weight = weights.clone().sum_dim(0).reshape([emotions, prototypes]);
        let width = z.dims()[1];
        let sum = weights
            .reshape([batch, emotions * prototypes])
            .transpose()
            .matmul(z.detach())
            .reshape([emotions, prototypes, width]);
        BankStatistics { sum, weight }
    }

    /// Moves each prototype toward `S / W` with momentum `m`; prototypes with no weight stay.
    pub fn update(&mut self, statistics: &BankStatistics, momentum: f64) {
        let [emotions, prototypes, _] = self.dims();
        let weight = statistics.weight.clone().reshape([emotions, prototypes, 1]);
        let has_weight = weight.clone().greater_elem(MIN_PROTOTYPE_WEIGHT);
        let target = statistics.sum.clone() / weight.clamp_min(MIN_PROTOTYPE_WEIGHT);
        let moved = self.values.clone() * momentum + target * (1.0 - momentum);
        let has_weight = has_weight.expand(self.values.dims());
        self.values = self.values.clone().mask_where(has_weight, moved).detach();
    }

    /// The bank as a flat row-major vector.
    pub fn to_vec(&self) -> Vec<f32> {
        tensor_to_vec(self.values.clone())
    }

    /// A bank from a flat row-major vector.
    pub fn from_vec(
        group: ModalityGroup,
        dims: [usize; 3],
        values: Vec<f32>,
        device: &Device,
    ) -> Self {
        Self {
            group,
            values: Tensor::from_data(TensorData::new(values, dims), device),
        }
    }
}

impl BankStatistics {
    /// Zero statistics for a bank of the given shape.
    pub fn zeros(dims: [usize; 3], device: &Device) -> Self {
        Self {
            sum: Tensor::zeros(dims, device),
            weight: Tensor::zeros([dims[0], dims[1]], device),
        }
    }

    /// Adds another batch's statistics.
    pub fn add(&mut self, other: BankStatistics) {
        self.sum = self.sum.clone() + other.sum;
        self.weight = self.weight.clone() + other.weight;
    }

    /// The plain-data form a client sends.
    pub fn to_protocol(&self, group: ModalityGroup) -> PrototypeStatistics {
        let [emotions, prototypes, width] = self.sum.dims();
        PrototypeStatistics {
            group: group.name().to_string(),
            emotions,
            prototypes,
            width,
            sum: F32Vec(tensor_to_vec(self.sum.clone())),
            weight: F32Vec(tensor_to_vec(self.weight.clone())),
        }
    }

    /// Tensors from the plain-data form.
    pub fn from_protocol(statistics: &PrototypeStatistics, device: &Device) -> Self {
        let (c, k, d) = (statistics.emotions, statistics.prototypes, statistics.width);
        Self {
            sum: Tensor::from_data(TensorData::new(statistics.sum.0.clone(), [c, k, d]), device),
            weight: Tensor::from_data(TensorData::new(statistics.weight.0.clone(), [c, k]), device),
        }
    }
}

/// Rows scaled to unit length (rows of zeros stay zero).
pub fn normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(NORM_EPSILON);
    x / norm
}

/// Reads a tensor back to the host as `f32` values in row-major order.
pub fn tensor_to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("a float tensor always converts to f32")
}

/// Mean cosine similarity between prototypes of *different* emotions over every bank of
/// `banks`: near 1 means the banks collapsed (every emotion's prototypes point the same way and
/// the read-out cannot tell emotions apart); `None` without banks or with a single emotion.
pub fn cross_emotion_cosine(banks: &[mpcl_protocol::messages::PrototypeBank]) -> Option<f64> {
    let (mut sum, mut pairs) = (0.0f64, 0usize);
    for bank in banks {
        let width = bank.width;
        let unit: Vec<Vec<f64>> = bank
            .values
            .0
            .chunks(width.max(1))
            .map(|v| {
                let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                v.iter().map(|x| f64::from(*x) / norm.max(1e-12)).collect()
            })
            .collect();
        let emotion_of = |index: usize| index / bank.prototypes.max(1);
        for a in 0..unit.len() {
            for b in (a + 1)..unit.len() {
                if emotion_of(a) != emotion_of(b) {
                    sum += unit[a]
                        .iter()
                        .zip(&unit[b])
                        .map(|(x, y)| x * y)
                        .sum::<f64>();
                    pairs += 1;
                }
            }
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

#[cfg(test)]
mod collapse_tests {
    use super::*;
    use mpcl_protocol::F32Vec;
    use mpcl_protocol::messages::PrototypeBank as WireBank;

    #[test]
    fn collapsed_banks_score_one_and_orthogonal_ones_zero() {
        let bank = |values: Vec<f32>| WireBank {
            group: "physiological".into(),
            emotions: 2,
            prototypes: 2,
            width: 2,
            values: F32Vec(values),
        };
        let collapsed = bank(vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 0.5, 0.5]);
        assert!((cross_emotion_cosine(&[collapsed]).unwrap() - 1.0).abs() < 1e-9);
        // Emotion 0 along x, emotion 1 along y.
        let apart = bank(vec![1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 3.0]);
        assert!(cross_emotion_cosine(&[apart]).unwrap().abs() < 1e-9);
        assert!(cross_emotion_cosine(&[]).is_none());
    }
}
