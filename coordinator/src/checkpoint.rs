//! Everything needed to resume a run after the coordinator stops, and how it reaches the disk
//! without ever leaving a half-written file as the only copy.
//!
//! A checkpoint is taken at a round boundary: the config (as TOML text, which doubles as its
//! digest and keeps the file readable), the run id, how many rounds are complete, the global
//! state, the FedAdam moments, the per-round summaries so far and, with differential privacy,
//! the privacy ledger (a resumed run must go on spending from the same budget). Sampling needs no RNG
//! position: each round's generator is derived from the run seed and the round number, so a
//! resumed run samples exactly as an uninterrupted one would.
//!
//! File layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `MPCLCKPT` |
//! | 4 | format version (currently 4; version 3 had no label-prior round, version 2 no federated evaluation, version 1 no privacy ledger and no per-round privacy summary) |
//! | 8 | payload length |
//! | 32 | SHA-256 of the payload |
//! | n | payload: the [`Checkpoint`] encoded with bincode 2 (serde, standard config) |
//!
//! [`write_checkpoint`] writes a temporary file in the target's directory, fsyncs it, keeps the
//! current checkpoint (if it verifies) as `<stem>.prev.<ext>` through a hard link, renames the
//! temporary file over the target and fsyncs the directory: at every instant the target path
//! holds a complete checkpoint, and a bad write never destroys the last good one.
//! [`read_latest_checkpoint`] falls back to the previous file when the current one is missing or
//! fails verification.
//!
//! This is the only place that knows the checkpoint encoding (the protocol crate owns the wire
//! codec separately).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use mpcl_protocol::messages::{GlobalState, RunId};
use mpcl_protocol::sealed_file::{self, SealError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregation::FedAdamState;
use crate::config::{ConfigError, CoordinatorConfig};
use crate::evaluation::FederatedMetrics;
use crate::privacy::PrivacyLedger;
use crate::round::RoundSummary;

/// Magic bytes opening every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"MPCLCKPT";
/// The checkpoint format version this build writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 4;
/// Most memory (2^34 bytes) decoding a checkpoint may claim, however large it is.
const MAX_CHECKPOINT_CLAIM_BITS: u32 = 34;

/// The coordinator's state at a round boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run's configuration as TOML.
    pub config_toml: String,
    /// The run id.
    pub run_id: RunId,
    /// Rounds aggregated so far (the next round is `completed_rounds + 1`).
    pub completed_rounds: u64,
    /// The global state after the last completed round.
    pub global: GlobalState,
    /// FedAdam moments (present once a FedAdam round has been aggregated).
    pub fedadam: Option<FedAdamState>,
    /// One summary per completed round.
    pub history: Vec<RoundSummary>,
    /// The privacy ledger (differential privacy only).
    pub privacy_ledger: Option<PrivacyLedger>,
    /// Federated metrics of every global model evaluated so far, in round order.
    pub evaluations: Vec<FederatedMetrics>,
    /// Whether the final evaluation round has run.
    pub final_evaluated: bool,
    /// Whether the opening label-prior round has set the head (or the run has none).
    pub label_prior_applied: bool,
}

impl Checkpoint {
    /// Parses and validates the stored configuration.
    pub fn config(&self) -> Result<CoordinatorConfig, ConfigError> {
        CoordinatorConfig::from_toml_str(&self.config_toml)
    }
}

/// What is wrong with checkpoint bytes.
#[derive(Debug, Error, PartialEq)]
pub enum CheckpointFormatError {
    /// The bytes do not start with the checkpoint magic.
    #[error("not an mpcl checkpoint (bad magic bytes)")]
    BadMagic,
    /// Written by another format version.
    #[error("checkpoint format version {found}, this build reads version {supported}{}", version_advice(*found, *supported))]
    UnsupportedVersion { found: u32, supported: u32 },
    /// Shorter than its header says.
    #[error("truncated: {found} bytes, expected {expected}")]
    Truncated { expected: u64, found: u64 },
    /// Longer than its header says.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes { extra: u64 },
    /// The payload does not match its checksum.
    #[error("checksum mismatch: the file is corrupt")]
    ChecksumMismatch,
    /// The payload verified but could not be decoded (a bug or a format change without a
    /// version bump).
    #[error("cannot decode payload: {0}")]
    Decode(String),
    /// The checkpoint could not be encoded.
    #[error("cannot encode checkpoint: {0}")]
    Encode(String),
}

fn version_advice(found: u32, supported: u32) -> &'static str {
    if found < supported {
        " (written by an older mpcl, before the label-prior round was checkpointed): finish that run with the build that started it, or start a new run"
    } else {
        " (written by a newer mpcl): use that build"
    }
}

/// Errors from reading or writing checkpoint files; each names the file.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// No file at the path.
    #[error("checkpoint {} does not exist", path.display())]
    Missing { path: PathBuf },
    /// An I/O operation failed.
    #[error("cannot {action} checkpoint {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a usable checkpoint.
    #[error("checkpoint {} is unusable: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: CheckpointFormatError,
    },
    /// The checkpoint could not be encoded.
    #[error(transparent)]
    Encode(CheckpointFormatError),
    /// Neither the checkpoint nor its previous copy could be read.
    #[error("no usable checkpoint: {primary}; previous copy: {previous}")]
    NoUsableCheckpoint {
        primary: Box<CheckpointError>,
        previous: Box<CheckpointError>,
    },
}

impl CheckpointError {
    /// Whether the error only says that no checkpoint exists (a fresh run), as opposed to one
    /// that exists but is broken.
    pub fn is_missing(&self) -> bool {
        match self {
            Self::Missing { .. } => true,
            Self::NoUsableCheckpoint { primary, previous } => {
                primary.is_missing() && previous.is_missing()
            }
            _ => false,
        }
    }
}

/// Encodes a checkpoint with its header and checksum.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointFormatError> {
    let payload = bincode::serde::encode_to_vec(checkpoint, bincode::config::standard())
        .map_err(|e| CheckpointFormatError::Encode(e.to_string()))?;
    Ok(sealed_file::seal(
        CHECKPOINT_MAGIC,
        CHECKPOINT_FORMAT_VERSION,
        &payload,
    ))
}

/// Checks header and checksum; returns the payload.
fn verified_payload(bytes: &[u8]) -> Result<&[u8], CheckpointFormatError> {
    sealed_file::unseal(bytes, CHECKPOINT_MAGIC, CHECKPOINT_FORMAT_VERSION).map_err(|error| {
        match error {
            SealError::BadMagic => CheckpointFormatError::BadMagic,
            SealError::UnsupportedVersion { found, supported } => {
                CheckpointFormatError::UnsupportedVersion { found, supported }
            }
            SealError::Truncated { expected, found } => {
                CheckpointFormatError::Truncated { expected, found }
            }
            SealError::TrailingBytes { extra } => CheckpointFormatError::TrailingBytes { extra },
            SealError::ChecksumMismatch => CheckpointFormatError::ChecksumMismatch,
        }
    })
}

/// Verifies and decodes checkpoint bytes.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, CheckpointFormatError> {
    let payload = verified_payload(bytes)?;
    // Bounded by the payload's size: a damaged length must give an error, not a huge
    // allocation (see `decode_bincode_bounded`).
    let (checkpoint, read): (Checkpoint, usize) =
        mpcl_protocol::codec::decode_bincode_bounded(payload, MAX_CHECKPOINT_CLAIM_BITS)
            .map_err(|e| CheckpointFormatError::Decode(e.to_string()))?;
    if read != payload.len() {
        return Err(CheckpointFormatError::Decode(format!(
            "{} bytes left over after the checkpoint",
            payload.len() - read
        )));
    }
    Ok(checkpoint)
}

/// Where the previous good checkpoint is kept: `checkpoint.bin` -> `checkpoint.prev.bin`
/// (`state` -> `state.prev`).
pub fn previous_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.prev.{}", ext.to_string_lossy()),
        None => format!("{stem}.prev"),
    };
    path.with_file_name(name)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            CheckpointError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Reads and verifies one checkpoint file.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, CheckpointError> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    decode_checkpoint(&bytes).map_err(|source| CheckpointError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// A checkpoint read by [`read_latest_checkpoint`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The file it came from.
    pub path: PathBuf,
    /// Why the primary file was not used, when the previous copy was (worth a warning).
    pub primary_error: Option<CheckpointError>,
}

/// Reads `path`, falling back to its previous copy ([`previous_path`]) when `path` is missing or
/// broken. [`CheckpointError::is_missing`] on the error tells a fresh run from a broken one.
pub fn read_latest_checkpoint(path: impl AsRef<Path>) -> Result<LoadedCheckpoint, CheckpointError> {
    let path = path.as_ref();
    match read_checkpoint(path) {
        Ok(checkpoint) => Ok(LoadedCheckpoint {
            checkpoint,
            path: path.to_path_buf(),
            primary_error: None,
        }),
        Err(primary) => {
            let previous = previous_path(path);
            match read_checkpoint(&previous) {
                Ok(checkpoint) => Ok(LoadedCheckpoint {
                    checkpoint,
                    path: previous,
                    primary_error: Some(primary),
                }),
                Err(previous) => Err(CheckpointError::NoUsableCheckpoint {
                    primary: Box::new(primary),
                    previous: Box::new(previous),
                }),
            }
        }
    }
}

/// Writes `checkpoint` to `path` atomically, keeping the current file (if it verifies) as the
/// previous copy. See the module documentation for the sequence.
pub fn write_checkpoint(
    path: impl AsRef<Path>,
    checkpoint: &Checkpoint,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let bytes = encode_checkpoint(checkpoint).map_err(CheckpointError::Encode)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".to_string());
    let temporary = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));

    let result = (|| {
        let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
        file.write_all(&bytes)
            .map_err(io_error("write", &temporary))?;
        file.sync_all().map_err(io_error("sync", &temporary))?;
        drop(file);

        // Keep the current checkpoint as the previous copy, but only if it is good: a broken
        // current file must not replace a good previous one.
        if let Ok(current) = fs::read(path)
            && verified_payload(&current).is_ok()
        {
            let previous = previous_path(path);
            let staged = dir.join(format!(".{file_name}.prev-tmp-{}", std::process::id()));
            let _ = fs::remove_file(&staged);
            if fs::hard_link(path, &staged).is_err() {
                let mut copy = File::create(&staged).map_err(io_error("create", &staged))?;
                copy.write_all(&current)
                    .map_err(io_error("write", &staged))?;
                copy.sync_all().map_err(io_error("sync", &staged))?;
            }
            fs::rename(&staged, &previous).map_err(io_error("rename", &previous))?;
        }

        fs::rename(&temporary, path).map_err(io_error("rename", path))?;
        sync_directory(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync the directory of", dir))
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> Result<(), CheckpointError> {
    // Directories cannot be opened for syncing on this platform; rename is still atomic.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Regression (fuzzing, `checkpoint`): a payload under a valid checksum whose first field
    /// claims 2^60 bytes. Before the bounded decode this aborted the process (capacity
    /// overflow) instead of reporting a decode error.
    #[test]
    fn a_payload_claiming_a_huge_length_is_a_decode_error() {
        let payload = [0xFD, 0, 0, 0, 0, 0, 0, 0, 0x10, b'x'];
        let mut bytes = CHECKPOINT_MAGIC.to_vec();
        bytes.extend_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(&payload);
        match decode_checkpoint(&bytes) {
            Err(CheckpointFormatError::Decode(reason)) => {
                assert!(reason.contains("LimitExceeded"), "{reason}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
    use crate::test_support::{RUN, global};

    fn sample(rounds: u64) -> Checkpoint {
        Checkpoint {
            config_toml: CoordinatorConfig::default().to_toml_string().unwrap(),
            run_id: RUN,
            completed_rounds: rounds,
            global: global(),
            fedadam: Some(FedAdamState::new(6, 0.1)),
            history: Vec::new(),
            privacy_ledger: None,
            evaluations: Vec::new(),
            final_evaluated: false,
            label_prior_applied: true,
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        let checkpoint = sample(3);
        write_checkpoint(&path, &checkpoint).unwrap();
        assert_eq!(read_checkpoint(&path).unwrap(), checkpoint);
        assert_eq!(checkpoint.config().unwrap(), CoordinatorConfig::default());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("checkpoint.bin")]);
    }

    #[test]
    fn the_previous_checkpoint_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        write_checkpoint(&path, &sample(1)).unwrap();
        write_checkpoint(&path, &sample(2)).unwrap();
        assert_eq!(read_checkpoint(&path).unwrap().completed_rounds, 2);
        let previous = dir.path().join("checkpoint.prev.bin");
        assert_eq!(previous_path(&path), previous);
        assert_eq!(read_checkpoint(&previous).unwrap().completed_rounds, 1);
    }

    #[test]
    fn truncated_file_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        write_checkpoint(&path, &sample(1)).unwrap();
        let bytes = fs::read(&path).unwrap();
        for cut in [3, 30, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            let err = read_checkpoint(&path).unwrap_err();
            assert!(
                matches!(
                    err,
                    CheckpointError::Invalid {
                        source: CheckpointFormatError::Truncated { .. },
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("checkpoint.bin"), "{err}");
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_checkpoint(&sample(1)).unwrap();
        for index in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[index] ^= 0x01;
            assert!(decode_checkpoint(&broken).is_err(), "flip at {index}");
        }
        let mut broken = bytes.clone();
        let last = broken.len() - 1;
        broken[last] ^= 0x80;
        assert_eq!(
            decode_checkpoint(&broken),
            Err(CheckpointFormatError::ChecksumMismatch)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_checkpoint(&longer),
            Err(CheckpointFormatError::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            decode_checkpoint(
                b"PK\x03\x04 something else entirely, long enough for a header......"
            ),
            Err(CheckpointFormatError::BadMagic)
        );
        let mut future = bytes.clone();
        future[8] = 9;
        assert!(matches!(
            decode_checkpoint(&future),
            Err(CheckpointFormatError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn a_version_1_checkpoint_is_refused_with_advice() {
        let mut old = encode_checkpoint(&sample(1)).unwrap();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let error = decode_checkpoint(&old).unwrap_err();
        assert_eq!(
            error,
            CheckpointFormatError::UnsupportedVersion {
                found: 1,
                supported: CHECKPOINT_FORMAT_VERSION
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("format version 1") && message.contains("older mpcl"),
            "{message}"
        );
    }

    #[test]
    fn the_privacy_ledger_round_trips() {
        let mut checkpoint = sample(2);
        let mut ledger = PrivacyLedger::new(1.1, 1e-5, Some(8.0)).unwrap();
        ledger.record_round(0.5).unwrap();
        ledger.record_round(0.5).unwrap();
        checkpoint.privacy_ledger = Some(ledger);
        let back = decode_checkpoint(&encode_checkpoint(&checkpoint).unwrap()).unwrap();
        assert_eq!(back, checkpoint);
        assert_eq!(back.privacy_ledger.unwrap().rounds(), 2);
    }

    #[test]
    fn a_corrupt_current_file_falls_back_to_the_previous_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        let err = read_latest_checkpoint(&path).unwrap_err();
        assert!(err.is_missing(), "{err}");

        write_checkpoint(&path, &sample(1)).unwrap();
        write_checkpoint(&path, &sample(2)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();

        let loaded = read_latest_checkpoint(&path).unwrap();
        assert_eq!(loaded.checkpoint.completed_rounds, 1);
        assert_eq!(loaded.path, previous_path(&path));
        let primary = loaded.primary_error.unwrap().to_string();
        assert!(primary.contains("checksum"), "{primary}");

        // Writing over a corrupt current file must not rotate it over the good previous copy.
        write_checkpoint(&path, &sample(3)).unwrap();
        assert_eq!(read_checkpoint(&path).unwrap().completed_rounds, 3);
        assert_eq!(
            read_checkpoint(previous_path(&path))
                .unwrap()
                .completed_rounds,
            1
        );

        fs::write(&path, b"garbage").unwrap();
        fs::write(previous_path(&path), b"").unwrap();
        let err = read_latest_checkpoint(&path).unwrap_err();
        assert!(!err.is_missing());
        let message = err.to_string();
        assert!(message.contains("checkpoint.bin") && message.contains("checkpoint.prev.bin"));
    }

    #[test]
    fn previous_path_handles_names_without_extension() {
        assert_eq!(
            previous_path(Path::new("/runs/a/state")),
            PathBuf::from("/runs/a/state.prev")
        );
    }
}
