//! Checkpoint files: raw bytes (header, checksum), and valid checkpoints whose payload is
//! patched under a recomputed checksum (a bug or a format change, not disk damage), resumed
//! into a coordinator when they decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::checkpoint::{decode_checkpoint, encode_checkpoint};
use mpcl_fuzz::{checkpoint, patch, reseal};

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
        _ => reseal(
            &encode_checkpoint(&checkpoint()).expect("fixture encodes"),
            rest,
        ),
    };
    if let Ok(checkpoint) = decode_checkpoint(&bytes) {
        let _ = Coordinator::resume(checkpoint);
    }
});
