//! Media ops: sharing our own (`share`, `unshare`, `frame`) and receiving what remote peers
//! share (`forward`).

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::ops::Fields;

/// Arguments of `forward`: send the RTP of a remote track, unchanged, to a local UDP address,
/// or stop doing so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardArgs {
    /// Room name.
    pub room: String,
    /// The remote peer sharing.
    pub peer: String,
    /// The label it shares under (`stream:add`'s `label`).
    pub label: String,
    /// `audio` or `video`; needed only when the label has tracks of both kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Where to send, `ip:port` (a loopback or local address). Required unless `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Stop forwarding this track (and delivering its frames).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop: bool,
    /// Deliver the track's reassembled frames as `track:frame` events instead of RTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deliver: bool,
}

impl ForwardArgs {
    pub(crate) fn parse(mut f: Fields) -> Result<Self, ProtoError> {
        let a = ForwardArgs {
            room: f.req("room")?,
            peer: f.req("peer")?,
            label: f.req("label")?,
            kind: f.opt("kind")?,
            to: f.opt("to")?,
            stop: f.opt("stop")?.unwrap_or(false),
            deliver: f.opt("deliver")?.unwrap_or(false),
        };
        if let Some(k) = &a.kind {
            if k != "audio" && k != "video" {
                return Err(f.bad(format!(
                    "invalid field `kind`: {k:?} (expected \"audio\" or \"video\")"
                )));
            }
        }
        if a.deliver && (a.stop || a.to.is_some()) {
            return Err(f.bad("`deliver` goes alone: without `to` and `stop`".into()));
        }
        match (&a.to, a.stop || a.deliver) {
            (None, false) => Err(
                f.bad("missing field `to` (an ip:port to send RTP to), or `deliver: true`".into())
            ),
            (Some(to), false) if to.parse::<std::net::SocketAddr>().is_err() => Err(f.bad(
                format!("invalid field `to`: {to:?} is not an ip:port such as 127.0.0.1:6000"),
            )),
            _ => Ok(a),
        }
    }
}

/// A track a remote peer shares with us, as `peers` lists it (the fields of `track:add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTrack {
    /// The label it is shared under.
    pub label: String,
    /// The sender's stream id.
    pub stream: String,
    /// The track id.
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// e.g. `video/VP8`.
    pub codec: String,
}

/// Result of `forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardResult {
    /// The track forwarded (its `track:add` `track`).
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The codec, e.g. `video/VP8`.
    pub codec: String,
    /// An SDP file that ffplay, ffmpeg, VLC and GStreamer open to receive it (empty after `stop`).
    pub sdp: String,
}

/// The codecs a share can send, by the names `share` takes.
pub const SHARE_CODECS: [(&str, &str); 5] = [
    ("opus", "audio"),
    ("vp8", "video"),
    ("vp9", "video"),
    ("h264", "video"),
    ("av1", "video"),
];

/// Tracks one share may have (Peerix streams carry one or two).
pub const MAX_SHARE_TRACKS: usize = 8;

/// One track of a `share`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareTrack {
    /// `opus`, `vp8`, `vp9`, `h264` (constrained baseline, packetization-mode 1) or `av1`.
    pub codec: String,
    /// `audio` or `video`; taken from the codec when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RTP ingest: the local UDP address to listen on (`127.0.0.1:5004`; port 0 picks one).
    /// Absent: the client pushes encoded frames with `frame`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp: Option<String>,
}

impl ShareTrack {
    /// The codec's short name (lower case, without a `video/` prefix) and its kind.
    pub fn codec_and_kind(&self) -> Option<(String, &'static str)> {
        let short = self
            .codec
            .rsplit('/')
            .next()
            .unwrap_or(&self.codec)
            .to_ascii_lowercase();
        let kind = SHARE_CODECS.iter().find(|(c, _)| *c == short)?.1;
        Some((short, kind))
    }
}

/// Peerix's `audioParameters` / `videoParameters`: limits for the senders of a share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncodingParameters {
    /// Bits per second the source should stay under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u64>,
    /// Frames per second the source should stay under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_framerate: Option<f64>,
}

/// Arguments of `share`: share a labelled stream of tracks with every peer of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareArgs {
    /// Room name.
    pub room: String,
    /// The label (Peerix's `share({label})`).
    pub label: String,
    /// Its tracks.
    pub tracks: Vec<ShareTrack>,
    /// Limits for its audio.
    #[serde(
        default,
        rename = "audioParameters",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio_parameters: Option<EncodingParameters>,
    /// Limits for its video.
    #[serde(
        default,
        rename = "videoParameters",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_parameters: Option<EncodingParameters>,
}

impl ShareArgs {
    pub(crate) fn parse(mut f: Fields) -> Result<Self, ProtoError> {
        let a = ShareArgs {
            room: f.req("room")?,
            label: f.req("label")?,
            tracks: f.req("tracks")?,
            audio_parameters: f.opt("audioParameters")?,
            video_parameters: f.opt("videoParameters")?,
        };
        if a.label.is_empty() {
            return Err(f.bad("invalid field `label`: empty".into()));
        }
        if a.tracks.is_empty() || a.tracks.len() > MAX_SHARE_TRACKS {
            return Err(f.bad(format!(
                "invalid field `tracks`: {} tracks (give 1 to {MAX_SHARE_TRACKS})",
                a.tracks.len()
            )));
        }
        for (i, t) in a.tracks.iter().enumerate() {
            let Some((_, kind)) = t.codec_and_kind() else {
                let names: Vec<&str> = SHARE_CODECS.iter().map(|(c, _)| *c).collect();
                return Err(f.bad(format!(
                    "invalid field `tracks[{i}].codec`: unknown codec {:?} (one of {})",
                    t.codec,
                    names.join(", ")
                )));
            };
            if t.kind.as_deref().is_some_and(|k| k != kind) {
                return Err(f.bad(format!(
                    "invalid field `tracks[{i}].kind`: {:?} is a {kind} codec",
                    t.codec
                )));
            }
            if let Some(rtp) = &t.rtp {
                if rtp.parse::<std::net::SocketAddr>().is_err() {
                    return Err(f.bad(format!(
                        "invalid field `tracks[{i}].rtp`: {rtp:?} is not an ip:port such as \
                         127.0.0.1:5004"
                    )));
                }
            }
        }
        Ok(a)
    }
}

/// One track of a share, as `share` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedTrack {
    /// The track id peers see (`track:add`'s `track`); `frame` names it.
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// e.g. `video/VP8`.
    pub codec: String,
    /// Where the RTP ingest listens (absent for a track fed by `frame`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp: Option<String>,
}

/// Result of `share`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareResult {
    /// The stream id peers see (`stream:add`'s `stream`).
    pub stream: String,
    /// The tracks, in the order given.
    pub tracks: Vec<SharedTrack>,
}

/// One label we share, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareStatus {
    /// The label.
    pub label: String,
    /// The stream id peers see.
    pub stream: String,
    /// Its tracks.
    pub tracks: Vec<ShareTrackStatus>,
}

/// One shared track's source and counters, as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareTrackStatus {
    /// The track id peers see.
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// e.g. `video/VP8`.
    pub codec: String,
    /// The RTP ingest address (absent for a track fed by `frame`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp: Option<String>,
    /// RTP packets that entered (received, or made from frames).
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Datagrams on the ingest port that were not RTP.
    pub malformed: u64,
    /// Packets lost by senders whose queue was full.
    pub dropped: u64,
    /// Keyframe requests passed on to the source.
    pub keyframe_requests: u64,
    /// Connections it is sent on.
    pub senders: u64,
}

/// Arguments of `unshare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnshareArgs {
    /// Room name.
    pub room: String,
    /// The label.
    pub label: String,
}

/// Arguments of `frame`: one encoded frame (or audio packet) for a track fed over IPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameArgs {
    /// Room name.
    pub room: String,
    /// The track (`share`'s `tracks[].track`).
    pub track: String,
    /// The encoded frame: a VP8/VP9/AV1 frame, H.264 Annex B access unit, or one Opus packet.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// How long it lasts, in microseconds (33 333 for 30 fps; 20 000 for a 20 ms Opus packet).
    pub duration: u64,
}

/// Largest frame `frame` takes (a 4K keyframe is well under this).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

impl FrameArgs {
    pub(crate) fn parse(mut f: Fields) -> Result<Self, ProtoError> {
        let data: serde_bytes::ByteBuf = f.req("data")?;
        let a = FrameArgs {
            room: f.req("room")?,
            track: f.req("track")?,
            data: data.into_vec(),
            duration: f.req("duration")?,
        };
        if a.data.is_empty() || a.data.len() > MAX_FRAME_BYTES {
            return Err(f.bad(format!(
                "invalid field `data`: {} bytes (give 1 to {MAX_FRAME_BYTES})",
                a.data.len()
            )));
        }
        if a.duration > 10_000_000 {
            return Err(f.bad(format!(
                "invalid field `duration`: {} µs is over 10 s",
                a.duration
            )));
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::Op;
    use rmpv::Value;

    fn args(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn forward_needs_a_target_unless_it_stops() {
        let base = [
            ("room", Value::from("r")),
            ("peer", Value::from("p")),
            ("label", Value::from("cam")),
        ];
        let err = Op::parse("forward", args(&base)).unwrap_err().to_string();
        assert!(err.contains("`to`"), "{err}");
        let mut bad = base.to_vec();
        bad.push(("to", Value::from("localhost")));
        let err = Op::parse("forward", args(&bad)).unwrap_err().to_string();
        assert!(err.contains("ip:port"), "{err}");
        let mut kind = base.to_vec();
        kind.push(("stop", Value::from(true)));
        kind.push(("kind", Value::from("data")));
        assert!(Op::parse("forward", args(&kind)).is_err());
        let mut ok = base.to_vec();
        ok.push(("to", Value::from("127.0.0.1:6000")));
        match Op::parse("forward", args(&ok)).unwrap() {
            Op::Forward(a) => assert_eq!(a.to.as_deref(), Some("127.0.0.1:6000")),
            other => panic!("{other:?}"),
        }
    }
}
