//! The messages of a secure-aggregation session: plain serde data that the network layer can
//! carry inside its own client and coordinator messages. Who sends what to whom is in the table
//! of the module doc ([`super`]).
//!
//! They protect nothing on their own: advertisements and survivor signatures are signed, shares
//! are encrypted, inputs are masked, but the transport (TLS) is what hides who talks to whom.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PeerId;

/// A dense `u32` vector that travels as raw little-endian bytes (like [`crate::F32Vec`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct U32Vec(pub Vec<u32>);

impl fmt::Debug for U32Vec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U32Vec({} words)", self.0.len())
    }
}

impl Serialize for U32Vec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::vector::serialize_le_words(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for U32Vec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::vector::deserialize_le_words(deserializer, "u32").map(Self)
    }
}

/// Step 0, client -> coordinator -> every client: a client's keys for this session, signed with
/// its ed25519 identity over the session digest and every field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdvertisement {
    /// The advertising client.
    pub peer: PeerId,
    /// X25519 public key for encrypting shares to this client.
    pub cipher_public: [u8; 32],
    /// X25519 public key for the pairwise masks.
    pub mask_public: [u8; 32],
    /// Hash commitment to the client's self-mask seed (lets the coordinator check the seed it
    /// reconstructs).
    pub seed_commitment: [u8; 32],
    /// 64-byte ed25519 signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// One client's shares for one other client, encrypted end to end (ChaCha20-Poly1305).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    pub from: PeerId,
    pub to: PeerId,
    /// Ciphertext and tag of `from || to || share of the self-mask seed || share of the mask key`.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Step 1, client -> coordinator: one [`EncryptedShare`] for every other advertised client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareBundle {
    pub from: PeerId,
    pub shares: Vec<EncryptedShare>,
}

/// Step 2, client -> coordinator: the client's quantised input plus its masks, modulo 2^32.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    pub from: PeerId,
    pub values: U32Vec,
}

/// Step 3, coordinator -> contributors: who contributed a masked input (sorted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorList {
    pub survivors: Vec<PeerId>,
}

/// Step 3, client -> coordinator: the client's signature over the survivor list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorSignature {
    pub from: PeerId,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Step 4, coordinator -> signers: the survivor list with at least `t` signatures on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    pub survivors: Vec<PeerId>,
    pub signatures: Vec<SurvivorSignature>,
}

/// A share revealed for unmasking: the responder's share (x-coordinate = responder's roster
/// position + 1) of one peer's secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Whose secret it is a share of.
    pub of: PeerId,
    /// `[x, y_0..y_31]`.
    #[serde(with = "serde_bytes")]
    pub share: Vec<u8>,
}

/// Step 4, client -> coordinator: shares of the self-mask seeds of the contributors and of the
/// mask keys of the clients that shared keys but did not contribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskResponse {
    pub from: PeerId,
    pub self_seed_shares: Vec<RevealedShare>,
    pub mask_key_shares: Vec<RevealedShare>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{MessageLimits, decode_message, encode_message};

    #[test]
    fn masked_inputs_travel_as_raw_bytes_through_the_codec() {
        let message = MaskedInput {
            from: PeerId([5; 32]),
            values: U32Vec((0..1000).map(|i| i * 4_000_000).collect()),
        };
        let bytes = encode_message(&message, &MessageLimits::CONTROL).unwrap();
        // 4 bytes a word plus a small header: no per-word varint.
        assert!(bytes.len() < 4000 + 64, "{}", bytes.len());
        let back: MaskedInput = decode_message(&bytes, &MessageLimits::CONTROL).unwrap();
        assert_eq!(back, message);
    }
}
