//! How a connection ends: a kind that programs match on, and the
//! sentence a person reads.

use std::fmt;

use super::Session;
use crate::net::frame::ByeCode;
use crate::net::printable;

/// What kind of end a connection came to. [`End`] carries the sentence a
/// person reads; the kind is what programs match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// We closed it on purpose (Disconnect, Remove, quitting).
    Closed,
    /// The peer said a normal bye: the person closed it.
    PeerClosed,
    /// The peer's program is closing (it may come back).
    PeerLeft,
    /// The peer ended it with a bye that gives another reason.
    PeerRefused(ByeCode),
    /// Nothing listens at the address, or it cannot be reached.
    Unreachable,
    /// A deadline passed: the connect, the handshake, the hello or the
    /// pairing did not complete, or the peer went silent.
    TimedOut,
    /// The peer presented a key other than the one remembered.
    KeyChanged,
    /// The peer presented a key other than the one its link promised; we
    /// left in the handshake, before our own key went out.
    WrongKey,
    /// We refused the peer: busy, wrong or missing pairing code, another
    /// protocol version.
    Refused,
    /// The peer broke the protocol (or the encryption failed).
    Protocol,
    /// The peer sent faster than allowed, or stopped reading.
    Limit,
    /// The connection was cut: reset, or closed without a bye.
    Reset,
    /// The local network stack failed.
    LocalError,
}

impl EndKind {
    /// A word for the kind, as the command line's JSON gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndKind::Closed => "closed",
            EndKind::PeerClosed => "peer_closed",
            EndKind::PeerLeft => "peer_left",
            EndKind::PeerRefused(_) => "peer_refused",
            EndKind::Unreachable => "unreachable",
            EndKind::TimedOut => "timed_out",
            EndKind::KeyChanged => "key_changed",
            EndKind::WrongKey => "wrong_key",
            EndKind::Refused => "refused",
            EndKind::Protocol => "protocol",
            EndKind::Limit => "limit",
            EndKind::Reset => "reset",
            EndKind::LocalError => "local_error",
        }
    }

    /// The connection ended on purpose (a normal bye from either side).
    pub fn is_clean(self) -> bool {
        matches!(self, EndKind::Closed | EndKind::PeerClosed | EndKind::PeerLeft)
    }

    /// A client that reconnects by itself tries again after this end: the
    /// peer went away or could not be reached, but nobody said to stop
    /// (we or the other person closing, a key change, a refusal and a
    /// broken protocol are final).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            EndKind::PeerLeft | EndKind::Unreachable | EndKind::TimedOut | EndKind::Reset | EndKind::LocalError
        ) || self == EndKind::PeerRefused(ByeCode::Busy)
    }
}

/// How a connection ended: its kind and the sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub kind: EndKind,
    pub reason: String,
}

impl End {
    pub fn new(kind: EndKind, reason: impl Into<String>) -> End {
        End { kind, reason: reason.into() }
    }

    pub fn is_clean(&self) -> bool {
        self.kind.is_clean()
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl Session {
    /// The `End` for a bye the peer sent.
    pub(super) fn peer_bye(&self, code: ByeCode, reason: &str) -> End {
        let said = if reason.is_empty() { String::new() } else { format!(" (\"{}\")", printable(reason)) };
        let refused = EndKind::PeerRefused(code);
        match code {
            ByeCode::Normal => End::new(EndKind::PeerClosed, format!("the peer closed the connection{said}")),
            ByeCode::Leaving => End::new(EndKind::PeerLeft, format!("the peer's PeerConn closed{said}")),
            ByeCode::Busy => End::new(refused, format!("the peersocket at {} is busy with another peer", self.remote)),
            ByeCode::ProtocolError => End::new(refused, format!("the peer reported a protocol error{said}")),
            ByeCode::Unsupported => End::new(refused, format!("the peer refused our protocol version{said}")),
            ByeCode::Untrusted => End::new(refused, format!("the peer refused our key{said}")),
            ByeCode::Pairing => End::new(refused, format!("the peer refused the pairing{said}")),
            ByeCode::Limit => End::new(refused, format!("the peer ended the connection: we went over a limit{said}")),
        }
    }
}
