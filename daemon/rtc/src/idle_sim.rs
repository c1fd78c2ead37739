//! The idle wake-up schedule on simulated time: several connections of webrtc's sans-IO core
//! (`rtc`, what each driver runs) between one host and remote peers behind a path with a
//! one-way delay, every core's timers fired when the daemon's runtime would fire them
//! ([`SleepPlan`] with the connection's [`DataActivity`]) and every datagram
//! delivered after the delay. The host's connections share one reactor thread, so the host
//! wakes once per distinct millisecond in which any of them has a timer due or a datagram
//! arriving: those instants are what the tests count.
//!
//! Both ends use the daemon's keepalive settings ([`timer_grid::keepalive_settings`]), as two
//! peerixd do; the connections are created at different instants, so without a shared
//! keepalive grid each would keep the phase of its own creation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::data_channel::RTCDataChannelInit;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::timer_grid::{self, DataActivity, SleepPlan, KEEPALIVE_SLOT};

const MS: Duration = Duration::from_millis(1);

/// One connection end, driven as a driver task drives it.
struct End {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    control: rtc::data_channel::RTCDataChannelId,
    open: bool,
    activity: DataActivity,
    plan: SleepPlan,
    /// When its driver's sleep ends.
    wake: Instant,
}

impl End {
    fn new(port: u16, now: Instant) -> End {
        let (interval, anchor) = timer_grid::keepalive_settings();
        let engine = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Client)
            .with_ice_timeouts(None, None, interval)
            .with_ice_keepalive_anchor(anchor)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(engine)
            .build(now)
            .expect("peer connection");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let host = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port,
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("host candidate");
        pc.add_local_candidate(RTCIceCandidate::from(&host).to_json().expect("json"))
            .expect("local candidate");
        let init = RTCDataChannelInit {
            ordered: true,
            negotiated: Some(0),
            ..Default::default()
        };
        let control = pc
            .create_data_channel("", Some(init))
            .expect("channel")
            .id();
        End {
            pc,
            addr,
            control,
            open: false,
            activity: DataActivity::since(now),
            plan: SleepPlan::default(),
            wake: now,
        }
    }

    fn read(&mut self, from: SocketAddr, datagram: BytesMut, now: Instant) {
        self.activity.saw_at(&datagram, now);
        let _ = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: datagram,
        });
    }

    /// One pass of the driver's loop at `now`: events, then what to send, then the next sleep.
    fn pass(&mut self, now: Instant) -> Vec<BytesMut> {
        if self.wake <= now {
            let _ = self.pc.handle_timeout(now);
        }
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) = ev {
                self.open |= id == self.control;
            }
        }
        while self.pc.poll_read().is_some() {}
        let mut out = Vec::new();
        while let Some(msg) = self.pc.poll_write() {
            self.activity.saw_at(&msg.message, now);
            out.push(msg.message);
        }
        let requested = self
            .pc
            .poll_timeout()
            .map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        let wake = self.plan.wake(requested, now, self.activity.state(now));
        // The driver handles an expired deadline at once and then sleeps at least 1 ms.
        self.wake = wake.max(now + MS);
        out
    }
}

/// A STUN Binding request (ICE check or keepalive)?
fn is_binding_request(d: &[u8]) -> bool {
    d.len() >= 20 && d[0] == 0x00 && d[1] == 0x01
}

/// The host's connections (index 2i) and their remotes (2i + 1), on one simulated clock.
struct World {
    ends: Vec<End>,
    one_way: Duration,
    /// Datagrams in flight: arrival instant → (to, from, datagram).
    flight: BTreeMap<Instant, Vec<(usize, SocketAddr, BytesMut)>>,
    now: Instant,
    /// Per millisecond in which a host end ran: whether a timer was due, whether it read.
    host_wakes: BTreeMap<Instant, (bool, bool)>,
    /// Instants at which a host end sent a Binding request.
    host_requests: BTreeSet<Instant>,
}

impl World {
    fn new(one_way: Duration) -> World {
        // Fixes the grid's epoch before the clock starts, so every simulated instant is after it.
        let _ = timer_grid::keepalive_settings();
        World {
            ends: Vec::new(),
            one_way,
            flight: BTreeMap::new(),
            now: Instant::now(),
            host_wakes: BTreeMap::new(),
            host_requests: BTreeSet::new(),
        }
    }

    /// A new connection between the host and a new remote, negotiated now; the offerer is
    /// ICE's controlling agent, so the host controls every other connection.
    fn connect(&mut self) {
        let port = 20_000 + self.ends.len() as u16;
        let mut host = End::new(port, self.now);
        let mut remote = End::new(port + 1000, self.now);
        let (offerer, answerer) = if self.ends.len().is_multiple_of(4) {
            (&mut host, &mut remote)
        } else {
            (&mut remote, &mut host)
        };
        let offer = offerer.pc.create_offer(None).expect("offer");
        offerer
            .pc
            .set_local_description(self.now, offer.clone())
            .expect("SLD offer");
        answerer
            .pc
            .set_remote_description(self.now, offer)
            .expect("SRD offer");
        let answer = answerer.pc.create_answer(None).expect("answer");
        answerer
            .pc
            .set_local_description(self.now, answer.clone())
            .expect("SLD answer");
        offerer
            .pc
            .set_remote_description(self.now, answer)
            .expect("SRD answer");
        self.ends.push(host);
        self.ends.push(remote);
    }

    /// Runs the clock for `span`, millisecond by millisecond.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            let arriving = self.flight.remove(&self.now).unwrap_or_default();
            let mut read = vec![false; self.ends.len()];
            for (to, from, d) in arriving {
                self.ends[to].read(from, d, self.now);
                read[to] = true;
            }
            for (i, was_read) in read.into_iter().enumerate() {
                let due = self.ends[i].wake <= self.now;
                if !due && !was_read {
                    continue;
                }
                if i % 2 == 0 {
                    let w = self.host_wakes.entry(self.now).or_default();
                    w.0 |= due;
                    w.1 |= was_read;
                }
                let out = self.ends[i].pass(self.now);
                let (to, from) = (i ^ 1, self.ends[i].addr);
                for d in out {
                    if i % 2 == 0 && is_binding_request(&d) {
                        self.host_requests.insert(self.now);
                    }
                    let at = self.now + self.one_way.max(MS);
                    self.flight.entry(at).or_default().push((to, from, d));
                }
            }
            self.now += MS;
        }
    }

    fn all_open(&self) -> bool {
        self.ends.iter().all(|e| e.open)
    }

    /// Forgets what was recorded so far (the set-up).
    fn reset_counts(&mut self) {
        self.host_wakes.clear();
        self.host_requests.clear();
    }
}

/// Where `t` falls in the keepalive period (0 = on a slot of the host-wide grid).
fn phase(t: Instant) -> Duration {
    let anchor = timer_grid::grid_anchor(t);
    let since = t.saturating_duration_since(anchor).as_nanos();
    Duration::from_nanos((since % KEEPALIVE_SLOT.as_nanos()) as u64)
}

/// Four idle connections behind `one_way`, created 0.7 s apart (so each has another phase),
/// settled for longer than the data-activity window, then observed for ten keepalive periods.
fn idle_world(one_way: Duration) -> World {
    let mut w = World::new(one_way);
    for _ in 0..4 {
        w.connect();
        w.run(Duration::from_millis(700));
    }
    w.run(Duration::from_secs(3));
    assert!(w.all_open(), "the connections did not come up");
    w.run(Duration::from_secs(6));
    w.reset_counts();
    w.run(KEEPALIVE_SLOT * 10);
    eprintln!(
        "host wake-ups in ten keepalive periods: {} ({} with a timer due); keepalives in {} ticks",
        w.host_wakes.len(),
        w.host_wakes.values().filter(|(timer, _)| *timer).count(),
        w.host_requests.len()
    );
    w
}

#[test]
fn keepalives_of_all_connections_leave_in_one_tick_per_slot() {
    let w = idle_world(Duration::from_millis(50));
    assert!(!w.host_requests.is_empty(), "no keepalive was sent");
    for t in &w.host_requests {
        assert!(
            phase(*t) < Duration::from_millis(2),
            "a keepalive left {:?} after its slot: {:?}",
            phase(*t),
            w.host_requests
                .iter()
                .map(|t| phase(*t))
                .collect::<Vec<_>>()
        );
    }
    // Ten periods: one tick each (or eleven, the window's ends being slots).
    assert!(
        w.host_requests.len() <= 11,
        "keepalives spread over {} instants in ten periods",
        w.host_requests.len()
    );
}

/// 60 ms one way: the answers to the keepalives sent at a tick arrive 120 ms after it, when
/// less than 100 ms (the shortest sleep [`timer_grid`] puts on the grid) remain until the ICE
/// agent's next deadline.
#[test]
fn late_answers_cost_two_wake_ups_per_slot_and_arm_no_timer() {
    let one_way = Duration::from_millis(60);
    let w = idle_world(one_way);
    let mut reads = Vec::new();
    for (t, (timer, read)) in &w.host_wakes {
        let p = phase(*t);
        if *timer {
            // Every timer of an idle connection is on the idle grid: a late answer or a
            // remote's keepalive never left a timer of its own behind.
            let step = Duration::from_millis(768).as_nanos();
            assert!(
                p.as_nanos() % step < MS.as_nanos() * 2,
                "a timer fired off the idle grid, {p:?} into the period"
            );
        }
        if *read && !*timer {
            reads.push(p);
            // What arrives between ticks is the remotes' keepalives (one way after the
            // slot) and the answers to ours (a round trip after); a controlled host no
            // longer sends a check of its own back for each keepalive it answers, whose
            // answer came one and a half round trips after the slot.
            let near = |x: Duration| p.abs_diff(x) < Duration::from_millis(3);
            assert!(
                near(one_way) || near(one_way * 2),
                "a datagram woke the host {p:?} into the period"
            );
        }
    }
    // At most two such wake-ups per period (ten periods, plus one for the window's edge).
    assert!(
        reads.len() <= 22,
        "{} reads between ticks: {reads:?}",
        reads.len()
    );
    // And the ticks: one per idle-grid step, 30 in ten periods.
    let ticks = w.host_wakes.values().filter(|(timer, _)| *timer).count();
    assert!(
        ticks <= 31,
        "{ticks} timer wake-ups in ten keepalive periods"
    );
}
