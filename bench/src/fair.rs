//! What makes the raw baseline a fair one: the settings its peer processes run with, taken
//! from the daemon's own definitions, and the check (unit test below, and a run-time check
//! in every group that uses the raw processes) that they match what `peerixd` runs with.
//!
//! The first round's baseline shared one process, one reactor thread and the system
//! allocator between both peers, while each daemon had its own process, mimalloc and its
//! reactor threads; the full path's ratio to raw rose mostly because the baseline fell.

use peerix_rtc::{IceServer, RtcConfig};
use serde::{Deserialize, Serialize};

/// The allocator installed in this binary: the daemon's (`peerixd::alloc`). The raw peer
/// processes are this binary re-executed, so they allocate through it too.
#[global_allocator]
static GLOBAL: peerixd::alloc::Allocator = peerixd::alloc::ALLOCATOR;

/// How a raw peer process runs: what the daemon does, item by item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Short allocator name (`peerixd::alloc::NAME` for the daemon).
    pub allocator: String,
    /// Type of the global allocator, as Rust names it.
    pub allocator_type: String,
    /// mimalloc's purge delay in ms (`peerixd::alloc::configure`, run at the start of both
    /// programs' `main`); `None` with the system allocator.
    pub purge_delay_ms: Option<i64>,
    /// The tokio runtime that drives the application side (the daemon's actix system runs one
    /// current-thread runtime on its main thread; connections run on the reactor threads, or
    /// on it with `inline_drivers`).
    pub runtime: String,
    /// `RtcConfig::reactor_threads` as requested (0 = automatic, resolved by the same
    /// `peerix_rtc` function in both processes).
    pub reactor_threads_requested: usize,
    /// Every connection's settings, as `{:?}` (RtcConfig has no `PartialEq`).
    pub rtc: String,
}

/// Name of the runtime flavour the raw peers use (see [`Settings::runtime`]).
pub const RUNTIME_CURRENT_THREAD: &str = "current_thread";

/// The connection settings of a daemon started as the bench starts them (defaults and the
/// `PEERIX_*` variables the daemons inherit, no system configuration), mapped to `RtcConfig`
/// field by field as `RoomActor::rtc_config` does.
pub fn daemon_rtc_config() -> RtcConfig {
    // The daemons read `PEERIX_WEBRTC__INLINE_DRIVERS` and the like from the environment the
    // bench passes on; a bad variable stops them, so the defaults are only a fallback here.
    let cfg = peerixd::config::load(None, &Default::default(), true).unwrap_or_default();
    let opts = &cfg.room_defaults;
    RtcConfig {
        ice_servers: opts
            .ice_servers
            .iter()
            .map(|s| IceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect(),
        relay_only: opts.ice_transport_policy == peerixd::config::IceTransportPolicy::Relay,
        mdns: cfg.webrtc.mdns,
        udp_recv_buffer: cfg.webrtc.udp_recv_buffer,
        max_message_size: cfg.webrtc.max_message_size,
        reactor_threads: cfg.webrtc.reactor_threads,
        inline_drivers: cfg.webrtc.inline_drivers,
        udp_port: cfg.webrtc.udp_port,
        channel_event_queue: cfg.limits.channel_event_queue,
        control_event_queue: cfg.limits.control_event_queue,
    }
}

/// What the daemon runs with.
pub fn daemon_settings() -> Settings {
    let rtc = daemon_rtc_config();
    Settings {
        allocator: peerixd::alloc::NAME.to_string(),
        allocator_type: std::any::type_name::<peerixd::alloc::Allocator>().to_string(),
        // The daemon's `main` runs the same `configure` in the same environment as this
        // process (its process cannot be asked).
        purge_delay_ms: peerixd::alloc::purge_delay_ms(),
        runtime: RUNTIME_CURRENT_THREAD.to_string(),
        reactor_threads_requested: rtc.reactor_threads,
        rtc: format!("{rtc:?}"),
    }
}

/// The connection settings of a raw peer process.
pub fn raw_rtc_config() -> RtcConfig {
    daemon_rtc_config()
}

/// What a raw peer process runs with (the child builds its runtime and connections from this).
pub fn raw_settings() -> Settings {
    let rtc = raw_rtc_config();
    Settings {
        allocator: peerixd::alloc::NAME.to_string(),
        allocator_type: type_name_of(&GLOBAL).to_string(),
        // What this process's allocator actually runs with.
        purge_delay_ms: peerixd::alloc::purge_delay_ms(),
        runtime: RUNTIME_CURRENT_THREAD.to_string(),
        reactor_threads_requested: rtc.reactor_threads,
        rtc: format!("{rtc:?}"),
    }
}

/// The runtime the full path's clients run on: current-thread, as each raw peer's
/// application. On a multi-thread runtime every reply and event crossed from the worker
/// reading the client's socket to the thread awaiting it (`block_on` runs on the calling
/// thread, not on a worker): one more wake-up per hop than the raw pair pays, which cost the
/// full path ~0.05 ms per round trip (BENCHMARKS.md, session 17).
pub fn clients_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The flavour name of `handle`'s runtime, spelled like [`RUNTIME_CURRENT_THREAD`].
pub fn flavor_name(handle: &tokio::runtime::Handle) -> &'static str {
    match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => RUNTIME_CURRENT_THREAD,
        tokio::runtime::RuntimeFlavor::MultiThread => "multi_thread",
        _ => "other",
    }
}

fn type_name_of<T>(_: &T) -> &'static str {
    std::any::type_name::<T>()
}

extern "C" {
    // Part of the mimalloc C library that the `mimalloc` crate links; declared here because
    // libmimalloc-sys exposes it only with its `extended` feature.
    fn mi_is_in_heap_region(p: *const std::ffi::c_void) -> bool;
}

/// Whether a fresh heap allocation of this process came from mimalloc.
pub fn heap_is_mimalloc() -> bool {
    let probe = Box::new([0u8; 64]);
    // SAFETY: a pure lookup of an address in mimalloc's region map; never dereferenced.
    unsafe { mi_is_in_heap_region(probe.as_ptr().cast()) }
}

/// Names of the threads of process `pid` (`/proc/PID/task/*/comm`).
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Reactor threads (`webrtc-rx*`) running in process `pid`.
pub fn reactor_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| n.starts_with("webrtc-rx"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw baseline must not be handicapped against the daemon: same allocator (declared
    /// and actually serving this binary's heap), same runtime flavour, same connection
    /// settings including the requested reactor threads. Fails if any of them drifts apart.
    #[test]
    fn raw_baseline_runs_like_the_daemon() {
        // As `main` does before anything else.
        peerixd::alloc::configure();
        let daemon = daemon_settings();
        let raw = raw_settings();
        assert_eq!(
            raw, daemon,
            "the raw baseline's settings differ from the daemon's"
        );
        assert_eq!(
            heap_is_mimalloc(),
            daemon.allocator == "mimalloc",
            "this binary's heap is not served by the daemon's allocator ({})",
            daemon.allocator
        );
    }

    /// The full path's clients must not pay a thread hand-off per hop that the raw peers'
    /// applications do not: both run on a current-thread runtime.
    #[test]
    fn clients_run_on_the_raw_peers_runtime_flavour() {
        let rt = clients_runtime().expect("runtime");
        assert_eq!(flavor_name(rt.handle()), raw_settings().runtime);
    }
}
