//! Sharing media, told as scenarios on simulated time (wire protocol §8): who offers, what
//! the label map says, and which `stream:*`/`track:*` events the other side shows.

mod sim;

use std::time::Duration;

use peerix_proto::{Event, MediaEvent};
use serde_json::json;
use sim::{Net, Sim};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Node `i`'s media events about `peer`, short: `+stream cam`, `+track cam v1`, …
fn media(sim: &Sim, i: usize, peer: &str) -> Vec<String> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Media { peer: p, event } if p == peer => Some(match event {
                MediaEvent::StreamAdd { label, .. } => format!("+stream {label}"),
                MediaEvent::StreamRemove { label, .. } => format!("-stream {label}"),
                MediaEvent::TrackAdd { label, info } => format!("+track {label} {}", info.track),
                MediaEvent::TrackRemove { label, info } => {
                    format!("-track {label} {}", info.track)
                }
            }),
            _ => None,
        })
        .collect()
}

fn connected_pair(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, &["a", "b"], Net::default());
    sim.join(0);
    sim.run_until(ms(200));
    sim.join(1);
    sim.run_until(ms(1500));
    assert!(sim.connected(0, 1), "{}", sim.dump());
    sim
}

#[test]
fn a_share_is_offered_over_the_control_channel_with_its_label_map() {
    let mut sim = connected_pair(1);
    let before = sim.nodes[0].control_offers.len();
    sim.share(0, "cam", "s1", &[("v1", 7)]);
    sim.run_until(ms(2000));
    assert_eq!(
        sim.nodes[0].control_offers[before..],
        [json!({"s1": "cam"})],
        "one offer of our own, naming the label (§8.2)"
    );
    assert_eq!(media(&sim, 1, "a"), ["+stream cam", "+track cam v1"]);
    assert!(sim.connected(0, 1));
}

#[test]
fn a_share_made_before_the_peer_came_reaches_it_when_its_control_channel_opens() {
    let mut sim = Sim::new(2, &["a", "b", "c"], Net::default());
    sim.join(0);
    sim.run_until(ms(100));
    sim.share(0, "cam", "s1", &[("v1", 7)]);
    sim.join(1);
    sim.run_until(ms(1500));
    assert_eq!(media(&sim, 1, "a"), ["+stream cam", "+track cam v1"]);
    sim.join(2);
    sim.run_until(ms(3000));
    assert_eq!(
        media(&sim, 2, "a"),
        ["+stream cam", "+track cam v1"],
        "and a peer that joins later"
    );
}

#[test]
fn reshare_of_the_same_kind_is_a_replacement_and_unshare_removes() {
    let mut sim = connected_pair(3);
    sim.share(0, "cam", "s1", &[("v1", 7)]);
    sim.run_until(ms(2000));
    let offers = sim.nodes[0].control_offers.len();
    // Another source of the same kind: replaceTrack, no renegotiation, no events (§8.4).
    sim.share(0, "cam", "s2", &[("v2", 8)]);
    sim.run_until(ms(2500));
    assert_eq!(sim.nodes[0].control_offers.len(), offers, "no offer");
    assert_eq!(media(&sim, 1, "a"), ["+stream cam", "+track cam v1"]);
    // A second label, then unshare of the first: its track ends, the other stays.
    sim.share(0, "screen", "s3", &[("v3", 9)]);
    sim.run_until(ms(3000));
    sim.unshare(0, "cam");
    sim.run_until(ms(3500));
    assert_eq!(
        media(&sim, 1, "a"),
        [
            "+stream cam",
            "+track cam v1",
            "+stream screen",
            "+track screen v3",
            "-track cam v1",
            "-stream cam"
        ]
    );
    assert_eq!(
        sim.nodes[0].control_offers.last(),
        Some(&json!({"s3": "screen"})),
        "the map names what is still shared"
    );
}

#[test]
fn both_sides_sharing_at_once_get_each_others_media() {
    // Both offer over the control channel at the same moment: a glare, resolved by
    // politeness; the polite side offers its media again once the exchange is done.
    for seed in 1..20 {
        let mut sim = connected_pair(seed);
        sim.share(0, "cam-a", "sa", &[("va", 1)]);
        sim.share(1, "cam-b", "sb", &[("vb", 2)]);
        sim.run_until(ms(4000));
        assert_eq!(
            media(&sim, 1, "a"),
            ["+stream cam-a", "+track cam-a va"],
            "seed {seed}\n{}",
            sim.dump()
        );
        assert_eq!(
            media(&sim, 0, "b"),
            ["+stream cam-b", "+track cam-b vb"],
            "seed {seed}\n{}",
            sim.dump()
        );
        assert!(sim.connected(0, 1));
    }
}
