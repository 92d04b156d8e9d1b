//! Signed updates: a participant signs each update with its ed25519 key so the coordinator can
//! tell who sent it, that it was not altered, and that it belongs to this run and this round.
//!
//! TLS already authenticates the connection; the signature additionally binds the *content* to
//! the participant, so an update stays attributable after it leaves the connection (in logs,
//! checkpoints, audits) and cannot be replayed into another run or round.
//!
//! # What is signed
//!
//! The update is encoded once with [`encode_update_payload`] into `payload` (its encoder delta
//! dense, or compressed as the run's `compression` says); the
//! signature (ed25519, verified with `verify_strict`) covers
//!
//! ```text
//! UPDATE_SIGNATURE_DOMAIN || run_id (16 bytes) || round (u64 LE) || SHA-256(payload)
//! ```
//!
//! The domain tag keeps these signatures from being valid for anything else the key signs (its
//! TLS handshakes, say). Hashing the exact received bytes means nothing has to be re-encoded
//! canonically before verifying.
//!
//! # What the coordinator does with an incoming update
//!
//! 1. [`UpdateVerifier::verify`]: the signer is enrolled (and, when given, is the participant
//!    on the connection), the signature verifies, the run id is this run's, the payload decodes
//!    within the size limit and agrees with the envelope's run id and round.
//! 2. [`ReplayGuard::check`]: the round is the current one and this participant has not had an
//!    update accepted in it yet.
//! 3. The coordinator's own checks on the values (finite, right layout).
//! 4. [`ReplayGuard::record`], then count the update.
//!
//! Checking the signature first means an unauthenticated message can never mark a participant as
//! "already submitted"; recording only after acceptance lets a participant whose update was
//! rejected for its values send a corrected one.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::{self, CodecError, MessageLimits};
use crate::compression::{
    CompressedDelta, CompressedUpdate, CompressedValues, Compression, DeltaLayout,
};
use crate::identity::{Enrolment, NodeIdentity, fingerprint};
use crate::messages::{ClientUpdate, RejectReason, RunId};
use crate::params::ParameterSet;
use crate::stats::PrototypeStatistics;
use crate::vector::F32Vec;

/// Domain-separation tag at the start of every signed update message.
pub const UPDATE_SIGNATURE_DOMAIN: &[u8] = b"mpcl/update-signature/v1\0";

/// A client update as it travels: the encoded update, who signed it, and the signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// The signer's participant id (looked up in the enrolment).
    pub participant_id: String,
    /// The run the update is for (signed).
    pub run_id: RunId,
    /// The round the update is for (signed).
    pub round: u64,
    /// The [`ClientUpdate`] encoded with [`crate::codec::encode_message`].
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// 64-byte ed25519 signature over the message described in the module doc.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedUpdate")
            .field("participant_id", &self.participant_id)
            .field("run_id", &hex::encode(self.run_id))
            .field("round", &self.round)
            .field("payload_bytes", &self.payload.len())
            .field("signature", &hex::encode(&self.signature))
            .finish()
    }
}

/// The bytes an update signature covers.
pub fn signed_message(run_id: &RunId, round: u64, payload: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(payload);
    let mut message = Vec::with_capacity(UPDATE_SIGNATURE_DOMAIN.len() + 16 + 8 + 32);
    message.extend_from_slice(UPDATE_SIGNATURE_DOMAIN);
    message.extend_from_slice(run_id);
    message.extend_from_slice(&round.to_le_bytes());
    message.extend_from_slice(&digest);
    message
}

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
/// [`SignedUpdate::sign_compressed`] signs; simulations use it to count upload bytes).
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

impl SignedUpdate {
    /// Encodes `update` with its dense delta (refusing one above `limits`) and signs it as
    /// `identity`. The run id and round are taken from the update.
    pub fn sign(
        update: &ClientUpdate,
        identity: &NodeIdentity,
        limits: &MessageLimits,
    ) -> Result<Self, CodecError> {
        Self::sign_compressed(update, None, identity, limits)
    }

    /// Like [`SignedUpdate::sign`], but when `compressed` is given the payload carries it
    /// instead of `update.delta` and the prototype sums (which are then not sent at all).
    pub fn sign_compressed(
        update: &ClientUpdate,
        compressed: Option<&CompressedUpdate>,
        identity: &NodeIdentity,
        limits: &MessageLimits,
    ) -> Result<Self, CodecError> {
        let payload = encode_update_payload(update, compressed, limits)?;
        Ok(Self::sign_payload(
            identity.id(),
            identity.signing_key(),
            update.run_id,
            update.round,
            payload,
        ))
    }

    /// Signs an already encoded payload (lower level than [`SignedUpdate::sign`]).
    pub fn sign_payload(
        participant_id: &str,
        signing_key: &SigningKey,
        run_id: RunId,
        round: u64,
        payload: Vec<u8>,
    ) -> Self {
        let signature = signing_key.sign(&signed_message(&run_id, round, &payload));
        Self {
            participant_id: participant_id.to_string(),
            run_id,
            round,
            payload,
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// Checks the signature against `key` (strict ed25519 verification).
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), UpdateError> {
        let bad = || UpdateError::BadSignature {
            participant_id: self.participant_id.clone(),
        };
        let signature = Signature::from_slice(&self.signature).map_err(|_| bad())?;
        key.verify_strict(
            &signed_message(&self.run_id, self.round, &self.payload),
            &signature,
        )
        .map_err(|_| bad())
    }
}

/// An update whose signature, run and payload have been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedUpdate {
    /// The enrolled participant that signed it.
    pub participant_id: String,
    /// That participant's key.
    pub public_key: VerifyingKey,
    /// The decoded update (its `run_id` and `round` agree with the signed envelope), its delta
    /// decompressed when it travelled compressed.
    pub update: ClientUpdate,
    /// How the delta travelled.
    pub compression: Compression,
}

/// Why an update was not verified.
#[derive(Debug, Error)]
pub enum UpdateError {
    /// The claimed signer is not in the enrolment.
    #[error("update signed by unknown participant `{participant_id}`")]
    UnknownParticipant { participant_id: String },
    /// The connection is authenticated as one participant, the update claims another.
    #[error(
        "update claims participant `{claimed}` but the connection is authenticated as key {connection_fingerprint}"
    )]
    SenderMismatch {
        claimed: String,
        connection_fingerprint: String,
    },
    /// The signature is malformed or does not verify under the participant's key.
    #[error("bad signature on update from `{participant_id}`")]
    BadSignature { participant_id: String },
    /// A genuine signature, but for another run.
    #[error(
        "update from `{participant_id}` is for run {}, this run is {}",
        hex::encode(found),
        hex::encode(expected)
    )]
    WrongRun {
        participant_id: String,
        expected: RunId,
        found: RunId,
    },
    /// The signed payload does not decode.
    #[error("update from `{participant_id}` does not decode: {source}")]
    Payload {
        participant_id: String,
        #[source]
        source: CodecError,
    },
    /// The payload's run id or round differs from the signed envelope's.
    #[error(
        "update from `{participant_id}`: envelope says {what} {envelope}, payload says {payload}"
    )]
    EnvelopeMismatch {
        participant_id: String,
        what: &'static str,
        envelope: String,
        payload: String,
    },
}

impl UpdateError {
    /// The reason to send back in `UpdateRejected`.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Self::UnknownParticipant { .. } => RejectReason::UnknownParticipant,
            Self::SenderMismatch { .. } => RejectReason::SenderMismatch,
            Self::BadSignature { .. } => RejectReason::BadSignature,
            Self::WrongRun {
                expected, found, ..
            } => RejectReason::WrongRun {
                expected: *expected,
                found: *found,
            },
            Self::Payload { source, .. } => RejectReason::Malformed(source.to_string()),
            Self::EnvelopeMismatch { .. } => RejectReason::Malformed(self.to_string()),
        }
    }
}

/// Verifies incoming updates for one run.
#[derive(Clone, Debug)]
pub struct UpdateVerifier {
    enrolment: Enrolment,
    run_id: RunId,
    limits: MessageLimits,
    /// The encoder's layout, needed to decompress compressed deltas (which carry only its
    /// digest); without it compressed updates are refused.
    layout: Option<DeltaLayout>,
}

impl UpdateVerifier {
    /// A verifier for `run_id` accepting signers from `enrolment` and payloads up to `limits`.
    pub fn new(enrolment: Enrolment, run_id: RunId, limits: MessageLimits) -> Self {
        Self {
            enrolment,
            run_id,
            limits,
            layout: None,
        }
    }

    /// Accepts compressed updates whose delta is in `layout` (the global model's parameters).
    pub fn with_delta_layout(mut self, layout: DeltaLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// The enrolment in use.
    pub fn enrolment(&self) -> &Enrolment {
        &self.enrolment
    }

    /// The run being verified for.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Checks, in order: the signer is enrolled; when `connection_key` is given (the key read
    /// from the TLS connection the update came over), it is the signer's key; the signature;
    /// the run id; the payload decodes; the payload's run id and round match the envelope's.
    /// It does not check the round against the coordinator's (see [`ReplayGuard`]) or the
    /// values themselves.
    pub fn verify(
        &self,
        signed: &SignedUpdate,
        connection_key: Option<&VerifyingKey>,
    ) -> Result<VerifiedUpdate, UpdateError> {
        let participant_id = signed.participant_id.clone();
        let participant = self
            .enrolment
            .by_id(&signed.participant_id)
            .ok_or_else(|| UpdateError::UnknownParticipant {
                participant_id: participant_id.clone(),
            })?;
        if let Some(key) = connection_key
            && key != &participant.public_key
        {
            return Err(UpdateError::SenderMismatch {
                claimed: participant_id,
                connection_fingerprint: fingerprint(key),
            });
        }
        signed.verify_signature(&participant.public_key)?;
        if signed.run_id != self.run_id {
            return Err(UpdateError::WrongRun {
                participant_id,
                expected: self.run_id,
                found: signed.run_id,
            });
        }
        let payload: UpdatePayload =
            codec::decode_message(&signed.payload, &self.limits).map_err(|source| {
                UpdateError::Payload {
                    participant_id: participant_id.clone(),
                    source,
                }
            })?;
        let (update, compression) = match payload {
            UpdatePayload::Dense(update) => (update, Compression::None),
            UpdatePayload::Compressed {
                mut update,
                delta,
                prototype_sums,
            } => {
                let malformed = |message: String| UpdateError::Payload {
                    participant_id: participant_id.clone(),
                    source: CodecError::Malformed(message),
                };
                let layout = self.layout.as_ref().ok_or_else(|| {
                    malformed("this coordinator does not accept compressed updates".into())
                })?;
                if !update.delta.tensors.is_empty()
                    || update.prototypes.iter().any(|p| !p.sum.is_empty())
                    || prototype_sums.len() != update.prototypes.len()
                {
                    return Err(malformed(
                        "a compressed update must carry its delta and prototype sums only in compressed form, one sum per group".into(),
                    ));
                }
                // Decompressed here, on receipt: validation and aggregation see dense numbers.
                update.delta = delta
                    .decompress(layout)
                    .map_err(|e| malformed(e.to_string()))?;
                for (stats, sum) in update.prototypes.iter_mut().zip(&prototype_sums) {
                    let expected = stats
                        .emotions
                        .checked_mul(stats.prototypes)
                        .and_then(|n| n.checked_mul(stats.width))
                        .ok_or_else(|| {
                            malformed(format!("prototype shape of `{}` overflows", stats.group))
                        })?;
                    stats.sum = F32Vec(sum.decode(expected).map_err(|e| {
                        malformed(format!("prototype sums of `{}`: {e}", stats.group))
                    })?);
                }
                (update, delta.compression())
            }
        };
        if update.run_id != signed.run_id {
            return Err(UpdateError::EnvelopeMismatch {
                participant_id,
                what: "run",
                envelope: hex::encode(signed.run_id),
                payload: hex::encode(update.run_id),
            });
        }
        if update.round != signed.round {
            return Err(UpdateError::EnvelopeMismatch {
                participant_id,
                what: "round",
                envelope: signed.round.to_string(),
                payload: update.round.to_string(),
            });
        }
        Ok(VerifiedUpdate {
            participant_id,
            public_key: participant.public_key,
            update,
            compression,
        })
    }
}

/// Why an update was refused as a replay.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The update is for a round that is already over.
    #[error(
        "update from `{participant_id}` is for round {round}, which is over (current {current})"
    )]
    StaleRound {
        participant_id: String,
        round: u64,
        current: u64,
    },
    /// The update is for a round that has not started.
    #[error(
        "update from `{participant_id}` is for round {round}, which has not started (current {current})"
    )]
    FutureRound {
        participant_id: String,
        round: u64,
        current: u64,
    },
    /// This participant already had an update accepted in this round.
    #[error("duplicate update from `{participant_id}` for round {round}")]
    Duplicate { participant_id: String, round: u64 },
    /// The coordinator tried to move the guard to an earlier round.
    #[error("cannot move the replay guard back from round {current} to round {requested}")]
    RoundWentBackwards { current: u64, requested: u64 },
}

impl ReplayError {
    /// The reason to send back in `UpdateRejected`.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Self::StaleRound { round, current, .. } => RejectReason::StaleRound {
                round: *round,
                current: *current,
            },
            Self::FutureRound { round, current, .. } => RejectReason::FutureRound {
                round: *round,
                current: *current,
            },
            Self::Duplicate { round, .. } => RejectReason::Duplicate { round: *round },
            Self::RoundWentBackwards { current, requested } => RejectReason::StaleRound {
                round: *requested,
                current: *current,
            },
        }
    }
}

/// Remembers which participants had an update accepted in the current round. Serializable so the
/// coordinator can keep it in its checkpoint: after a restart a replayed update stays a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayGuard {
    current_round: u64,
    accepted: BTreeSet<String>,
}

impl ReplayGuard {
    /// A guard whose current round is `round`, with nothing accepted yet.
    pub fn new(round: u64) -> Self {
        Self {
            current_round: round,
            accepted: BTreeSet::new(),
        }
    }

    /// The round updates are accepted for.
    pub fn current_round(&self) -> u64 {
        self.current_round
    }

    /// Participants with an accepted update in the current round.
    pub fn accepted(&self) -> impl Iterator<Item = &str> {
        self.accepted.iter().map(String::as_str)
    }

    /// Moves to `round` (forgetting who submitted in the previous one). Moving to the current
    /// round is a no-op; moving back is an error.
    pub fn advance_to(&mut self, round: u64) -> Result<(), ReplayError> {
        if round < self.current_round {
            return Err(ReplayError::RoundWentBackwards {
                current: self.current_round,
                requested: round,
            });
        }
        if round > self.current_round {
            self.current_round = round;
            self.accepted.clear();
        }
        Ok(())
    }

    /// Whether an update from `participant_id` for `round` may be accepted now.
    pub fn check(&self, participant_id: &str, round: u64) -> Result<(), ReplayError> {
        if round < self.current_round {
            return Err(ReplayError::StaleRound {
                participant_id: participant_id.to_string(),
                round,
                current: self.current_round,
            });
        }
        if round > self.current_round {
            return Err(ReplayError::FutureRound {
                participant_id: participant_id.to_string(),
                round,
                current: self.current_round,
            });
        }
        if self.accepted.contains(participant_id) {
            return Err(ReplayError::Duplicate {
                participant_id: participant_id.to_string(),
                round,
            });
        }
        Ok(())
    }

    /// [`ReplayGuard::check`], then remembers the update as accepted.
    pub fn record(&mut self, participant_id: &str, round: u64) -> Result<(), ReplayError> {
        self.check(participant_id, round)?;
        self.accepted.insert(participant_id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::compress_prototype_sums;
    use crate::identity::Participant;
    use crate::messages::LocalMetrics;
    use crate::params::{NamedTensor, ParameterSet};
    use crate::stats::{CooccurrenceStatistics, PrototypeStatistics};
    use crate::vector::F32Vec;

    const RUN: RunId = [7; 16];

    fn identity(id: &str, seed: u8) -> NodeIdentity {
        NodeIdentity::from_signing_key(Some(id), SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn update(run_id: RunId, round: u64) -> ClientUpdate {
        ClientUpdate {
            run_id,
            round,
            delta: ParameterSet {
                tensors: vec![NamedTensor {
                    name: "encoder.weight".into(),
                    shape: vec![2, 2],
                    values: F32Vec(vec![0.1, -0.2, 0.3, 0.0]),
                }],
            },
            prototypes: vec![PrototypeStatistics::zeros("physiological", 2, 1, 2)],
            cooccurrence: CooccurrenceStatistics::zeros(2),
            sample_count: 42,
            metrics: LocalMetrics::default(),
            evaluation: None,
        }
    }

    fn setup() -> (NodeIdentity, NodeIdentity, UpdateVerifier) {
        let alice = identity("alice", 1);
        let bob = identity("bob", 2);
        let enrolment = Enrolment::from_participants(vec![
            Participant {
                id: "alice".into(),
                public_key: alice.public_key(),
            },
            Participant {
                id: "bob".into(),
                public_key: bob.public_key(),
            },
        ])
        .unwrap();
        let verifier = UpdateVerifier::new(enrolment, RUN, MessageLimits::CONTROL)
            .with_delta_layout(DeltaLayout::of(&update(RUN, 1).delta));
        (alice, bob, verifier)
    }

    fn signed(identity: &NodeIdentity, run_id: RunId, round: u64) -> SignedUpdate {
        SignedUpdate::sign(&update(run_id, round), identity, &MessageLimits::CONTROL).unwrap()
    }

    #[test]
    fn a_genuine_update_verifies_and_decodes() {
        let (alice, _, verifier) = setup();
        let signed = signed(&alice, RUN, 3);
        let verified = verifier.verify(&signed, Some(&alice.public_key())).unwrap();
        assert_eq!(verified.participant_id, "alice");
        assert_eq!(verified.update, update(RUN, 3));
        // It also survives the trip through a ClientMessage.
        let message = crate::messages::ClientMessage::Update(signed.clone());
        let bytes = codec::encode_message(&message, &MessageLimits::CONTROL).unwrap();
        let back: crate::messages::ClientMessage =
            codec::decode_message(&bytes, &MessageLimits::CONTROL).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn a_compressed_update_is_decompressed_on_receipt() {
        let (alice, _, verifier) = setup();
        let mut original = update(RUN, 3);
        original.prototypes[0].sum = F32Vec(vec![1.5, -0.5, 2.0, 0.25]);
        for compression in [Compression::F16, Compression::Int8] {
            // What the client keeps: its sums as the coordinator will reconstruct them.
            let mut sent = original.clone();
            let compressed = CompressedUpdate {
                delta: CompressedDelta::compress(&original.delta, compression).unwrap(),
                prototype_sums: compress_prototype_sums(&mut sent.prototypes, compression).unwrap(),
            };
            let signed = SignedUpdate::sign_compressed(
                &sent,
                Some(&compressed),
                &alice,
                &MessageLimits::CONTROL,
            )
            .unwrap();
            let verified = verifier.verify(&signed, Some(&alice.public_key())).unwrap();
            assert_eq!(verified.compression, compression);
            let layout = DeltaLayout::of(&original.delta);
            assert_eq!(
                verified.update.delta,
                compressed.delta.decompress(&layout).unwrap()
            );
            // The coordinator has exactly the client's reconstructed sums, close to the true ones.
            assert_eq!(verified.update.prototypes, sent.prototypes);
            let (truth, received) = (&original.prototypes[0], &verified.update.prototypes[0]);
            for (a, b) in truth.sum.as_slice().iter().zip(received.sum.as_slice()) {
                assert!((a - b).abs() <= 0.01 * a.abs().max(1.0), "{a} vs {b}");
            }
            assert_eq!(verified.update.sample_count, 42);
        }
        let dense = verifier.verify(&signed(&alice, RUN, 3), None).unwrap();
        assert_eq!(dense.compression, Compression::None);
    }

    #[test]
    fn a_compressed_update_that_does_not_decompress_is_malformed() {
        let (alice, _, verifier) = setup();
        let original = update(RUN, 3);
        let mut renamed = original.delta.clone();
        renamed.tensors[0].name = "other".into();
        let compressed = CompressedUpdate {
            delta: CompressedDelta::compress(&renamed, Compression::Int8).unwrap(),
            prototype_sums: compress_prototype_sums(
                &mut original.prototypes.clone(),
                Compression::Int8,
            )
            .unwrap(),
        };
        let signed = SignedUpdate::sign_compressed(
            &original,
            Some(&compressed),
            &alice,
            &MessageLimits::CONTROL,
        )
        .unwrap();
        let error = verifier.verify(&signed, None).unwrap_err();
        assert!(
            matches!(error.reject_reason(), RejectReason::Malformed(ref m) if m.contains("layout")),
            "{error}"
        );
    }

    #[test]
    fn unknown_participant_is_refused() {
        let (_, _, verifier) = setup();
        let mallory = identity("mallory", 9);
        let error = verifier
            .verify(&signed(&mallory, RUN, 1), None)
            .unwrap_err();
        assert!(matches!(error, UpdateError::UnknownParticipant { .. }));
        assert_eq!(error.reject_reason(), RejectReason::UnknownParticipant);
    }

    #[test]
    fn bad_signatures_are_refused() {
        let (alice, bob, verifier) = setup();
        // Bob signs but claims to be Alice.
        let mut forged = signed(&bob, RUN, 1);
        forged.participant_id = "alice".into();
        assert!(matches!(
            verifier.verify(&forged, None),
            Err(UpdateError::BadSignature { .. })
        ));
        // One payload bit flipped.
        let mut tampered = signed(&alice, RUN, 1);
        let last = tampered.payload.len() - 1;
        tampered.payload[last] ^= 1;
        assert!(matches!(
            verifier.verify(&tampered, None),
            Err(UpdateError::BadSignature { .. })
        ));
        // The round in the envelope changed (signed, so the signature breaks).
        let mut moved = signed(&alice, RUN, 1);
        moved.round = 2;
        assert!(matches!(
            verifier.verify(&moved, None),
            Err(UpdateError::BadSignature { .. })
        ));
        // Truncated signature.
        let mut short = signed(&alice, RUN, 1);
        short.signature.truncate(10);
        let error = verifier.verify(&short, None).unwrap_err();
        assert_eq!(error.reject_reason(), RejectReason::BadSignature);
    }

    #[test]
    fn update_from_another_connection_is_a_sender_mismatch() {
        let (alice, bob, verifier) = setup();
        let error = verifier
            .verify(&signed(&alice, RUN, 1), Some(&bob.public_key()))
            .unwrap_err();
        assert!(
            matches!(error, UpdateError::SenderMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn update_for_another_run_is_refused() {
        let (alice, _, verifier) = setup();
        let error = verifier
            .verify(&signed(&alice, [8; 16], 1), None)
            .unwrap_err();
        assert!(matches!(error, UpdateError::WrongRun { .. }));
        assert!(error.to_string().contains(&hex::encode([8u8; 16])));
        assert!(matches!(
            error.reject_reason(),
            RejectReason::WrongRun { .. }
        ));
    }

    #[test]
    fn payload_disagreeing_with_envelope_is_refused() {
        let (alice, _, verifier) = setup();
        let payload =
            encode_update_payload(&update(RUN, 5), None, &MessageLimits::CONTROL).unwrap();
        let signed = SignedUpdate::sign_payload("alice", alice.signing_key(), RUN, 4, payload);
        assert!(matches!(
            verifier.verify(&signed, None),
            Err(UpdateError::EnvelopeMismatch { what: "round", .. })
        ));
        let garbage = SignedUpdate::sign_payload("alice", alice.signing_key(), RUN, 4, vec![1]);
        let error = verifier.verify(&garbage, None).unwrap_err();
        assert!(matches!(error, UpdateError::Payload { .. }), "{error}");
        assert!(matches!(error.reject_reason(), RejectReason::Malformed(_)));
    }

    #[test]
    fn replay_guard_refuses_stale_future_and_duplicate_updates() {
        let mut guard = ReplayGuard::new(3);
        guard.record("alice", 3).unwrap();
        assert_eq!(
            guard.check("alice", 3),
            Err(ReplayError::Duplicate {
                participant_id: "alice".into(),
                round: 3
            })
        );
        assert!(guard.check("bob", 3).is_ok());
        assert!(matches!(
            guard.check("bob", 2),
            Err(ReplayError::StaleRound { current: 3, .. })
        ));
        assert!(matches!(
            guard.check("bob", 4),
            Err(ReplayError::FutureRound { current: 3, .. })
        ));
        guard.advance_to(4).unwrap();
        assert!(guard.record("alice", 4).is_ok());
        // The old round's update replayed is now stale.
        assert_eq!(
            guard.check("alice", 3).unwrap_err().reject_reason(),
            RejectReason::StaleRound {
                round: 3,
                current: 4
            }
        );
        assert!(guard.advance_to(2).is_err());
        // Survives a checkpoint.
        let bytes = codec::encode_message(&guard, &MessageLimits::CONTROL).unwrap();
        let restored: ReplayGuard = codec::decode_message(&bytes, &MessageLimits::CONTROL).unwrap();
        assert_eq!(restored, guard);
        assert!(restored.check("alice", 4).is_err());
    }
}
