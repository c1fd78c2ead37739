#![no_main]
//! Daemon frame payload decoding (what a client library parses).
//!
//! Oracles: a decoded message re-encodes and decodes again; event data is
//! interpreted by name without panicking.

use libfuzzer_sys::fuzz_target;
use peerix_ipc_proto::{decode_daemon, encode_frame, DaemonMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode_daemon(data) else { return };
    let frame = encode_frame(&msg).expect("decoded message must re-encode");
    let again = decode_daemon(&frame[4..]).expect("re-encoded message must decode");
    match again {
        DaemonMessage::Event(ev) => {
            let _ = ev.typed();
        }
        DaemonMessage::Reply(r) => {
            let _ = r.into_result();
        }
        DaemonMessage::Error(e) => {
            assert_eq!(
                peerix_ipc_proto::ErrorCode::from_wire(e.code.as_str()),
                e.code
            );
        }
        DaemonMessage::Welcome(_) | DaemonMessage::Progress(_) => {}
    }
});
