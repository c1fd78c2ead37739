//! Framing of TURN messages on a stream (TCP or TLS) to the TURN server, RFC 8656 §12.5:
//! STUN messages are delimited by their own length header, ChannelData messages by theirs
//! plus padding to a multiple of 4 bytes. Sans-IO: `turn_stream.rs` owns the sockets.

/// Largest frame accepted from or sent to a server. The stack's datagrams fit in its 2 KB
/// receive buffers, so anything longer is not TURN traffic for us; a length beyond it (a
/// hostile or broken server announcing 64 KiB) closes the stream instead of buffering it.
pub(crate) const MAX_FRAME: usize = 4096;

const STUN_HEADER: usize = 20;
const CHANNEL_HEADER: usize = 4;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// STUN method Binding (RFC 8489): the gatherer's srflx requests, never TURN's.
const METHOD_BINDING: u16 = 0x001;

/// Why a stream from the server was closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A length header beyond [`MAX_FRAME`].
    #[error("the server announced a {0}-byte message (at most {MAX_FRAME} are accepted)")]
    Oversized(usize),
    /// Bytes that start neither a STUN nor a ChannelData message.
    #[error("the server sent bytes that are neither STUN nor ChannelData (first bytes {0:02x?})")]
    Garbage(Vec<u8>),
}

/// Is `datagram` a ChannelData message (channel numbers 0x4000–0x4FFF)?
fn is_channel_data(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0x40..=0x4f))
}

/// Does `datagram`, addressed to a stream-transport TURN server, belong on the stream?
///
/// TURN requests, indications and ChannelData do. A Binding request does not: it is the
/// STUN gatherer's when `stun:` names the same address, and its answer must carry the UDP
/// mapping (a server-reflexive candidate), not the stream's.
pub(crate) fn belongs_on_stream(datagram: &[u8]) -> bool {
    if is_channel_data(datagram) {
        return true;
    }
    if datagram.len() < STUN_HEADER || datagram[0] & 0xc0 != 0 {
        return false;
    }
    let typ = u16::from_be_bytes([datagram[0], datagram[1]]);
    // The method's 12 bits, interleaved with the class's two (RFC 8489 §5).
    let method = (typ & 0x000f) | ((typ & 0x00e0) >> 1) | ((typ & 0x3e00) >> 2);
    method != METHOD_BINDING
}

/// `datagram` as it goes on the stream: ChannelData padded to a multiple of 4 bytes (over
/// UDP the padding may be left out, over a stream it must be there, RFC 8656 §12.5).
pub(crate) fn encode(datagram: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(datagram);
    if is_channel_data(datagram) {
        out.resize(out.len() + (4 - datagram.len() % 4) % 4, 0);
    }
}

/// Splits the bytes read from a stream into the messages they carry.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out (dropped on the next [`Deframer::push`]).
    taken: usize,
}

impl Deframer {
    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.taken > 0 {
            self.buf.drain(..self.taken);
            self.taken = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message (without ChannelData padding), `None` until more bytes
    /// arrive, or why the stream must be closed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.taken..];
        if rest.len() < CHANNEL_HEADER {
            return Ok(None);
        }
        let declared = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let (message, on_stream) = match rest[0] {
            0x00..=0x3f => {
                if (rest.len() >= 8 && rest[4..8] != MAGIC_COOKIE) || declared % 4 != 0 {
                    return Err(FrameError::Garbage(rest[..rest.len().min(8)].to_vec()));
                }
                (STUN_HEADER + declared, STUN_HEADER + declared)
            }
            0x40..=0x4f => {
                let padded = declared.div_ceil(4) * 4;
                (CHANNEL_HEADER + declared, CHANNEL_HEADER + padded)
            }
            _ => return Err(FrameError::Garbage(rest[..CHANNEL_HEADER].to_vec())),
        };
        if on_stream > MAX_FRAME {
            return Err(FrameError::Oversized(on_stream));
        }
        if rest.len() < on_stream {
            return Ok(None);
        }
        let start = self.taken;
        self.taken += on_stream;
        Ok(Some(&self.buf[start..start + message]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(method_type: u16, body: usize) -> Vec<u8> {
        let mut m = method_type.to_be_bytes().to_vec();
        m.extend_from_slice(&u16::try_from(body).expect("small").to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend((0..body).map(|i| i as u8));
        m
    }

    fn channel_data(len: usize) -> Vec<u8> {
        let mut m = vec![0x40, 0x01];
        m.extend_from_slice(&u16::try_from(len).expect("small").to_be_bytes());
        m.extend((0..len).map(|i| (i * 3) as u8));
        m
    }

    fn all_frames(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().expect("valid stream") {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn channel_data_is_padded_on_the_stream_and_unpadded_when_read() {
        let msg = channel_data(5);
        let mut wire = Vec::new();
        encode(&msg, &mut wire);
        assert_eq!(wire.len(), 12, "4-byte header + 5 bytes + 3 padding");
        // A STUN message right after the padding is found where it starts.
        let allocate = stun(0x0003, 8);
        encode(&allocate, &mut wire);
        assert_eq!(wire.len(), 12 + allocate.len(), "STUN is never padded");
        let mut d = Deframer::default();
        d.push(&wire);
        assert_eq!(all_frames(&mut d), vec![msg, allocate]);
    }

    #[test]
    fn messages_split_across_reads_and_merged_in_one_read_come_out_whole() {
        let msgs = [
            stun(0x0103, 24),
            channel_data(1),
            channel_data(1200),
            stun(0x0017, 0),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            encode(m, &mut wire);
        }
        // One byte at a time, then everything in one read.
        let mut d = Deframer::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            got.extend(all_frames(&mut d));
        }
        assert_eq!(got, msgs);
        let mut d = Deframer::default();
        d.push(&wire);
        assert_eq!(all_frames(&mut d), msgs);
    }

    #[test]
    fn an_oversized_length_or_garbage_closes_the_stream() {
        let mut d = Deframer::default();
        d.push(&[0x40, 0x00, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::Oversized(4 + 65_536)));
        let mut d = Deframer::default();
        d.push(&[0x01, 0x01, 0xff, 0xfc]);
        assert!(matches!(d.next_frame(), Err(FrameError::Oversized(_))));
        // A TLS record on a TCP port, a STUN header without the magic cookie, a reserved
        // first byte.
        let tls_hello = [0x16, 0x03, 0x01, 0x00, 0x10, 0x01, 0x00, 0x00];
        for garbage in [
            &tls_hello[..],
            &[0x01, 0x01, 0, 8, 1, 2, 3, 4],
            &[0xff, 0, 0, 0],
        ] {
            let mut d = Deframer::default();
            d.push(garbage);
            assert!(matches!(d.next_frame(), Err(FrameError::Garbage(_))));
        }
        // Text ("HTTP/1.1 400 …") reads as ChannelData with a 21 KB length: closed too.
        let mut d = Deframer::default();
        d.push(b"HTTP/1.1 400 Bad Request");
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn binding_stays_on_udp_and_turn_goes_on_the_stream() {
        assert!(!belongs_on_stream(&stun(0x0001, 0)), "Binding request");
        assert!(belongs_on_stream(&stun(0x0003, 0)), "Allocate request");
        assert!(belongs_on_stream(&stun(0x0004, 0)), "Refresh request");
        assert!(belongs_on_stream(&stun(0x0016, 0)), "Send indication");
        assert!(belongs_on_stream(&stun(0x0009, 0)), "ChannelBind request");
        assert!(belongs_on_stream(&channel_data(3)));
        assert!(!belongs_on_stream(&[23, 254, 253]), "DTLS");
    }
}
