//! What the C ABI's test binaries share: the repository, this build's library, a Python that
//! loads it, bit-for-bit comparison, the field of a VTKHDF file.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// This test build's libwavecp_c.so: beside the test binary (target/release/deps: the library
/// built with the tests, so never a stale copy left in target/release).
pub fn lib() -> PathBuf {
    let so = std::env::current_exe()
        .unwrap()
        .with_file_name("libwavecp_c.so");
    assert!(
        so.exists(),
        "no {} (cargo test -p wavecp-capi builds it there)",
        so.display()
    );
    so
}

/// `python3` with the repository's package on its path, loading this build's library.
pub fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", repo().join("python"))
        .env("WAVECP_LIB", lib());
    c
}

pub fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Every output step of the field in a VTKHDF file.
pub fn steps_of(path: &Path) -> Vec<f64> {
    let f = hdf5::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.dataset("VTKHDF/PointData/u")
        .unwrap()
        .read_raw::<f64>()
        .unwrap()
}
