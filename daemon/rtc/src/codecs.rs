//! The media engine every connection starts from, built once per process.
//!
//! Why: each connection registers every codec browsers send (so a remote share is received,
//! not refused) plus the feedback and header extensions of the default interceptors: ~11 KB
//! of small allocations per connection when built afresh. `MediaEngine::clone` shares them
//! (vendor patch 17, copy on write); only what a connection negotiates is its own.

use std::sync::OnceLock;

use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;

/// A connection's media engine (sharing the process-wide registrations) and its default
/// interceptors (NACK, RTCP reports, TWCC; built per connection: they hold its state).
pub(crate) fn engine_and_interceptors() -> Result<(MediaEngine, Registry), webrtc::error::Error> {
    static TEMPLATE: OnceLock<MediaEngine> = OnceLock::new();
    let media = match TEMPLATE.get() {
        Some(t) => t.clone(),
        None => {
            let mut t = MediaEngine::default();
            t.register_default_codecs()?;
            register_default_interceptors(Registry::new(), &mut t)?;
            TEMPLATE.get_or_init(|| t).clone()
        }
    };
    // The registry alone: what the interceptors register in an engine is in the template
    // already, so they register it into a scratch engine here.
    let interceptors = register_default_interceptors(Registry::new(), &mut MediaEngine::default())?;
    Ok((media, interceptors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_one_copy_of_the_codec_tables() {
        let (a, _) = engine_and_interceptors().expect("engine");
        let (b, _) = engine_and_interceptors().expect("engine");
        assert!(a.shares_registrations_with(&b));
    }
}
