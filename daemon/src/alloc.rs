//! The daemon's global allocator, as one definition that `peerixd`'s `main` and the
//! benchmark's raw baseline (`bench/src/fair.rs`) both install, so that the baseline cannot
//! quietly run on a different allocator than the daemon it is compared with.
//!
//! Messages move through the daemon in large, short-lived buffers (reassembled messages, IPC
//! frames). glibc's malloc hands each one back to the kernel and gets fresh zeroed pages for the
//! next, which profiling showed as ~15 % of the daemon's CPU in page faults and page clearing
//! during bulk transfers; mimalloc keeps and reuses them. The `system-allocator` feature builds
//! without it, for heap profilers (heaptrack, valgrind) that hook the C allocator.
//!
//! [`configure`] sets the one mimalloc option peerixd changes, at the start of `main` (the
//! daemon's and the benchmark's, so that the raw baseline runs with it too).

/// The allocator type `peerixd` installs with `#[global_allocator]`.
#[cfg(not(feature = "system-allocator"))]
pub type Allocator = mimalloc::MiMalloc;
/// The allocator type `peerixd` installs with `#[global_allocator]`.
#[cfg(feature = "system-allocator")]
pub type Allocator = std::alloc::System;

/// The value to install: `#[global_allocator] static GLOBAL: Allocator = ALLOCATOR;`.
#[cfg(not(feature = "system-allocator"))]
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;
/// The value to install: `#[global_allocator] static GLOBAL: Allocator = ALLOCATOR;`.
#[cfg(feature = "system-allocator")]
pub const ALLOCATOR: Allocator = std::alloc::System;

/// Short name of [`Allocator`], for reports.
#[cfg(not(feature = "system-allocator"))]
pub const NAME: &str = "mimalloc";
/// Short name of [`Allocator`], for reports.
#[cfg(feature = "system-allocator")]
pub const NAME: &str = "system";

/// How long (ms) mimalloc keeps freed memory committed before handing it back to the kernel
/// (its `purge_delay` option; mimalloc's default is 1,000).
///
/// Why not the default: mimalloc arms one deadline per arena at the first free after a purge and
/// then purges everything free at that moment, so with 1 s, memory a transfer freed moments
/// earlier goes back to the kernel and the next transfer takes it again page by page. Built
/// without transparent huge pages (`no_thp`, for RSS), each 4 KiB page is then one page fault
/// (2 µs here: a fresh 32 MiB buffer costs 16–20 ms instead of 3 ms warm). Measured on the
/// 32 MiB row of the bench: the trial after a 1 s pause faulted ~14,000 pages in the two
/// daemons and the client (BENCHMARKS.md, "no_thp without the throughput cost"). With 10 s,
/// a daemon that moves messages every few seconds reuses its buffers, and an idle one still
/// returns them within seconds; large releases of client queues are handed back at once
/// anyway (`mi_collect` in `ipc/client_queue.rs`).
pub const PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3 `mimalloc.h`: the 16th
/// entry); `libmimalloc-sys` only names it with its `extended` feature.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[cfg(not(feature = "system-allocator"))]
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_collect(force: bool);
}

/// Sets peerixd's allocator options ([`PURGE_DELAY_MS`]); call first thing in `main`. A
/// `MIMALLOC_PURGE_DELAY` in the environment wins (mimalloc reads it itself), so an operator
/// can still choose. With the system allocator there is nothing to set.
pub fn configure() {
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores a number in mimalloc's option table; it may be
        // called at any time, from any thread, before or after allocations.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as std::ffi::c_long) }
    }
}

/// Hands the memory that is free now back to the kernel at once, instead of after
/// [`PURGE_DELAY_MS`]: the daemon calls it when it has started, so that what start-up used
/// and dropped (configuration, certificate stores, identity) is not counted in its RSS for
/// the next seconds.
pub fn release_free_memory() {
    #[cfg(not(feature = "system-allocator"))]
    // SAFETY: mi_collect takes no pointers and may be called at any time from any thread.
    unsafe {
        mi_collect(true)
    }
}

/// The purge delay this process's allocator runs with, as mimalloc reports it: what the
/// benchmark compares between the daemon and its raw baseline.
#[cfg(not(feature = "system-allocator"))]
pub fn purge_delay_ms() -> Option<i64> {
    // SAFETY: mi_option_get reads mimalloc's option table; no pointers involved.
    let ms = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
    // `c_long` is `i64` here but `i32` on Windows.
    #[allow(clippy::useless_conversion)]
    Some(i64::from(ms))
}

/// The purge delay this process's allocator runs with: none with the system allocator.
#[cfg(feature = "system-allocator")]
pub fn purge_delay_ms() -> Option<i64> {
    None
}

#[cfg(all(test, not(feature = "system-allocator")))]
mod tests {
    use super::*;

    /// The option number is mimalloc's `purge_delay`: before `configure` it holds mimalloc's
    /// own default (1,000 ms, or what MIMALLOC_PURGE_DELAY says), after it ours. A wrong
    /// number would set another option and this would read its value.
    #[test]
    fn configure_sets_the_purge_delay() {
        let before = purge_delay_ms();
        let from_env = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse::<i64>().ok());
        assert!(
            before == Some(1_000) || before == Some(PURGE_DELAY_MS) || before == from_env,
            "option {MI_OPTION_PURGE_DELAY} held {before:?}: not mimalloc's purge_delay"
        );
        configure();
        assert_eq!(purge_delay_ms(), from_env.or(Some(PURGE_DELAY_MS)));
    }
}
