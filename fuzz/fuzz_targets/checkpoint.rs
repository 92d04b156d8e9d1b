//! Checkpoint files: raw bytes (header, checksum), and valid checkpoints whose payload is
//! patched under a recomputed checksum (a bug or a format change, not disk damage), resumed
//! into a coordinator when they decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::checkpoint::{decode_checkpoint, encode_checkpoint};
use mpcl_fuzz::{checkpoint, patch};
use sha2::{Digest, Sha256};

const HEADER: usize = 8 + 4 + 8 + 32;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => patch(
            encode_checkpoint(&checkpoint()).expect("fixture encodes"),
            rest,
        ),
        _ => {
            let valid = encode_checkpoint(&checkpoint()).expect("fixture encodes");
            let payload = patch(valid[HEADER..].to_vec(), rest);
            let mut bytes = valid[..12].to_vec();
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&Sha256::digest(&payload));
            bytes.extend_from_slice(&payload);
            bytes
        }
    };
    if let Ok(checkpoint) = decode_checkpoint(&bytes) {
        let _ = Coordinator::resume(checkpoint);
    }
});
