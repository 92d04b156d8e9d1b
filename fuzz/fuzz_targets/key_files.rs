//! Key files of a key directory: `private_key.pem` (PKCS#8), `public_key.hex`, `node_id.txt`.
#![no_main]

use ed25519_dalek::pkcs8::DecodePrivateKey;
use libfuzzer_sys::fuzz_target;
use mpcl_protocol::identity::{parse_public_key_hex, validate_id};
use mpcl_protocol::{NodeIdentity, SigningKey};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_public_key_hex(&text);
    let _ = SigningKey::from_pkcs8_pem(&text);
    let _ = SigningKey::from_pkcs8_der(data);
    if validate_id(text.trim()).is_ok() {
        let identity =
            NodeIdentity::from_signing_key(Some(text.trim()), SigningKey::from_bytes(&[3; 32]))
                .expect("a valid id makes an identity");
        assert_eq!(identity.id(), text.trim());
    }
});
