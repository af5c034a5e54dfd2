//! Loading a PEM private key leaves no unzeroed copy of its text in freed memory: a scanning
//! allocator looks for one base64 line of the key in every block freed while the key loads.
//!
//! In its own binary: the global allocator is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tower_entra::ClientCertificate;
use zeroize::Zeroizing;

static NEEDLE: OnceLock<Vec<u8>> = OnceLock::new();
static SCANNING: AtomicBool = AtomicBool::new(false);
static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, checking each freed block for [`NEEDLE`] while scanning is on.
/// `realloc` is the trait's default (alloc, copy, dealloc), so a grown buffer is checked too.
struct ScanningAllocator;

unsafe impl GlobalAlloc for ScanningAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if SCANNING.load(Ordering::Relaxed)
            && let Some(needle) = NEEDLE.get()
            && layout.size() >= needle.len()
        {
            let byte = |i: usize| unsafe { ptr.add(i).read_volatile() };
            let found = (0..=layout.size() - needle.len())
                .any(|start| (0..needle.len()).all(|i| byte(start + i) == needle[i]));
            if found {
                LEAKED.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

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
    NEEDLE.set(line.as_bytes().to_vec()).unwrap();

    SCANNING.store(true, Ordering::SeqCst);
    let certificate = ClientCertificate::from_pem(&*pem).unwrap();
    drop(certificate);
    SCANNING.store(false, Ordering::SeqCst);
    assert_eq!(
        LEAKED.load(Ordering::SeqCst),
        0,
        "memory holding the private key's PEM text was freed without being zeroed"
    );
}
