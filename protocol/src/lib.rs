//! The language nodes of an mpcl run speak: parameter vectors and statistics as plain data,
//! the messages built from them, their encoding and size limits, identities and signatures, and
//! the model file every job writes.
//!
//! Nothing here knows about burn or sockets, so every other crate (the model, the coordinator,
//! the client, the simulations) can share these types without pulling in either.
//!
//! | module | what it holds |
//! |---|---|
//! | [`messages`] | the wire messages and the conversation between client and coordinator |
//! | [`close_code`] | why the coordinator closed a connection, as both ends read it |
//! | [`codec`] | bytes <-> messages (bincode, the only place it is used), size limits, version |
//! | [`compression`] | the encoder delta in f16 or 8-bit form, error feedback |
//! | [`framing`] | length-prefixed frames over async streams (quinn streams included) |
//! | [`identity`] | ed25519 key files, participant ids, the enrolment file |
//! | [`model_file`] | the trained model as one versioned, checksummed file |
//! | [`reject`] | the one reason an update was not counted, logged and sent as it is |
//! | [`sealed_file`] | the magic, version, length and checksum framing of mpcl's files |
//! | [`signing`] | signed updates, their verification, the replay guard |
//! | [`start_round`] | `StartRound` payloads sharing one encoding of the round's global state |
//! | [`tls`] | rustls configs that authenticate by enrolled / pinned ed25519 keys |
//! | [`transport`] | the largest datagram both ends send and accept over QUIC |
//! | [`secure_aggregation`] | masking math, Shamir shares and the client/coordinator steps of secure aggregation |

pub mod close_code;
pub mod codec;
pub mod compression;
pub mod framing;
pub mod identity;
pub mod messages;
pub mod metrics;
pub mod model_file;
pub mod params;
pub mod participant_id;
pub mod privacy_noise;
pub mod reject;
pub mod sealed_file;
pub mod secure_aggregation;
pub mod signing;
pub mod start_round;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod update_payload;
pub mod vector;

pub use codec::{ALPN, CodecError, HARD_MAX_MESSAGE_BYTES, MessageLimits, PROTOCOL_VERSION};
pub use compression::{
    CompressedDelta, CompressedUpdate, Compression, CompressionError, DeltaLayout, ErrorFeedback,
};
pub use framing::{read_message, write_message};
pub use identity::{Enrolment, EnrolmentError, IdentityError, NodeIdentity, Participant, keygen};
pub use messages::{
    ClientMessage, ClientUpdate, CoordinatorMessage, GlobalState, LocalMetrics, PrototypeBank,
    RejectReason, RoundPhase, RunId, StatusReport, TrainingConfig, WaitReason, Welcome,
};
pub use model_file::{ModelFile, ModelFileError};
pub use params::{NamedTensor, ParameterSet, ParameterSetError};
pub use participant_id::ParticipantId;
pub use signing::{SignedUpdate, UpdateError, UpdateVerifier, VerifiedUpdate};
pub use stats::{CooccurrenceStatistics, PrototypeStatistics, StatisticsError};
pub use tls::{TLS_SERVER_NAME, TlsError, client_config, server_config};
pub use transport::MAX_UDP_PAYLOAD_BYTES;
pub use vector::F32Vec;

/// Re-exported so users of the identity and signing APIs need not depend on ed25519-dalek
/// themselves (and cannot end up with a second version of it).
pub use ed25519_dalek::{SigningKey, VerifyingKey};
/// Re-exported for the same reason: the configs from [`tls`] are rustls 0.23 types.
pub use rustls;
