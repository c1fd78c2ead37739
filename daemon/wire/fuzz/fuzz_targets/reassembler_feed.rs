#![no_main]
//! Feeds a sequence of length-prefixed frames into one reassembler.

use libfuzzer_sys::fuzz_target;
use peerix_wire::transfer::Reassembler;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(64 * 1024);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        let _ = r.feed_bytes(frame);
        rest = next;
    }
});
