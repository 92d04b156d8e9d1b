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

    /// Pools `(B, T, D)` tokens by this scale: `ceil(T / s)` tokens (at least one), each the
    /// mean of its adaptive-average-pooling window (`adaptive_avg_pool1d`'s windows, which
    /// overlap when `s` does not divide `T`). Done as one product with the `(ceil(T / s), T)`
    /// matrix of window weights, broadcast over the batch: burn-flex's adaptive pooling kernels
    /// (and the transposes they need) took a tenth of a training step.
    fn pool(&self, tokens: Tensor<3>) -> Tensor<3> {
        let count = tokens.dims()[1];
        let pooled = count.div_ceil(self.scale).max(1);
        if pooled == count {
            return tokens;
        }
        let weights = pooling_weights(count, pooled);
        Tensor::<1>::from_floats(weights.as_slice(), &tokens.device())
            .reshape([1, pooled, count])
            .matmul(tokens)
    }

    /// The token mean of `X'` over all modalities of the group at this scale: `(B, D)`.
    ///
    /// Keys and values are linear in their sources, so they are projected once per scale (the
    /// slots once for the whole batch, each modality's pooled tokens once) rather than
    /// re-projecting the concatenated sources for every query modality. The slots are the same
    /// for every sample, so their scores and their share of the retrieval are plain 2-D
    /// matrix products against the `(S, D)` slot keys and values: broadcasting the slots to
    /// `(B, S, D)` and concatenating them with the other modalities' keys copied them for every
    /// sample, a fifth of a training step's time. The softmax still runs over slots and other
    /// modalities' tokens together. The same maths as one softmax over the concatenation.
    pub(super) fn forward(&self, modality_tokens: &[Tensor<3>], cross_modal: bool) -> Tensor<2> {
        let pooled: Vec<Tensor<3>> = modality_tokens
            .iter()
            .map(|t| self.pool(t.clone()))
            .collect();
        let [slot_count, width] = self.slots.dims();
        let slot_keys = self.key.forward(self.slots.val()).transpose(); // (D, S)
        let slot_values = self.value.forward(self.slots.val()); // (S, D)
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
            let [batch, tokens, _] = queries.dims();
            let others = |projected: &[Tensor<3>]| -> Vec<Tensor<3>> {
                projected
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, t)| t.clone())
                    .collect()
            };
            let (other_keys, other_values) = (others(&keys), others(&values));
            let projected = self.query.forward(queries.clone());
            let slot_scores = projected
                .clone()
                .reshape([batch * tokens, width])
                .matmul(slot_keys.clone())
                .reshape([batch, tokens, slot_count]);
            let association = if other_keys.is_empty() {
                let weights = softmax(slot_scores * beta.clone(), 2);
                weights
                    .reshape([batch * tokens, slot_count])
                    .matmul(slot_values.clone())
                    .reshape([batch, tokens, width])
            } else {
                let cross_scores = projected.matmul(Tensor::cat(other_keys, 1).swap_dims(1, 2)); // (B, T, T_o)
                let weights = softmax(
                    Tensor::cat(vec![slot_scores, cross_scores], 2) * beta.clone(),
                    2,
                );
                let total = weights.dims()[2];
                let from_slots = weights
                    .clone()
                    .narrow(2, 0, slot_count)
                    .reshape([batch * tokens, slot_count])
                    .matmul(slot_values.clone())
                    .reshape([batch, tokens, width]);
                let from_others = weights
                    .narrow(2, slot_count, total - slot_count)
                    .matmul(Tensor::cat(other_values, 1));
                from_slots + from_others
            };
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

/// Row `i` of the `(pooled, count)` matrix that averages adaptive-average-pooling window `i`:
/// tokens `floor(i count / pooled)` to `ceil((i + 1) count / pooled)` (exclusive).
fn pooling_weights(count: usize, pooled: usize) -> Vec<f32> {
    let mut weights = vec![0.0f32; pooled * count];
    for (window, row) in weights.chunks_mut(count).enumerate() {
        let start = window * count / pooled;
        let end = ((window + 1) * count).div_ceil(pooled);
        let share = 1.0 / (end - start) as f32;
        row[start..end].fill(share);
    }
    weights
}

/// The mean over every token of every modality: `(B, D)` from `(B, T_m, D)` tensors.
pub fn token_mean(modality_tokens: &[Tensor<3>]) -> Tensor<2> {
    Tensor::cat(modality_tokens.to_vec(), 1)
        .mean_dim(1)
        .squeeze_dim::<2>(1)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use burn::tensor::module::adaptive_avg_pool1d;

    use super::*;
    use crate::network::prototypes::tensor_to_vec;

    /// `R = softmax(beta q(X) k([Xi; others])^T) v([Xi; others])` written out as DESIGN §3.2
    /// states it: the slots broadcast to every sample and concatenated with the other
    /// modalities' pooled tokens, one softmax over the concatenation.
    fn by_the_definition(memory: &ScaleMemory, tokens: &[Tensor<3>]) -> Tensor<2> {
        let pooled: Vec<Tensor<3>> = tokens
            .iter()
            .map(|t| {
                let count = t.dims()[1];
                let pooled = count.div_ceil(memory.scale);
                adaptive_avg_pool1d(t.clone().swap_dims(1, 2), pooled).swap_dims(1, 2)
            })
            .collect();
        let batch = pooled[0].dims()[0];
        let [slots, width] = memory.slots.dims();
        let beta = memory
            .log_inverse_temperature
            .val()
            .exp()
            .reshape([1, 1, 1]);
        let mut retrieved = Vec::new();
        for (index, queries) in pooled.iter().enumerate() {
            let mut sources = vec![
                memory
                    .slots
                    .val()
                    .unsqueeze_dim::<3>(0)
                    .expand([batch, slots, width]),
            ];
            sources.extend(
                pooled
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, t)| t.clone()),
            );
            let sources = Tensor::cat(sources, 1);
            let scores = memory
                .query
                .forward(queries.clone())
                .matmul(memory.key.forward(sources.clone()).swap_dims(1, 2))
                * beta.clone();
            let association = softmax(scores, 2).matmul(memory.value.forward(sources));
            retrieved.push(memory.norm.forward(queries.clone() + association));
        }
        Tensor::cat(retrieved, 1).mean_dim(1).squeeze_dim::<2>(1)
    }

    #[test]
    fn retrieval_is_one_softmax_over_the_slots_and_the_other_modalities() {
        let device = Device::flex();
        let (retrieved, defined) = crate::model::seeded_initialisation(|| {
            device.seed(3);
            let tokens: Vec<Tensor<3>> = [3, 2, 18]
                .iter()
                .map(|&count| {
                    Tensor::random([4, count, 8], Distribution::Normal(0.0, 1.0), &device)
                })
                .collect();
            let mut pairs = Vec::new();
            for scale in [1, 2, 4] {
                let memory = ScaleMemory::new(scale, 3, 8, &device);
                for (modalities, cross_modal) in [
                    (&tokens[..], true),
                    (&tokens[..1], true),
                    (&tokens[..], false),
                ] {
                    let retrieved = memory.forward(modalities, cross_modal);
                    let defined = if cross_modal {
                        by_the_definition(&memory, modalities)
                    } else {
                        // Without cross-modal association each modality sees the slots alone.
                        let each: Vec<Tensor<2>> = modalities
                            .iter()
                            .map(|m| {
                                let count = memory.pool(m.clone()).dims()[1] as f64;
                                by_the_definition(&memory, std::slice::from_ref(m)) * count
                            })
                            .collect();
                        let total: usize = modalities
                            .iter()
                            .map(|m| memory.pool(m.clone()).dims()[1])
                            .sum();
                        each.into_iter().reduce(|a, b| a + b).unwrap() / total as f64
                    };
                    pairs.push((tensor_to_vec(retrieved), tensor_to_vec(defined)));
                }
            }
            pairs.into_iter().unzip::<_, _, Vec<_>, Vec<_>>()
        });
        for (case, (a, b)) in retrieved.iter().zip(&defined).enumerate() {
            assert_eq!(a.len(), 4 * 8);
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "case {case}: differs by {worst}");
        }
    }
}
