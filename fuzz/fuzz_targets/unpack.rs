//! A layer blob (tar, gzip or zstd) unpacked into an empty directory, as root: it may be refused,
//! but it never panics and nothing lands beside the directory. The temporary roots go under
//! `$CARAPACE_FUZZ_TMP` (run.sh gives a tmpfs), else the system's temporary directory.
#![no_main]

use carapace_imageservice::UnpackLimits;
use carapace_imageservice::unpack::unpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = std::env::var_os("CARAPACE_FUZZ_TMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("unpack")
        .tempdir_in(base)
        .expect("making a temporary root");
    let blob = root.path().join("blob");
    let dest = root.path().join("layer");
    std::fs::write(&blob, data).expect("writing the blob");
    std::fs::create_dir(&dest).expect("making the layer directory");
    // Small caps keep one input fast; the caps themselves are what is under test at these sizes.
    let limits = UnpackLimits {
        max_entries: 4096,
        max_bytes: 8 << 20,
        allow_devices: false,
    };
    let _ = unpack(&blob, &dest, &limits, "fuzz");
    let mut beside: Vec<_> = std::fs::read_dir(root.path())
        .expect("listing the temporary root")
        .map(|e| e.expect("listing the temporary root").file_name())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["blob", "layer"],
        "the layer wrote beside its directory"
    );
});
