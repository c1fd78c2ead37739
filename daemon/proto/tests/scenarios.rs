//! How Peerix peers find each other and connect, told as scenarios on simulated time.
//!
//! Every test builds a small world (`sim::Sim`): room machines with Peerix's defaults, a
//! signaling bus, and a fake WebRTC stack that connects two connection objects only when each
//! has applied the other's description and a candidate. Read `both_join_orders` first: it is
//! the canonical flow of §5.3 (announce → invoke → offer → answer → candidates → connected).

mod sim;

use std::time::Duration;

use peerix_proto::{Admission, Event, Fallback, PeerState, VerifierPolicy};
use serde_json::{json, Value as Json};
use sim::{Net, Sim, Verifier};

const S: fn(u64) -> Duration = Duration::from_secs;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Joins `ids` one after another, `gap` apart, then runs until `until`.
fn staggered(seed: u64, ids: &[&str], gap: Duration, net: Net, until: Duration) -> Sim {
    let mut sim = Sim::new(seed, ids, net);
    for i in 0..ids.len() {
        sim.join(i);
        let t = sim.elapsed() + gap;
        sim.run_until(t);
    }
    sim.run_until(until);
    sim
}

fn all_connected(sim: &Sim) -> bool {
    let n = sim.nodes.len();
    (0..n).all(|a| (0..n).all(|b| a == b || sim.connected(a, b)))
}

#[test]
fn both_join_orders() {
    // "b" > "a": b is polite. Whoever joins second announces; the first answers with an
    // invoke; the invoked one creates the connection and offers.
    for order in [["a", "b"], ["b", "a"]] {
        let mut sim = staggered(1, &order, ms(200), Net::default(), ms(1200));
        assert!(sim.connected(0, 1), "{order:?}\n{}", sim.dump());
        let (first, second) = (&sim.nodes[0], &sim.nodes[1]);
        assert_eq!(
            first.published.get("invoke"),
            Some(&1),
            "the first answers the announce"
        );
        assert_eq!(
            second.published.get("offer"),
            Some(&1),
            "the newcomer offers"
        );
        assert_eq!(first.published.get("answer"), Some(&1));
        assert_eq!(first.published.get("offer"), None);
        // 1 announce + invoke + offer + answer + one candidate batch each way, nothing after.
        let total: usize = sim.nodes.iter().flat_map(|n| n.published.values()).sum();
        assert_eq!(
            total,
            7,
            "{:?}",
            sim.nodes.iter().map(|n| &n.published).collect::<Vec<_>>()
        );
        // Peerix's states in order, on both sides.
        for (i, other) in [(0, &order[1]), (1, &order[0])] {
            assert_eq!(
                sim.events_about(i, other),
                [
                    "connection:new",
                    "connection:connecting",
                    "connection:connected"
                ]
                .map(|s| format!("{s} {other}")),
            );
        }
        sim.run_until(S(60));
        assert!(sim.connected(0, 1), "stays connected with nothing to do");
        assert!(
            sim.nodes
                .iter()
                .all(|n| n.room.as_ref().and_then(|r| r.poll_timeout()).is_none()),
            "an idle room has no timer"
        );
    }
}

#[test]
fn simultaneous_join_of_two_is_glare_resolved_by_politeness() {
    // Both announce before hearing each other: both invoke, both create a connection and
    // offer. The impolite "a" ignores b's offer; the polite "b" rolls its own back and answers.
    for seed in 0..20 {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            Net {
                delay: (1, 20),
                ..Net::default()
            },
        );
        sim.join(0);
        sim.join(1);
        sim.run_until(S(2));
        assert!(sim.connected(0, 1), "seed {seed}\n{}", sim.dump());
        assert_eq!(sim.pairings.len(), 1, "exactly one connection ever formed");
        // Whichever offers crossed, exactly one was answered: a colliding offer is ignored by
        // the impolite side and rolled back by the polite one.
        let answers: usize = sim
            .nodes
            .iter()
            .filter_map(|n| n.published.get("answer"))
            .sum();
        assert_eq!(answers, 1, "seed {seed}\n{}", sim.dump());
    }
}

#[test]
fn simultaneous_join_of_five() {
    for seed in 0..20 {
        let ids = ["p1", "p2", "p3", "p4", "p5"];
        let mut sim = Sim::new(
            seed,
            &ids,
            Net {
                delay: (1, 30),
                ..Net::default()
            },
        );
        for i in 0..ids.len() {
            sim.join(i);
        }
        sim.run_until(S(3));
        assert!(all_connected(&sim), "seed {seed}\n{}", sim.dump());
        assert_eq!(
            sim.pairings.len(),
            10,
            "one connection per pair, no duplicates"
        );
    }
}

#[test]
fn repeated_invokes_and_offers_from_the_same_id_are_harmless() {
    // Every packet arrives twice (as a retrying browser or a duplicating bus would produce).
    for seed in 0..20 {
        let net = Net {
            dup: 1.0,
            delay: (1, 15),
            ..Net::default()
        };
        let sim = staggered(seed, &["a", "b", "c"], ms(300), net, S(5));
        assert!(all_connected(&sim), "seed {seed}\n{}", sim.dump());
        assert_eq!(
            sim.pairings.len(),
            3,
            "seed {seed}: no second connection for a repeated invoke or offer"
        );
        for i in 0..3 {
            assert!(sim.conn_objects(i) <= 2, "no leftover connection objects");
        }
    }
}

#[test]
fn lost_candidate_packets_end_in_recovery() {
    // Every candidate packet over signaling is lost: ICE cannot start. Peerix's connection timer
    // fails the connection after 15 s; the failed side re-invokes with jitter, and a new
    // connection is tried. With the loss over, the second attempt gets through.
    let net = Net {
        drop: 1.0,
        drop_only: Some(peerix_proto::SignalType::Candidate),
        ..Net::default()
    };
    let mut sim = staggered(3, &["a", "b"], ms(100), net, S(2));
    assert!(!sim.connected(0, 1));
    assert_eq!(
        sim.state(0, "b"),
        Some(PeerState::Connecting),
        "checking with no remote candidate"
    );
    sim.run_until(S(15));
    assert!(!sim.reported_failure(0, "b"));
    sim.net.drop = 0.0; // the loss ends just before the timers run out
    sim.run_until(ms(15_200));
    assert!(
        sim.reported_failure(0, "b") && sim.reported_failure(1, "a"),
        "failed at 15 s on both sides\n{}",
        sim.dump()
    );
    sim.run_until(S(20));
    assert!(
        sim.connected(0, 1),
        "recovered by re-invoke\n{}",
        sim.dump()
    );
    assert_eq!(sim.pairings.len(), 1);
}

#[test]
fn a_browser_that_vanishes_is_failed_by_peerix_timing() {
    let mut sim = Sim::new(4, &["a", "b"], Net::default());
    sim.nodes[1].browser = true;
    sim.join(0);
    sim.run_until(ms(100));
    sim.join(1);
    sim.run_until(S(1));
    assert!(sim.connected(0, 1));
    sim.vanish(1);
    // ICE consent fails after 5 s: disconnected; Peerix's 15 s timer then fails it.
    sim.run_until(S(7));
    assert_eq!(sim.state(0, "b"), Some(PeerState::Disconnected));
    sim.run_until(S(20));
    assert_eq!(
        sim.state(0, "b"),
        Some(PeerState::Disconnected),
        "a browser gets Peerix's 15 s"
    );
    sim.run_until(S(22));
    assert_eq!(
        sim.state(0, "b"),
        None,
        "closed and removed\n{}",
        sim.dump()
    );
    let ev = sim.events_about(0, "b");
    assert!(
        ev.ends_with(&[
            "connection:disconnected b".into(),
            "connection:failed b".into(),
            "connection:closed b".into()
        ]),
        "{ev:?}"
    );
    // Recovery invokes a few times, then stops; nothing is left behind.
    sim.run_until(S(200));
    let invokes = sim.nodes[0].published.get("invoke").copied().unwrap_or(0);
    assert!(
        (2..=1 + 3 * 3).contains(&invokes),
        "bounded re-invokes: {invokes}"
    );
    assert!(
        sim.nodes[0]
            .room
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .is_none(),
        "gave up; no timer left"
    );
    assert!(sim.reported_failure(0, "b"));
}

#[test]
fn a_peerixd_that_vanishes_is_failed_within_seconds() {
    // Two daemons said hello on their control channel: once ICE consent fails, the other
    // restarts ICE a bounded number of times (nobody answers) and then fails it, well before
    // Peerix's 15 s.
    let mut sim = staggered(4, &["a", "b"], ms(100), Net::default(), S(1));
    sim.vanish(1);
    sim.run_until(S(6) + ms(100));
    assert_eq!(sim.state(0, "b"), Some(PeerState::Disconnected));
    let p = peerix_proto::RestartPolicy::default();
    sim.run_until(S(6) + p.after + p.attempt_timeout * p.max_attempts + ms(100));
    assert_eq!(sim.state(0, "b"), None, "{}", sim.dump());
    assert!(sim.reported_failure(0, "b"));
}

#[test]
fn a_peer_that_leaves_is_closed_at_once() {
    let mut sim = staggered(5, &["a", "b"], ms(100), Net::default(), S(1));
    sim.leave(1);
    sim.run_until(sim.elapsed() + ms(50));
    assert_eq!(sim.state(0, "b"), None);
    assert_eq!(
        sim.events_about(0, "b").last().map(String::as_str),
        Some("connection:closed b")
    );
    assert!(!sim.reported_failure(0, "b"), "leaving is not a failure");
}

#[test]
fn a_peer_that_comes_back_with_the_same_id_is_reconnected_at_once() {
    // b vanishes and rejoins with the same id before a notices anything. Its new connection
    // offers with new ICE credentials; Peerix never restarts ICE, so a replaces the dead
    // connection instead of renegotiating it (or waiting 20 s for its timers).
    for seed in 0..10 {
        let mut sim = staggered(seed, &["a", "b"], ms(100), Net::default(), S(1));
        sim.vanish(1);
        sim.run_until(S(2));
        sim.join(1);
        sim.run_until(S(3));
        assert!(sim.connected(0, 1), "seed {seed}\n{}", sim.dump());
        sim.run_until(S(60));
        assert!(sim.connected(0, 1), "and it stays so");
        assert_eq!(sim.live_pairings(0, 1), 1);
    }
    // The same, the other way round: the impolite side comes back.
    let mut sim = staggered(7, &["a", "b"], ms(100), Net::default(), S(1));
    sim.vanish(0);
    sim.run_until(S(2));
    sim.join(0);
    sim.run_until(S(3));
    assert!(sim.connected(0, 1), "{}", sim.dump());
}

#[test]
fn a_crashed_connection_is_reported_and_re_established() {
    let mut sim = staggered(6, &["a", "b"], ms(100), Net::default(), S(1));
    sim.crash_conn(0, "b");
    sim.run_until(S(3));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    assert!(sim
        .events_about(0, "b")
        .iter()
        .any(|e| e.starts_with("error INTERNAL")));
    assert_eq!(sim.pairings.len(), 2);
}

#[test]
fn forged_id_floods_are_capped_and_a_real_peer_still_gets_in() {
    // 12 forged ids invoke "a" (anyone can make a valid id); they never answer. With a cap of
    // 4 connections being set up, a holds at most 4 objects; the real peer "z" is refused
    // while the cap is full, remembered, and taken up when a forged connection times out.
    let mut ids: Vec<String> = (0..12).map(|n| format!("f{n:02}")).collect();
    ids.insert(0, "a".into());
    ids.push("z".into());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut sim = Sim::new(8, &refs, Net::default());
    sim.cfg.max_connecting = 4;
    sim.join(0);
    sim.run_until(ms(10));
    // The forged ids never run a machine: they only publish invokes at a.
    for f in 1..=12 {
        sim.forge_invoke(f, 0);
    }
    sim.run_until(ms(100));
    assert_eq!(sim.conn_objects(0), 4, "capped\n{}", sim.dump());
    let limit_errors = sim.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Error {
                    code: "PEER_LIMIT",
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        limit_errors, 1,
        "refusals are reported once a second, not per packet"
    );
    let z = sim.idx("z");
    sim.join(z);
    sim.run_until(S(2));
    assert!(!sim.connected(0, z), "z waits behind the cap");
    sim.run_until(S(17));
    assert!(sim.connected(0, z), "z got a freed slot\n{}", sim.dump());
    assert!(sim.conn_objects(0) <= 5);
}

#[test]
fn recovery_gives_up_after_three_attempts() {
    // b is gone for good (vanished); a's connection fails and a re-invokes at most three
    // times, then waits for b to announce again. b then really comes back: it connects.
    let mut sim = staggered(9, &["a", "b"], ms(100), Net::default(), S(1));
    sim.vanish(1);
    sim.run_until(S(300));
    let invokes_before = sim.nodes[0].published.get("invoke").copied().unwrap_or(0);
    sim.run_until(S(600));
    assert_eq!(
        sim.nodes[0].published.get("invoke").copied().unwrap_or(0),
        invokes_before,
        "silent after giving up"
    );
    assert!(
        sim.events_about(0, "b")
            .iter()
            .any(|e| e.starts_with("error PEER_UNREACHABLE")),
        "{:?}",
        sim.events_about(0, "b")
    );
    sim.join(1);
    sim.run_until(S(602));
    assert!(sim.connected(0, 1));
}

#[test]
fn a_lost_invoke_is_sent_again() {
    // The only invoke (a's answer to b's announce) is lost: without a retry both would wait
    // forever, neither knowing. a expects an offer within 5 s and invokes again.
    let net = Net {
        drop: 1.0,
        drop_only: Some(peerix_proto::SignalType::Invoke),
        ..Net::default()
    };
    let mut sim = staggered(10, &["a", "b"], ms(100), net, S(1));
    assert!(!sim.connected(0, 1));
    sim.net.drop = 0.0;
    sim.run_until(S(6));
    assert!(sim.connected(0, 1), "{}", sim.dump());
}

#[test]
fn channels_opened_room_wide_are_created_by_the_impolite_side() {
    let mut sim = staggered(11, &["a", "b"], ms(100), Net::default(), S(1));
    sim.open(1, "chat"); // b is polite: it asks a over the control channel
    sim.run_until(S(2));
    assert_eq!(
        sim.nodes[0].channels,
        vec![("b".to_string(), "chat".to_string())]
    );
    assert!(sim.nodes[1].channels.is_empty());
    sim.open(0, "files"); // a creates it itself
    sim.run_until(S(3));
    assert_eq!(sim.nodes[0].channels.len(), 2);
}

#[test]
fn a_crashed_channel_is_opened_again_by_the_side_that_opened_it() {
    let mut sim = staggered(12, &["a", "b"], ms(100), Net::default(), S(1));
    sim.open(0, "chat"); // impolite a creates it
    sim.open(1, "files"); // polite b asks a to create it
    sim.run_until(S(2));
    assert_eq!(sim.nodes[0].channels.len(), 2);
    sim.channel_crashed(0, "b", "chat");
    assert_eq!(sim.nodes[0].channels.len(), 3, "created again at once");
    sim.channel_crashed(1, "a", "files");
    sim.run_until(S(3));
    assert_eq!(
        sim.nodes[0].channels.len(),
        4,
        "requested again\n{}",
        sim.dump()
    );
    sim.channel_crashed(0, "b", "files");
    assert_eq!(
        sim.nodes[0].channels.len(),
        4,
        "only the side that opened a label re-opens it"
    );
}

// ---- admission: Peerix's `verify` -------------------------------------------------------------

fn verifier_policy(fallback: Fallback) -> Admission {
    Admission::Verifier(VerifierPolicy {
        timeout: S(5),
        fallback,
        max_pending: 64,
    })
}

fn allow(ids: &[&str]) -> Admission {
    Admission::AllowList(ids.iter().map(|s| s.to_string()).collect())
}

/// Node `i` neither holds nor ever held a connection to `peer`, and said nothing about it.
fn never_met(sim: &Sim, i: usize, peer: &str) -> bool {
    sim.state(i, peer).is_none() && sim.events_about(i, peer).is_empty()
}

#[test]
fn an_allow_list_admits_listed_ids_and_gives_the_others_no_reaction() {
    // "a" admits only "b". c, which admits everyone, joins after a: a answers its announce
    // with an invoke (Peerix verifies invokes and offers, not announces), c offers, and a
    // ignores the offer: no connection object, no answer, no event. c's connection times out
    // after Peerix's 15 s, as in Peerix; its re-invokes are ignored the same way.
    let mut sim = Sim::new(20, &["a", "b", "c"], Net::default());
    sim.nodes[0].admission = allow(&["b"]);
    for i in 0..3 {
        sim.join(i);
        let t = sim.elapsed() + ms(200);
        sim.run_until(t);
    }
    sim.run_until(S(2));
    assert!(sim.connected(0, 1), "b is listed\n{}", sim.dump());
    assert!(sim.connected(1, 2), "c and b admit everyone");
    assert!(!sim.connected(0, 2));
    assert!(never_met(&sim, 0, "c"), "{:?}", sim.events_about(0, "c"));
    assert_eq!(
        sim.nodes[0].published.get("answer"),
        Some(&1),
        "b's offer only"
    );
    assert_eq!(sim.events_about(2, "a"), ["connection:new a"]);
    sim.run_until(S(60));
    assert!(never_met(&sim, 0, "c"), "{}", sim.dump());
    assert_eq!(sim.conn_objects(0), 1, "only b's connection");
    let ev = sim.events_about(2, "a");
    assert!(
        ev.starts_with(&[
            "connection:new a".into(),
            "connection:failed a".into(),
            "connection:closed a".into()
        ]) && !ev.iter().any(|e| e.contains("connected")),
        "{ev:?}"
    );
}

#[test]
fn an_allow_list_ignores_the_invokes_of_a_peer_already_in_the_room() {
    // The other order: c is in the room when a joins, so c invokes a (with its metadata), and a,
    // which would offer to an admitted invoker, stays silent. c gives up on its invites.
    let mut sim = Sim::new(21, &["c", "a"], Net::default());
    sim.nodes[1].admission = allow(&["b"]);
    sim.join(0);
    sim.run_until(ms(200));
    sim.join(1);
    sim.run_until(S(60));
    assert!(never_met(&sim, 1, "c"), "{}", sim.dump());
    assert_eq!(sim.nodes[1].published.get("offer"), None);
    assert!(
        sim.state(0, "a").is_none(),
        "an invoker makes no connection"
    );
    assert!(sim
        .events_about(0, "a")
        .iter()
        .all(|e| e.starts_with("error PEER_UNREACHABLE")));
}

#[test]
fn a_verifier_is_shown_each_peer_with_its_metadata_and_decides() {
    // The verifier answers after 300 ms: yes to b, no to c. It is asked once per peer although
    // every packet arrives twice.
    let net = Net {
        dup: 1.0,
        ..Net::default()
    };
    let mut sim = Sim::new(22, &["a", "b", "c"], net);
    sim.nodes[0].admission = verifier_policy(Fallback::Accept);
    sim.nodes[0].verifier = Some(Verifier {
        delay: ms(300),
        accept: vec!["b".into()],
        silent: false,
    });
    for i in 0..3 {
        sim.join(i);
        let t = sim.elapsed() + ms(100);
        sim.run_until(t);
    }
    sim.run_until(S(3));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    assert!(!sim.connected(0, 2));
    assert!(never_met(&sim, 0, "c"));
    let asked: Vec<(String, Json)> = sim.nodes[0]
        .verify_requests
        .iter()
        .map(|(_, p, m)| (p.clone(), m.clone()))
        .collect();
    assert_eq!(
        asked,
        [
            ("b".to_string(), json!({"name": "b"})),
            ("c".to_string(), json!({"name": "c"}))
        ]
    );
    sim.run_until(S(60));
    assert!(!sim.connected(0, 2) && sim.connected(0, 1));
    assert!(never_met(&sim, 0, "c"));
}

#[test]
fn an_unanswered_verify_gets_the_fallback_at_its_deadline() {
    for fallback in [Fallback::Accept, Fallback::Reject] {
        let mut sim = Sim::new(23, &["a", "b"], Net::default());
        sim.nodes[0].admission = verifier_policy(fallback);
        sim.nodes[0].verifier = Some(Verifier {
            silent: true,
            ..Verifier::default()
        });
        sim.join(0);
        sim.run_until(ms(100));
        sim.join(1); // asked at about 105 ms: deadline about 5.1 s
        sim.run_until(S(5));
        assert!(!sim.connected(0, 1));
        assert!(never_met(&sim, 0, "b"), "nothing while the verifier thinks");
        assert_eq!(
            sim.nodes[0].room.as_ref().map(|r| r.open_verifications()),
            Some(1)
        );
        sim.run_until(ms(5300));
        assert_eq!(
            sim.connected(0, 1),
            fallback == Fallback::Accept,
            "{fallback:?}\n{}",
            sim.dump()
        );
        if fallback == Fallback::Reject {
            assert!(never_met(&sim, 0, "b"));
            // b's connection fails at 15 s and b re-invokes: a new request, same fallback.
            sim.run_until(S(40));
            assert!(never_met(&sim, 0, "b"), "{}", sim.dump());
            assert!(sim.nodes[0].verify_requests.len() >= 2);
        }
    }
}

#[test]
fn requests_wait_for_a_verifier_and_those_of_one_that_leaves_fall_back() {
    let mut sim = Sim::new(24, &["a", "b", "c"], Net::default());
    sim.nodes[0].admission = verifier_policy(Fallback::Reject);
    sim.join(0);
    sim.run_until(ms(100));
    sim.join(1);
    sim.run_until(S(1));
    // No verifier yet: b's request waits (it is not the fallback's yet).
    assert!(sim.nodes[0].verify_requests.is_empty());
    assert_eq!(
        sim.nodes[0].room.as_ref().map(|r| r.open_verifications()),
        Some(1)
    );
    sim.set_verifier(
        0,
        Some(Verifier {
            delay: ms(50),
            accept: vec!["b".into(), "c".into()],
            silent: false,
        }),
    );
    assert_eq!(sim.nodes[0].verify_requests.len(), 1, "handed over at once");
    sim.run_until(S(2));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    // A verifier that would accept c, but leaves before answering: the fallback (reject) now.
    sim.set_verifier(
        0,
        Some(Verifier {
            silent: true,
            ..Verifier::default()
        }),
    );
    sim.join(2);
    sim.run_until(S(3));
    assert_eq!(sim.nodes[0].verify_requests.len(), 2);
    sim.set_verifier(0, None);
    assert_eq!(
        sim.nodes[0].room.as_ref().map(|r| r.open_verifications()),
        Some(0)
    );
    sim.run_until(S(4));
    assert!(never_met(&sim, 0, "c"), "{}", sim.dump());
    assert!(sim.connected(0, 1), "admitted peers stay");
}

#[test]
fn forged_ids_cannot_queue_verify_requests_without_bound() {
    let mut ids: Vec<String> = (0..12).map(|n| format!("f{n:02}")).collect();
    ids.insert(0, "a".into());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut sim = Sim::new(25, &refs, Net::default());
    sim.nodes[0].admission = Admission::Verifier(VerifierPolicy {
        timeout: S(5),
        fallback: Fallback::Reject,
        max_pending: 4,
    });
    sim.nodes[0].verifier = Some(Verifier {
        silent: true,
        ..Verifier::default()
    });
    sim.join(0);
    sim.run_until(ms(10));
    for f in 1..=12 {
        sim.forge_invoke(f, 0);
    }
    sim.run_until(ms(100));
    assert_eq!(sim.nodes[0].verify_requests.len(), 4);
    let limits = sim.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Error {
                    code: "PEER_LIMIT",
                    ..
                }
            )
        })
        .count();
    assert_eq!(limits, 1, "reported once a second");
    sim.run_until(S(6));
    assert_eq!(
        sim.nodes[0].room.as_ref().map(|r| r.open_verifications()),
        Some(0)
    );
    assert_eq!(sim.conn_objects(0), 0);
}
