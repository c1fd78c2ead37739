//! Access tiers of local clients: which operations need full control and which a read-only
//! client may use. The daemon decides a client's tier from its credentials; this is the part
//! of that decision that is protocol (PROTOCOL.md §1, "Access control").

use crate::ops::Op;

/// What a client may do. Ordered: `Full` allows everything `ReadOnly` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Observe: `status`, `peers`, `subscribe`, `unsubscribe`.
    ReadOnly,
    /// Everything, including the operations that change rooms, channels or send data.
    Full,
}

impl Access {
    /// The tier's name in messages and configuration, `"read-only"` or `"full"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::Full => "full",
        }
    }
}

impl Op {
    /// The tier a client needs for this op. Anything that changes what the daemon does on the
    /// network (join, leave, open, close, send, share, unshare) or its health (debug) needs
    /// full control, and so does deciding who may connect (verifier, verify); observing does
    /// not.
    pub fn access(&self) -> Access {
        match self {
            Op::Status | Op::Peers(_) | Op::Subscribe(_) | Op::Unsubscribe => Access::ReadOnly,
            Op::Join(_)
            | Op::Leave(_)
            | Op::Open(_)
            | Op::Close(_)
            | Op::Send(_)
            | Op::Share(_)
            | Op::Unshare(_)
            | Op::Frame(_)
            // It makes the daemon send packets to a local address of the client's choosing.
            | Op::Forward(_)
            | Op::Verifier(_)
            | Op::Verify(_)
            | Op::Inbox(_)
            | Op::Debug(_) => Access::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    #[test]
    fn observing_ops_are_read_only_and_the_rest_need_full_control() {
        let parse = |op: &str, args: Value| Op::parse(op, args).expect("valid op");
        let room = || Value::Map(vec![(Value::from("room"), Value::from("r"))]);
        for op in [parse("status", Value::Nil), parse("peers", room())] {
            assert_eq!(op.access(), Access::ReadOnly, "{}", op.name());
        }
        for op in [
            parse("join", room()),
            parse("leave", room()),
            parse("debug", Value::Nil),
        ] {
            assert_eq!(op.access(), Access::Full, "{}", op.name());
        }
        assert!(Access::Full > Access::ReadOnly);
    }
}
