//! What the operator is told about a connection's ICE servers.

use super::peer::PeerActor;
use peerix_rtc::RtcPeer;

impl PeerActor {
    /// Called when gathering completed: a TURN server configured for this connection that
    /// gave no relay candidate refused the allocation (wrong credentials) or did not answer.
    /// The stack only logs it; say it where the operator looks (an `error` event).
    pub(super) fn check_turn(&self, relay_seen: bool) {
        if relay_seen {
            return;
        }
        let urls: Vec<&str> = self
            .s
            .rtc
            .ice_servers
            .iter()
            .flat_map(|s| s.urls.iter())
            .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
            .map(String::as_str)
            .collect();
        if urls.is_empty() {
            return;
        }
        // TURN over TCP/TLS: a connection or certificate failure says more than "no answer".
        let streams = self
            .rtc
            .as_ref()
            .map(RtcPeer::turn_stream_errors)
            .unwrap_or_default();
        let message = match streams.last() {
            Some(why) => format!("no relay candidate from {}: {why}", urls.join(", ")),
            None => format!(
                "no relay candidate from {}: the TURN server refused the allocation or did not \
                 answer. Check the credentials (with [turn_rest], `secret` must equal the \
                 server's static-auth-secret and both clocks must be right) and that the server \
                 is reachable from this host",
                urls.join(", ")
            ),
        };
        self.error("ICE_SERVER_ERROR", &message);
    }
}
