//! Secure aggregation: the coordinator learns the **sum** of a round's updates and nothing about
//! any single one (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
//! Learning", CCS 2017; the protocol with double masking and a consistency check, simplified to
//! one cohort per round and no sockets).
//!
//! Everything here is pure: [`SecAggClient`] and [`SecAggServer`] are step-by-step protocol
//! objects fed with messages and returning messages, so the network layer (QUIC), the in-process
//! simulation and the tests drive the very same code. How the steps travel over QUIC (the setup
//! in `StartRound`, one request per step answered when the step closes) is in the `wire` module
//! ([`SecureRoundSetup`], [`SecAggUpload`], [`SecAggStep`]).
//!
//! # A round, step by step
//!
//! The coordinator samples a cohort and sends every member the same [`SecAggParams`] (run id,
//! round, the cohort's ed25519 keys in a canonical order, the threshold `t`, the length of the
//! vector to sum). Each member's position in that roster, plus one, is its Shamir x-coordinate.
//!
//! | step | client ([`SecAggClient`]) | message | server ([`SecAggServer`]) |
//! |---|---|---|---|
//! | 0 | [`SecAggClient::new`]: two fresh X25519 key pairs (one for encrypting shares, one for masks) and a self-mask seed `b` | [`KeyAdvertisement`] (both public keys, a hash commitment to `b`, signed with the client's ed25519 identity) -> server | [`receive_advertisement`](SecAggServer::receive_advertisement) checks the signature; [`close_advertisements`](SecAggServer::close_advertisements) needs `>= t` and returns the list `U1` to send to each of them |
//! | 1 | [`share_keys`](SecAggClient::share_keys): verifies every advertisement itself (the server cannot substitute a key without forging a signature), splits `b` and its mask private key into t-of-n Shamir shares, encrypts each peer's pair of shares with ChaCha20-Poly1305 under a key from their X25519 agreement | [`ShareBundle`] -> server | [`receive_shares`](SecAggServer::receive_shares); [`close_shares`](SecAggServer::close_shares) needs `>= t` senders (`U2`) and returns, per member of `U2`, the [`EncryptedShare`]s addressed to it |
//! | 2 | [`mask_input`](SecAggClient::mask_input): decrypts its shares, then `y = x + PRG(b) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)` (mod 2^32) over the peers in `U2` | [`MaskedInput`] -> server | [`receive_masked_input`](SecAggServer::receive_masked_input); [`close_masked_inputs`](SecAggServer::close_masked_inputs) needs `>= t` (`U3`, the contributors) and returns the [`SurvivorList`] to send to `U3` |
//! | 3 | [`sign_survivors`](SecAggClient::sign_survivors): signs the list (once per round) | [`SurvivorSignature`] -> server | [`receive_survivor_signature`](SecAggServer::receive_survivor_signature); [`close_signatures`](SecAggServer::close_signatures) needs `>= t` and returns the [`UnmaskRequest`] (list + signatures) to send to the signers |
//! | 4 | [`unmask`](SecAggClient::unmask): checks `>= t` valid signatures on the very list it signed, then reveals its share of `b_u` for every contributor `u` and its share of the mask key of every member of `U2` that did not contribute -- never both for the same peer | [`UnmaskResponse`] -> server | [`receive_unmask_response`](SecAggServer::receive_unmask_response); [`finish`](SecAggServer::finish) needs `>= t`, reconstructs, verifies each reconstruction (seed against its commitment, key against its advertised public key), removes the masks and returns the [`SecureSum`] |
//!
//! Every step that lacks `t` participants fails with [`SecAggError::BelowThreshold`]: the round
//! is abandoned (or restarted with a new cohort), never finished with a wrong sum.
//!
//! # Numbers
//!
//! Updates are real-valued; masking works on `u32` words modulo 2^32. [`quantize`] maps each
//! value `v` to `round(v * scale)` in two's complement and bounds what a client may send so that
//! the sum of `n` clients cannot wrap; [`layout`] lays out a [`crate::ClientUpdate`]'s numeric parts
//! (sample-weighted delta, prototype S and W, co-occurrence sum and count, the weight itself) as
//! one vector and turns the unmasked sum back into statistics.
//!
//! # What it protects against
//!
//! * An honest-but-curious coordinator: it sees only masked vectors (uniform modulo 2^32 to
//!   anyone without the seeds) and the final sum of at least `t` clients.
//! * A coordinator that substitutes keys: advertisements are signed with the clients' enrolled
//!   ed25519 identities and every client checks every signature.
//! * A coordinator that lies about who dropped out in order to unmask one client (asking some
//!   clients for `b_u` and others for `u`'s mask key): each client signs one survivor list per
//!   round and reveals nothing until `t` clients have signed the same list; with `t > n/2` two
//!   different lists cannot both gather `t` signatures. Each client also reveals at most one of
//!   the two secrets of any peer.
//! * A late update of a client already treated as dropped: its mask key may have been
//!   reconstructed, but its self mask `PRG(b_u)` still hides its input.
//! * Up to `t - 1` clients colluding with the coordinator learn nothing about the others' inputs
//!   beyond the sum (they hold fewer than `t` shares of anyone's secrets).
//! * Eavesdroppers and the relaying coordinator cannot read the shares (AEAD-encrypted end to end
//!   between clients, bound to the run, round, roster, sender and recipient).
//!
//! # What it does not protect against
//!
//! * What the **sum** itself reveals (with two contributors, either one learns the other's input
//!   from the sum and its own). Pair it with differential privacy for that (the coordinator's
//!   `privacy` module) and keep `t` large.
//! * A malicious client poisoning the sum with a large but in-range update: the coordinator cannot
//!   inspect inputs, so robust rules (median, trimmed mean) and per-update checks are impossible;
//!   bound what a client can send with clipping and the quantisation range instead.
//! * A malicious client sending wrong shares: the reconstruction fails its check and the round is
//!   aborted ([`SecAggError::Reconstruction`]) -- a denial of service, never a wrong sum.
//! * A coordinator that invents participants: the roster comes from the coordinator, so clients
//!   must check it against the enrolment they trust ([`ClientOptions::trusted_peers`]); without
//!   that the coordinator is trusted to sample only enrolled clients.
//! * Timing side channels of the table-based GF(256) arithmetic in the Shamir crate (`blahaj`).
//! * Traffic analysis: who took part in a round is visible to the coordinator by design.

mod client;
pub mod layout;
mod masking;
mod messages;
pub mod quantize;
pub mod round_plan;
mod server;
mod shamir;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::messages::RunId;

pub use client::{ClientOptions, SecAggClient};
pub use layout::{LayoutError, PrototypeShape, Segment, SummedUpdate, UpdateLayout};
pub use messages::{
    EncryptedShare, KeyAdvertisement, MaskedInput, RevealedShare, ShareBundle, SurvivorList,
    SurvivorSignature, U32Vec, UnmaskRequest, UnmaskResponse,
};
pub use quantize::{QuantizationError, Quantizer, ValueKind};
pub use round_plan::{PreparedInput, SecureRoundPlan, SecureSetupError};
pub use server::{SecAggServer, SecureSum, ServerStage};
pub use wire::{SecAggStep, SecAggUpload, SecureRoundSetup};

/// Domain tag that starts every hash, signature and key derivation of this protocol.
pub const SECAGG_DOMAIN: &[u8] = b"mpcl/secure-aggregation/v1\0";

/// The most clients one secure-aggregation session can have: Shamir shares over GF(256) use the
/// x-coordinates 1..=255.
pub const MAX_PARTICIPANTS: usize = 255;

/// A participant as secure aggregation knows it: its 32-byte ed25519 public key (the key that
/// authenticates its TLS connection and signs its messages).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The peer id of an ed25519 public key.
    pub fn from_key(key: &ed25519_dalek::VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// The ed25519 public key, or `None` when the bytes are not a valid point.
    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for PeerId {
    /// The first eight bytes in hex (the same length as an identity fingerprint).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", hex::encode(self.0))
    }
}

/// Everything both sides must agree on before a session starts. Sent by the coordinator with the
/// round; every signature, key derivation and encryption of the session is bound to
/// [`SecAggParams::session_digest`], so clients given different parameters simply fail to talk
/// to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// The run.
    pub run_id: RunId,
    /// The round.
    pub round: u64,
    /// The cohort, sorted and without duplicates; a peer's Shamir x-coordinate is its position
    /// plus one.
    pub roster: Vec<PeerId>,
    /// Shares needed to reconstruct a secret, and the fewest clients every step must keep.
    pub threshold: usize,
    /// Number of `u32` words in each masked vector.
    pub vector_len: usize,
    /// A value the coordinator never reuses for another session of the run (random over the
    /// network; zero in-process). A round restarted with the same cohort thus gets a different
    /// session digest, so no message of a failed attempt can be mistaken for one of the next.
    pub nonce: [u8; 16],
}

impl SecAggParams {
    /// Parameters for a cohort (sorted and deduplicated here), checked with
    /// [`SecAggParams::validate`].
    pub fn new(
        run_id: RunId,
        round: u64,
        mut roster: Vec<PeerId>,
        threshold: usize,
        vector_len: usize,
    ) -> Result<Self, SecAggError> {
        roster.sort();
        roster.dedup();
        let params = Self {
            run_id,
            round,
            roster,
            threshold,
            vector_len,
            nonce: [0; 16],
        };
        params.validate()?;
        Ok(params)
    }

    /// The same parameters with session nonce `nonce` (see [`SecAggParams::nonce`]).
    pub fn with_nonce(mut self, nonce: [u8; 16]) -> Self {
        self.nonce = nonce;
        self
    }

    /// The threshold for a cohort of `cohort` clients: the larger of `ceil(fraction * cohort)`
    /// and a strict majority, at least 2, at most `cohort`.
    pub fn threshold_for(cohort: usize, fraction: f64) -> usize {
        let by_fraction = (fraction * cohort as f64 - 1e-9).ceil().max(0.0) as usize;
        by_fraction.max(cohort / 2 + 1).max(2).min(cohort)
    }

    /// Checks the roster (2..=255 distinct, sorted valid ed25519 keys), the threshold (a strict
    /// majority of the roster and at least 2) and the vector length (1 ..= 2^36 words, the
    /// ChaCha20 keystream limit).
    pub fn validate(&self) -> Result<(), SecAggError> {
        let invalid = |message: String| Err(SecAggError::InvalidParameters(message));
        let n = self.roster.len();
        if n < 2 {
            return invalid(format!(
                "the roster has {n} participant(s); secure aggregation needs at least 2"
            ));
        }
        if n > MAX_PARTICIPANTS {
            return invalid(format!(
                "the roster has {n} participants; at most {MAX_PARTICIPANTS} are supported (Shamir shares over GF(256))"
            ));
        }
        if self.roster.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("the roster must be sorted and free of duplicates".into());
        }
        if let Some(bad) = self.roster.iter().find(|p| p.verifying_key().is_none()) {
            return invalid(format!("roster entry {bad} is not a valid ed25519 key"));
        }
        if self.threshold < 2 || self.threshold > n || self.threshold <= n / 2 {
            return invalid(format!(
                "threshold {} must be a strict majority of the {n} participants (at least {}) and at least 2",
                self.threshold,
                n / 2 + 1
            ));
        }
        if self.vector_len == 0 || self.vector_len > (1 << 36) {
            return invalid(format!(
                "vector length {} must be in 1..=2^36",
                self.vector_len
            ));
        }
        Ok(())
    }

    /// The peer's position in the roster.
    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.roster.binary_search(peer).ok()
    }

    /// The peer's Shamir x-coordinate (position + 1).
    pub(crate) fn x_of(&self, peer: &PeerId) -> Option<u8> {
        self.index_of(peer).map(|i| (i + 1) as u8)
    }

    /// SHA-256 over the domain tag and every field: what binds all messages to this session.
    pub fn session_digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(SECAGG_DOMAIN);
        hash.update(b"session");
        hash.update(self.run_id);
        hash.update(self.round.to_le_bytes());
        hash.update(self.nonce);
        hash.update((self.threshold as u64).to_le_bytes());
        hash.update((self.vector_len as u64).to_le_bytes());
        hash.update((self.roster.len() as u64).to_le_bytes());
        for peer in &self.roster {
            hash.update(peer.0);
        }
        hash.finalize().into()
    }
}

/// Everything that can go wrong in a secure-aggregation session. Each names the step or peer
/// involved; none of them ever leads to a wrong sum being returned.
#[derive(Debug, Error, PartialEq)]
pub enum SecAggError {
    /// The session parameters are unusable.
    #[error("invalid secure-aggregation parameters: {0}")]
    InvalidParameters(String),
    /// A message came from, or names, a peer outside the roster.
    #[error("{what}: peer {peer} is not in this round's roster")]
    NotInRoster { peer: PeerId, what: &'static str },
    /// The message's sender field is not the authenticated sender.
    #[error("{what} claims to come from {claimed} but arrived from {authenticated}")]
    SenderMismatch {
        claimed: PeerId,
        authenticated: PeerId,
        what: &'static str,
    },
    /// A signature does not verify (forged, unsigned, or for another session).
    #[error("{what} of peer {peer} has an invalid signature")]
    BadSignature { peer: PeerId, what: &'static str },
    /// A peer sent the same kind of message twice.
    #[error("duplicate {what} from peer {peer}")]
    Duplicate { peer: PeerId, what: &'static str },
    /// A step was called out of order (or after the session failed or finished).
    #[error("{step} is not possible now: the session is at {stage}")]
    OutOfOrder {
        step: &'static str,
        stage: &'static str,
    },
    /// Too few participants are left for the step: the round must be abandoned.
    #[error("{stage}: only {have} participant(s) left, the threshold is {threshold}")]
    BelowThreshold {
        stage: &'static str,
        have: usize,
        threshold: usize,
    },
    /// A peer's X25519 public key is unusable (a low-order point gives a non-contributory
    /// agreement).
    #[error("peer {peer} advertised an unusable X25519 public key")]
    InvalidKey { peer: PeerId },
    /// A share could not be decrypted or authenticated.
    #[error("the encrypted share from {from} to {to} does not decrypt")]
    ShareDecryption { from: PeerId, to: PeerId },
    /// A message is malformed or inconsistent with what was agreed.
    #[error("malformed {what} from peer {peer}: {reason}")]
    Malformed {
        peer: PeerId,
        what: &'static str,
        reason: String,
    },
    /// A reconstructed secret does not match the peer's commitment or public key: some share was
    /// wrong. The sum is not computed.
    #[error("the reconstructed {what} of peer {peer} does not match what it advertised")]
    Reconstruction { peer: PeerId, what: &'static str },
    /// A vector has the wrong length.
    #[error("{what} has {found} values, expected {expected}")]
    WrongLength {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// A request or message contradicts what this side saw, signed or expects at this step.
    #[error("refused: {0}")]
    Refused(String),
    /// The operating system's random source failed.
    #[error("cannot gather randomness: {0}")]
    Randomness(String),
}
