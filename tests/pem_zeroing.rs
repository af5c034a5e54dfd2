//! Loading a PEM private key leaves no unzeroed copy of its text in freed memory: a scanning
//! allocator looks for one base64 line of the key in every block freed while the key loads.
//!
//! In its own binary: the global allocator is process-wide.

#[path = "support/scanning_allocator.rs"]
mod scanning_allocator;

use scanning_allocator::ScanningAllocator;
use tower_entra::ClientCertificate;
use zeroize::Zeroizing;

#[global_allocator]
static ALLOCATOR: ScanningAllocator = ScanningAllocator;

#[test]
fn loading_a_pem_key_frees_no_unzeroed_copy_of_its_text() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/client-pkcs8.pem"
    );
    let pem = Zeroizing::new(std::fs::read(path).unwrap());
    let text = std::str::from_utf8(&pem).unwrap();
    // A line from the middle of the key: in a buffer that grows line by line, it is in every
    // buffer freed on the way.
    let key = text.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap();
    let line = key.lines().nth(10).unwrap();
    assert_eq!(line.len(), 64, "{line}");

    scanning_allocator::start_scanning(line.as_bytes());
    let certificate = ClientCertificate::from_pem(&*pem).unwrap();
    drop(certificate);
    scanning_allocator::stop_scanning();
    assert_eq!(
        scanning_allocator::unzeroed_frees(),
        0,
        "memory holding the private key's PEM text was freed without being zeroed"
    );
}
