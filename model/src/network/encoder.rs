//! Modality encoders: each modality's feature vector, cut into tokens, becomes `T_m` tokens of
//! width D through one linear map shared by the modality's tokens, plus a learned token-position
//! embedding (which channel or window a token is) and a learned modality embedding (which
//! modality it came from, so the fusion can tell modalities apart once their tokens are mixed).

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// The encoder of one modality.
#[derive(Module, Debug)]
pub struct ModalityEncoder {
    projection: Linear,
    /// `T_m x D`.
    token_embedding: Param<Tensor<2>>,
    /// `1 x D`.
    modality_embedding: Param<Tensor<2>>,
}

impl ModalityEncoder {
    /// An encoder for `token_count` tokens of `token_width` values into width `width`.
    pub fn new(token_count: usize, token_width: usize, width: usize, device: &Device) -> Self {
        let embedding = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Self {
            projection: LinearConfig::new(token_width, width).init(device),
            token_embedding: embedding.init([token_count, width], device),
            modality_embedding: embedding.init([1, width], device),
        }
    }

    /// `(B, T_m, w_m)` -> `(B, T_m, D)`.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let projected = self.projection.forward(tokens);
        let position = self.token_embedding.val().unsqueeze_dim::<3>(0);
        let modality = self.modality_embedding.val().unsqueeze_dim::<3>(0);
        projected + position + modality
    }
}
