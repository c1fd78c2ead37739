//! The `debug` op: fault injection for the supervision tests. Compiled only with the cargo
//! feature `fault-injection`, and refused unless the daemon runs with `PEERIXD_FAULT_INJECTION=1`.

use rmpv::Value;

use crate::actors::daemon::Exec;
use crate::error::DaemonError;

/// What a `debug` request asks for.
pub enum DebugAction {
    /// An actor under the daemon panics.
    Exec(Box<Exec>),
    /// The client session that received the request panics.
    PanicSession,
    /// The actix thread blocks for this long, as a handler stuck in a blocking call would:
    /// every actor stops, and so do the watchdog keep-alives (`actors/service.rs`).
    Wedge(std::time::Duration),
}

const USAGE: &str = "debug: expected {action: \"panic-peer\", room, peer}, \
    {action: \"panic-channel\", room, peer, label}, {action: \"panic-room\", room}, \
    {action: \"panic-driver\", driver}, {action: \"panic-session\"} or \
    {action: \"wedge\", seconds: \"1..=60\"}";

/// Parses the args of a `debug` request.
pub fn parse(args: &Value) -> Result<DebugAction, DaemonError> {
    if std::env::var("PEERIXD_FAULT_INJECTION").as_deref() != Ok("1") {
        return Err(DaemonError::NotSupported(
            "debug (start peerixd with PEERIXD_FAULT_INJECTION=1)".into(),
        ));
    }
    let get = |k: &str| match args {
        Value::Map(m) => m
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned),
        _ => None,
    };
    let bad = || DaemonError::BadRequest(USAGE.into());
    let action = get("action").ok_or_else(bad)?;
    Ok(match action.as_str() {
        "panic-peer" => DebugAction::Exec(Box::new(Exec::PanicPeer {
            room: get("room").ok_or_else(bad)?,
            peer: get("peer").ok_or_else(bad)?,
        })),
        "panic-channel" => DebugAction::Exec(Box::new(Exec::PanicChannel {
            room: get("room").ok_or_else(bad)?,
            peer: get("peer").ok_or_else(bad)?,
            label: get("label").ok_or_else(bad)?,
        })),
        "panic-room" => DebugAction::Exec(Box::new(Exec::PanicRoom(get("room").ok_or_else(bad)?))),
        "panic-driver" => {
            DebugAction::Exec(Box::new(Exec::PanicDriver(get("driver").ok_or_else(bad)?)))
        }
        "panic-session" => DebugAction::PanicSession,
        "wedge" => {
            let secs: u64 = get("seconds")
                .and_then(|s| s.parse().ok())
                .filter(|s| (1..=60).contains(s))
                .ok_or_else(bad)?;
            DebugAction::Wedge(std::time::Duration::from_secs(secs))
        }
        _ => return Err(bad()),
    })
}
