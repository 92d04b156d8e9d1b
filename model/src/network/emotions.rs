//! Memory retrieval of co-occurrence and the hierarchical head (DESIGN §3.5-3.6).
//!
//! Emotion embeddings `V` (one per emotion, read out of the prototype banks with the sample's
//! soft assignment) attend to each other Hopfield-style, biased by `gamma ln(M + eps)` where `M`
//! is the co-occurrence memory: emotions that co-occur reinforce each other, emotions that never
//! co-occur are damped. The head then scores each emotion from `[O[c]; z]` and a softmax gives
//! the predicted distribution.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor};

/// Hopfield retrieval among emotion embeddings, biased by the co-occurrence memory.
#[derive(Module, Debug)]
pub struct EmotionRetrieval {
    query: Linear,
    key: Linear,
    value: Linear,
    /// ln(beta): inverse temperature of the retrieval.
    log_inverse_temperature: Param<Tensor<1>>,
    /// gamma: strength of the co-occurrence bias.
    cooccurrence_strength: Param<Tensor<1>>,
    norm: LayerNorm,
    /// Learned emotion embeddings `C x D`, used instead of the prototype read-out when the
    /// prototype banks are switched off (ablation).
    emotion_embeddings: Param<Tensor<2>>,
}

impl EmotionRetrieval {
    /// Retrieval for `emotions` emotions of width `width`.
    pub fn new(emotions: usize, width: usize, device: &Device) -> Self {
        let projection = || {
            LinearConfig::new(width, width)
                .with_bias(false)
                .init(device)
        };
        Self {
            query: projection(),
            key: projection(),
            value: projection(),
            log_inverse_temperature: Initializer::Zeros.init([1], device),
            cooccurrence_strength: Initializer::Ones.init([1], device),
            norm: LayerNormConfig::new(width).init(device),
            emotion_embeddings: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([emotions, width], device),
        }
    }

    /// The learned emotion embeddings broadcast to a batch: `(B, C, D)`.
    pub fn learned_embeddings(&self, batch: usize) -> Tensor<3> {
        let [emotions, width] = self.emotion_embeddings.dims();
        self.emotion_embeddings
            .val()
            .unsqueeze_dim::<3>(0)
            .expand([batch, emotions, width])
    }

    /// `O = LayerNorm(V + softmax(beta q(V) k(V)^T / sqrt(D) + gamma ln(M + eps)) v(V))`.
    /// `log_memory` is `ln(M + eps)` (`C x C`), or `None` for unbiased retrieval.
    pub fn forward(&self, embeddings: Tensor<3>, log_memory: Option<Tensor<2>>) -> Tensor<3> {
        let width = embeddings.dims()[2];
        let beta = self.log_inverse_temperature.val().exp().reshape([1, 1, 1]);
        let mut scores = self
            .query
            .forward(embeddings.clone())
            .matmul(self.key.forward(embeddings.clone()).swap_dims(1, 2))
            * beta
            / (width as f64).sqrt();
        if let Some(log_memory) = log_memory {
            let gamma = self.cooccurrence_strength.val().reshape([1, 1, 1]);
            scores = scores + log_memory.unsqueeze_dim::<3>(0) * gamma;
        }
        let retrieved = softmax(scores, 2).matmul(self.value.forward(embeddings.clone()));
        self.norm.forward(embeddings + retrieved)
    }
}

/// The hierarchical head: `logit_c = w_c^T [O[c]; z] + b_c`.
///
/// The weights are emotion-specific. With one `w` shared by all emotions, the `w^T z` part would
/// be the same for every emotion and cancel in the softmax, leaving `z` no direct influence on
/// the distribution; `w_c` lets each emotion read the representation in its own way while `O[c]`
/// carries the prototype- and co-occurrence-level evidence.
#[derive(Module, Debug)]
pub struct DistributionHead {
    /// `C x 2D`.
    pub(super) emotion_weights: Param<Tensor<2>>,
    emotion_bias: Param<Tensor<1>>,
}

impl DistributionHead {
    /// A head for `emotions` emotions of width `width`.
    pub fn new(emotions: usize, width: usize, device: &Device) -> Self {
        let bound = 1.0 / ((2 * width) as f64).sqrt();
        Self {
            emotion_weights: Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([emotions, 2 * width], device),
            emotion_bias: Initializer::Zeros.init([emotions], device),
        }
    }

    /// A head that predicts `prior` whatever its input: zero weights and `b_c = ln(prior_c)`
    /// (floored at 1e-6), so that an untrained network starts at the label prior and training
    /// only has to learn what the signals add to it.
    pub fn at_prior(&self, prior: &[f32]) -> Self {
        let [emotions, features] = self.emotion_weights.dims();
        assert_eq!(prior.len(), emotions, "one prior value per emotion");
        let device = self.emotion_bias.val().device();
        let bias: Vec<f32> = prior.iter().map(|p| p.max(1e-6).ln()).collect();
        Self {
            emotion_weights: Param::from_tensor(Tensor::zeros([emotions, features], &device)),
            emotion_bias: Param::from_tensor(Tensor::from_floats(bias.as_slice(), &device)),
        }
    }

    /// Log-probabilities `(B, C)` from emotion states `O` `(B, C, D)` and representation `z`
    /// `(B, D)`; `z = None` scores from `O` alone (the z-path ablation: the `z` half of the
    /// weights meets zeros).
    pub fn forward(&self, emotion_states: Tensor<3>, z: Option<Tensor<2>>) -> Tensor<2> {
        let [batch, emotions, width] = emotion_states.dims();
        let z = match z {
            Some(z) => z.unsqueeze_dim::<3>(1).expand([batch, emotions, width]),
            None => Tensor::zeros([batch, emotions, width], &emotion_states.device()),
        };
        let features = Tensor::cat(vec![emotion_states, z], 2); // (B, C, 2D)
        let logits = (features * self.emotion_weights.val().unsqueeze_dim::<3>(0))
            .sum_dim(2)
            .squeeze_dim::<2>(2)
            + self.emotion_bias.val().unsqueeze_dim::<2>(0);
        log_softmax(logits, 1)
    }
}
