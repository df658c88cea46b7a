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

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use peerconn::net::frame;
use peerconn::net::secure::{Channel, SecureError, MAX_PLAINTEXT};

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

// The handshake and the receiver's promises, shared with the property
// test in the normal test suite.
#[path = "../../tests/it/channel_model.rs"]
mod channel_model;

use channel_model::{handshake, Receiver};

/// Hands B the bytes, panics on a broken promise, and decodes what came
/// out as the reactor would (which must not panic either).
fn feed(rx: &mut Receiver, bytes: &[u8]) {
    let before = rx.plain.len();
    if let Err(why) = rx.feed(bytes) {
        panic!("{why}");
    }
    let mut rest = &rx.plain[before..];
    while let Ok(Some((_, used))) = frame::decode(rest) {
        rest = &rest[used..];
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
    let mut rx = Receiver::new(b);
    let mut limit: Option<u64> = None;
    for op in &ops {
        match op {
            Op::Send(p) => {
                let p = p.bytes();
                if let Some(wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    feed(&mut rx, &wire);
                }
            }
            Op::Split(p, at) => {
                let p = p.bytes();
                if let Some(wire) = seal(&mut a, &p, limit) {
                    rx.sealed.extend_from_slice(&p);
                    let at = usize::from(*at).min(wire.len());
                    feed(&mut rx, &wire[..at]);
                    feed(&mut rx, &wire[at..]);
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
                    feed(&mut rx, &wire);
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
                    feed(&mut rx, &wire);
                    if !wire.is_empty() {
                        rx.clean = false;
                        feed(&mut rx, &wire);
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
                feed(&mut rx, &w2);
                feed(&mut rx, &w1);
            }
            Op::Garbage(bytes) => {
                if !bytes.is_empty() {
                    rx.clean = false;
                }
                feed(&mut rx, bytes);
            }
            Op::Record(len, body) => {
                rx.clean = false;
                let mut wire = len.to_be_bytes().to_vec();
                wire.extend_from_slice(body);
                feed(&mut rx, &wire);
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
        if let Err(why) = rx.check_complete() {
            panic!("{why}");
        }
    }
});
