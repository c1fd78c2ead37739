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
//!
//! **Two connections, one address pair.** When both ends are single-port daemons sharing two
//! rooms, both rooms' connections run between the same two ports, and rule 3 cannot tell
//! their DTLS apart (nothing in an encrypted record names its connection). Rebinding the
//! pair to the newcomer would silently break the established connection, so rule 2 refuses
//! to take a pair from a connection that heard from it within [`LIVE_MS`]: the newcomer's
//! check is dropped, the newcomer is marked [`collided`](Router::collided), and its owner
//! makes the next connection to that peer with a port of its own. A pair whose owner went
//! quiet (the remote restarted on the same port) is taken over as before.

use std::collections::{HashMap, HashSet, VecDeque};
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
/// How recently a connection must have heard from an address pair to keep it against a
/// newcomer: ICE consent checks come every few seconds on an idle connection, data more often.
pub(crate) const LIVE_MS: u64 = 3_000;
/// Connections remembered as collided (each is forgotten when it closes).
const MAX_COLLIDED: usize = 4096;

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
    remotes: HashMap<(SocketAddr, SocketAddr), Binding>,
    transactions: HashMap<[u8; 12], ConnId>,
    transaction_order: VecDeque<[u8; 12]>,
    /// Connections refused an address pair another live connection holds.
    collided: HashSet<ConnId>,
}

/// The connection an address pair belongs to, and when (the caller's monotonic
/// milliseconds) a datagram from it last reached that connection.
#[derive(Debug, Clone, Copy)]
struct Binding {
    conn: ConnId,
    heard_ms: u64,
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

    /// The connection a datagram from `remote`, read on the socket bound to `local` at
    /// `now_ms` (the caller's monotonic clock), is for.
    pub(crate) fn route(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
    ) -> Option<ConnId> {
        let key = (local, remote);
        let bound = self.remotes.get(&key).copied();
        let target = match parse_stun(datagram) {
            None => bound.map(|b| b.conn),
            Some(info) => match info.class {
                // Answered: forget the id, so the table holds outstanding requests, not
                // history. A duplicate response to a retransmission then follows the
                // binding (the connection's remote is bound by then) or is dropped, as a
                // late duplicate may be.
                StunClass::Success | StunClass::Error => self
                    .transactions
                    .remove(&info.transaction)
                    .or(bound.map(|b| b.conn)),
                StunClass::Request => {
                    let local_ufrag = info
                        .username
                        .and_then(|u| u.split(':').next())
                        .unwrap_or("");
                    match self.ufrags.get(local_ufrag).copied() {
                        None => bound.map(|b| b.conn),
                        Some(conn) => {
                            match bound {
                                Some(b)
                                    if b.conn != conn
                                        && now_ms.saturating_sub(b.heard_ms) < LIVE_MS =>
                                {
                                    if self.collided.len() < MAX_COLLIDED {
                                        self.collided.insert(conn);
                                    }
                                    return None;
                                }
                                Some(_) => {
                                    self.remotes.insert(
                                        key,
                                        Binding {
                                            conn,
                                            heard_ms: now_ms,
                                        },
                                    );
                                }
                                None if self.remotes.len() < MAX_REMOTES => {
                                    self.remotes.insert(
                                        key,
                                        Binding {
                                            conn,
                                            heard_ms: now_ms,
                                        },
                                    );
                                }
                                None => {}
                            }
                            Some(conn)
                        }
                    }
                }
                StunClass::Indication => bound.map(|b| b.conn),
            },
        };
        // The pair's owner heard from it: it stays live against newcomers.
        if let (Some(t), Some(b)) = (target, self.remotes.get_mut(&key)) {
            if b.conn == t {
                b.heard_ms = now_ms;
            }
        }
        target
    }

    /// Whether `conn` was refused an address pair that another live connection holds (see the
    /// module docs): its next connection to the same peer needs a port of its own.
    pub(crate) fn collided(&self, conn: ConnId) -> bool {
        self.collided.contains(&conn)
    }

    /// Forgets the address bindings `conn` has on the socket bound to `local`.
    pub(crate) fn forget_local(&mut self, conn: ConnId, local: SocketAddr) {
        self.remotes
            .retain(|(l, _), b| !(b.conn == conn && *l == local));
    }

    /// Forgets everything about `conn` (it closed).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.ufrags.retain(|_, c| *c != conn);
        self.remotes.retain(|_, b| b.conn != conn);
        self.transactions.retain(|_, c| *c != conn);
        self.collided.remove(&conn);
        let transactions = &self.transactions;
        self.transaction_order
            .retain(|t| transactions.contains_key(t));
    }

    /// [`Router::route`] at time 0.
    #[cfg(test)]
    fn route_at0(&mut self, local: SocketAddr, remote: SocketAddr, d: &[u8]) -> Option<ConnId> {
        self.route(local, remote, d, 0)
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
            r.route_at0(local, b, &stun(REQUEST, 1, Some("bbbb:x"))),
            Some(2)
        );
        assert_eq!(
            r.route_at0(local, c, &stun(REQUEST, 2, Some("aaaa:y"))),
            Some(1)
        );
        // DTLS from the bound remotes follows the binding.
        assert_eq!(r.route_at0(local, b, &[22, 254, 253]), Some(2));
        assert_eq!(r.route_at0(local, c, &[22, 254, 253]), Some(1));
        // Unknown remote or other local socket: unroutable; an unknown ufrag falls back to
        // the binding.
        assert_eq!(r.route_at0(local, addr("10.0.0.9:1"), &[22]), None);
        assert_eq!(
            r.route_at0(local, b, &stun(REQUEST, 3, Some("zzzz:x"))),
            Some(2)
        );
        assert_eq!(r.route_at0(addr("10.0.1.1:5000"), b, &[22]), None);
        // Keepalive indications follow the binding too.
        assert_eq!(r.route_at0(local, c, &stun(INDICATION, 4, None)), Some(1));
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
        assert_eq!(
            r.route_at0(local, server, &stun(SUCCESS, 20, None)),
            Some(2)
        );
        assert_eq!(r.route_at0(local, server, &stun(ERROR, 10, None)), Some(1));
        assert_eq!(r.route_at0(local, server, &stun(SUCCESS, 30, None)), None);
        // Answered requests are forgotten: the table holds only outstanding ones.
        assert_eq!(r.sizes().2, 0);
        assert_eq!(r.route_at0(local, server, &stun(SUCCESS, 20, None)), None);
    }

    #[test]
    fn an_ice_restart_replaces_the_ufrag() {
        let mut r = Router::default();
        let local = addr("10.0.0.1:5000");
        r.set_ufrag(1, "old1");
        r.set_ufrag(1, "new1");
        let remote = addr("10.0.0.2:1");
        assert_eq!(
            r.route_at0(local, remote, &stun(REQUEST, 1, Some("old1:x"))),
            None
        );
        assert_eq!(
            r.route_at0(local, remote, &stun(REQUEST, 1, Some("new1:x"))),
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
        r.route_at0(local, addr("10.0.0.2:1"), &stun(REQUEST, 1, Some("aaaa:x")));
        r.route_at0(local, addr("10.0.0.3:1"), &stun(REQUEST, 1, Some("bbbb:x")));
        r.forget_local(2, local);
        assert_eq!(r.route_at0(local, addr("10.0.0.3:1"), &[22]), None);
        r.forget(1);
        assert_eq!(r.sizes(), (1, 0, 0));
        assert_eq!(r.route_at0(local, addr("10.0.0.2:1"), &[22]), None);
    }

    #[test]
    fn a_live_pair_is_not_taken_by_a_second_connection() {
        let mut r = Router::default();
        let (local, remote) = (addr("10.0.0.1:5000"), addr("10.0.0.2:5000"));
        r.set_ufrag(1, "aaaa");
        r.set_ufrag(2, "bbbb");
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 1, Some("aaaa:x")), 0),
            Some(1)
        );
        // Connection 1 keeps hearing DTLS from the pair.
        assert_eq!(r.route(local, remote, &[23, 254, 253], 2_000), Some(1));
        // A second connection between the same two ports: its check is refused, it is marked,
        // and connection 1 keeps its data.
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 2, Some("bbbb:y")), 2_500),
            None
        );
        assert!(r.collided(2));
        assert!(!r.collided(1));
        assert_eq!(r.route(local, remote, &[23, 254, 253], 4_000), Some(1));
        // Connection 1's own checks keep it live.
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 3, Some("aaaa:x")), 6_000),
            Some(1)
        );
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 4, Some("bbbb:y")), 8_500),
            None
        );
        r.forget(2);
        assert!(!r.collided(2));
    }

    #[test]
    fn a_quiet_pair_is_taken_over() {
        // The remote restarted on the same port: the old connection hears nothing more, and
        // the new one's checks take the pair once the old one has been quiet for LIVE_MS.
        let mut r = Router::default();
        let (local, remote) = (addr("10.0.0.1:5000"), addr("10.0.0.2:5000"));
        r.set_ufrag(1, "aaaa");
        r.set_ufrag(2, "bbbb");
        assert_eq!(
            r.route(local, remote, &stun(REQUEST, 1, Some("aaaa:x")), 0),
            Some(1)
        );
        assert_eq!(r.route(local, remote, &[23], 1_000), Some(1));
        assert_eq!(
            r.route(
                local,
                remote,
                &stun(REQUEST, 2, Some("bbbb:y")),
                1_000 + LIVE_MS
            ),
            Some(2)
        );
        assert!(!r.collided(2));
        assert_eq!(r.route(local, remote, &[23], 1_000 + LIVE_MS), Some(2));
    }
}
