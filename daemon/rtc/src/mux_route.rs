//! Routing decisions of the single-port mode (`udp_mux.rs`), free of sockets and tasks.
//!
//! Every peer connection shares one UDP socket per local address; a datagram read from it
//! must reach the one connection it belongs to. The rules, in order (the same as Pion's
//! `UDPMux`):
//!
//! 1. A STUN **response** (success or error) goes to the connection that sent the request
//!    with that transaction id (remembered on send). Several connections may talk to the
//!    same STUN server, so the remote address alone cannot tell them apart.
//! 2. A STUN **request** goes to the connection whose local ICE ufrag is the first half of
//!    its USERNAME (`local:remote`, RFC 8445 §7.2.2); that connection is then bound to the
//!    (local, remote) address pair.
//! 3. Anything else (DTLS, SRTP, SCTP, keepalive indications) goes to the connection bound
//!    to its (local, remote) address pair.
//!
//! Unroutable datagrams are dropped by the caller. Every table is bounded: past its cap a
//! new entry is refused (a transaction id evicts the oldest one), never memory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// A connection registered with the mux.
pub(crate) type ConnId = u64;

/// STUN's fixed magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// Transaction ids remembered for responses; one connection's gathering and checks use a few
/// dozen, so this covers hundreds of connections starting at once.
pub(crate) const MAX_TRANSACTIONS: usize = 8192;
/// (local, remote) address bindings; each connection binds one per candidate pair that
/// sent it a check.
pub(crate) const MAX_REMOTES: usize = 65_536;

/// The class of a STUN message (RFC 5389 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StunClass {
    Request,
    Indication,
    Success,
    Error,
}

/// The parts of a STUN message the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StunInfo<'a> {
    pub class: StunClass,
    pub transaction: [u8; 12],
    /// The USERNAME attribute's value, when present and UTF-8.
    pub username: Option<&'a str>,
}

/// Parses the STUN header (and USERNAME) of `datagram`; `None` if it is not STUN.
pub(crate) fn parse_stun(datagram: &[u8]) -> Option<StunInfo<'_>> {
    if datagram.len() < HEADER_LEN || datagram[0] & 0xC0 != 0 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if length % 4 != 0 || HEADER_LEN + length != datagram.len() {
        return None;
    }
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    let class = match ((kind >> 7) & 0x2) | ((kind >> 4) & 0x1) {
        0 => StunClass::Request,
        1 => StunClass::Indication,
        2 => StunClass::Success,
        _ => StunClass::Error,
    };
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&datagram[8..HEADER_LEN]);
    let mut username = None;
    let mut at = HEADER_LEN;
    while at + 4 <= datagram.len() {
        let attr = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let start = at + 4;
        let Some(value) = datagram.get(start..start + len) else {
            break;
        };
        if attr == ATTR_USERNAME {
            username = std::str::from_utf8(value).ok();
            break;
        }
        at = start + len.div_ceil(4) * 4;
    }
    Some(StunInfo {
        class,
        transaction,
        username,
    })
}

/// The routing tables of one mux (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Router {
    ufrags: HashMap<String, ConnId>,
    remotes: HashMap<(SocketAddr, SocketAddr), ConnId>,
    transactions: HashMap<[u8; 12], ConnId>,
    transaction_order: VecDeque<[u8; 12]>,
}

impl Router {
    /// `conn`'s local ICE ufrag is now `ufrag` (an ICE restart replaces the old one).
    pub(crate) fn set_ufrag(&mut self, conn: ConnId, ufrag: &str) {
        self.ufrags.retain(|_, c| *c != conn);
        self.ufrags.insert(ufrag.to_owned(), conn);
    }

    /// Called for every datagram `conn` sends: remembers the transaction id of a STUN
    /// request so that its response finds its way back.
    pub(crate) fn on_send(&mut self, conn: ConnId, datagram: &[u8]) {
        let Some(info) = parse_stun(datagram) else {
            return;
        };
        if info.class != StunClass::Request {
            return;
        }
        if self.transactions.insert(info.transaction, conn).is_none() {
            self.transaction_order.push_back(info.transaction);
        }
        // The order may still name answered ids (removed from the map); evicting those is free.
        while self.transaction_order.len() > MAX_TRANSACTIONS {
            if let Some(old) = self.transaction_order.pop_front() {
                self.transactions.remove(&old);
            }
        }
    }

    /// The connection a datagram from `remote`, read on the socket bound to `local`, is for.
    pub(crate) fn route(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Option<ConnId> {
        let bound = self.remotes.get(&(local, remote)).copied();
        let Some(info) = parse_stun(datagram) else {
            return bound;
        };
        match info.class {
            StunClass::Success | StunClass::Error => {
                // Answered: forget the id, so the table holds outstanding requests, not
                // history. A duplicate response to a retransmission then follows the
                // binding (the connection's remote is bound by then) or is dropped, as a
                // late duplicate may be.
                self.transactions.remove(&info.transaction).or(bound)
            }
            StunClass::Request => {
                let local_ufrag = info
                    .username
                    .and_then(|u| u.split(':').next())
                    .unwrap_or("");
                match self.ufrags.get(local_ufrag).copied() {
                    Some(conn) => {
                        if self.remotes.len() < MAX_REMOTES
                            || self.remotes.contains_key(&(local, remote))
                        {
                            self.remotes.insert((local, remote), conn);
                        }
                        Some(conn)
                    }
                    None => bound,
                }
            }
            StunClass::Indication => bound,
        }
    }

    /// Forgets the address bindings `conn` has on the socket bound to `local`.
    pub(crate) fn forget_local(&mut self, conn: ConnId, local: SocketAddr) {
        self.remotes
            .retain(|(l, _), c| !(*c == conn && *l == local));
    }

    /// Forgets everything about `conn` (it closed).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.ufrags.retain(|_, c| *c != conn);
        self.remotes.retain(|_, c| *c != conn);
        self.transactions.retain(|_, c| *c != conn);
        let transactions = &self.transactions;
        self.transaction_order
            .retain(|t| transactions.contains_key(t));
    }

    /// Sizes of the tables (ufrags, remote bindings, transactions).
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.ufrags.len(),
            self.remotes.len(),
            self.transactions.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN message of `kind` with `tid` and an optional USERNAME.
    fn stun(kind: u16, tid: u8, username: Option<&str>) -> Vec<u8> {
        let mut attrs = Vec::new();
        // An attribute before USERNAME, to exercise the walk (PRIORITY, 4 bytes).
        attrs.extend_from_slice(&0x0024u16.to_be_bytes());
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[1, 2, 3, 4]);
        if let Some(u) = username {
            attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
            attrs.extend_from_slice(&u16::try_from(u.len()).unwrap_or(0).to_be_bytes());
            attrs.extend_from_slice(u.as_bytes());
            attrs.resize(attrs.len().div_ceil(4) * 4, 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[tid; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    const REQUEST: u16 = 0x0001;
    const SUCCESS: u16 = 0x0101;
    const ERROR: u16 = 0x0111;
    const INDICATION: u16 = 0x0011;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn parses_class_transaction_and_username() {
        let m = stun(REQUEST, 7, Some("abcd:efgh1"));
        let info = parse_stun(&m).expect("stun");
        assert_eq!(info.class, StunClass::Request);
        assert_eq!(info.transaction, [7; 12]);
        assert_eq!(info.username, Some("abcd:efgh1"));
        assert_eq!(
            parse_stun(&stun(SUCCESS, 1, None)).map(|i| i.class),
            Some(StunClass::Success)
        );
        assert_eq!(
            parse_stun(&stun(ERROR, 1, None)).map(|i| i.class),
            Some(StunClass::Error)
        );
        assert_eq!(
            parse_stun(&stun(INDICATION, 1, None)).map(|i| i.class),
            Some(StunClass::Indication)
        );
    }

    #[test]
    fn non_stun_and_truncated_messages_are_not_stun() {
        // DTLS record, SCTP-over-DTLS application data, RTP: first byte ≥ 20.
        assert_eq!(
            parse_stun(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(parse_stun(&[0x80; 40]), None);
        let mut m = stun(REQUEST, 1, Some("a:b"));
        m.pop();
        assert_eq!(parse_stun(&m), None, "length field disagrees");
        let mut m = stun(REQUEST, 1, Some("a:b"));
        m[4] = 0;
        assert_eq!(parse_stun(&m), None, "no magic cookie");
        // An attribute running past the end ends the walk without a username.
        let mut m = stun(REQUEST, 1, None);
        m[22] = 0xFF;
        assert_eq!(parse_stun(&m).and_then(|i| i.username), None);
    }

    #[test]
    fn checks_route_by_local_ufrag_and_bind_the_remote() {
        let mut r = Router::default();
        let local = addr("10.0.0.1:5000");
        r.set_ufrag(1, "aaaa");
        r.set_ufrag(2, "bbbb");
        let (b, c) = (addr("10.0.0.2:6000"), addr("10.0.0.3:6000"));
        assert_eq!(
            r.route(local, b, &stun(REQUEST, 1, Some("bbbb:x"))),
            Some(2)
        );
        assert_eq!(
            r.route(local, c, &stun(REQUEST, 2, Some("aaaa:y"))),
            Some(1)
        );
        // DTLS from the bound remotes follows the binding.
        assert_eq!(r.route(local, b, &[22, 254, 253]), Some(2));
        assert_eq!(r.route(local, c, &[22, 254, 253]), Some(1));
        // Unknown remote or other local socket: unroutable; an unknown ufrag falls back to
        // the binding.
        assert_eq!(r.route(local, addr("10.0.0.9:1"), &[22]), None);
        assert_eq!(
            r.route(local, b, &stun(REQUEST, 3, Some("zzzz:x"))),
            Some(2)
        );
        assert_eq!(r.route(addr("10.0.1.1:5000"), b, &[22]), None);
        // Keepalive indications follow the binding too.
        assert_eq!(r.route(local, c, &stun(INDICATION, 4, None)), Some(1));
    }

    #[test]
    fn responses_route_by_transaction_even_from_a_shared_server() {
        let mut r = Router::default();
        let local = addr("10.0.0.1:5000");
        let server = addr("10.0.0.100:3478");
        r.on_send(1, &stun(REQUEST, 10, None));
        r.on_send(2, &stun(REQUEST, 20, None));
        // Responses and indications sent by a connection are not remembered.
        r.on_send(3, &stun(SUCCESS, 30, None));
        assert_eq!(r.route(local, server, &stun(SUCCESS, 20, None)), Some(2));
        assert_eq!(r.route(local, server, &stun(ERROR, 10, None)), Some(1));
        assert_eq!(r.route(local, server, &stun(SUCCESS, 30, None)), None);
        // Answered requests are forgotten: the table holds only outstanding ones.
        assert_eq!(r.sizes().2, 0);
        assert_eq!(r.route(local, server, &stun(SUCCESS, 20, None)), None);
    }

    #[test]
    fn an_ice_restart_replaces_the_ufrag() {
        let mut r = Router::default();
        let local = addr("10.0.0.1:5000");
        r.set_ufrag(1, "old1");
        r.set_ufrag(1, "new1");
        let remote = addr("10.0.0.2:1");
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 1, Some("old1:x"))),
            None
        );
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 1, Some("new1:x"))),
            Some(1)
        );
        assert_eq!(r.sizes().0, 1);
    }

    #[test]
    fn tables_are_bounded_and_forgotten_on_close() {
        let mut r = Router::default();
        for i in 0..(MAX_TRANSACTIONS + 100) {
            let mut m = stun(REQUEST, 0, None);
            m[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            r.on_send(1, &m);
        }
        assert_eq!(r.sizes().2, MAX_TRANSACTIONS);
        let local = addr("10.0.0.1:5000");
        r.set_ufrag(1, "aaaa");
        r.set_ufrag(2, "bbbb");
        r.route(local, addr("10.0.0.2:1"), &stun(REQUEST, 1, Some("aaaa:x")));
        r.route(local, addr("10.0.0.3:1"), &stun(REQUEST, 1, Some("bbbb:x")));
        r.forget_local(2, local);
        assert_eq!(r.route(local, addr("10.0.0.3:1"), &[22]), None);
        r.forget(1);
        assert_eq!(r.sizes(), (1, 0, 0));
        assert_eq!(r.route(local, addr("10.0.0.2:1"), &[22]), None);
    }
}
