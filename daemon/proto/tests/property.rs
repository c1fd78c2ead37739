//! For any interleaving and loss pattern (from a seed): every pair of peers ends with exactly
//! one connection or a reported failure; never two connections, never silence, and nothing
//! left half-way once the bounded retries are over.
//!
//! Announces are delayed, duplicated and reordered but never lost here. Peerix has no announce
//! retransmission (§5.1): a lost announce leaves two peers unaware of each other, and neither
//! can notice or report it. Real drivers lose packets only with their connection, and
//! reconnecting re-announces (§5.1, step 4). Every other packet type can be lost.

mod sim;

use std::time::Duration;

use proptest::prelude::*;
use sim::{Net, Sim};

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_pair_ends_connected_or_reports_a_failure(
        seed in any::<u64>(),
        n in 2usize..6,
        joins in proptest::collection::vec(0u64..3000, 6),
        drop in 0.0f64..0.35,
        dup in 0.0f64..0.3,
        max_delay in 1u64..150,
        calm_after in prop_oneof![Just(None), (10u64..120).prop_map(Some)],
    ) {
        // Ids in a seed-dependent order, so either side of each pair may be the polite one.
        let ids: Vec<String> = (0..n).map(|i| format!("{:02x}{i}", (seed >> (i * 8)) as u8)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut sim = Sim::new(seed, &refs, Net { drop, dup, delay: (1, max_delay), ..Net::default() });
        let mut order: Vec<(u64, usize)> = (0..n).map(|i| (joins[i], i)).collect();
        order.sort();
        for (at, i) in order {
            sim.run_until(Duration::from_millis(at));
            sim.join(i);
        }
        let mut t = Duration::from_secs(5);
        while t < Duration::from_secs(400) {
            if calm_after.is_some_and(|c| t >= Duration::from_secs(c)) {
                sim.net.drop = 0.0;
                sim.net.dup = 0.0;
            }
            sim.run_until(t);
            for a in 0..n {
                for b in 0..n {
                    prop_assert!(a == b || sim.live_pairings(a, b) <= 1, "two connections between {a} and {b}\n{}", sim.dump());
                }
            }
            t += Duration::from_secs(5);
        }
        for a in 0..n {
            for b in (a + 1)..n {
                let (ia, ib) = (&sim.nodes[a].id, &sim.nodes[b].id);
                let ok = sim.connected(a, b) || sim.reported_failure(a, ib) || sim.reported_failure(b, ia);
                prop_assert!(ok, "silence between {ia} and {ib}: {:?} / {:?}\n{}", sim.events_about(a, ib), sim.events_about(b, ia), sim.dump());
                // Settled: connected, or neither holds a connection to the other (recovery and
                // invites are bounded, so nothing is left half-way).
                let settled = sim.connected(a, b) || (sim.state(a, ib).is_none() && sim.state(b, ia).is_none());
                prop_assert!(settled, "{ia} and {ib} left half-way: {:?} / {:?}\n{}", sim.state(a, ib), sim.state(b, ia), sim.dump());
            }
        }
    }
}
