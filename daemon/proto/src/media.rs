//! What a remote peer shares with us, per connection (wire protocol §8.2, §8.3).
//!
//! Peerix ties media to labels only through the label map that rides on every offer sent over
//! the control channel (stream id → label). The WebRTC stack reports tracks by their `msid`
//! stream and track ids; this turns those reports into Peerix's events in Peerix's order: the
//! first track of a label brings `stream:add`, every track `track:add`; a track that ends
//! brings `track:remove`, and the last one of its label `stream:remove`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A track the WebRTC stack started receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The `msid` stream id (the key of the sender's label map).
    pub stream: String,
    /// The `msid` track id.
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The negotiated codec, e.g. `video/VP8`.
    pub codec: String,
    /// The media section's `a=mid`.
    pub mid: String,
}

/// One of Peerix's media events for one remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// `stream:add`: the first track of a label arrived.
    StreamAdd {
        /// The label (from the label map, else the stream id).
        label: String,
        /// The stream id.
        stream: String,
    },
    /// `stream:remove`: the last track of a label ended.
    StreamRemove {
        /// The label.
        label: String,
        /// The stream id.
        stream: String,
    },
    /// `track:add`.
    TrackAdd {
        /// The label.
        label: String,
        /// The track.
        info: TrackInfo,
    },
    /// `track:remove`.
    TrackRemove {
        /// The label.
        label: String,
        /// The track.
        info: TrackInfo,
    },
}

/// A connection's remote media: the label map and the live tracks by label.
#[derive(Debug, Default)]
pub struct RemoteMedia {
    labels: BTreeMap<String, String>,
    /// label → (track id → track)
    live: BTreeMap<String, BTreeMap<String, TrackInfo>>,
}

/// At most this many labels are kept from one label map, and this many tracks per connection:
/// a browser shares a handful; a hostile peer must not grow our tables without bound.
pub const MAX_MEDIA_ENTRIES: usize = 256;

impl RemoteMedia {
    /// An offer arrived over the control channel with `map` as its second element: it replaces
    /// the whole map when it is an object (§6.3). Non-string values are ignored.
    pub fn set_label_map(&mut self, map: &Json) {
        let Some(obj) = map.as_object() else { return };
        self.labels = obj
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .take(MAX_MEDIA_ENTRIES)
            .collect();
    }

    /// The label a stream id stands for: the map's, else the id itself (§8.2).
    pub fn label_of(&self, stream: &str) -> String {
        self.labels
            .get(stream)
            .cloned()
            .unwrap_or_else(|| stream.to_owned())
    }

    /// A track started; its events, in order. A track already live is not reported twice; a
    /// track beyond [`MAX_MEDIA_ENTRIES`] is not reported at all.
    pub fn track_added(&mut self, info: TrackInfo) -> Vec<MediaEvent> {
        let label = self.label_of(&info.stream);
        if self.live.values().any(|t| t.contains_key(&info.track))
            || self.live.values().map(BTreeMap::len).sum::<usize>() >= MAX_MEDIA_ENTRIES
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        let tracks = self.live.entry(label.clone()).or_default();
        if tracks.is_empty() {
            out.push(MediaEvent::StreamAdd {
                label: label.clone(),
                stream: info.stream.clone(),
            });
        }
        tracks.insert(info.track.clone(), info.clone());
        out.push(MediaEvent::TrackAdd { label, info });
        out
    }

    /// A track ended (its transceiver was stopped, or its section rejected).
    pub fn track_ended(&mut self, track: &str) -> Vec<MediaEvent> {
        let Some(label) = self
            .live
            .iter()
            .find(|(_, t)| t.contains_key(track))
            .map(|(l, _)| l.clone())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let tracks = self.live.entry(label.clone()).or_default();
        if let Some(info) = tracks.remove(track) {
            let stream = info.stream.clone();
            out.push(MediaEvent::TrackRemove {
                label: label.clone(),
                info,
            });
            if tracks.is_empty() {
                self.live.remove(&label);
                out.push(MediaEvent::StreamRemove { label, stream });
            }
        }
        out
    }

    /// A new remote description was applied: a live track whose media section is gone,
    /// rejected (port 0) or no longer sent by the remote (`recvonly`/`inactive`) has ended.
    /// This is how Peerix's unshare and removed tracks show (§8.4: stopped transceivers).
    pub fn reconcile(&mut self, sdp: &str) -> Vec<MediaEvent> {
        let sections: Vec<&str> = sdp.split("\nm=").skip(1).collect();
        let sending = |mid: &str| {
            let want = format!("a=mid:{mid}");
            sections.iter().any(|s| {
                let port_zero = s.split_whitespace().nth(1) == Some("0");
                let stopped = s
                    .lines()
                    .any(|l| matches!(l.trim_end(), "a=recvonly" | "a=inactive"));
                s.lines().any(|l| l.trim_end() == want) && !port_zero && !stopped
            })
        };
        let ended: Vec<String> = self
            .all()
            .filter(|(_, t)| !t.mid.is_empty() && !sending(&t.mid))
            .map(|(_, t)| t.track.clone())
            .collect();
        ended.iter().flat_map(|t| self.track_ended(t)).collect()
    }

    /// The connection is gone: every live track ends, label by label.
    pub fn closed(&mut self) -> Vec<MediaEvent> {
        let tracks: Vec<String> = self.live.values().flat_map(|t| t.keys().cloned()).collect();
        tracks.iter().flat_map(|t| self.track_ended(t)).collect()
    }

    /// The live tracks of a label.
    pub fn tracks(&self, label: &str) -> impl Iterator<Item = &TrackInfo> {
        self.live.get(label).into_iter().flat_map(|t| t.values())
    }

    /// Every live track, with its label.
    pub fn all(&self) -> impl Iterator<Item = (&str, &TrackInfo)> {
        self.live
            .iter()
            .flat_map(|(l, t)| t.values().map(move |i| (l.as_str(), i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn track(stream: &str, track: &str, kind: &str) -> TrackInfo {
        TrackInfo {
            stream: stream.into(),
            track: track.into(),
            kind: kind.into(),
            codec: if kind == "video" {
                "video/VP8"
            } else {
                "audio/opus"
            }
            .into(),
            mid: "1".into(),
        }
    }

    #[test]
    fn first_track_of_a_label_adds_the_stream_and_the_last_removes_it() {
        let mut m = RemoteMedia::default();
        m.set_label_map(&json!({"s1": "camera"}));
        let ev = m.track_added(track("s1", "v", "video"));
        assert_eq!(
            ev,
            vec![
                MediaEvent::StreamAdd {
                    label: "camera".into(),
                    stream: "s1".into()
                },
                MediaEvent::TrackAdd {
                    label: "camera".into(),
                    info: track("s1", "v", "video")
                }
            ]
        );
        assert_eq!(m.track_added(track("s1", "a", "audio")).len(), 1);
        assert_eq!(m.track_ended("v").len(), 1, "audio still live");
        let ev = m.track_ended("a");
        assert!(
            matches!(ev.as_slice(), [MediaEvent::TrackRemove { .. }, MediaEvent::StreamRemove { label, .. }] if label == "camera")
        );
        assert!(m.track_ended("a").is_empty(), "reported once");
    }

    #[test]
    fn without_a_map_the_stream_id_is_the_label_and_a_new_map_replaces_the_old() {
        let mut m = RemoteMedia::default();
        assert_eq!(m.label_of("abc"), "abc");
        m.set_label_map(&json!({"abc": "screen", "x": 3}));
        assert_eq!(m.label_of("abc"), "screen");
        assert_eq!(m.label_of("x"), "x", "non-string labels are ignored");
        m.set_label_map(&json!({}));
        assert_eq!(m.label_of("abc"), "abc");
        m.set_label_map(&json!(null));
        assert_eq!(m.label_of("abc"), "abc", "null leaves the map as it is");
    }

    #[test]
    fn duplicates_are_reported_once_and_tables_are_bounded() {
        let mut m = RemoteMedia::default();
        assert_eq!(m.track_added(track("s", "t", "video")).len(), 2);
        assert!(m.track_added(track("s", "t", "video")).is_empty());
        for i in 0..2 * MAX_MEDIA_ENTRIES {
            m.track_added(track("s", &format!("t{i}"), "audio"));
        }
        assert_eq!(m.all().count(), MAX_MEDIA_ENTRIES);
        let ev = m.closed();
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, MediaEvent::StreamRemove { .. }))
                .count(),
            1
        );
        assert_eq!(m.all().count(), 0);
    }
}

/// How a received track's RTP is encoded, as negotiated (for the SDP a forward target reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpFormat {
    /// The negotiated payload type (packets are forwarded unchanged).
    pub payload_type: u8,
    /// e.g. `video/VP8`, `audio/opus`.
    pub mime: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (0 or 1 are written as none).
    pub channels: u16,
    /// `a=fmtp` parameters, if any.
    pub fmtp: String,
}

/// The SDP that ffplay, ffmpeg, VLC and GStreamer open to receive one forwarded track at
/// `ip:port` (plain RTP/AVP; RTCP, if they send any, goes to `port + 1`).
pub fn forward_sdp(
    name: &str,
    kind: &str,
    ip: std::net::IpAddr,
    port: u16,
    f: &RtpFormat,
) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let encoding = f.mime.split_once('/').map_or(f.mime.as_str(), |(_, e)| e);
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let mut sdp = format!(
        "v=0\r\no=- 0 0 IN {family} {ip}\r\ns={name}\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m={kind} {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {encoding}/{rate}",
        pt = f.payload_type,
        rate = f.clock_rate,
    );
    if f.channels > 1 {
        sdp.push_str(&format!("/{}", f.channels));
    }
    sdp.push_str("\r\n");
    if !f.fmtp.is_empty() {
        sdp.push_str(&format!("a=fmtp:{} {}\r\n", f.payload_type, f.fmtp));
    }
    sdp.push_str("a=recvonly\r\n");
    sdp
}

#[cfg(test)]
mod sdp_tests {
    use super::*;

    #[test]
    fn forward_sdp_for_vp8_and_opus() {
        let vp8 = RtpFormat {
            payload_type: 96,
            mime: "video/VP8".into(),
            clock_rate: 90000,
            channels: 0,
            fmtp: String::new(),
        };
        let sdp = forward_sdp(
            "room/peer/camera",
            "video",
            "127.0.0.1".parse().unwrap(),
            6000,
            &vp8,
        );
        assert!(
            sdp.contains("m=video 6000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"));
        let opus = RtpFormat {
            payload_type: 111,
            mime: "audio/opus".into(),
            clock_rate: 48000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1".into(),
        };
        let sdp = forward_sdp("x\ny", "audio", "::1".parse().unwrap(), 6002, &opus);
        assert!(
            sdp.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("s=xy\r\n") && sdp.contains("IN IP6 ::1"));
    }
}

/// The `a=mid` and payload format of a remote track, read from the remote SDP: the media
/// section whose `a=msid` names `stream` and `track` (else any section that maps `pt`), and
/// its `a=rtpmap`/`a=fmtp` lines for payload type `pt`.
pub fn track_format(
    sdp: &str,
    kind: &str,
    stream: &str,
    track: &str,
    pt: u8,
) -> Option<(String, RtpFormat)> {
    let sections: Vec<&str> = sdp.split("\nm=").skip(1).collect();
    let msid = format!("a=msid:{stream} {track}");
    let rtpmap = format!("a=rtpmap:{pt} ");
    let section = sections
        .iter()
        .find(|s| s.lines().any(|l| l.trim_end() == msid))
        .or_else(|| {
            sections
                .iter()
                .find(|s| s.lines().any(|l| l.starts_with(&rtpmap)))
        })?;
    let attr = |prefix: &str| {
        section
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_owned))
    };
    let mid = attr("a=mid:").unwrap_or_default();
    let map = attr(&rtpmap)?;
    let mut parts = map.split('/');
    let encoding = parts.next()?.to_owned();
    let clock_rate = parts.next()?.parse().ok()?;
    let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let fmtp = attr(&format!("a=fmtp:{pt} ")).unwrap_or_default();
    Some((
        mid,
        RtpFormat {
            payload_type: pt,
            mime: format!("{kind}/{encoding}"),
            clock_rate,
            channels,
            fmtp,
        },
    ))
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;

    #[test]
    fn stopped_and_rejected_sections_end_their_tracks() {
        let mut m = RemoteMedia::default();
        for (t, mid, kind) in [("a1", "1", "audio"), ("v1", "2", "video")] {
            m.track_added(TrackInfo {
                stream: "s".into(),
                track: t.into(),
                kind: kind.into(),
                codec: String::new(),
                mid: mid.into(),
            });
        }
        let live =
            "v=0\r\nm=application 9 X\r\na=mid:0\r\nm=audio 9 X 111\r\na=mid:1\r\na=sendonly\r\n\
                    m=video 9 X 96\r\na=mid:2\r\na=sendonly\r\n";
        assert!(m.reconcile(live).is_empty());
        let video_stopped = live.replace("m=video 9", "m=video 0");
        let ev = m.reconcile(&video_stopped);
        assert!(
            matches!(ev.as_slice(), [MediaEvent::TrackRemove { info, .. }] if info.track == "v1"),
            "{ev:?}"
        );
        let audio_inactive = live.replace("a=mid:1\r\na=sendonly", "a=mid:1\r\na=inactive");
        let ev = m.reconcile(&audio_inactive);
        assert!(
            matches!(
                ev.as_slice(),
                [
                    MediaEvent::TrackRemove { .. },
                    MediaEvent::StreamRemove { .. }
                ]
            ),
            "{ev:?}"
        );
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=msid:s1 a1\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:2\r\na=msid:s1 v1\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";

    #[test]
    fn finds_the_section_by_msid_and_the_format_by_payload_type() {
        let (mid, f) = track_format(SDP, "video", "s1", "v1", 96).unwrap();
        assert_eq!(mid, "2");
        assert_eq!(
            (f.mime.as_str(), f.clock_rate, f.channels, f.fmtp.as_str()),
            ("video/VP8", 90000, 0, "")
        );
        let (mid, f) = track_format(SDP, "audio", "s1", "a1", 111).unwrap();
        assert_eq!(mid, "1");
        assert_eq!(f.mime, "audio/opus");
        assert_eq!(
            (f.channels, f.fmtp.as_str()),
            (2, "minptime=10;useinbandfec=1")
        );
        assert!(
            track_format(SDP, "video", "s1", "v1", 100).is_none(),
            "unmapped type"
        );
        let (mid, _) = track_format(SDP, "video", "zz", "zz", 96).unwrap();
        assert_eq!(mid, "2", "falls back to the section that maps the type");
    }
}
