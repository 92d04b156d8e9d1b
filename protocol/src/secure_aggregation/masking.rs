//! Key derivation and mask expansion.
//!
//! * Keys: SHA-256 over the domain tag, a purpose label, the session digest and the inputs, each
//!   length-prefixed. The X25519 outputs fed in are uniformly random group elements, and every key
//!   is bound to its purpose and session, so one agreement never yields the same key for two uses.
//! * Masks: the ChaCha20 keystream (RFC 8439, 96-bit zero nonce: every mask key is used for exactly
//!   one stream) read as little-endian `u32` words. A mask of `n` words costs `4n` keystream
//!   bytes; the 32-bit block counter allows 2^36 words.

//!
//! Protects: masks are pseudorandom to anyone without the key (ChaCha20), keys are independent per
//! pair, purpose and session (a mask key reconstructed in one round says nothing about another).
//! Does not protect: a leaked X25519 private key or self-mask seed unmasks that client's vector
//! of that session.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{PeerId, SECAGG_DOMAIN};

/// Purpose labels (each key derivation uses exactly one).
pub(crate) const PAIRWISE_MASK: &[u8] = b"pairwise-mask";
pub(crate) const SELF_MASK: &[u8] = b"self-mask";
pub(crate) const SHARE_KEY: &[u8] = b"share-encryption";
pub(crate) const SEED_COMMITMENT: &[u8] = b"self-seed-commitment";
pub(crate) const ADVERTISEMENT: &[u8] = b"key-advertisement";
pub(crate) const SURVIVORS: &[u8] = b"survivor-list";

/// `SHA-256(domain || len(label) || label || session || len(part) || part ...)`.
pub(crate) fn derive(label: &[u8], session: &[u8; 32], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut hash = Sha256::new();
    hash.update(SECAGG_DOMAIN);
    hash.update((label.len() as u64).to_le_bytes());
    hash.update(label);
    hash.update(session);
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    Zeroizing::new(hash.finalize().into())
}

/// The bytes a signature of `label` covers (same construction, not hashed).
pub(crate) fn signed_bytes(label: &[u8], session: &[u8; 32], parts: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(SECAGG_DOMAIN);
    bytes.extend_from_slice(&(label.len() as u64).to_le_bytes());
    bytes.extend_from_slice(label);
    bytes.extend_from_slice(session);
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    bytes
}

/// The key of the pairwise mask between `a` and `b` (symmetric in the two peers).
pub(crate) fn pairwise_mask_key(
    session: &[u8; 32],
    shared_secret: &[u8; 32],
    a: &PeerId,
    b: &PeerId,
) -> Zeroizing<[u8; 32]> {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    derive(PAIRWISE_MASK, session, &[shared_secret, &low.0, &high.0])
}

/// The key of a client's self mask.
pub(crate) fn self_mask_key(session: &[u8; 32], seed: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    derive(SELF_MASK, session, &[seed])
}

/// The commitment a client publishes to its self-mask seed (the seed is 32 random bytes, so the
/// hash reveals nothing about it).
pub(crate) fn seed_commitment(session: &[u8; 32], owner: &PeerId, seed: &[u8; 32]) -> [u8; 32] {
    *derive(SEED_COMMITMENT, session, &[&owner.0, seed])
}

/// The AEAD key for shares sent from `from` to `to` (directional: each key encrypts exactly one
/// message, so a fixed nonce is safe).
pub(crate) fn share_key(
    session: &[u8; 32],
    shared_secret: &[u8; 32],
    from: &PeerId,
    to: &PeerId,
) -> Zeroizing<[u8; 32]> {
    derive(SHARE_KEY, session, &[shared_secret, &from.0, &to.0])
}

/// The mask of `len` words expanded from `key`.
pub(crate) fn expand(key: &[u8; 32], len: usize) -> Vec<u32> {
    let mut bytes = vec![0u8; len * 4];
    let mut cipher = ChaCha20::new(key.into(), &[0u8; 12].into());
    cipher.apply_keystream(&mut bytes);
    let words = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    zeroize::Zeroize::zeroize(&mut bytes);
    words
}

/// Adds (`add = true`) or subtracts the mask expanded from `key` into `acc`, modulo 2^32.
pub(crate) fn apply_mask(acc: &mut [u32], key: &[u8; 32], add: bool) {
    let mask = expand(key, acc.len());
    if add {
        super::quantize::wrapping_add_into(acc, &mask);
    } else {
        super::quantize::wrapping_sub_into(acc, &mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_is_the_rfc8439_keystream() {
        // RFC 8439 section 2.4.2 uses counter 1; with counter 0 and the all-zero key and nonce the
        // first keystream block is the well-known 76b8e0ad...
        let words = expand(&[0u8; 32], 2);
        assert_eq!(words[0].to_le_bytes(), [0x76, 0xb8, 0xe0, 0xad]);
        assert_eq!(words[1].to_le_bytes(), [0xa0, 0xf1, 0x3d, 0x90]);
    }

    #[test]
    fn pairwise_keys_are_symmetric_and_purpose_bound() {
        let session = [1u8; 32];
        let secret = [2u8; 32];
        let a = PeerId([3; 32]);
        let b = PeerId([4; 32]);
        assert_eq!(
            *pairwise_mask_key(&session, &secret, &a, &b),
            *pairwise_mask_key(&session, &secret, &b, &a)
        );
        assert_ne!(
            *share_key(&session, &secret, &a, &b),
            *share_key(&session, &secret, &b, &a)
        );
        assert_ne!(
            *pairwise_mask_key(&session, &secret, &a, &b),
            *share_key(&session, &secret, &a, &b)
        );
        assert_ne!(
            *pairwise_mask_key(&session, &secret, &a, &b),
            *pairwise_mask_key(&[9u8; 32], &secret, &a, &b)
        );
    }

    #[test]
    fn adding_then_subtracting_a_mask_restores_the_vector() {
        let mut v = vec![1u32, 2, 3, u32::MAX];
        apply_mask(&mut v, &[5u8; 32], true);
        assert_ne!(v, vec![1, 2, 3, u32::MAX]);
        apply_mask(&mut v, &[5u8; 32], false);
        assert_eq!(v, vec![1, 2, 3, u32::MAX]);
    }
}
