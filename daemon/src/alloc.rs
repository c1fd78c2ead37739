//! The daemon's global allocator, as one definition that `peerixd`'s `main` and the
//! benchmark's raw baseline (`bench/src/fair.rs`) both install, so that the baseline cannot
//! quietly run on a different allocator than the daemon it is compared with.
//!
//! Messages move through the daemon in large, short-lived buffers (reassembled messages, IPC
//! frames). glibc's malloc hands each one back to the kernel and gets fresh zeroed pages for the
//! next, which profiling showed as ~15 % of the daemon's CPU in page faults and page clearing
//! during bulk transfers; mimalloc keeps and reuses them. The `system-allocator` feature builds
//! without it, for heap profilers (heaptrack, valgrind) that hook the C allocator.

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
