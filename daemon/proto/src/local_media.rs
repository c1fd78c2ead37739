//! What we share, per connection (wire protocol §8.1, §8.2, §8.4).
//!
//! Peerix keeps one stream per label and one `sendonly` transceiver per track. A re-share of
//! the same label with tracks of the same kinds replaces the tracks on the existing senders
//! (no renegotiation, the remote keeps its tracks); extra tracks add transceivers and missing
//! ones stop theirs, and either needs an offer of our own over the control channel, carrying
//! the label map of everything we share with that peer.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

/// A track we share: the id the remote sees (`a=msid` track id), its kind and the local
/// source that feeds it (the owner's id for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTrack {
    /// The `a=msid` track id.
    pub id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The owner's id of the source feeding it.
    pub source: u64,
}

/// One label we share, room-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The `a=msid` stream id (the label map's key).
    pub stream: String,
    /// Its tracks.
    pub tracks: Vec<LocalTrack>,
}

/// A change to a connection's senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOp {
    /// Add a `sendonly` transceiver for `track` of `stream`, fed by `source`.
    AddSender {
        /// Stream id.
        stream: String,
        /// Track id.
        track: String,
        /// Source id.
        source: u64,
    },
    /// Feed the sender of `track` from `source` (a re-share: `replaceTrack`).
    SetSource {
        /// Track id (of the sender, as the remote knows it).
        track: String,
        /// The new source.
        source: u64,
    },
    /// Stop the transceiver of `track` (its section is rejected in the next offer).
    StopSender {
        /// Track id.
        track: String,
    },
}

/// What one connection sends, and the changes not yet handed to its owner.
#[derive(Debug, Default)]
pub(crate) struct LocalMedia {
    /// label → what this connection sends under it (its own stream id and senders).
    labels: BTreeMap<String, Share>,
    /// Changes to hand out, in order.
    pub(crate) changes: Vec<MediaOp>,
    /// A change needs an offer.
    pub(crate) needs_offer: bool,
    /// A media marker waits in the connection's operation queue.
    pub(crate) queued: bool,
    /// An offer is due once the signaling state is stable again.
    pub(crate) deferred: bool,
}

impl LocalMedia {
    /// Shares `label` (again) with `share`'s tracks.
    pub(crate) fn share(&mut self, label: &str, share: &Share) {
        let Some(current) = self.labels.get_mut(label) else {
            for t in &share.tracks {
                self.changes.push(MediaOp::AddSender {
                    stream: share.stream.clone(),
                    track: t.id.clone(),
                    source: t.source,
                });
            }
            self.needs_offer |= !share.tracks.is_empty();
            self.labels.insert(label.to_owned(), share.clone());
            return;
        };
        let mut old: Vec<Option<LocalTrack>> = current.tracks.drain(..).map(Some).collect();
        let mut kept = Vec::with_capacity(share.tracks.len());
        for t in &share.tracks {
            let same_kind = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.kind == t.kind))
                .and_then(Option::take);
            match same_kind {
                Some(mut sender) => {
                    if sender.source != t.source {
                        self.changes.push(MediaOp::SetSource {
                            track: sender.id.clone(),
                            source: t.source,
                        });
                        sender.source = t.source;
                    }
                    kept.push(sender);
                }
                None => {
                    self.changes.push(MediaOp::AddSender {
                        stream: current.stream.clone(),
                        track: t.id.clone(),
                        source: t.source,
                    });
                    self.needs_offer = true;
                    kept.push(t.clone());
                }
            }
        }
        for gone in old.into_iter().flatten() {
            self.changes.push(MediaOp::StopSender { track: gone.id });
            self.needs_offer = true;
        }
        current.tracks = kept;
    }

    /// Stops sharing `label`: every transceiver of its stream stops.
    pub(crate) fn unshare(&mut self, label: &str) {
        let Some(share) = self.labels.remove(label) else {
            return;
        };
        for t in share.tracks {
            self.changes.push(MediaOp::StopSender { track: t.id });
            self.needs_offer = true;
        }
    }

    /// The label map our offers carry: stream id → label of everything shared (§8.2).
    pub(crate) fn label_map(&self) -> Json {
        let map: Map<String, Json> = self
            .labels
            .iter()
            .map(|(label, s)| (s.stream.clone(), Json::String(label.clone())))
            .collect();
        Json::Object(map)
    }

    /// Whether anything is shared on this connection.
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(id: &str, kind: &str, source: u64) -> LocalTrack {
        LocalTrack {
            id: id.into(),
            kind: kind.into(),
            source,
        }
    }

    fn share(stream: &str, tracks: Vec<LocalTrack>) -> Share {
        Share {
            stream: stream.into(),
            tracks,
        }
    }

    #[test]
    fn first_share_adds_senders_and_needs_an_offer() {
        let mut m = LocalMedia::default();
        m.share(
            "cam",
            &share("s1", vec![t("a", "audio", 1), t("v", "video", 2)]),
        );
        assert!(m.needs_offer);
        assert_eq!(m.changes.len(), 2);
        assert_eq!(m.label_map(), json!({"s1": "cam"}));
    }

    #[test]
    fn reshare_of_the_same_kinds_replaces_sources_without_an_offer() {
        let mut m = LocalMedia::default();
        m.share(
            "cam",
            &share("s1", vec![t("a", "audio", 1), t("v", "video", 2)]),
        );
        m.changes.clear();
        m.needs_offer = false;
        m.share(
            "cam",
            &share("s9", vec![t("v2", "video", 4), t("a2", "audio", 3)]),
        );
        assert!(!m.needs_offer, "replaceTrack, no renegotiation (§8.4)");
        assert_eq!(
            m.changes,
            vec![
                MediaOp::SetSource {
                    track: "v".into(),
                    source: 4
                },
                MediaOp::SetSource {
                    track: "a".into(),
                    source: 3
                },
            ],
            "the senders keep the ids the remote knows"
        );
        assert_eq!(m.label_map(), json!({"s1": "cam"}), "and the stream id");
    }

    #[test]
    fn reshare_with_other_kinds_adds_and_stops() {
        let mut m = LocalMedia::default();
        m.share("cam", &share("s1", vec![t("a", "audio", 1)]));
        m.changes.clear();
        m.needs_offer = false;
        m.share("cam", &share("s1", vec![t("v", "video", 2)]));
        assert!(m.needs_offer);
        assert_eq!(
            m.changes,
            vec![
                MediaOp::AddSender {
                    stream: "s1".into(),
                    track: "v".into(),
                    source: 2
                },
                MediaOp::StopSender { track: "a".into() },
            ]
        );
    }

    #[test]
    fn unshare_stops_every_sender_of_the_label() {
        let mut m = LocalMedia::default();
        m.share(
            "cam",
            &share("s1", vec![t("a", "audio", 1), t("v", "video", 2)]),
        );
        m.share("screen", &share("s2", vec![t("x", "video", 3)]));
        m.changes.clear();
        m.needs_offer = false;
        m.unshare("cam");
        m.unshare("nothing");
        assert!(m.needs_offer);
        assert_eq!(m.changes.len(), 2);
        assert_eq!(m.label_map(), json!({"s2": "screen"}));
        assert!(!m.is_empty());
    }
}
