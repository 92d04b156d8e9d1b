//! Update compression: what a client uploads, in fewer bytes than dense `f32`.
//!
//! Uploads dominate a round's traffic (the encoder delta has one value per encoder parameter),
//! so a run may choose, in its `[training]` config, to send the numbers of an update as
//!
//! * [`Compression::None`]: dense little-endian `f32`, 4 bytes a value (the default);
//! * [`Compression::F16`]: IEEE half precision (the `half` crate), 2 bytes a value, relative
//!   error at most 2^-11 in the normal range, absolute error at most 2^-25 below it (a vector with
//!   a value beyond half precision's range, 65504, travels dense instead);
//! * [`Compression::Int8`]: 8-bit codes with an `f32` offset and scale per chunk of
//!   [`INT8_CHUNK`] values (asymmetric: the chunk's minimum maps to 0, its maximum to 255), about
//!   1.03 bytes a value, absolute error at most half the chunk's step `(max - min) / 255`.
//!   Per-chunk rather than per-tensor scales keep one large value from flattening a whole tensor.
//!
//! The encoder delta is compressed as one vector (tensors concatenated) and carries only the
//! digest of its [`DeltaLayout`] (names and shapes), which both ends know; the prototype sums
//! travel in the same codec (see [`crate::signing`]); the small rest (weights, co-occurrence,
//! counts) stays dense.
//!
//! Lossy compression biases a client's contribution; [`ErrorFeedback`] removes the bias over
//! rounds: the client adds the previous round's quantisation residual to its next delta before
//! compressing, so what it has sent, summed over rounds, differs from what it meant to send by at
//! most one round's error instead of an error that grows with the number of rounds (Seide et
//! al. 2014; Karimireddy et al. 2019). Prototype statistics need none: they are fresh totals each
//! round, not increments.
//!
//! The coordinator decompresses an update as it receives it
//! ([`crate::signing::UpdateVerifier::verify`]), before validation and aggregation, so nothing
//! after the wire knows compression exists. Secure aggregation quantises updates itself and
//! cannot be combined with compression (the coordinator's config refuses it).

use std::fmt;
use std::str::FromStr;

use half::f16;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::params::{NamedTensor, ParameterSet};
use crate::stats::PrototypeStatistics;
use crate::vector::F32Vec;

/// Values per chunk of the 8-bit codec (one offset and one scale per chunk).
pub const INT8_CHUNK: usize = 256;

/// Largest chunk a received update may declare (bounds nothing memory-wise, but keeps the
/// per-chunk error promise meaningful).
const MAX_INT8_CHUNK: usize = 1 << 20;

/// How a client encodes its encoder delta on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Dense `f32`.
    #[default]
    None,
    /// IEEE 754 half precision.
    F16,
    /// 8-bit codes with a per-chunk offset and scale, with error feedback.
    Int8,
}

impl Compression {
    /// Every choice, in the order the CLI lists them.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::F16, Compression::Int8];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    /// Whether the delta is sent compressed (anything but `none`).
    pub fn is_compressed(self) -> bool {
        self != Self::None
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| CompressionError::UnknownName(s.to_string()))
    }
}

/// Errors of compressing or decompressing a delta.
#[derive(Debug, Error, PartialEq)]
pub enum CompressionError {
    /// A name that is not `none`, `f16` or `int8`.
    #[error("unknown compression `{0}` (expected none, f16 or int8)")]
    UnknownName(String),
    /// `compress` was asked for [`Compression::None`].
    #[error("compression `none` has no compressed form: send the dense delta")]
    NotCompressed,
    /// A value cannot be represented (non-finite, or beyond half precision's range).
    #[error("tensor `{name}`: value {value} cannot be compressed as {compression}")]
    Unrepresentable {
        name: String,
        value: f32,
        compression: Compression,
    },
    /// A received compressed tensor is inconsistent (lengths, chunking, non-finite scales).
    #[error("compressed tensor `{name}`: {message}")]
    Malformed { name: String, message: String },
}

/// Numbers in one of the codecs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CompressedValues {
    /// Uncompressed (a vector the chosen codec cannot represent, for example f16 beyond 65504).
    Dense(F32Vec),
    /// Half-precision bit patterns, little-endian, 2 bytes a value.
    F16 {
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
    },
    /// Value `i` is `offsets[i / chunk] + codes[i] * scales[i / chunk]`.
    Int8 {
        chunk: u32,
        offsets: F32Vec,
        scales: F32Vec,
        #[serde(with = "serde_bytes")]
        codes: Vec<u8>,
    },
}

impl CompressedValues {
    /// `values` in `compression` (not `none`). A vector f16 cannot represent (beyond its range)
    /// travels dense; non-finite values are refused (`what` names the vector in the error).
    pub fn encode(
        values: &[f32],
        compression: Compression,
        what: &str,
    ) -> Result<Self, CompressionError> {
        if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
            return Err(CompressionError::Unrepresentable {
                name: what.to_string(),
                value,
                compression,
            });
        }
        match compression {
            Compression::None => Err(CompressionError::NotCompressed),
            Compression::F16 => {
                Ok(compress_f16(values).unwrap_or_else(|| Self::Dense(F32Vec(values.to_vec()))))
            }
            Compression::Int8 => Ok(compress_int8(values, INT8_CHUNK)),
        }
    }

    /// The values, checked to be exactly `expected` finite numbers (the input may come from an
    /// untrusted peer; nothing is allocated beyond what the received bytes justify).
    pub fn decode(&self, expected: usize) -> Result<Vec<f32>, String> {
        let values = match self {
            Self::Dense(values) => {
                if values.len() != expected {
                    return Err(format!(
                        "{} dense values, expected {expected}",
                        values.len()
                    ));
                }
                values.0.clone()
            }
            Self::F16 { bits } => decompress_f16(bits, expected)?,
            Self::Int8 {
                chunk,
                offsets,
                scales,
                codes,
            } => decompress_int8(*chunk as usize, offsets, scales, codes, expected)?,
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err("decodes to a non-finite value".into());
        }
        Ok(values)
    }

    /// The codec (`none` for dense).
    pub fn compression(&self) -> Compression {
        match self {
            Self::Dense(_) => Compression::None,
            Self::F16 { .. } => Compression::F16,
            Self::Int8 { .. } => Compression::Int8,
        }
    }

    /// Bytes of numbers carried (codes, offsets, scales).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Self::Dense(values) => 4 * values.len(),
            Self::F16 { bits } => bits.len(),
            Self::Int8 {
                offsets,
                scales,
                codes,
                ..
            } => codes.len() + 4 * (offsets.len() + scales.len()),
        }
    }
}

/// The names and shapes of the encoder's tensors, in order. Both ends of a run know it (it is
/// the global model's), so a compressed delta carries only its digest, not the names: with small
/// models the names alone are a sizeable part of an 8-bit upload.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaLayout {
    tensors: Vec<(String, Vec<usize>)>,
    value_count: usize,
    digest: [u8; 16],
}

impl DeltaLayout {
    /// The layout of `parameters` (a delta or the global parameters).
    pub fn of(parameters: &ParameterSet) -> Self {
        let mut hasher = Sha256::new();
        for tensor in &parameters.tensors {
            hasher.update(tensor.name.as_bytes());
            hasher.update([0u8]);
            hasher.update((tensor.shape.len() as u64).to_le_bytes());
            for &d in &tensor.shape {
                hasher.update((d as u64).to_le_bytes());
            }
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hasher.finalize()[..16]);
        Self {
            tensors: parameters
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            value_count: parameters.value_count(),
            digest,
        }
    }

    /// First 16 bytes of SHA-256 over the names and shapes.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// Total number of values.
    pub fn value_count(&self) -> usize {
        self.value_count
    }

    /// `flat` (of `value_count()` values) cut into this layout's tensors.
    fn assemble(&self, flat: Vec<f32>) -> ParameterSet {
        let mut offset = 0;
        let tensors = self
            .tensors
            .iter()
            .map(|(name, shape)| {
                let len: usize = shape.iter().product();
                let values = F32Vec(flat[offset..offset + len].to_vec());
                offset += len;
                NamedTensor {
                    name: name.clone(),
                    shape: shape.clone(),
                    values,
                }
            })
            .collect();
        ParameterSet { tensors }
    }
}

/// An encoder delta in compressed form: all its values, tensors concatenated in order, in one
/// codec, and the digest of the layout they belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressedDelta {
    /// [`DeltaLayout::digest`] of the delta.
    pub layout: [u8; 16],
    pub values: CompressedValues,
}

impl CompressedDelta {
    /// Compresses `delta` with `compression` (which must not be `none`).
    pub fn compress(
        delta: &ParameterSet,
        compression: Compression,
    ) -> Result<Self, CompressionError> {
        Ok(Self {
            layout: DeltaLayout::of(delta).digest(),
            values: CompressedValues::encode(&delta.to_flat(), compression, "encoder delta")?,
        })
    }

    /// The codec used.
    pub fn compression(&self) -> Compression {
        self.values.compression()
    }

    /// The dense delta in `layout`, which must be the one the delta was compressed in (checked
    /// by digest), with every length, chunk and scale checked.
    pub fn decompress(&self, layout: &DeltaLayout) -> Result<ParameterSet, CompressionError> {
        let malformed = |message: String| CompressionError::Malformed {
            name: "encoder delta".into(),
            message,
        };
        if self.layout != layout.digest() {
            return Err(malformed(
                "compressed for another model layout (tensor names or shapes differ)".into(),
            ));
        }
        let flat = self
            .values
            .decode(layout.value_count())
            .map_err(malformed)?;
        Ok(layout.assemble(flat))
    }

    /// Bytes of numbers carried (codes, offsets, scales), without the layout digest and framing.
    pub fn payload_bytes(&self) -> usize {
        self.values.payload_bytes()
    }
}

/// Half precision, or `None` when a value is beyond its range.
fn compress_f16(values: &[f32]) -> Option<CompressedValues> {
    let mut bits = Vec::with_capacity(2 * values.len());
    for &value in values {
        let half = f16::from_f32(value);
        if !half.is_finite() {
            return None;
        }
        bits.extend_from_slice(&half.to_le_bytes());
    }
    Some(CompressedValues::F16 { bits })
}

fn decompress_f16(bits: &[u8], expected: usize) -> Result<Vec<f32>, String> {
    if bits.len() != expected.saturating_mul(2) {
        return Err(format!(
            "{} bytes of half-precision values, expected {expected} values",
            bits.len()
        ));
    }
    Ok(bits
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect())
}

/// 8-bit codes, asymmetric per chunk (`values` must be finite).
fn compress_int8(values: &[f32], chunk: usize) -> CompressedValues {
    let chunks = values.len().div_ceil(chunk);
    let mut offsets = Vec::with_capacity(chunks);
    let mut scales = Vec::with_capacity(chunks);
    let mut codes = Vec::with_capacity(values.len());
    for part in values.chunks(chunk) {
        let min = part.iter().copied().fold(f32::INFINITY, f32::min);
        let max = part.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // In f64: max - min of two finite f32 can overflow f32.
        let scale = ((f64::from(max) - f64::from(min)) / 255.0) as f32;
        offsets.push(min);
        scales.push(scale);
        for &v in part {
            let code = if scale > 0.0 {
                ((f64::from(v) - f64::from(min)) / f64::from(scale)).round()
            } else {
                0.0
            };
            codes.push(code.clamp(0.0, 255.0) as u8);
        }
    }
    CompressedValues::Int8 {
        chunk: chunk as u32,
        offsets: F32Vec(offsets),
        scales: F32Vec(scales),
        codes,
    }
}

fn decompress_int8(
    chunk: usize,
    offsets: &F32Vec,
    scales: &F32Vec,
    codes: &[u8],
    expected: usize,
) -> Result<Vec<f32>, String> {
    if chunk == 0 || chunk > MAX_INT8_CHUNK {
        return Err(format!(
            "chunk of {chunk} values (must be 1..={MAX_INT8_CHUNK})"
        ));
    }
    if codes.len() != expected {
        return Err(format!("{} codes, expected {expected} values", codes.len()));
    }
    let chunks = expected.div_ceil(chunk);
    if offsets.len() != chunks || scales.len() != chunks {
        return Err(format!(
            "{} offsets and {} scales for {chunks} chunks",
            offsets.len(),
            scales.len()
        ));
    }
    if !offsets.all_finite()
        || scales
            .as_slice()
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.0))
    {
        return Err("holds a non-finite offset or a negative or non-finite scale".into());
    }
    let mut values = Vec::with_capacity(expected);
    for ((part, &offset), &scale) in codes
        .chunks(chunk)
        .zip(offsets.as_slice())
        .zip(scales.as_slice())
    {
        values.extend(
            part.iter()
                .map(|&code| (f64::from(offset) + f64::from(code) * f64::from(scale)) as f32),
        );
    }
    Ok(values)
}

/// The lossy parts of an update in compressed form: the encoder delta and, in the same codec,
/// the prototype sums of each group (in the update's order). What [`crate::signing`] puts in a
/// compressed payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressedUpdate {
    pub delta: CompressedDelta,
    pub prototype_sums: Vec<CompressedValues>,
}

impl CompressedUpdate {
    /// The codec of the delta.
    pub fn compression(&self) -> Compression {
        self.delta.compression()
    }

    /// Bytes of numbers carried (codes, offsets, scales).
    pub fn payload_bytes(&self) -> usize {
        self.delta.payload_bytes()
            + self
                .prototype_sums
                .iter()
                .map(CompressedValues::payload_bytes)
                .sum::<usize>()
    }
}

/// Compresses each group's prototype sums with `compression` and replaces them by their
/// decompression (what the coordinator will reconstruct); returns the compressed sums.
pub fn compress_prototype_sums(
    statistics: &mut [PrototypeStatistics],
    compression: Compression,
) -> Result<Vec<CompressedValues>, CompressionError> {
    statistics
        .iter_mut()
        .map(|stats| {
            let what = format!("prototype sums of `{}`", stats.group);
            let compressed = CompressedValues::encode(stats.sum.as_slice(), compression, &what)?;
            stats.sum = F32Vec(compressed.decode(stats.sum.len()).map_err(|message| {
                CompressionError::Malformed {
                    name: what.clone(),
                    message,
                }
            })?);
            Ok(compressed)
        })
        .collect()
}

/// A client's error-feedback memory: the part of its past deltas that compression dropped.
///
/// Each round [`ErrorFeedback::compress`] compresses `delta + residual` and keeps
/// `delta + residual - decompress(sent)` as the next residual. Summed over rounds, what was sent
/// equals what was meant minus the last residual, which is bounded by one round's quantisation
/// error.
#[derive(Clone, Debug, Default)]
pub struct ErrorFeedback {
    residual: Option<ParameterSet>,
}

impl ErrorFeedback {
    /// No residual yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compresses `delta` plus the carried residual with `compression` (not `none`); returns the
    /// compressed form and its decompression (exactly what the coordinator will reconstruct),
    /// and keeps the new residual. A residual of another layout (the model changed) is dropped.
    /// On error the residual is unchanged.
    pub fn compress(
        &mut self,
        delta: &ParameterSet,
        compression: Compression,
    ) -> Result<(CompressedDelta, ParameterSet), CompressionError> {
        let corrected = match &self.residual {
            Some(residual) => delta.plus(residual).unwrap_or_else(|_| delta.clone()),
            None => delta.clone(),
        };
        let compressed = CompressedDelta::compress(&corrected, compression)?;
        let flat = compressed
            .values
            .decode(corrected.value_count())
            .map_err(|message| CompressionError::Malformed {
                name: "encoder delta".into(),
                message,
            })?;
        let sent = corrected
            .with_flat(&flat)
            .expect("decoded to the delta's own length");
        self.residual = Some(
            corrected
                .delta_from(&sent)
                .expect("decompression keeps the layout"),
        );
        Ok((compressed, sent))
    }

    /// The carried residual (none before the first compression).
    pub fn residual(&self) -> Option<&ParameterSet> {
        self.residual.as_ref()
    }

    /// Forgets the residual (for example when the client joins another run).
    pub fn reset(&mut self) {
        self.residual = None;
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn set(values: Vec<f32>) -> ParameterSet {
        let split = values.len() - 3;
        ParameterSet {
            tensors: vec![
                NamedTensor {
                    name: "a".into(),
                    shape: vec![split],
                    values: F32Vec(values[..split].to_vec()),
                },
                NamedTensor {
                    name: "b".into(),
                    shape: vec![3],
                    values: F32Vec(values[split..].to_vec()),
                },
            ],
        }
    }

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect()
    }

    fn round_trip(delta: &ParameterSet, compression: Compression) -> (CompressedDelta, Vec<f32>) {
        let compressed = CompressedDelta::compress(delta, compression).unwrap();
        let back = compressed.decompress(&DeltaLayout::of(delta)).unwrap();
        delta.check_same_layout(&back).unwrap();
        (compressed, back.to_flat())
    }

    #[test]
    fn names_parse_and_print() {
        #[derive(Serialize, Deserialize)]
        struct W {
            c: Compression,
        }
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            let text = toml::to_string(&W { c }).unwrap();
            assert!(text.contains(&format!("\"{}\"", c.name())), "{text}");
            assert_eq!(toml::from_str::<W>(&text).unwrap().c, c);
        }
        assert!(matches!(
            "int4".parse::<Compression>(),
            Err(CompressionError::UnknownName(_))
        ));
    }

    #[test]
    fn f16_round_trip_is_within_half_precision() {
        let values = random(1000, 1, 0.05);
        let (compressed, back) = round_trip(&set(values.clone()), Compression::F16);
        assert_eq!(compressed.compression(), Compression::F16);
        assert_eq!(compressed.payload_bytes(), 2 * values.len());
        for (x, y) in values.iter().zip(&back) {
            // Normal range: relative 2^-11; subnormal: absolute 2^-25.
            let bound = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            assert!((x - y).abs() <= bound, "{x} -> {y}");
        }
    }

    #[test]
    fn f16_sends_a_vector_beyond_its_range_dense() {
        let mut values = random(10, 2, 1.0);
        values[4] = 1e6;
        let (compressed, back) = round_trip(&set(values.clone()), Compression::F16);
        assert_eq!(compressed.compression(), Compression::None);
        assert_eq!(back, values);
    }

    #[test]
    fn non_finite_values_are_refused() {
        let mut values = random(10, 2, 1.0);
        values[1] = f32::NAN;
        for c in [Compression::F16, Compression::Int8] {
            assert!(matches!(
                CompressedDelta::compress(&set(values.clone()), c),
                Err(CompressionError::Unrepresentable { .. })
            ));
        }
    }

    #[test]
    fn int8_round_trip_is_within_half_a_step_per_chunk() {
        // Chunks of very different ranges: each chunk's error follows its own range.
        let mut values = random(3 * INT8_CHUNK + 17, 3, 1e-3);
        for v in &mut values[INT8_CHUNK..2 * INT8_CHUNK] {
            *v *= 1000.0;
        }
        let (compressed, back) = round_trip(&set(values.clone()), Compression::Int8);
        for (i, chunk) in values.chunks(INT8_CHUNK).enumerate() {
            let min = chunk.iter().copied().fold(f32::INFINITY, f32::min);
            let max = chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let step = (max - min) / 255.0;
            for (j, x) in chunk.iter().enumerate() {
                let y = back[i * INT8_CHUNK + j];
                assert!((x - y).abs() <= 0.5 * step * 1.001 + 1e-9, "{x} -> {y}");
            }
        }
        // About one byte a value: 8 bytes of offset and scale per 256 values.
        let bytes = compressed.payload_bytes() as f64;
        assert!(bytes < 1.04 * values.len() as f64 + 16.0, "{bytes}");
    }

    #[test]
    fn int8_of_a_constant_vector_is_exact() {
        let values = vec![0.25; 40];
        assert_eq!(
            round_trip(&set(values.clone()), Compression::Int8).1,
            values
        );
    }

    #[test]
    fn none_has_no_compressed_form() {
        assert_eq!(
            CompressedDelta::compress(&set(vec![1.0; 5]), Compression::None),
            Err(CompressionError::NotCompressed)
        );
    }

    #[test]
    fn another_layout_is_refused() {
        let delta = set(random(20, 4, 1.0));
        let compressed = CompressedDelta::compress(&delta, Compression::Int8).unwrap();
        let mut renamed = delta.clone();
        renamed.tensors[1].name = "c".into();
        let error = compressed
            .decompress(&DeltaLayout::of(&renamed))
            .unwrap_err();
        assert!(error.to_string().contains("layout"), "{error}");
    }

    #[test]
    fn malformed_values_are_refused() {
        let good = CompressedDelta::compress(&set(random(600, 4, 1.0)), Compression::Int8)
            .unwrap()
            .values;
        type Edit = Box<dyn Fn(&mut CompressedValues)>;
        let edits: Vec<Edit> = vec![
            Box::new(|v| {
                if let CompressedValues::Int8 { codes, .. } = v {
                    codes.pop();
                }
            }),
            Box::new(|v| {
                if let CompressedValues::Int8 { chunk, .. } = v {
                    *chunk = 0;
                }
            }),
            Box::new(|v| {
                if let CompressedValues::Int8 { scales, .. } = v {
                    scales.0[0] = f32::NAN;
                }
            }),
            Box::new(|v| {
                if let CompressedValues::Int8 { offsets, .. } = v {
                    offsets.0.push(0.0);
                }
            }),
            Box::new(|v| *v = CompressedValues::F16 { bits: vec![0; 3] }),
            Box::new(|v| {
                *v = CompressedValues::F16 {
                    bits: [f16::INFINITY.to_le_bytes(); 600].concat(),
                }
            }),
            Box::new(|v| *v = CompressedValues::Dense(F32Vec(vec![0.0; 599]))),
        ];
        assert!(good.decode(600).is_ok());
        for (i, edit) in edits.iter().enumerate() {
            let mut bad = good.clone();
            edit(&mut bad);
            assert!(bad.decode(600).is_err(), "edit {i}");
        }
    }

    /// Error feedback: the sum of what was sent over many rounds tracks the sum of the true
    /// deltas to within one round's quantisation error, while without it the error grows with
    /// the rounds. The deltas have small values beside one large one per chunk, which plain int8
    /// rounds the same wrong way every round (0.003 lies 127.88 steps above -1, so it is sent as
    /// 0.0039 every time).
    #[test]
    fn error_feedback_keeps_the_accumulated_sum_on_track() {
        let rounds = 200;
        let n = 2 * INT8_CHUNK + 3;
        let step = 2.0 / 255.0;
        let mut feedback = ErrorFeedback::new();
        let mut true_sum = vec![0.0f64; n];
        let mut sent_sum = vec![0.0f64; n];
        let mut plain_sum = vec![0.0f64; n];
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for _ in 0..rounds {
            let mut values: Vec<f32> = (0..n).map(|_| 3e-3 + 1e-5 * rng.random::<f32>()).collect();
            for start in [0, INT8_CHUNK] {
                values[start] = 1.0;
                values[start + 1] = -1.0;
            }
            let delta = set(values.clone());
            let (_, sent) = feedback.compress(&delta, Compression::Int8).unwrap();
            let (_, plain) = round_trip(&delta, Compression::Int8);
            for (i, ((t, s), p)) in values
                .iter()
                .zip(sent.iter_values())
                .zip(&plain)
                .enumerate()
            {
                true_sum[i] += f64::from(*t);
                sent_sum[i] += f64::from(s);
                plain_sum[i] += f64::from(*p);
            }
        }
        let max_error = |sum: &[f64]| {
            sum.iter()
                .zip(&true_sum)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        let with_feedback = max_error(&sent_sum);
        let without = max_error(&plain_sum);
        // With feedback: the gap is the last residual, at most half a step (plus rounding).
        assert!(
            with_feedback <= 0.5 * step * 1.01 + 1e-4,
            "with feedback {with_feedback}"
        );
        // Without: a systematic rounding error every round, summed.
        assert!(
            without > 20.0 * with_feedback,
            "without {without}, with {with_feedback}"
        );
        assert!(feedback.residual().unwrap().l2_norm() > 0.0);
    }

    #[test]
    fn error_feedback_drops_a_residual_of_another_layout() {
        let mut feedback = ErrorFeedback::new();
        feedback
            .compress(&set(random(50, 6, 1.0)), Compression::Int8)
            .unwrap();
        let other = set(random(80, 7, 1.0));
        let (_, sent) = feedback.compress(&other, Compression::F16).unwrap();
        other.check_same_layout(&sent).unwrap();
        feedback.reset();
        assert!(feedback.residual().is_none());
    }
}
