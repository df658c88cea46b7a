//! Two channels joined in memory, and what the receiving one must never
//! break, shared by the property test (`channel_props.rs`) and the
//! `secure_transport` fuzz target, which includes this file.

use peerconn::net::secure::{Channel, Identity};

/// A real Noise handshake between two fresh channels, in memory; returns
/// (A, B), both established.
pub fn handshake() -> (Channel, Channel) {
    let (a_id, b_id) = (Identity::from_private([1; 32]), Identity::from_private([2; 32]));
    let (mut a, mut to_b) = Channel::initiator(&a_id);
    let (mut b, mut to_a) = Channel::responder(&b_id);
    let mut plain = Vec::new();
    for _ in 0..3 {
        let mut out = Vec::new();
        b.receive(&std::mem::take(&mut to_b), &mut out, &mut plain).expect("B takes a valid handshake");
        to_a.extend(out);
        let mut out = Vec::new();
        a.receive(&std::mem::take(&mut to_a), &mut out, &mut plain).expect("A takes a valid handshake");
        to_b.extend(out);
    }
    assert!(a.is_established() && b.is_established() && plain.is_empty() && to_a.is_empty() && to_b.is_empty());
    assert_eq!(a.peer().map(|p| p.handshake_hash.clone()), b.peer().map(|p| p.handshake_hash.clone()));
    (a, b)
}

/// B's side, with what it has let out.
pub struct Receiver {
    pub b: Channel,
    /// Everything A sealed for B, in order.
    pub sealed: Vec<u8>,
    /// Everything B let out.
    pub plain: Vec<u8>,
    pub failed: bool,
    /// Only whole, untouched records in order reached B so far.
    pub clean: bool,
}

impl Receiver {
    pub fn new(b: Channel) -> Receiver {
        Receiver { b, sealed: Vec::new(), plain: Vec::new(), failed: false, clean: true }
    }

    /// Hands B some bytes. `Err` says which promise it broke: a failure is
    /// final (no bytes taken, nothing let out after it), and what comes
    /// out is exactly a prefix of what A sealed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        let before = self.plain.len();
        let result = self.b.receive(bytes, &mut Vec::new(), &mut self.plain);
        if self.failed {
            if result.is_ok() {
                return Err("a failed channel accepted bytes again".into());
            }
            if self.plain.len() != before {
                return Err("a failed channel let plaintext out".into());
            }
        }
        if result.is_err() {
            self.failed = true;
            self.clean = false;
        }
        if self.plain.len() < before || !self.sealed.starts_with(&self.plain) {
            return Err(format!("B let out {} bytes that A did not seal in that order", self.plain.len()));
        }
        Ok(())
    }

    /// While only whole, untouched records arrived, B let all of it out.
    pub fn check_complete(&self) -> Result<(), String> {
        if self.clean && !self.failed && (self.plain.len() != self.sealed.len() || self.b.has_partial()) {
            return Err("B held back data from whole, untouched records".into());
        }
        Ok(())
    }
}
