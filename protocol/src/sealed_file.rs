//! The framing mpcl's files share (the coordinator's checkpoints and the model file): a magic
//! naming the kind of file, a format version, the payload's length and its SHA-256, then the
//! payload. All integers little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic |
//! | 4 | format version |
//! | 8 | payload length |
//! | 32 | SHA-256 of the payload |
//! | n | payload |
//!
//! Each format keeps its own error type (whose messages name the kind of file) and converts
//! [`SealError`] into it.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// What is wrong with the framing of a file.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum SealError {
    #[error("bad magic bytes")]
    BadMagic,
    #[error("format version {found}, this build reads version {supported}")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("truncated: {found} bytes, expected {expected}")]
    Truncated { expected: u64, found: u64 },
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes { extra: u64 },
    #[error("checksum mismatch")]
    ChecksumMismatch,
}

/// `payload` framed with `magic` and `version`.
pub fn seal(magic: [u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    bytes
}

/// Checks the header and the checksum of `bytes`; returns the payload. Bytes shorter than the
/// magic that start like it are truncated, not foreign.
pub fn unseal(bytes: &[u8], magic: [u8; 8], version: u32) -> Result<&[u8], SealError> {
    let magic_len = magic.len().min(bytes.len());
    if bytes[..magic_len] != magic[..magic_len] {
        return Err(SealError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SealError::Truncated {
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let found_version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or([0; 4]));
    if found_version != version {
        return Err(SealError::UnsupportedVersion {
            found: found_version,
            supported: version,
        });
    }
    let payload_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or([0; 8]));
    let expected = (HEADER_LEN as u64).saturating_add(payload_len);
    let found = bytes.len() as u64;
    if found < expected {
        return Err(SealError::Truncated { expected, found });
    }
    if found > expected {
        return Err(SealError::TrailingBytes {
            extra: found - expected,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != &bytes[20..HEADER_LEN] {
        return Err(SealError::ChecksumMismatch);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 8] = *b"MPCLTEST";

    #[test]
    fn a_sealed_payload_unseals_and_every_damage_is_named() {
        let bytes = seal(MAGIC, 3, b"payload");
        assert_eq!(unseal(&bytes, MAGIC, 3), Ok(&b"payload"[..]));
        assert_eq!(unseal(&bytes, *b"MPCLOTHR", 3), Err(SealError::BadMagic));
        assert!(matches!(
            unseal(&bytes, MAGIC, 4),
            Err(SealError::UnsupportedVersion {
                found: 3,
                supported: 4
            })
        ));
        for cut in [0, 3, 8, HEADER_LEN - 1, bytes.len() - 1] {
            assert!(
                matches!(
                    unseal(&bytes[..cut], MAGIC, 3),
                    Err(SealError::Truncated { .. })
                ),
                "{cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            unseal(&longer, MAGIC, 3),
            Err(SealError::TrailingBytes { extra: 1 })
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(unseal(&flipped, MAGIC, 3), Err(SealError::ChecksumMismatch));
    }
}
