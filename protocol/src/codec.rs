//! Encoding messages to bytes and back: the one place bincode is used.
//!
//! bincode is pinned at 2.0.1 (3.0.0 is an empty release) and RustSec lists it as unmaintained,
//! so everything that touches it lives here and the rest of the workspace only sees
//! [`encode_message`], [`decode_message`] and [`CodecError`]; swapping the format (postcard,
//! wincode) means changing this file and bumping [`PROTOCOL_VERSION`].
//!
//! # Payload layout
//!
//! A payload is the protocol version as a little-endian `u16` followed by the bincode body
//! (`config::standard()`: little-endian, varint integers). The version comes first so that a peer
//! speaking another version gets [`CodecError::VersionMismatch`] instead of a confusing decode
//! error. On a stream each payload is preceded by its length (see [`crate::framing`]).
//!
//! # Size limits
//!
//! The largest messages carry a whole model (the global state, or an update), so the limit is
//! computed from the model's size at run time: [`MessageLimits::for_model`]. Before anything is
//! decoded the payload length is checked against that limit; bincode's own limit is a compile-time
//! constant, so it gets the generous static cap [`HARD_MAX_MESSAGE_BYTES`] as a second fence.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Version of the wire protocol. Bump it on any change to message types or their encoding.
pub const PROTOCOL_VERSION: u16 = 8;

/// The TLS ALPN protocol id, which carries [`PROTOCOL_VERSION`] so that peers of different
/// versions fail at the handshake (QUIC crypto error 0x178, "no application protocol") rather
/// than in the decoder.
pub const ALPN: &[u8] = b"mpcl/8";

/// Absolute ceiling on one message (1 GiB), whatever the model. Frames carry a `u32` length, and
/// bincode is given this as its compile-time decode limit.
pub const HARD_MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Bytes of the version prefix that starts every payload.
pub const VERSION_PREFIX_BYTES: usize = 2;

/// bincode's decode limit is a const generic: it can only be a static cap.
type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<HARD_MAX_MESSAGE_BYTES>,
>;

fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<HARD_MAX_MESSAGE_BYTES>()
}

/// How many bytes of containers a decode may claim per byte of input (see
/// [`decode_bincode_bounded`]). A container's claim is its length times its element size, and
/// every element takes at least one byte on the wire, so the largest element type sets the
/// worst legitimate ratio; ours are well below this.
pub const CLAIM_BYTES_PER_INPUT_BYTE: usize = 256;

/// Decodes `bytes` (bincode 2, standard configuration) with an allocation limit that grows with
/// the input: [`CLAIM_BYTES_PER_INPUT_BYTE`] times its length rounded up to a power of two, at
/// least 1 MiB, at most `2^max_bits` bytes.
///
/// bincode allocates a container's full claimed length before reading its elements (a byte
/// buffer is zero-filled first), and its limit is a compile-time constant. With the fixed
/// 1 GiB limit alone, a 10-byte message claiming a 1 GiB byte buffer made the decoder allocate
/// 1 GiB before failing (found by the `frame` and `client_message` fuzz targets), and a
/// checkpoint without a limit could claim more than the address space and abort the process.
/// Choosing among power-of-two limits bounds the memory a decode can reserve by what was
/// actually received.
pub fn decode_bincode_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    max_bits: u32,
) -> Result<(T, usize), bincode::error::DecodeError> {
    let wanted = bytes
        .len()
        .saturating_mul(CLAIM_BYTES_PER_INPUT_BYTE)
        .max(1 << 20)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX);
    let bits = (usize::BITS - 1 - wanted.leading_zeros()).clamp(20, max_bits.clamp(20, 34));
    macro_rules! decode_with_limit {
        ($($b:literal)*) => {
            match bits {
                $($b => bincode::serde::decode_from_slice(
                    bytes,
                    bincode::config::standard().with_limit::<{ 1usize << $b }>(),
                ),)*
                _ => unreachable!("bits is clamped to 20..=34"),
            }
        };
    }
    decode_with_limit!(20 21 22 23 24 25 26 27 28 29 30 31 32 33 34)
}

/// Everything that can go wrong turning bytes into messages and back, on a slice or a stream.
#[derive(Debug, Error)]
pub enum CodecError {
    /// A frame or payload is larger than the limit in force (refused before allocating).
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The size the frame declared (or the encoded size, when sending).
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The input ended early. For a frame `expected` is exact; inside a payload it is bincode's
    /// estimate of the least number of bytes needed.
    #[error("message truncated: expected {expected} bytes, received {received}")]
    Truncated {
        /// Bytes needed.
        expected: u64,
        /// Bytes actually available.
        received: u64,
    },
    /// The bytes are not a valid message of the expected type (bincode's explanation attached).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The payload was written by a node speaking another protocol version.
    #[error(
        "protocol version mismatch: this node speaks version {expected}, the peer sent version {found}"
    )]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`] of this node.
        expected: u16,
        /// Version found in the payload.
        found: u16,
    },
    /// A message decoded successfully but bytes were left over.
    #[error("{trailing} unexpected bytes after a {consumed}-byte message")]
    TrailingBytes {
        /// Bytes the message used (including the version prefix).
        consumed: usize,
        /// Bytes left over.
        trailing: usize,
    },
    /// The message could not be encoded (serde refused it).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A message limit outside `1..=HARD_MAX_MESSAGE_BYTES` was requested.
    #[error("invalid message limit of {0} bytes (must be 1..={HARD_MAX_MESSAGE_BYTES})")]
    InvalidLimit(u64),
    /// The stream ended cleanly before the first byte of a frame: the peer sent nothing more.
    #[error("stream closed before a message arrived")]
    Closed,
    /// Reading or writing the stream failed.
    #[error("i/o error while {action}: {source}")]
    Io {
        /// What was being done (`"reading a frame"`, ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How large one message may be. Both ends should agree; the coordinator announces its limit in
/// `Welcome` (see [`crate::messages`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageLimits {
    /// Largest accepted payload (version prefix plus body), in bytes.
    pub max_message_bytes: usize,
}

impl MessageLimits {
    /// Limit for the conversation before the model is known (`Hello`, `Welcome`, `Wait`,
    /// `Status`, errors): 1 MiB.
    pub const CONTROL: MessageLimits = MessageLimits {
        max_message_bytes: 1 << 20,
    };

    /// Fixed allowance on top of the numbers for names, shapes, metrics and envelopes.
    pub const FIXED_OVERHEAD_BYTES: usize = 1 << 20;

    /// A limit of exactly `max_message_bytes`, which must be in `1..=HARD_MAX_MESSAGE_BYTES`.
    pub fn new(max_message_bytes: usize) -> Result<Self, CodecError> {
        if max_message_bytes == 0 || max_message_bytes > HARD_MAX_MESSAGE_BYTES {
            return Err(CodecError::InvalidLimit(max_message_bytes as u64));
        }
        Ok(Self { max_message_bytes })
    }

    /// The limit for a model with `parameter_count` gradient-trained parameters, prototype banks
    /// holding `prototype_values` values in all (the sum over groups of emotions x prototypes x
    /// width) and `emotions` emotions.
    ///
    /// It covers the larger of the two big messages (`StartRound` carries parameters, banks and the
    /// C x C co-occurrence memory; an update carries a delta, prototype sums plus weights and
    /// co-occurrence sums) at 4 bytes a value, plus 25 % and [`Self::FIXED_OVERHEAD_BYTES`] of
    /// headroom. Never below [`Self::CONTROL`]; saturates at [`HARD_MAX_MESSAGE_BYTES`] (a
    /// model that large cannot be sent with this protocol version).
    pub fn for_model(parameter_count: usize, prototype_values: usize, emotions: usize) -> Self {
        let values = parameter_count
            .saturating_add(prototype_values.saturating_mul(2))
            .saturating_add(emotions.saturating_mul(emotions).saturating_mul(2));
        let numeric = values.saturating_mul(4);
        let bytes = numeric
            .saturating_add(numeric / 4)
            .saturating_add(Self::FIXED_OVERHEAD_BYTES);
        Self {
            max_message_bytes: bytes.clamp(Self::CONTROL.max_message_bytes, HARD_MAX_MESSAGE_BYTES),
        }
    }

    /// The smaller of two limits (a client caps what a coordinator announces by its own).
    pub fn min(self, other: Self) -> Self {
        Self {
            max_message_bytes: self.max_message_bytes.min(other.max_message_bytes),
        }
    }

    /// `Err(FrameTooLarge)` when `size` bytes exceed this limit.
    pub fn check(&self, size: u64) -> Result<(), CodecError> {
        if size > self.max_message_bytes as u64 {
            return Err(CodecError::FrameTooLarge {
                size,
                limit: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

impl Default for MessageLimits {
    /// [`MessageLimits::CONTROL`].
    fn default() -> Self {
        Self::CONTROL
    }
}

/// Encodes `message` as a payload (version prefix + bincode body), refusing one larger than
/// `limits`.
pub fn encode_message<T: Serialize + ?Sized>(
    message: &T,
    limits: &MessageLimits,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_message_into(&mut out, message, limits)?;
    Ok(out)
}

/// Appends the payload of `message` to `out` and returns its length; `out` is left as it was
/// when the message is refused. Used by [`crate::framing`] to encode behind a reserved header.
pub fn encode_message_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    message: &T,
    limits: &MessageLimits,
) -> Result<usize, CodecError> {
    let start = out.len();
    // Measure first, then write into a buffer of the right size: a model-sized message would
    // otherwise grow its buffer a dozen times, copying and re-faulting it each time. The dry run
    // only adds up lengths (the numbers travel as byte strings).
    let mut size = bincode::enc::write::SizeWriter::default();
    if let Err(error) = bincode::serde::encode_into_writer(message, &mut size, bincode_config()) {
        return Err(CodecError::Encode(error.to_string()));
    }
    let size = VERSION_PREFIX_BYTES + size.bytes_written;
    limits.check(size as u64)?;
    out.reserve(size);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    if let Err(error) = bincode::serde::encode_into_std_write(message, out, bincode_config()) {
        out.truncate(start);
        return Err(CodecError::Encode(error.to_string()));
    }
    Ok(out.len() - start)
}

/// Appends the bincode encoding of `value` alone (no version prefix, no limit) to `out`.
///
/// bincode writes a struct, a tuple or an enum variant as its variant index (a varint `u32`)
/// followed by its fields' encodings back to back, with nothing between them, so a message can
/// be assembled from separately encoded pieces: [`crate::start_round`] encodes a round's global
/// state once and splices it into every client's `StartRound`.
pub fn encode_piece_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    let start = out.len();
    bincode::serde::encode_into_std_write(value, out, bincode_config()).map_err(|error| {
        out.truncate(start);
        CodecError::Encode(error.to_string())
    })?;
    Ok(())
}

/// Decodes one payload written by [`encode_message`]: checks the size against `limits` and the
/// version before touching the body, and refuses trailing bytes.
pub fn decode_message<T: DeserializeOwned>(
    payload: &[u8],
    limits: &MessageLimits,
) -> Result<T, CodecError> {
    limits.check(payload.len() as u64)?;
    let Some((prefix, body)) = payload.split_first_chunk::<VERSION_PREFIX_BYTES>() else {
        return Err(CodecError::Truncated {
            expected: VERSION_PREFIX_BYTES as u64,
            received: payload.len() as u64,
        });
    };
    let found = u16::from_le_bytes(*prefix);
    if found != PROTOCOL_VERSION {
        return Err(CodecError::VersionMismatch {
            expected: PROTOCOL_VERSION,
            found,
        });
    }
    let (message, used) = decode_bincode_bounded::<T>(body, HARD_MAX_MESSAGE_BYTES.ilog2())
        .map_err(|error| match error {
            bincode::error::DecodeError::UnexpectedEnd { additional } => CodecError::Truncated {
                expected: (payload.len() + additional) as u64,
                received: payload.len() as u64,
            },
            other => CodecError::Malformed(other.to_string()),
        })?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            consumed: VERSION_PREFIX_BYTES + used,
            trailing: body.len() - used,
        });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ClientMessage, CoordinatorMessage};
    use crate::vector::F32Vec;
    use serde::Deserialize;

    /// Regression (fuzzing, `client_message`): 11 bytes that claim a 0x30000000-byte buffer.
    /// Before the bounded decode they made the decoder zero-fill 805 MB before failing.
    const FUZZ_CLIENT_MESSAGE: &str = "010000fc000000300000ff";

    /// A payload whose first string (the participant id of `Hello`, or of `Welcome` after its
    /// run id) claims `claimed` bytes, followed by almost nothing.
    fn claiming(variant_and_prefix: &[u8], claimed: u32) -> Vec<u8> {
        let mut payload = PROTOCOL_VERSION.to_le_bytes().to_vec();
        payload.extend_from_slice(variant_and_prefix);
        payload.push(0xFC); // bincode varint: a u32 follows
        payload.extend_from_slice(&claimed.to_le_bytes());
        payload.extend_from_slice(b"abc");
        payload
    }

    fn assert_refused_by_the_limit(result: Result<impl std::fmt::Debug, CodecError>) {
        match result {
            Err(CodecError::Malformed(reason)) => {
                assert!(reason.contains("LimitExceeded"), "{reason}")
            }
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn small_messages_claiming_huge_buffers_are_refused_by_the_limit() {
        let limits = MessageLimits::for_model(1_000, 100, 4);
        let mut fuzzed = hex::decode(FUZZ_CLIENT_MESSAGE).unwrap();
        // Found under protocol version 1: carry the current version so the decoder gets past it.
        fuzzed[..2].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        assert_refused_by_the_limit(decode_message::<ClientMessage>(&fuzzed, &limits));
        // Hello { participant_id } claiming 800 MB.
        let hello = claiming(&[0], 800 << 20);
        assert_refused_by_the_limit(decode_message::<ClientMessage>(&hello, &limits));
        // Welcome { run_id, protocol_version, participant_id } claiming 800 MB.
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&[7; 16]);
        prefix.push(1);
        let welcome = claiming(&prefix, 800 << 20);
        assert_refused_by_the_limit(decode_message::<CoordinatorMessage>(&welcome, &limits));
        // An honest message still decodes.
        let hello = encode_message(&ClientMessage::hello("abc"), &limits).unwrap();
        assert!(matches!(
            decode_message::<ClientMessage>(&hello, &limits),
            Ok(ClientMessage::Hello { participant_id, .. }) if participant_id == "abc"
        ));
    }

    #[test]
    fn the_claim_limit_grows_with_the_input_and_stops_at_the_cap() {
        // 1 MiB of input may claim 256 MiB: a real update decodes.
        let big = vec![0u8; 1 << 20];
        let encoded = bincode::serde::encode_to_vec(
            serde_bytes::ByteBuf::from(big.clone()),
            bincode::config::standard(),
        )
        .unwrap();
        let (decoded, _): (serde_bytes::ByteBuf, usize) =
            decode_bincode_bounded(&encoded, 30).unwrap();
        assert_eq!(decoded.into_vec(), big);
        // 16 bytes may not claim 2 MiB.
        let mut claim = vec![0xFCu8];
        claim.extend_from_slice(&(2u32 << 20).to_le_bytes());
        claim.extend_from_slice(&[0; 11]);
        let error = decode_bincode_bounded::<serde_bytes::ByteBuf>(&claim, 30).unwrap_err();
        assert!(
            matches!(error, bincode::error::DecodeError::LimitExceeded),
            "{error}"
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Empty,
        Named { name: String, values: F32Vec },
    }

    fn sample() -> Sample {
        Sample::Named {
            name: "w".into(),
            values: F32Vec(vec![1.0, -2.5, 3.25]),
        }
    }

    #[test]
    fn round_trip_keeps_the_message() {
        let bytes = encode_message(&sample(), &MessageLimits::CONTROL).unwrap();
        assert_eq!(&bytes[..2], &PROTOCOL_VERSION.to_le_bytes());
        let back: Sample = decode_message(&bytes, &MessageLimits::CONTROL).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn alpn_names_the_protocol_version() {
        let alpn = std::str::from_utf8(ALPN).unwrap();
        assert_eq!(alpn, format!("mpcl/{PROTOCOL_VERSION}"));
    }

    #[test]
    fn oversized_payload_is_refused_on_both_sides() {
        let limits = MessageLimits::new(8).unwrap();
        let error = encode_message(&sample(), &limits).unwrap_err();
        assert!(matches!(error, CodecError::FrameTooLarge { limit: 8, .. }));
        let bytes = encode_message(&sample(), &MessageLimits::CONTROL).unwrap();
        let error = decode_message::<Sample>(&bytes, &limits).unwrap_err();
        assert!(
            matches!(error, CodecError::FrameTooLarge { size, limit: 8 } if size == bytes.len() as u64)
        );
    }

    #[test]
    fn encode_into_leaves_the_buffer_alone_on_refusal() {
        let mut out = vec![9, 9];
        let limits = MessageLimits::new(4).unwrap();
        assert!(encode_message_into(&mut out, &sample(), &limits).is_err());
        assert_eq!(out, vec![9, 9]);
    }

    #[test]
    fn truncated_payload_is_reported_as_truncated() {
        let bytes = encode_message(&sample(), &MessageLimits::CONTROL).unwrap();
        let error = decode_message::<Sample>(&bytes[..bytes.len() - 3], &MessageLimits::CONTROL)
            .unwrap_err();
        assert!(matches!(error, CodecError::Truncated { .. }), "{error}");
        let error = decode_message::<Sample>(&bytes[..1], &MessageLimits::CONTROL).unwrap_err();
        assert!(matches!(
            error,
            CodecError::Truncated {
                expected: 2,
                received: 1
            }
        ));
    }

    #[test]
    fn another_version_is_a_version_mismatch() {
        let mut bytes = encode_message(&sample(), &MessageLimits::CONTROL).unwrap();
        let other = PROTOCOL_VERSION + 1;
        bytes[..2].copy_from_slice(&other.to_le_bytes());
        let error = decode_message::<Sample>(&bytes, &MessageLimits::CONTROL).unwrap_err();
        assert!(matches!(
            error,
            CodecError::VersionMismatch {
                expected: PROTOCOL_VERSION,
                found
            } if found == other
        ));
    }

    #[test]
    fn garbage_is_malformed_with_bincodes_reason() {
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0x01]);
        let error = decode_message::<Sample>(&bytes, &MessageLimits::CONTROL).unwrap_err();
        match error {
            CodecError::Malformed(reason) => assert!(!reason.is_empty()),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_message(&Sample::Empty, &MessageLimits::CONTROL).unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        let error = decode_message::<Sample>(&bytes, &MessageLimits::CONTROL).unwrap_err();
        assert!(matches!(
            error,
            CodecError::TrailingBytes {
                consumed: 3,
                trailing: 3
            }
        ));
    }

    #[test]
    fn f32_vector_with_odd_byte_count_is_malformed() {
        // A Named variant whose `values` byte string has 3 bytes.
        #[derive(Serialize)]
        enum Forged {
            #[allow(dead_code)]
            Empty,
            Named {
                name: String,
                #[serde(with = "serde_bytes")]
                values: Vec<u8>,
            },
        }
        let forged = Forged::Named {
            name: "w".into(),
            values: vec![1, 2, 3],
        };
        let bytes = encode_message(&forged, &MessageLimits::CONTROL).unwrap();
        let error = decode_message::<Sample>(&bytes, &MessageLimits::CONTROL).unwrap_err();
        assert!(error.to_string().contains("multiple of 4"), "{error}");
    }

    #[test]
    fn limits_grow_with_the_model_and_stay_in_bounds() {
        let small = MessageLimits::for_model(0, 0, 0);
        assert_eq!(small, MessageLimits::CONTROL);
        let model = MessageLimits::for_model(1_000_000, 2 * 10 * 4 * 64, 10);
        // A million parameters are 4 MB raw; the limit must hold them with headroom.
        assert!(model.max_message_bytes > 5_000_000);
        assert!(model.max_message_bytes < 8_000_000);
        let huge = MessageLimits::for_model(usize::MAX, usize::MAX, usize::MAX);
        assert_eq!(huge.max_message_bytes, HARD_MAX_MESSAGE_BYTES);
        assert!(MessageLimits::new(0).is_err());
        assert!(MessageLimits::new(HARD_MAX_MESSAGE_BYTES + 1).is_err());
        assert_eq!(model.min(small), small);
    }
}
