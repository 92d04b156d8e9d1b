//! A participant's identity as the coordinator and the secure-aggregation round plan see it:
//! its ed25519 public key, which the transport (mutual TLS) authenticates.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A participant's identity: its 32-byte ed25519 public key (the transport authenticates it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub [u8; 32]);

impl ParticipantId {
    /// A synthetic id for simulations and tests: `index` big-endian in the last eight bytes, so
    /// ids sort by index.
    pub fn from_index(index: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[24..].copy_from_slice(&index.to_be_bytes());
        Self(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", hex::encode(self.0))
    }
}

/// Hex text in human-readable formats (JSON logs), raw bytes otherwise (checkpoints).
impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(self.0))
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            let bytes = text.as_bytes();
            if bytes.len() != 64 || !text.is_ascii() {
                return Err(serde::de::Error::custom(format!(
                    "participant id must be 64 hex digits, got `{text}`"
                )));
            }
            let mut id = [0u8; 32];
            for (i, chunk) in bytes.chunks(2).enumerate() {
                let pair = std::str::from_utf8(chunk).map_err(serde::de::Error::custom)?;
                id[i] = u8::from_str_radix(pair, 16).map_err(|_| {
                    serde::de::Error::custom(format!("participant id `{text}` is not hex"))
                })?;
            }
            Ok(Self(id))
        } else {
            Ok(Self(<[u8; 32]>::deserialize(deserializer)?))
        }
    }
}
