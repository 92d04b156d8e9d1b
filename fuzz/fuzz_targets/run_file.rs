//! The coordinator's run file (`mpcl coordinator --config`, TOML) and the run configuration
//! inside it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mpcl_coordinator::CoordinatorConfig;
use mpcl_coordinator::server::RunFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = RunFile::parse(&text, Path::new("run.toml"));
    if let Ok(config) = CoordinatorConfig::from_toml_str(&text) {
        // A valid config must survive the checkpoint's TOML round trip.
        let again = CoordinatorConfig::from_toml_str(&config.to_toml_string().expect("encodes"))
            .expect("a valid config's TOML parses again");
        assert_eq!(again, config);
    }
});
