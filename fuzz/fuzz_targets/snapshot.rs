//! Dataset snapshots (the JSON files `mpcl simulate --network` hands to client processes): raw
//! bytes, and a valid snapshot with bytes patched. A snapshot that reads must write and read
//! back bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_data::snapshot::{read_snapshot, write_snapshot};
use mpcl_fuzz::{dataset, patch, scratch_dir};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("snapshot");
    let path = dir.join("snapshot.json");
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        write_snapshot(&dataset(), &path).expect("the fixture writes");
        patch(std::fs::read(&path).expect("just written"), rest)
    };
    std::fs::write(&path, &bytes).expect("scratch file");
    if let Ok(read) = read_snapshot(&path) {
        let copy = dir.join("copy.json");
        write_snapshot(&read, &copy).expect("a snapshot that reads writes again");
        let again = read_snapshot(&copy).expect("a written snapshot reads again");
        let second = dir.join("second.json");
        write_snapshot(&again, &second).expect("writes again");
        assert_eq!(
            std::fs::read(&copy).expect("written"),
            std::fs::read(&second).expect("written"),
            "a snapshot changed on its way through read and write"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
});
