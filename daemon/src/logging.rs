//! Logging set-up: the configured filter, plus a filter for the WebRTC stack's warnings that every
//! healthy connection produces. An operator reads a WARN line as a fault, so a steady-state
//! daemon must log nothing above INFO; these are expected events, not faults.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// (target prefix, message prefix, why it is not a fault).
const EXPECTED_STACK_WARNINGS: &[(&str, &str, &str)] = &[
    (
        "rtc_dtls::config",
        "conn.remote_addr is empty",
        "WebRTC authenticates DTLS by certificate fingerprint; the server name is unused",
    ),
    (
        "rtc_ice::agent",
        "[controlled]: pingAllCandidates called with no candidate pairs",
        "connectivity checks start with the remote description, before trickled candidates",
    ),
    (
        "rtc_ice::agent",
        "[controlling]: pingAllCandidates called with no candidate pairs",
        "connectivity checks start with the remote description, before trickled candidates",
    ),
    (
        "rtc_sctp::endpoint",
        "refusing first packet due to empty server_config",
        "Chromium sends its own SCTP INIT too; the association we initiate is the one used",
    ),
    (
        "rtc::peer_connection::handler",
        "IceHandler.handle_read got error: password is empty",
        "a connectivity check that arrives before the answer's credentials are applied; \
         the peer retransmits it",
    ),
    (
        "rtc_mdns::proto",
        "mDNS answers without AResource",
        "Chromium's mDNS responder answers without an A record; its source address is the answer",
    ),
    (
        "rtc_mdns::proto",
        "mDNS answers with different local ip on AResource",
        "Chromium's mDNS responder puts 0.0.0.0 in its A record; its source address is the answer",
    ),
    (
        "rtc_ice::agent",
        "remote mDNS candidate added, but mDNS is disabled",
        "with `webrtc.mdns = false` (a choice) a browser's hidden host candidates are skipped; \
         the peer-reflexive candidate learnt from its checks connects",
    ),
    (
        "rtc_dtls::handshake",
        "Unsupported Extension Type",
        "Chromium offers TLS 1.3 extensions, which DTLS 1.2 ignores (RFC 5246 §7.4.1.4)",
    ),
];

/// Drops the WARN events listed in [`EXPECTED_STACK_WARNINGS`]; everything else passes.
pub struct ExpectedStackWarnings;

/// The message and, for events bridged from the `log` crate, the original target.
#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "log.target" => self.log_target = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Whether `event` is one of the expected stack warnings.
pub fn is_expected_stack_warning(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::WARN {
        return false;
    }
    let mut f = Fields::default();
    event.record(&mut f);
    let target = f.log_target.as_deref().unwrap_or(meta.target());
    EXPECTED_STACK_WARNINGS
        .iter()
        .any(|(t, prefix, _)| target.starts_with(t) && f.message.starts_with(prefix))
}

impl<S: Subscriber> Layer<S> for ExpectedStackWarnings {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        !is_expected_stack_warning(event)
    }
}
