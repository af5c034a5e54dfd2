//! The lib's unit tests run on an allocator that, while a test scans, counts freed blocks still
//! holding that test's needle (a secret freed without being zeroed); when not scanning it is the
//! system allocator; it also counts a thread's allocations for [`allocations_by`]. One scan at a time (tests run on several threads: a scan waits for the one
//! before it to finish); blocks freed by other tests meanwhile are checked too, so needles are
//! unique to their test. (The integration tests' twin is tests/support/scanning_allocator.rs.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

static SCANNING: AtomicBool = AtomicBool::new(false);
/// Taken by the scan in progress.
static BUSY: AtomicBool = AtomicBool::new(false);
static NEEDLE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static NEEDLE_LEN: AtomicUsize = AtomicUsize::new(0);
static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, checking each freed block for the needle while a scan is on.
/// `realloc` is the trait's default (alloc, copy, dealloc), so a moved or grown block is checked.
struct ScanningAllocator;

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ScanningAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let len = NEEDLE_LEN.load(Ordering::Acquire);
        if SCANNING.load(Ordering::Acquire) && len > 0 && layout.size() >= len {
            let needle = NEEDLE.load(Ordering::Acquire);
            // Volatile reads: the block may hold bytes never written through Rust.
            let byte = |p: *mut u8, i: usize| unsafe { p.add(i).read_volatile() };
            let found = (0..=layout.size() - len)
                .any(|start| (0..len).all(|i| byte(ptr, start + i) == byte(needle, i)));
            if found {
                LEAKED.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

thread_local! {
    /// This thread's allocations while [`allocations_by`] counts them.
    static ALLOCATIONS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// The bytes of this thread's allocations while [`bytes_allocated_by`] counts them.
    static BYTES: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn count_allocation(size: usize) {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get().map(|n| n + 1)));
    let _ = BYTES.try_with(|n| n.set(n.get().map(|n| n + size)));
}

/// How many bytes `f` allocated on this thread (freed or not).
pub(crate) fn bytes_allocated_by(f: impl FnOnce()) -> usize {
    BYTES.with(|n| n.set(Some(0)));
    f();
    BYTES.with(|n| n.take()).unwrap_or_default()
}

/// How many allocations `f` made on this thread.
pub(crate) fn allocations_by(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(Some(0)));
    f();
    ALLOCATIONS.with(|n| n.take()).unwrap_or_default()
}

#[global_allocator]
static ALLOCATOR: ScanningAllocator = ScanningAllocator;

/// A scan in progress; [`Scan::unzeroed_frees`] ends it.
pub(crate) struct Scan(());

/// Checks every block freed from now on, by any thread, for `needle` (waiting for a scan in
/// progress to end first).
pub(crate) fn scan(needle: &'static [u8]) -> Scan {
    while BUSY
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        std::thread::yield_now();
    }
    LEAKED.store(0, Ordering::SeqCst);
    NEEDLE.store(needle.as_ptr().cast_mut(), Ordering::SeqCst);
    NEEDLE_LEN.store(needle.len(), Ordering::SeqCst);
    SCANNING.store(true, Ordering::SeqCst);
    Scan(())
}

impl Scan {
    /// Ends the scan: how many blocks freed during it still held the needle.
    pub(crate) fn unzeroed_frees(self) -> usize {
        SCANNING.store(false, Ordering::SeqCst);
        LEAKED.load(Ordering::SeqCst)
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        SCANNING.store(false, Ordering::SeqCst);
        NEEDLE_LEN.store(0, Ordering::SeqCst);
        BUSY.store(false, Ordering::Release);
    }
}
