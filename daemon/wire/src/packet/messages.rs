//! Typed forms of the JSON values carried in signaling messages (§4.6).

use serde::{Deserialize, Serialize};

/// The JSON form of an `RTCSessionDescription`: `{"type": …, "sdp": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `"offer"` or `"answer"` (also `"pranswer"`/`"rollback"` in browsers).
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP text (CRLF line endings).
    pub sdp: String,
}

impl SessionDescription {
    /// Converts to a JSON value for a signal message.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({"type": self.kind, "sdp": self.sdp})
    }

    /// Parses from a JSON value; `None` when malformed.
    pub fn from_value(value: &serde_json::Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }
}

/// The JSON form of an `RTCIceCandidateInit` as browsers produce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// `"candidate:…"` attribute value without `a=` (empty: end of candidates).
    pub candidate: String,
    /// Media id of the m-section, e.g. `"0"`.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// M-section index.
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
    /// The sender's `a=ice-ufrag`; MUST be set when sending to Peerix.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

impl IceCandidateInit {
    /// Converts to a JSON value for a signal message.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "candidate": self.candidate,
            "sdpMid": self.sdp_mid,
            "sdpMLineIndex": self.sdp_m_line_index,
            "usernameFragment": self.username_fragment,
        })
    }

    /// Parses from a JSON value; `None` when malformed.
    pub fn from_value(value: &serde_json::Value) -> Option<Self> {
        Self::deserialize(value).ok()
    }
}

/// Returns the value of the first `a=ice-ufrag:` line of an SDP.
pub fn ufrag_of_sdp(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.strip_prefix("a=ice-ufrag:"))
        .map(|v| v.trim_end_matches('\r').trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shapes() {
        let c = IceCandidateInit {
            candidate: "candidate:1 1 udp 1 192.0.2.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("AbCd".into()),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"AbCd"}"#
        );
        assert_eq!(IceCandidateInit::from_value(&c.to_value()), Some(c));
        let d = SessionDescription {
            kind: "answer".into(),
            sdp: "v=0\r\n".into(),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"type":"answer","sdp":"v=0\r\n"}"#
        );
        assert_eq!(SessionDescription::from_value(&d.to_value()), Some(d));
        let partial =
            IceCandidateInit::from_value(&json!({"candidate": "x", "sdpMid": null})).unwrap();
        assert_eq!(partial.username_fragment, None);
        assert_eq!(IceCandidateInit::from_value(&json!([1])), None);
    }

    #[test]
    fn ufrag() {
        assert_eq!(
            ufrag_of_sdp("v=0\r\na=ice-ufrag:AbCd\r\na=ice-ufrag:Zz\r\n"),
            Some("AbCd")
        );
        assert_eq!(ufrag_of_sdp("v=0\r\n"), None);
    }
}
