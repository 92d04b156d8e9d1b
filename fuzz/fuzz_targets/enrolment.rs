//! Enrolment files (`[[participant]]` ids and public keys, TOML).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mpcl_protocol::Enrolment;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(enrolment) = Enrolment::parse(&text, Path::new("enrolment.toml")) {
        // What is written next to a run's results must read back as the same enrolment.
        let again = Enrolment::parse(&enrolment.to_toml(), Path::new("copy.toml"))
            .expect("a parsed enrolment's TOML parses again");
        assert_eq!(again.participants(), enrolment.participants());
    }
});
