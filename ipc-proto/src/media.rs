//! Media ops: receiving what remote peers share (`forward`).

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
    /// Stop forwarding this track.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop: bool,
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
        };
        if let Some(k) = &a.kind {
            if k != "audio" && k != "video" {
                return Err(f.bad(format!(
                    "invalid field `kind`: {k:?} (expected \"audio\" or \"video\")"
                )));
            }
        }
        match (&a.to, a.stop) {
            (None, false) => Err(f.bad("missing field `to` (an ip:port to send RTP to)".into())),
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
