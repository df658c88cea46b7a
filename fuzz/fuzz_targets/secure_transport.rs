//! The encrypted channel after a completed handshake: what an established
//! connection does with records that are garbage, cut, flipped, replayed,
//! dropped or reordered, mixed with real ones.
//!
//! Each input runs a fresh in-memory Noise_XX handshake between an
//! initiator A and a responder B (through `Channel::receive`, exactly as
//! two engines would), then a sequence of operations built from the input
//! with `arbitrary`: A seals some plaintext and the record reaches B whole,
//! in pieces, with a bit flipped, twice, or not at all; raw bytes reach B;
//! B seals something for A; the message counter limit is lowered. Checked:
//!
//! * neither side ever panics;
//! * integrity: everything B ever outputs is a prefix of exactly what A
//!   sealed, in order (so nothing forged, replayed, reordered or damaged
//!   comes out), and while only whole, untouched records arrive, B outputs
//!   all of it;
//! * a failure is final: after an error B never outputs anything again;
//! * the counter limit is honoured on both sides: with the same limit, B
//!   takes every record A could still seal.
//!
//! The plaintext B gets is also run through `frame::decode`, as the reactor
//! would.

#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use peerconn::net::frame;
use peerconn::net::secure::{Channel, Identity, SecureError, MAX_PLAINTEXT};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A seals `len` bytes (a pattern, or the given bytes) and B receives the records whole.
    Send(Payload),
    /// The records reach B cut at `at` (and the rest later).
    Split(Payload, u16),
    /// One byte of the records is changed before B sees them.
    Flip(Payload, u16, u8),
    /// The records are lost on the way (the next ones then fail).
    Drop(Payload),
    /// The records reach B twice.
    Replay(Payload),
    /// Two sealed messages reach B in the opposite order.
    Swap(Payload, Payload),
    /// Raw bytes reach B.
    Garbage(Vec<u8>),
    /// A length header announcing `len` bytes, then `body`.
    Record(u16, Vec<u8>),
    /// B seals for A, which must read it back.
    Reply(Payload),
    /// Lower the message counter limit of both sides.
    Limit(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    /// A frame's worth or more of a pattern: `len` = 0..=65535 scaled up.
    Big(u16, u8),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Big(len, seed) => {
                let len = (usize::from(*len) * 3).min(MAX_PLAINTEXT * 3);
                (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
            }
        }
    }
}

fn identities() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| (Identity::from_private([1; 32]), Identity::from_private([2; 32])))
}

/// A handshake between two fresh channels; returns (A, B), both established.
fn handshake() -> (Channel, Channel) {
    let (a_id, b_id) = identities();
    let (mut a, a_first) = Channel::initiator(a_id);
    let (mut b, b_first) = Channel::responder(b_id);
    let (mut to_b, mut to_a) = (a_first, b_first);
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

/// B's side of the test, with what it must never break.
struct Receiver {
    b: Channel,
    /// Everything A sealed for B, in order.
    sealed: Vec<u8>,
    /// Everything B let out.
    plain: Vec<u8>,
    failed: bool,
    /// Only whole, untouched records in order reached B so far.
    clean: bool,
}

impl Receiver {
    fn feed(&mut self, bytes: &[u8]) {
        let before = self.plain.len();
        let result = self.b.receive(bytes, &mut Vec::new(), &mut self.plain);
        if self.failed {
            assert_eq!(self.plain.len(), before, "a failed channel let plaintext out");
        }
        if result.is_err() {
            self.failed = true;
            self.clean = false;
        }
        assert!(
            self.sealed.starts_with(&self.plain),
            "B let out {} bytes that A did not send in that order",
            self.plain.len()
        );
        // The reactor decodes whatever comes out; it must not panic on it.
        let mut rest = &self.plain[before..];
        while let Ok(Some((_, used))) = frame::decode(rest) {
            rest = &rest[used..];
        }
    }

    fn check_complete(&self) {
        if self.clean && !self.failed {
            assert_eq!(self.plain.len(), self.sealed.len(), "B held back data from whole, untouched records");
            assert!(!self.b.has_partial());
        }
    }
}

fn seal(a: &mut Channel, plain: &[u8], limit: Option<u64>) -> Option<Vec<u8>> {
    let mut wire = Vec::new();
    match a.seal(plain, &mut wire) {
        Ok(()) => Some(wire),
        Err(SecureError::Exhausted) => {
            assert!(limit.is_some(), "the counter ran out without a lowered limit");
            None
        }
        Err(e) => panic!("sealing on an established channel failed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else { return };
    if ops.len() > 64 {
        return;
    }
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{ops:?}");
    }
    let (mut a, b) = handshake();
    let mut rx = Receiver { b, sealed: Vec::new(), plain: Vec::new(), failed: false, clean: true };
    let mut limit: Option<u64> = None;
    for op in &ops {
        match op {
            Op::Send(p) => {
                let p = p.bytes();
                if let Some(wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    rx.feed(&wire);
                }
            }
            Op::Split(p, at) => {
                let p = p.bytes();
                if let Some(wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    let at = usize::from(*at).min(wire.len());
                    rx.feed(&wire[..at]);
                    rx.feed(&wire[at..]);
                }
            }
            Op::Flip(p, at, xor) => {
                let p = p.bytes();
                if let Some(mut wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    if !wire.is_empty() && *xor != 0 {
                        let at = usize::from(*at) % wire.len();
                        wire[at] ^= xor;
                        rx.clean = false;
                    }
                    rx.feed(&wire);
                }
            }
            Op::Drop(p) => {
                let p = p.bytes();
                if seal(&mut a, &p, limit).is_some_and(|w| !w.is_empty()) {
                    rx.sealed.extend_from_slice(&p);
                    rx.clean = false;
                }
            }
            Op::Replay(p) => {
                let p = p.bytes();
                if let Some(wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    rx.feed(&wire);
                    if !wire.is_empty() {
                        rx.clean = false;
                        rx.feed(&wire);
                    }
                }
            }
            Op::Swap(p, q) => {
                let (p, q) = (p.bytes(), q.bytes());
                let (Some(w1), Some(w2)) = (seal(&mut a, &p, limit), seal(&mut a, &q, limit)) else { continue };
                rx.sealed.extend_from_slice(&p);
                rx.sealed.extend_from_slice(&q);
                if !w1.is_empty() && !w2.is_empty() {
                    rx.clean = false;
                }
                rx.feed(&w2);
                rx.feed(&w1);
            }
            Op::Garbage(bytes) => {
                if !bytes.is_empty() {
                    rx.clean = false;
                }
                rx.feed(bytes);
            }
            Op::Record(len, body) => {
                rx.clean = false;
                let mut wire = len.to_be_bytes().to_vec();
                wire.extend_from_slice(body);
                rx.feed(&wire);
            }
            Op::Reply(p) => {
                let p = p.bytes();
                if rx.failed {
                    continue;
                }
                let mut wire = Vec::new();
                match rx.b.seal(&p, &mut wire) {
                    Ok(()) => {
                        let mut back = Vec::new();
                        a.receive(&wire, &mut Vec::new(), &mut back).expect("A reads what B sealed");
                        assert_eq!(back, p, "A read something else than B sealed");
                    }
                    Err(SecureError::Exhausted) => assert!(limit.is_some()),
                    Err(e) => panic!("B could not seal on an established channel: {e}"),
                }
            }
            Op::Limit(n) => {
                let n = u64::from(*n);
                limit = Some(n);
                a.set_nonce_limit(n);
                rx.b.set_nonce_limit(n);
            }
        }
        rx.check_complete();
    }
});
