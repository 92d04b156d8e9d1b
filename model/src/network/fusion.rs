//! Multi-scale associative memory fusion (DESIGN §3.2).
//!
//! Per modality group and per scale s, each modality's tokens are average-pooled by s and used as
//! queries into a modern-Hopfield associative memory: `R = softmax(beta_s q(X) k(Xi_s)^T) v(Xi_s)`
//! with learned slots `Xi_s` and a learned inverse temperature `beta_s`. The keys and values also
//! hold the pooled tokens of the *other* modalities of the group, which is the cross-modal
//! association. `X' = LayerNorm(X + R)`; the group representation is a learned softmax-weighted sum
//! over scales of the token mean of `X'`.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::adaptive_avg_pool1d;
use burn::tensor::{Device, Tensor};

/// Retrieval from the associative memory of one scale.
#[derive(Module, Debug)]
pub struct ScaleMemory {
    scale: usize,
    /// Learned memory slots `Xi_s`: `S x D`.
    slots: Param<Tensor<2>>,
    query: Linear,
    key: Linear,
    value: Linear,
    /// ln(beta_s): the inverse temperature is kept positive by learning its logarithm.
    log_inverse_temperature: Param<Tensor<1>>,
    norm: LayerNorm,
}

impl ScaleMemory {
    fn new(scale: usize, slots: usize, width: usize, device: &Device) -> Self {
        let projection = || {
            LinearConfig::new(width, width)
                .with_bias(false)
                .init(device)
        };
        Self {
            scale,
            slots: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([slots, width], device),
            query: projection(),
            key: projection(),
            value: projection(),
            log_inverse_temperature: Initializer::Constant {
                value: -(width as f64).sqrt().ln(),
            }
            .init([1], device),
            norm: LayerNormConfig::new(width).init(device),
        }
    }

    /// Pools `(B, T, D)` tokens by this scale: `ceil(T / s)` tokens (at least one).
    fn pool(&self, tokens: Tensor<3>) -> Tensor<3> {
        let count = tokens.dims()[1];
        let pooled = count.div_ceil(self.scale).max(1);
        if pooled == count {
            return tokens;
        }
        adaptive_avg_pool1d(tokens.swap_dims(1, 2), pooled).swap_dims(1, 2)
    }

    /// The token mean of `X'` over all modalities of the group at this scale: `(B, D)`.
    ///
    /// Keys and values are linear in their sources, so they are projected once per scale (the
    /// slots once for the whole batch, each modality's pooled tokens once) and concatenated per
    /// query modality, rather than re-projecting the concatenated sources for every query
    /// modality: the same maths with a fraction of the multiplications.
    pub(super) fn forward(&self, modality_tokens: &[Tensor<3>], cross_modal: bool) -> Tensor<2> {
        let pooled: Vec<Tensor<3>> = modality_tokens
            .iter()
            .map(|t| self.pool(t.clone()))
            .collect();
        let batch = pooled[0].dims()[0];
        let [slot_count, width] = self.slots.dims();
        let broadcast = |t: Tensor<2>| t.unsqueeze_dim::<3>(0).expand([batch, slot_count, width]);
        let slot_keys = broadcast(self.key.forward(self.slots.val()));
        let slot_values = broadcast(self.value.forward(self.slots.val()));
        let (keys, values): (Vec<Tensor<3>>, Vec<Tensor<3>>) = if cross_modal && pooled.len() > 1 {
            pooled
                .iter()
                .map(|t| (self.key.forward(t.clone()), self.value.forward(t.clone())))
                .unzip()
        } else {
            (Vec::new(), Vec::new())
        };
        let beta = self.log_inverse_temperature.val().exp().reshape([1, 1, 1]);
        let mut retrieved = Vec::with_capacity(pooled.len());
        for (index, queries) in pooled.iter().enumerate() {
            let others = |projected: &[Tensor<3>]| -> Vec<Tensor<3>> {
                projected
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, t)| t.clone())
                    .collect()
            };
            let mut key_sources = vec![slot_keys.clone()];
            key_sources.extend(others(&keys));
            let mut value_sources = vec![slot_values.clone()];
            value_sources.extend(others(&values));
            let scores = self
                .query
                .forward(queries.clone())
                .matmul(Tensor::cat(key_sources, 1).swap_dims(1, 2))
                * beta.clone();
            let association = softmax(scores, 2).matmul(Tensor::cat(value_sources, 1));
            retrieved.push(self.norm.forward(queries.clone() + association));
        }
        Tensor::cat(retrieved, 1).mean_dim(1).squeeze_dim::<2>(1)
    }
}

/// The fusion module of one modality group.
#[derive(Module, Debug)]
pub struct GroupFusion {
    pub(super) scales: Vec<ScaleMemory>,
    /// Logits of the softmax weights over scales.
    scale_logits: Param<Tensor<1>>,
}

impl GroupFusion {
    /// A fusion module with one associative memory per scale.
    pub fn new(scales: &[usize], slots: usize, width: usize, device: &Device) -> Self {
        Self {
            scales: scales
                .iter()
                .map(|s| ScaleMemory::new(*s, slots, width, device))
                .collect(),
            scale_logits: Initializer::Zeros.init([scales.len()], device),
        }
    }

    /// The group representation `z_g`: `(B, D)` from the group's encoded modality tokens.
    /// `memory_fusion` off (ablation): the mean of all tokens of the group. `cross_modal` off
    /// (ablation): each modality's queries retrieve from the learned slots only.
    pub fn forward(
        &self,
        modality_tokens: &[Tensor<3>],
        memory_fusion: bool,
        cross_modal: bool,
    ) -> Tensor<2> {
        if !memory_fusion {
            return token_mean(modality_tokens);
        }
        let per_scale: Vec<Tensor<2>> = self
            .scales
            .iter()
            .map(|scale| scale.forward(modality_tokens, cross_modal))
            .collect();
        let stacked = Tensor::stack::<3>(per_scale, 1); // (B, scales, D)
        let weights = softmax(self.scale_logits.val(), 0).reshape([1, self.scales.len(), 1]);
        (stacked * weights).sum_dim(1).squeeze_dim::<2>(1)
    }
}

/// The mean over every token of every modality: `(B, D)` from `(B, T_m, D)` tensors.
pub fn token_mean(modality_tokens: &[Tensor<3>]) -> Tensor<2> {
    Tensor::cat(modality_tokens.to_vec(), 1)
        .mean_dim(1)
        .squeeze_dim::<2>(1)
}
