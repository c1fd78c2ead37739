#![no_main]
//! Data-channel frame decoding; decoded frames must re-encode losslessly.

use libfuzzer_sys::fuzz_target;
use peerix_wire::frame::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::decode(data) {
        assert_eq!(Frame::decode(&f.encode()).ok(), Some(f));
    }
});
