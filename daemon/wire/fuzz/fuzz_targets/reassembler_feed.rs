#![no_main]
//! Feeds a sequence of length-prefixed frames into one reassembler, and the same frames copied
//! out first (`Frame::decode` + `feed`) into another: a next chunk appended straight from the
//! received bytes (`feed_bytes` → `feed_ref`) must give the same outcomes.

use libfuzzer_sys::fuzz_target;
use peerix_wire::frame::Frame;
use peerix_wire::transfer::Reassembler;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(64 * 1024);
    let mut owned = Reassembler::new(64 * 1024);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        let got = r.feed_bytes(frame);
        if let Ok(f) = Frame::decode(frame) {
            assert_eq!(got, owned.feed(f));
        } else {
            assert_eq!(got.len(), 1);
        }
        rest = next;
    }
});
