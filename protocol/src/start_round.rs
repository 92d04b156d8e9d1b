//! `StartRound` payloads that share one encoding of the round's global state.
//!
//! Every client sampled for a round gets the same global state; only the run id, round, training
//! settings (the per-client seed), deadline and secure-aggregation setup differ. Encoding the
//! state for each client (and cloning it first) was the largest copy in the coordinator's
//! per-client work, so the coordinator encodes it once per round ([`EncodedState`]) and sends
//! each client a [`SplicedPayload`]: a small head, the shared state bytes, a small tail. The
//! bytes on the wire are exactly [`crate::codec::encode_message`]'s for the same message (a test
//! asserts it), so clients decode it like any other message.

use bytes::Bytes;

use crate::codec::{CodecError, MessageLimits, PROTOCOL_VERSION, encode_piece_into};
use crate::messages::{GlobalState, RunId, TrainingConfig};
use crate::secure_aggregation::SecureRoundSetup;

/// bincode's variant index of [`crate::messages::CoordinatorMessage::StartRound`] (its position
/// in the enum); the test below fails if the enum is reordered.
const START_ROUND_VARIANT: u32 = 1;

/// A global state encoded once, for every `StartRound` of its round (clones share the buffer).
#[derive(Clone, Debug)]
pub struct EncodedState(Bytes);

impl EncodedState {
    /// Encodes `state`.
    pub fn encode(state: &GlobalState) -> Result<Self, CodecError> {
        let mut bytes = Vec::new();
        encode_piece_into(&mut bytes, state)?;
        Ok(Self(bytes.into()))
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A message payload in three pieces, the middle one shared between many payloads.
#[derive(Clone, Debug)]
pub struct SplicedPayload {
    /// Version prefix, variant index and the fields before the shared piece.
    pub head: Vec<u8>,
    /// The shared piece (the encoded global state).
    pub shared: EncodedState,
    /// The fields after the shared piece.
    pub tail: Vec<u8>,
}

impl SplicedPayload {
    /// Bytes of the whole payload.
    pub fn len(&self) -> usize {
        self.head.len() + self.shared.bytes().len() + self.tail.len()
    }

    /// Whether the payload is empty (never, for a real message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as one buffer (for comparing with a plain encoding; the coordinator sends
    /// the pieces with [`crate::framing::spliced_frame`]).
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], self.shared.bytes(), &self.tail].concat()
    }
}

/// The payload of `CoordinatorMessage::StartRound { run_id, round, state, config, deadline_ms,
/// secure_aggregation }` with `state` already encoded; refused like
/// [`crate::codec::encode_message`] when larger than `limits`.
pub fn encode_start_round(
    run_id: &RunId,
    round: u64,
    state: &EncodedState,
    config: &TrainingConfig,
    deadline_ms: u64,
    secure_aggregation: &Option<Box<SecureRoundSetup>>,
    limits: &MessageLimits,
) -> Result<SplicedPayload, CodecError> {
    let mut head = PROTOCOL_VERSION.to_le_bytes().to_vec();
    encode_piece_into(&mut head, &(START_ROUND_VARIANT, run_id, round))?;
    let mut tail = Vec::new();
    encode_piece_into(&mut tail, &(config, deadline_ms, secure_aggregation))?;
    let payload = SplicedPayload {
        head,
        shared: state.clone(),
        tail,
    };
    limits.check(payload.len() as u64)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_message, encode_message};
    use crate::compression::Compression;
    use crate::messages::CoordinatorMessage;
    use crate::params::{NamedTensor, ParameterSet};
    use crate::stats::CooccurrenceStatistics;

    fn state() -> GlobalState {
        GlobalState {
            parameters: ParameterSet {
                tensors: vec![
                    NamedTensor {
                        name: "a.w".into(),
                        shape: vec![2, 3],
                        values: vec![0.5, -1.0, 2.0, 3.5, 1e-7, -0.0].into(),
                    },
                    NamedTensor {
                        name: "b".into(),
                        shape: vec![1],
                        values: vec![42.0].into(),
                    },
                ],
            },
            prototypes: Vec::new(),
            cooccurrence: CooccurrenceStatistics::zeros(3),
        }
    }

    fn config(seed: u64) -> TrainingConfig {
        TrainingConfig {
            local_epochs: 2,
            batch_size: 16,
            learning_rate: 0.01,
            weight_decay: 0.0,
            proximal_mu: 0.0,
            seed,
            share_memories: true,
            compression: Compression::default(),
            evaluate: false,
            kind: crate::messages::RoundKind::Training,
        }
    }

    #[test]
    fn spliced_payloads_are_the_plain_encoding() {
        let state = state();
        let encoded = EncodedState::encode(&state).unwrap();
        let limits = MessageLimits::CONTROL;
        // Large seeds and deadlines and round numbers take multi-byte varints.
        for (round, seed, deadline_ms) in [(1, 7, 0), (300, u64::MAX, 70_000), (1 << 40, 0, 1)] {
            let spliced = encode_start_round(
                &[9; 16],
                round,
                &encoded,
                &config(seed),
                deadline_ms,
                &None,
                &limits,
            )
            .unwrap();
            let message = CoordinatorMessage::StartRound {
                run_id: [9; 16],
                round,
                state: state.clone(),
                config: config(seed),
                deadline_ms,
                secure_aggregation: None,
            };
            assert_eq!(spliced.to_vec(), encode_message(&message, &limits).unwrap());
            let decoded: CoordinatorMessage = decode_message(&spliced.to_vec(), &limits).unwrap();
            assert_eq!(decoded, message);
        }
    }

    #[test]
    fn a_spliced_frame_is_the_plain_frame_and_shares_the_state() {
        let state = state();
        let encoded = EncodedState::encode(&state).unwrap();
        let limits = MessageLimits::CONTROL;
        let spliced =
            encode_start_round(&[3; 16], 9, &encoded, &config(4), 500, &None, &limits).unwrap();
        let chunks = crate::framing::spliced_frame(&spliced, &limits).unwrap();
        let message = CoordinatorMessage::StartRound {
            run_id: [3; 16],
            round: 9,
            state,
            config: config(4),
            deadline_ms: 500,
            secure_aggregation: None,
        };
        assert_eq!(
            chunks.concat(),
            crate::framing::encode_frame(&message, &limits).unwrap()
        );
        // The state's bytes are the round's buffer itself, not a copy.
        assert_eq!(chunks[1].as_ptr(), encoded.bytes().as_ptr());
        let tiny = MessageLimits::new(16).unwrap();
        assert!(matches!(
            crate::framing::spliced_frame(&spliced, &tiny),
            Err(CodecError::FrameTooLarge { limit: 16, .. })
        ));
    }

    #[test]
    fn an_oversized_start_round_is_refused() {
        let encoded = EncodedState::encode(&state()).unwrap();
        let tiny = MessageLimits::new(16).unwrap();
        let error =
            encode_start_round(&[0; 16], 1, &encoded, &config(1), 0, &None, &tiny).unwrap_err();
        assert!(
            matches!(error, CodecError::FrameTooLarge { limit: 16, .. }),
            "{error}"
        );
    }
}
