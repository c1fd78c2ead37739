//! Lost descriptions are sent again (issue 14): a lost `offer` or `answer` no longer waits for
//! the 15 s connection timer and the re-invoke after it. On simulated time, like `scenarios.rs`.

mod sim;

use std::time::Duration;

use peerix_proto::SignalType;
use sim::{Net, Sim};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two peers ("a" first, then "b") with every packet of `kind` lost until `loss_ends`.
fn lossy(seed: u64, kind: SignalType, loss_ends: Duration) -> Sim {
    let net = Net {
        drop: 1.0,
        drop_only: Some(kind),
        ..Net::default()
    };
    let mut sim = Sim::new(seed, &["a", "b"], net);
    sim.join(0);
    sim.run_until(ms(100));
    sim.join(1);
    sim.run_until(loss_ends);
    sim.net.drop = 0.0;
    sim
}

fn no_failure(sim: &Sim) -> bool {
    !sim.reported_failure(0, "b") && !sim.reported_failure(1, "a")
}

#[test]
fn a_lost_offer_is_sent_again_without_waiting_for_the_connection_timer() {
    // b (invoked by a) offers; the offer is lost. b sends it again 2 s later.
    let mut sim = lossy(1, SignalType::Offer, ms(1000));
    assert!(!sim.connected(0, 1));
    sim.run_until(ms(3000));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    assert!(no_failure(&sim), "{}", sim.dump());
    assert_eq!(sim.pairings.len(), 1);
    assert_eq!(sim.nodes[1].published.get("offer"), Some(&2));
}

#[test]
fn a_lost_answer_is_sent_again_when_the_offer_comes_again() {
    // a answers b's offer; the answer is lost. b sends its offer again, a recognises it as the
    // one it answered and sends the same answer again (no second exchange).
    let mut sim = lossy(2, SignalType::Answer, ms(1000));
    assert!(!sim.connected(0, 1));
    sim.run_until(ms(3000));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    assert!(no_failure(&sim), "{}", sim.dump());
    assert_eq!(sim.pairings.len(), 1);
    assert_eq!(sim.nodes[0].published.get("answer"), Some(&2));
    // Nothing more is sent once connected.
    let sent: usize = sim.nodes.iter().flat_map(|n| n.published.values()).sum();
    sim.run_until(Duration::from_secs(60));
    let later: usize = sim.nodes.iter().flat_map(|n| n.published.values()).sum();
    assert_eq!(sent, later);
}

#[test]
fn an_invoke_from_the_peer_makes_the_unanswered_offer_go_at_once() {
    // Offers lost for 4.5 s: b's first resend (2 s) is lost too, its next one is due at 6 s.
    // a invokes again at 5 s (no offer came): that tells b its offer never arrived.
    let mut sim = lossy(3, SignalType::Offer, ms(4500));
    assert!(!sim.connected(0, 1));
    sim.run_until(ms(5500));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    assert!(no_failure(&sim), "{}", sim.dump());
}

#[test]
fn offers_are_sent_again_a_bounded_number_of_times() {
    // All offers lost for good: b sends its offer 1 + MAX_OFFER_RESENDS times (a's invokes
    // may advance a resend but add none), then the connection timer fails it.
    let mut sim = lossy(4, SignalType::Offer, Duration::from_secs(14));
    sim.net.drop = 1.0;
    sim.run_until(Duration::from_secs(14));
    let offers = sim.nodes[1].published.get("offer").copied().unwrap_or(0);
    assert_eq!(
        offers,
        1 + peerix_proto::MAX_OFFER_RESENDS as usize,
        "{}",
        sim.dump()
    );
}

#[test]
fn a_peer_that_keeps_failing_is_reported_unreachable() {
    // Candidates lost for good: every connection fails on its timer. After the re-invokes run
    // out the room says so, with the peer's id, instead of leaving the pair silently missing.
    let mut sim = lossy(5, SignalType::Candidate, Duration::from_secs(1));
    sim.net.drop = 1.0;
    sim.run_until(Duration::from_secs(120));
    assert!(!sim.connected(0, 1));
    for (i, other) in [(0, "b"), (1, "a")] {
        assert!(
            sim.events_about(i, other)
                .iter()
                .any(|e| e.starts_with("error PEER_UNREACHABLE")),
            "{:?}",
            sim.events_about(i, other)
        );
    }
}
