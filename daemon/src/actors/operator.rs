//! Figures for the operator's view (`status`, `peers`) that no single actor owns.

/// When this process started serving (the first call, made at start-up), for `status.uptime`.
pub(crate) fn start_instant() -> std::time::Instant {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::Instant::now)
}

/// The stack's figures as `peers` reports them.
pub(super) fn stats_out(s: peerix_rtc::PeerStats) -> peerix_ipc_proto::PeerStats {
    peerix_ipc_proto::PeerStats {
        local_candidate: s.local_candidate,
        remote_candidate: s.remote_candidate,
        protocol: s.protocol,
        local_address: s.local_address,
        remote_address: s.remote_address,
        relay_protocol: s.relay_protocol,
        rtt: s.rtt_ms,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        messages_in: s.messages_in,
        messages_out: s.messages_out,
        channels_open: u64::from(s.channels_open),
    }
}
