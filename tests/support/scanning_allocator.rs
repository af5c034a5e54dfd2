//! A global allocator that, while a test scans, counts freed blocks still holding a secret: a
//! copy freed without being zeroed. For the test binaries that check zeroing (one needle per
//! process: the allocator is process-wide). Install it in the binary with
//! `#[global_allocator] static ALLOCATOR: ScanningAllocator = ScanningAllocator;`.
//!
//! The library's unit tests (the token parsers, managed identity, Azure CLI, the Arc header) have
//! their own, src/scanning_allocator.rs: it is compiled into the library crate, which does not
//! reach into tests/.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What freed blocks are checked for; set once, by [`start_scanning`].
static NEEDLE: OnceLock<Vec<u8>> = OnceLock::new();
static SCANNING: AtomicBool = AtomicBool::new(false);
/// Frees of memory that still held [`NEEDLE`] while [`SCANNING`] was on.
static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, checking each freed block for the needle while scanning is on.
/// `realloc` is the trait's default (alloc, copy, dealloc), so a moved or grown block is checked
/// too.
pub struct ScanningAllocator;

unsafe impl GlobalAlloc for ScanningAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if SCANNING.load(Ordering::Relaxed)
            && let Some(needle) = NEEDLE.get()
            && layout.size() >= needle.len()
        {
            // Volatile reads: the block may hold bytes never written through Rust.
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

/// Checks every block freed from now on, by any thread, for `needle`, until [`stop_scanning`].
/// The needle is copied here, before scanning starts, so that its copy is never freed while
/// scanning.
pub fn start_scanning(needle: &[u8]) {
    let set = NEEDLE.get_or_init(|| needle.to_vec());
    assert_eq!(set.as_slice(), needle, "one needle per process");
    SCANNING.store(true, Ordering::SeqCst);
}

/// Stops checking freed blocks.
pub fn stop_scanning() {
    SCANNING.store(false, Ordering::SeqCst);
}

/// How many blocks freed while scanning still held the needle.
pub fn unzeroed_frees() -> usize {
    LEAKED.load(Ordering::SeqCst)
}
