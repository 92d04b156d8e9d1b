//! Model files (`.mpcl`): raw bytes (header, checksum), a valid file with bytes patched, and a
//! valid file whose payload is patched under a recomputed checksum (a bug or a format change,
//! not disk damage). A file that decodes must encode to bytes that decode to the same file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_fuzz::{model_file, patch, reseal};
use mpcl_protocol::ModelFile;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let valid = model_file().encode().expect("the fixture encodes");
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => patch(valid, rest),
        _ => reseal(&valid, rest),
    };
    if let Ok(file) = ModelFile::decode(&bytes) {
        let encoded = file.encode().expect("a decoded file encodes");
        let again = ModelFile::decode(&encoded).expect("an encoded file decodes");
        assert_eq!(
            again.encode().expect("encodes"),
            encoded,
            "a model file changed on its way through encode and decode"
        );
    }
});
