//! The kernel's coarse clocks, read without a system call at tick resolution (a few
//! milliseconds): what the cached path reads, where margins are seconds and a precise read
//! (tens of nanoseconds on a VM's clock source) would be most of its budget.

use std::time::Duration;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use std::time::SystemTime;

/// The wall clock, since the Unix epoch: the kernel's coarse clock where there is one (read
/// without a system call, at tick resolution), which keeps the check within the hot path's
/// budget.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(super) fn wall_clock() -> Duration {
    read(rustix::time::ClockId::RealtimeCoarse)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(super) fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The monotonic clock, which is never stepped: the kernel's coarse one where there is one
/// (read without a system call, at tick resolution, a few milliseconds against margins of
/// seconds).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(super) fn monotonic_clock() -> Duration {
    read(rustix::time::ClockId::MonotonicCoarse)
}

/// Elsewhere, the standard monotonic clock, since the first read (a precise read: correctness
/// before the saving).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(super) fn monotonic_clock() -> Duration {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed()
}

/// Whole seconds of the monotonic clock: its coarse reading's seconds, with no arithmetic on
/// the nanoseconds (a use mark needs no more).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn monotonic_secs() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    u64::try_from(t.tv_sec).unwrap_or_default()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn monotonic_secs() -> u64 {
    monotonic_clock().as_secs()
}

/// `clock`'s reading as a duration since its origin.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn read(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}
