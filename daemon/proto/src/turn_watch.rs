//! Which of a connection's TURN servers failed, and when to tell the operator
//! (`ICE_SERVER_ERROR`).
//!
//! The stack gathers one relay candidate per TURN server, or nothing and a log line: a server
//! that refuses the allocation, a stream (`?transport=tcp`, `turns:`) that cannot be opened
//! or whose certificate is not trusted, a server that never answers. Its own verdict on a
//! silent server comes only when the Allocate transaction gives up (~8 s of retransmissions),
//! so this machine keeps a deadline of its own ([`TurnWatch::ANSWER_WAIT`] after gathering
//! starts) and reports each failing server once per connection, as soon as the failure is
//! known, while the connection goes on with its other candidates.
//!
//! Servers are named by URL in whatever form they were configured (`turn:host`,
//! `turn:host:3478?transport=udp`, …) and the stack names them in its own; both are reduced
//! to (secure, host, port, transport) to match. Reports carry the configured form.
//!
//! A stream that carried an allocation and broke ([`TurnNews::StreamLost`]) took the
//! allocation with it: the server forgets it with the connection (RFC 8656 §3.1), so the
//! relayed path is dead although ICE will notice only after its consent timeout. That is
//! returned as [`TurnAction::RelayLost`] for the owner to regather now.

use std::time::{Duration, Instant};

/// What the owner learned about one TURN server of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnNews<'a> {
    /// It gave a relay candidate.
    Relayed,
    /// Its TCP/TLS stream could not be opened or broke before an allocation: why.
    StreamFailed(&'a str),
    /// Its TCP/TLS stream broke after carrying an allocation: why.
    StreamLost(&'a str),
    /// It refused the allocation: the server's error.
    Refused(&'a str),
    /// The stack gave up waiting for its answer.
    NoAnswer,
}

/// What the owner should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAction {
    /// Tell the operator (`ICE_SERVER_ERROR`): `url` as configured, and what to do.
    Report {
        /// The server's URL as configured.
        url: String,
        /// What failed and what to do about it.
        message: String,
    },
    /// The relayed path through `url` is gone: gather again (an ICE restart) instead of
    /// waiting for ICE's consent timeout.
    RelayLost {
        /// The server's URL as configured.
        url: String,
        /// No other server gives this connection a relay candidate now, so a selected relay
        /// pair whose server is unknown (the stack does not always keep the URL) is this one.
        only_relay: bool,
    },
}

/// A TURN URL reduced to what names the server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    secure: bool,
    host: String,
    port: u16,
    tcp: bool,
}

impl Key {
    /// `None` for anything but a `turn:`/`turns:` URL.
    fn parse(url: &str) -> Option<Key> {
        let lower = url.trim().to_ascii_lowercase();
        let (secure, rest) = if let Some(r) = lower.strip_prefix("turns:") {
            (true, r)
        } else {
            (false, lower.strip_prefix("turn:")?)
        };
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let tcp = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("transport="))
            .map_or(secure, |t| t == "tcp");
        let default_port = if secure { 5349 } else { 3478 };
        let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().ok()?),
                None => (host, default_port),
            }
        } else {
            match addr.rsplit_once(':') {
                Some((host, p)) => (host, p.parse().ok()?),
                None => (addr, default_port),
            }
        };
        Some(Key {
            secure,
            host: host.to_owned(),
            port,
            tcp,
        })
    }

    fn transport(&self) -> &'static str {
        match (self.secure, self.tcp) {
            (true, _) => "TLS",
            (false, true) => "TCP",
            (false, false) => "UDP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No gathering yet.
    Idle,
    /// Gathering; no relay candidate from it yet.
    Waiting,
    /// It gave a relay candidate this gathering.
    Relayed,
}

#[derive(Debug)]
struct Server {
    url: String,
    key: Key,
    state: State,
    /// Reported once; never again on this connection.
    reported: bool,
}

/// One connection's TURN servers and what became of them (see the module docs).
#[derive(Debug)]
pub struct TurnWatch {
    servers: Vec<Server>,
    deadline: Option<Instant>,
    wait: Duration,
}

impl TurnWatch {
    /// How long after gathering starts a server that gave neither a relay candidate nor an
    /// error counts as not answering: the stack has sent its Allocate five times by then
    /// (at 0, 0.2, 0.6, 1.4 and 3 s); a server that answers at all answers within it.
    pub const ANSWER_WAIT: Duration = Duration::from_secs(4);

    /// The `turn:`/`turns:` URLs among `urls` (others are ignored), with
    /// [`TurnWatch::ANSWER_WAIT`].
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        Self::with_wait(urls, Self::ANSWER_WAIT)
    }

    /// [`TurnWatch::new`] with another answer wait.
    pub fn with_wait<'a>(urls: impl IntoIterator<Item = &'a str>, wait: Duration) -> Self {
        let mut servers: Vec<Server> = Vec::new();
        for url in urls {
            let Some(key) = Key::parse(url) else { continue };
            if servers.iter().any(|s| s.key == key) {
                continue;
            }
            servers.push(Server {
                url: url.trim().to_owned(),
                key,
                state: State::Idle,
                reported: false,
            });
        }
        Self {
            servers,
            deadline: None,
            wait,
        }
    }

    /// Whether two TURN URLs name the same server (scheme, host, port and transport).
    pub fn same_server(a: &str, b: &str) -> bool {
        Key::parse(a).is_some_and(|k| Key::parse(b) == Some(k))
    }

    /// Whether there is any TURN server to watch.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Local gathering started (the first one, or again after an ICE restart): every server
    /// has until `now` + the answer wait.
    pub fn gathering_started(&mut self, now: Instant) {
        for s in &mut self.servers {
            s.state = State::Waiting;
        }
        self.deadline = (!self.servers.is_empty()).then_some(now + self.wait);
    }

    /// What happened to the server the stack names `url`.
    pub fn news(&mut self, url: &str, news: TurnNews<'_>) -> Option<TurnAction> {
        let key = Key::parse(url)?;
        let others_relay = self
            .servers
            .iter()
            .any(|s| s.key != key && s.state == State::Relayed);
        let s = self.servers.iter_mut().find(|s| s.key == key)?;
        if s.state == State::Relayed && !matches!(news, TurnNews::StreamLost(_)) {
            // It relays for this connection (another socket's stream or transaction failing
            // does not change that).
            return None;
        }
        match news {
            TurnNews::Relayed => {
                s.state = State::Relayed;
                None
            }
            TurnNews::StreamLost(_) if s.state == State::Relayed => {
                // Gathering again is what brings the path back; until it gives a candidate
                // the server counts as waiting (without a deadline: the owner's restart
                // starts a new gathering, and with it the wait).
                s.state = State::Waiting;
                Some(TurnAction::RelayLost {
                    url: s.url.clone(),
                    only_relay: !others_relay,
                })
            }
            TurnNews::StreamFailed(why) | TurnNews::StreamLost(why) => {
                let message = format!("no relay candidate from TURN server {}: {why}", s.url);
                Self::report(s, message)
            }
            TurnNews::Refused(why) => {
                let message = format!(
                    "TURN server {} refused the allocation ({why}). Check the credentials \
                     (with [turn_rest], `secret` must equal the server's static-auth-secret \
                     and both clocks must be right)",
                    s.url
                );
                Self::report(s, message)
            }
            TurnNews::NoAnswer => {
                let message = Self::no_answer(s);
                Self::report(s, message)
            }
        }
    }

    /// Local gathering completed: a server still without a relay candidate will not give one
    /// in this gathering.
    pub fn gathering_complete(&mut self) -> Vec<TurnAction> {
        self.deadline = None;
        let mut out = Vec::new();
        for s in &mut self.servers {
            if s.state == State::Waiting {
                let message = format!(
                    "no relay candidate from TURN server {}: it refused the allocation or did \
                     not answer. Check the credentials (with [turn_rest], `secret` must equal \
                     the server's static-auth-secret and both clocks must be right) and that \
                     the server is reachable from this host",
                    s.url
                );
                out.extend(Self::report(s, message));
            }
        }
        out
    }

    /// When [`TurnWatch::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The answer wait is over: servers that said nothing are reported.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TurnAction> {
        if self.deadline.is_none_or(|d| now < d) {
            return Vec::new();
        }
        self.deadline = None;
        let mut out = Vec::new();
        for s in &mut self.servers {
            if s.state == State::Waiting {
                let message = Self::no_answer(s);
                out.extend(Self::report(s, message));
            }
        }
        out
    }

    fn no_answer(s: &Server) -> String {
        format!(
            "no answer from TURN server {}: is it running, and reachable from this host over \
             {} port {}?",
            s.url,
            s.key.transport(),
            s.key.port
        )
    }

    /// Once per server: the first failure is reported, later ones only change its state.
    fn report(s: &mut Server, message: String) -> Option<TurnAction> {
        if s.state == State::Waiting {
            s.state = State::Idle;
        }
        if std::mem::replace(&mut s.reported, true) {
            return None;
        }
        Some(TurnAction::Report {
            url: s.url.clone(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: &str = "turn:203.0.113.1:3478?transport=udp";
    const TCP: &str = "turn:203.0.113.1:3478?transport=tcp";
    const TLS: &str = "turns:turn.example:5349?transport=tcp";

    fn urls(actions: &[TurnAction]) -> Vec<&str> {
        actions
            .iter()
            .map(|a| match a {
                TurnAction::Report { url, .. } | TurnAction::RelayLost { url, .. } => url.as_str(),
            })
            .collect()
    }

    #[test]
    fn urls_match_whatever_their_form() {
        assert_eq!(Key::parse("turn:203.0.113.1"), Key::parse(UDP));
        assert_eq!(Key::parse("TURN:203.0.113.1:3478"), Key::parse(UDP));
        assert_ne!(Key::parse(UDP), Key::parse(TCP));
        assert_eq!(Key::parse("turns:Turn.Example"), Key::parse(TLS));
        assert_eq!(
            Key::parse("turn:[2001:db8::1]?transport=tcp"),
            Key::parse("turn:[2001:db8::1]:3478?transport=tcp")
        );
        assert_eq!(Key::parse("stun:203.0.113.1"), None);
        assert_eq!(Key::parse("turn:host:notaport"), None);
        assert!(TurnWatch::same_server("turn:203.0.113.1", UDP));
        assert!(!TurnWatch::same_server(TCP, UDP));
    }

    /// Simulated time: a silent server is reported at the deadline, one that relayed is not,
    /// and nothing is reported twice.
    #[test]
    fn a_silent_server_is_reported_at_the_deadline_once() {
        let t0 = Instant::now();
        let mut w = TurnWatch::new(["stun:203.0.113.1", UDP, "turn:198.51.100.9"]);
        assert_eq!(w.poll_timeout(), None);
        w.gathering_started(t0);
        assert_eq!(w.poll_timeout(), Some(t0 + TurnWatch::ANSWER_WAIT));
        assert_eq!(w.news("turn:203.0.113.1:3478", TurnNews::Relayed), None);
        assert!(w.handle_timeout(t0 + Duration::from_secs(3)).is_empty());
        let out = w.handle_timeout(t0 + TurnWatch::ANSWER_WAIT);
        assert_eq!(urls(&out), ["turn:198.51.100.9"]);
        let TurnAction::Report { message, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(message.contains("no answer") && message.contains("UDP port 3478"));
        assert_eq!(w.poll_timeout(), None);
        // The stack's own timeout later, gathering completing, an ICE restart: no repeat.
        assert_eq!(w.news("turn:198.51.100.9:3478", TurnNews::NoAnswer), None);
        assert!(w.gathering_complete().is_empty());
        w.gathering_started(t0 + Duration::from_secs(20));
        w.news(UDP, TurnNews::Relayed);
        assert!(w.handle_timeout(t0 + Duration::from_secs(30)).is_empty());
    }

    /// A stream failure and a refusal are known at once: reported then, with what to do.
    #[test]
    fn stream_failures_and_refusals_are_reported_at_once() {
        let t0 = Instant::now();
        let mut w = TurnWatch::new([TLS, TCP, UDP]);
        w.gathering_started(t0);
        let a = w.news(
            "turns:turn.example:5349?transport=tcp",
            TurnNews::StreamFailed("TLS certificate not trusted: set turn_tls.ca_file"),
        );
        assert!(
            matches!(&a, Some(TurnAction::Report { url, message }) if url == TLS && message.contains("ca_file")),
            "{a:?}"
        );
        // A second socket's stream to the same server fails too: once is enough.
        assert_eq!(
            w.news(TLS, TurnNews::StreamFailed("TLS certificate not trusted")),
            None
        );
        let a = w.news(TCP, TurnNews::Refused("401 Unauthorized"));
        assert!(
            matches!(&a, Some(TurnAction::Report { message, .. }) if message.contains("credentials")),
            "{a:?}"
        );
        assert_eq!(w.news(UDP, TurnNews::Relayed), None);
        assert!(w.handle_timeout(t0 + Duration::from_secs(5)).is_empty());
        assert!(w.gathering_complete().is_empty());
    }

    /// Gathering that completes before the deadline (the stack's verdict came first) reports
    /// what gave nothing, and the deadline is dropped.
    #[test]
    fn gathering_complete_reports_servers_without_a_candidate() {
        let t0 = Instant::now();
        let mut w = TurnWatch::new([UDP, TCP]);
        w.gathering_started(t0);
        w.news(TCP, TurnNews::Relayed);
        assert_eq!(urls(&w.gathering_complete()), [UDP]);
        assert_eq!(w.poll_timeout(), None);
        assert!(w.handle_timeout(t0 + Duration::from_secs(10)).is_empty());
    }

    /// A stream that carried the allocation breaks: the path is lost (regather), not
    /// reported; if the new gathering then fails, that is reported, once.
    #[test]
    fn a_lost_allocation_asks_for_a_new_gathering() {
        let t0 = Instant::now();
        let mut w = TurnWatch::new([TCP]);
        w.gathering_started(t0);
        w.news(TCP, TurnNews::Relayed);
        assert_eq!(
            w.news(
                TCP,
                TurnNews::StreamLost("the server closed the connection")
            ),
            Some(TurnAction::RelayLost {
                url: TCP.into(),
                only_relay: true
            })
        );
        // The restart's gathering: the server is gone for good now.
        let t1 = t0 + Duration::from_secs(30);
        w.gathering_started(t1);
        let a = w.news(TCP, TurnNews::StreamFailed("TCP connection refused"));
        assert!(matches!(a, Some(TurnAction::Report { .. })), "{a:?}");
        assert!(w.handle_timeout(t1 + Duration::from_secs(5)).is_empty());
        // Back again later, and lost again: a new gathering is asked for, no new report.
        w.gathering_started(t1 + Duration::from_secs(60));
        w.news(TCP, TurnNews::Relayed);
        assert!(matches!(
            w.news(TCP, TurnNews::StreamLost("reset")),
            Some(TurnAction::RelayLost { .. })
        ));
    }

    /// With another server relaying too, a loss does not say which relay the selected pair
    /// uses.
    #[test]
    fn a_loss_next_to_another_relay_is_not_the_only_one() {
        let mut w = TurnWatch::new([TCP, UDP]);
        w.gathering_started(Instant::now());
        w.news(TCP, TurnNews::Relayed);
        w.news(UDP, TurnNews::Relayed);
        assert_eq!(
            w.news(TCP, TurnNews::StreamLost("reset")),
            Some(TurnAction::RelayLost {
                url: TCP.into(),
                only_relay: false
            })
        );
    }

    #[test]
    fn unknown_servers_and_no_servers_are_ignored() {
        let mut w = TurnWatch::new(["stun:203.0.113.1"]);
        assert!(w.is_empty());
        w.gathering_started(Instant::now());
        assert_eq!(w.poll_timeout(), None);
        let mut w = TurnWatch::new([UDP]);
        assert_eq!(w.news("turn:192.0.2.1", TurnNews::NoAnswer), None);
    }
}
