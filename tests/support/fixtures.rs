//! The certificate, key and PKCS#12 files in tests/fixtures.

use std::path::PathBuf;

/// The path of tests/fixtures/`name`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The bytes of tests/fixtures/`name`.
pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}
