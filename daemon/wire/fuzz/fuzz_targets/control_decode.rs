#![no_main]
//! Control-channel envelope decoding.

use libfuzzer_sys::fuzz_target;
use peerix_wire::control::ControlMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ControlMessage::decode(data) {
        let _ = ControlMessage::decode(&m.encode());
    }
});
