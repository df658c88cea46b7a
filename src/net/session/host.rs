//! What a session is handed from outside while it handles input: its
//! peersocket's name, busy flag and pairing back-off, the trust store
//! ([`Host`]), and whoever keeps the connection's transfers
//! ([`FileFrames`]).

use std::time::Instant;

use super::Link;
use crate::net::frame::Frame;
use crate::net::trust::KnownPeers;

/// A server peersocket's memory of wrong pairing codes, kept across its
/// connections (each failure doubles the wait before the next try).
#[derive(Clone, Debug, Default)]
pub struct PairingGuard {
    pub wrong_codes: u32,
    pub blocked_until: Option<Instant>,
}

/// What a session needs from its peersocket while it handles input.
pub struct Host<'a> {
    /// Our peersocket's name now (the hello says it).
    pub name: &'a str,
    /// The trust store: keys remembered by name and address. The session
    /// only reads it; what should be remembered comes out as
    /// `SessionEvent::Remember`.
    pub known: &'a KnownPeers,
    /// Server: the peersocket already has its peer.
    pub busy: bool,
    /// Server: the listener's wrong-code count and back-off.
    pub guard: &'a mut PairingGuard,
}

/// A peer's file frame that breaks the protocol: the connection ends with
/// this as the protocol error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

/// Whoever keeps a connection's transfers. The session hands it every
/// file frame of an open connection, and file data as slices of what it
/// decrypted (never copied first).
pub trait FileFrames {
    /// While true, the session decodes no more input (a writer is full);
    /// the reactor calls [`Session::resume`] when it has room.
    fn paused(&self) -> bool;
    /// OFFER, ACCEPT, DECLINE, DONE, CANCEL, RECEIVED and WINDOW.
    fn frame(&mut self, frame: Frame, link: &mut Link) -> Result<(), Violation>;
    /// The bytes of one DATA frame.
    fn data(&mut self, transfer: u32, bytes: &[u8], link: &mut Link) -> Result<(), Violation>;
}

/// A connection with no transfers: file frames are a protocol error.
pub struct NoFiles;

impl FileFrames for NoFiles {
    fn paused(&self) -> bool {
        false
    }
    fn frame(&mut self, frame: Frame, _: &mut Link) -> Result<(), Violation> {
        Err(Violation(format!("sent a {} on a connection that takes no files", frame.kind_name())))
    }
    fn data(&mut self, _: u32, _: &[u8], _: &mut Link) -> Result<(), Violation> {
        Err(Violation("sent file data on a connection that takes no files".into()))
    }
}
