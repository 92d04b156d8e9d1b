//! Study folders (`schema.toml` plus one CSV per subject): raw files, and the valid fixture of
//! `data/tests/fixtures/study/valid` with bytes patched. The reader and the validator share one
//! scan, so whatever the reader accepts the validator must pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_data::study::{Requirements, SCHEMA_FILE, read_study_dir, validate_study_dir};
use mpcl_fuzz::{patch, scratch_dir};

const FIXTURE: [(&str, &str); 4] = [
    (
        SCHEMA_FILE,
        include_str!("../../data/tests/fixtures/study/valid/schema.toml"),
    ),
    (
        "p01.csv",
        include_str!("../../data/tests/fixtures/study/valid/p01.csv"),
    ),
    (
        "p02.csv",
        include_str!("../../data/tests/fixtures/study/valid/p02.csv"),
    ),
    (
        "p03.csv",
        include_str!("../../data/tests/fixtures/study/valid/p03.csv"),
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("study");
    if mode % 2 == 0 {
        // Raw: the parts between 0xff bytes are schema.toml, p01.csv, p02.csv, ...
        for (index, part) in rest.split(|&b| b == 0xff).take(6).enumerate() {
            let name = if index == 0 {
                SCHEMA_FILE.to_string()
            } else {
                format!("p{index:02}.csv")
            };
            std::fs::write(dir.join(name), part).expect("scratch file");
        }
    } else {
        // Patched: the first byte picks the file of the fixture that the rest changes.
        let Some((which, changes)) = rest.split_first() else {
            return;
        };
        let target = usize::from(*which) % FIXTURE.len();
        for (index, (name, text)) in FIXTURE.iter().enumerate() {
            let bytes = if index == target {
                patch(text.as_bytes().to_vec(), changes)
            } else {
                text.as_bytes().to_vec()
            };
            std::fs::write(dir.join(name), bytes).expect("scratch file");
        }
    }
    let read = read_study_dir(&dir);
    let report = validate_study_dir(&dir, &Requirements::none());
    if read.is_ok() {
        assert!(
            report.is_ok(),
            "the reader accepted a folder the validator rejects: {report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
});
