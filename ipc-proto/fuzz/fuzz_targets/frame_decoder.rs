#![no_main]
//! Client byte stream: `FrameDecoder` -> `decode_client` -> `Op::parse`.
//!
//! Input layout: byte 0 = `n` (low 3 bits: number of split lengths), then `n`
//! split lengths (one byte each, cycled; 0 means "poll without pushing"),
//! then the byte stream itself. Seeds produced by `seeds.py` use `n = 0`
//! (whole stream pushed at once).
//!
//! Oracles: the split decoder must yield exactly the frames (and the same
//! fatal error) as a decoder fed the whole stream at once; every decoded
//! message must re-encode and decode again; every parsed op must re-serialise
//! and parse again.

use libfuzzer_sys::fuzz_target;
use peerix_ipc_proto::{decode_client, encode_frame, ClientMessage, FrameDecoder, Op};

/// Small enough that the 16 MiB default doesn't make every run reserve memory.
const MAX: usize = 64 * 1024;

fn drain(d: &mut FrameDecoder, out: &mut Vec<Vec<u8>>) -> Option<String> {
    loop {
        match d.next_frame() {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

fn check_payload(body: &[u8]) {
    let Ok(msg) = decode_client(body) else { return };
    let frame = encode_frame(&msg).expect("decoded message must re-encode");
    let again = decode_client(&frame[4..]).expect("re-encoded message must decode");
    if let ClientMessage::Request(req) = again {
        if let Ok(op) = Op::parse(&req.op, req.args.clone()) {
            assert_eq!(op.name(), req.op);
            let args = op.to_args().expect("parsed op must re-serialise");
            Op::parse(op.name(), args).expect("re-serialised op must parse");
        }
        // Also through the convenience wrapper.
        let _ = req.parse_op();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(ctl & 7).min(rest.len());
    let (splits, stream) = rest.split_at(n);

    // Reference: the whole stream at once.
    let mut whole = FrameDecoder::new(MAX);
    whole.push(stream);
    let mut ref_frames = Vec::new();
    let ref_err = drain(&mut whole, &mut ref_frames);

    // Same stream in pieces, draining after every push.
    let mut split = FrameDecoder::new(MAX);
    let mut frames = Vec::new();
    let mut err = None;
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let step = if splits.is_empty() {
            stream.len()
        } else {
            usize::from(splits[i % splits.len()])
        };
        i += 1;
        let end = (pos + step).min(stream.len());
        split.push(&stream[pos..end]);
        pos = end;
        if let Some(e) = drain(&mut split, &mut frames) {
            err = Some(e);
            break;
        }
        // A decoder that only ever sees 0-length steps must still terminate.
        if i > stream.len() * 2 + 16 {
            split.push(&stream[pos..]);
            pos = stream.len();
            err = drain(&mut split, &mut frames);
        }
    }
    assert_eq!(frames, ref_frames, "split and whole decoders disagree");
    assert_eq!(err, ref_err, "split and whole decoders disagree on errors");
    if err.is_none() {
        let consumed: usize = frames.iter().map(|f| f.len() + 4).sum();
        assert_eq!(consumed + split.buffered(), stream.len());
    }

    for f in &frames {
        check_payload(f);
    }
});
