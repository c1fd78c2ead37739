//! Fault injection: lose outgoing signaling packets, as a busy signaling path does (tests of
//! issue 14's recovery of lost descriptions). Compiled only with the cargo feature
//! `fault-injection`, and active only when the daemon runs with `PEERIXD_FAULT_INJECTION=1`
//! and `PEERIXD_DROP_SIGNALS=kind:count,...` (e.g. `offer:1,answer:1`: the first offer and
//! the first answer this process publishes are never sent).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use peerix_wire::packet::SignalType;

fn table() -> &'static Mutex<HashMap<String, u32>> {
    static DROPS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    DROPS.get_or_init(|| {
        let mut m = HashMap::new();
        if std::env::var("PEERIXD_FAULT_INJECTION").as_deref() == Ok("1") {
            let spec = std::env::var("PEERIXD_DROP_SIGNALS").unwrap_or_default();
            for item in spec.split(',').filter(|s| !s.is_empty()) {
                if let Some((kind, n)) = item.split_once(':') {
                    m.insert(kind.trim().to_owned(), n.trim().parse().unwrap_or(0));
                }
            }
        }
        Mutex::new(m)
    })
}

/// Whether this outgoing packet of `kind` is to be lost (and counts it).
pub(crate) fn drop_outgoing(kind: SignalType) -> bool {
    let name = match kind {
        SignalType::Announce => "announce",
        SignalType::Invoke => "invoke",
        SignalType::Offer => "offer",
        SignalType::Answer => "answer",
        SignalType::Candidate => "candidate",
    };
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    match t.get_mut(name) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}
