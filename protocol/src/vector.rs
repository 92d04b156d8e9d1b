//! `F32Vec`: a vector of `f32` that travels as raw little-endian bytes.
//!
//! A serde sequence of floats costs a length-prefixed varint per element in bincode and is several
//! times slower to encode than copying bytes; parameter vectors are the bulk of every message.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dense `f32` vector encoded on the wire as little-endian bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct F32Vec(pub Vec<f32>);

impl F32Vec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Whether every element is finite (no NaN, no infinity).
    pub fn all_finite(&self) -> bool {
        self.0.iter().all(|v| v.is_finite())
    }
}

impl From<Vec<f32>> for F32Vec {
    fn from(values: Vec<f32>) -> Self {
        Self(values)
    }
}

impl Serialize for F32Vec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for value in &self.0 {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for F32Vec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(serde::de::Error::custom(format!(
                "f32 vector has {} bytes, not a multiple of 4",
                bytes.len()
            )));
        }
        Ok(Self(
            bytes
                .chunks_exact(4)
                .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect(),
        ))
    }
}
