#![no_main]
//! Packet decode and the full receive pipeline (encryption on and off).

use libfuzzer_sys::fuzz_target;
use peerix_wire::identity::Identity;
use peerix_wire::packet::{CodecOptions, Packet, SignalingCodec};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let _ = Packet::decode(&p.encode());
    }
    let mut secret = [0u8; 32];
    secret[31] = 7;
    if let Ok(id) = Identity::from_secret_bytes(&secret) {
        let mut enc = SignalingCodec::new(id.clone(), CodecOptions::default());
        let _ = enc.open(data);
        let mut plain = SignalingCodec::new(
            id,
            CodecOptions {
                compression: true,
                encryption: false,
            },
        );
        let _ = plain.open(data);
    }
});
