//! The codec of an update's payload: the bytes a participant signs, dense or compressed
//! ([`crate::compression`]), and their decoding back into a dense [`ClientUpdate`] on receipt.
//!
//! Signing ([`crate::signing`]) only authenticates these bytes; what they mean is decided here,
//! so that validation and aggregation always see dense numbers, whichever way they travelled.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, MessageLimits};
use crate::compression::{
    CompressedDelta, CompressedUpdate, CompressedValues, Compression, DeltaLayout,
};
use crate::messages::ClientUpdate;
use crate::params::ParameterSet;
use crate::stats::PrototypeStatistics;
use crate::vector::F32Vec;

/// What a signed update's payload decodes to: the update with its numbers dense, or compressed
/// ([`crate::compression`]): then the update's own `delta` is empty and its prototype
/// statistics have empty `sum`s, which travel in `delta` and `prototype_sums` (one per group,
/// in order).
#[derive(Deserialize)]
enum UpdatePayload {
    Dense(ClientUpdate),
    Compressed {
        update: ClientUpdate,
        delta: CompressedDelta,
        prototype_sums: Vec<CompressedValues>,
    },
}

/// The encoding side of [`UpdatePayload`], borrowing (bincode writes a reference exactly like
/// the value, so both sides agree byte for byte).
#[derive(Serialize)]
#[serde(rename = "UpdatePayload")]
enum UpdatePayloadRef<'a> {
    Dense(&'a ClientUpdate),
    Compressed {
        update: &'a ClientUpdate,
        delta: &'a CompressedDelta,
        prototype_sums: &'a [CompressedValues],
    },
}

/// The payload bytes of `update`: dense, or, when `compressed` is given, with the update's
/// delta and prototype sums left out and `compressed` carried instead (what
/// [`crate::SignedUpdate::sign_compressed`] signs; simulations use it to count upload bytes).
pub fn encode_update_payload(
    update: &ClientUpdate,
    compressed: Option<&CompressedUpdate>,
    limits: &MessageLimits,
) -> Result<Vec<u8>, CodecError> {
    let Some(compressed) = compressed else {
        return codec::encode_message(&UpdatePayloadRef::Dense(update), limits);
    };
    if compressed.prototype_sums.len() != update.prototypes.len() {
        return Err(CodecError::Malformed(format!(
            "{} compressed prototype sums for {} groups",
            compressed.prototype_sums.len(),
            update.prototypes.len()
        )));
    }
    // The dense numbers stay home; the rest is small.
    let shell = ClientUpdate {
        run_id: update.run_id,
        round: update.round,
        delta: ParameterSet::default(),
        prototypes: update
            .prototypes
            .iter()
            .map(|stats| PrototypeStatistics {
                sum: F32Vec::default(),
                ..stats.clone()
            })
            .collect(),
        cooccurrence: update.cooccurrence.clone(),
        sample_count: update.sample_count,
        metrics: update.metrics.clone(),
        evaluation: update.evaluation,
    };
    codec::encode_message(
        &UpdatePayloadRef::Compressed {
            update: &shell,
            delta: &compressed.delta,
            prototype_sums: &compressed.prototype_sums,
        },
        limits,
    )
}

/// Decodes a payload written by [`encode_update_payload`] within `limits`: the update with
/// dense numbers (a compressed delta decompressed in `layout`, the global model's parameters,
/// and the prototype sums decoded), and how its delta travelled. Without a `layout`, compressed
/// payloads are refused.
pub fn decode_update_payload(
    bytes: &[u8],
    limits: &MessageLimits,
    layout: Option<&DeltaLayout>,
) -> Result<(ClientUpdate, Compression), CodecError> {
    let payload: UpdatePayload = codec::decode_message(bytes, limits)?;
    let (mut update, delta, prototype_sums) = match payload {
        UpdatePayload::Dense(update) => return Ok((update, Compression::None)),
        UpdatePayload::Compressed {
            update,
            delta,
            prototype_sums,
        } => (update, delta, prototype_sums),
    };
    let layout = layout.ok_or_else(|| {
        CodecError::Malformed("this coordinator does not accept compressed updates".into())
    })?;
    if !update.delta.tensors.is_empty()
        || update.prototypes.iter().any(|p| !p.sum.is_empty())
        || prototype_sums.len() != update.prototypes.len()
    {
        return Err(CodecError::Malformed(
            "a compressed update must carry its delta and prototype sums only in compressed form, one sum per group".into(),
        ));
    }
    update.delta = delta
        .decompress(layout)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    for (stats, sum) in update.prototypes.iter_mut().zip(&prototype_sums) {
        let expected = stats
            .emotions
            .checked_mul(stats.prototypes)
            .and_then(|n| n.checked_mul(stats.width))
            .ok_or_else(|| {
                CodecError::Malformed(format!("prototype shape of `{}` overflows", stats.group))
            })?;
        stats.sum = F32Vec(sum.decode(expected).map_err(|e| {
            CodecError::Malformed(format!("prototype sums of `{}`: {e}", stats.group))
        })?);
    }
    Ok((update, delta.compression()))
}
