//! The encrypted channel under arbitrary damage, in the normal test suite
//! (the deep version is the `secure_transport` fuzz target,
//! docs/FUZZING.md).
//!
//! A real Noise_XX handshake between two `Channel`s in memory, then A
//! seals messages that reach B whole, cut in two, with a byte changed,
//! twice, not at all, or swapped, between raw garbage. Whatever happens,
//! what B lets out is exactly a prefix of what A sealed, in order; after a
//! failure nothing more comes out; and while only whole, untouched records
//! arrive, B lets all of it out.

use peerconn::net::secure::{Channel, Identity, MAX_PLAINTEXT};
use proptest::collection::vec;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Send(Vec<u8>),
    Split(Vec<u8>, usize),
    Flip(Vec<u8>, usize, u8),
    Drop(Vec<u8>),
    Replay(Vec<u8>),
    Swap(Vec<u8>, Vec<u8>),
    Garbage(Vec<u8>),
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(any::<u8>(), 1..200),
        1 => (MAX_PLAINTEXT - 2..MAX_PLAINTEXT * 2 + 2).prop_map(|n| (0..n).map(|i| i as u8).collect()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => message().prop_map(Op::Send),
        2 => (message(), any::<usize>()).prop_map(|(m, at)| Op::Split(m, at)),
        1 => (message(), any::<usize>(), 1..=255u8).prop_map(|(m, at, x)| Op::Flip(m, at, x)),
        1 => message().prop_map(Op::Drop),
        1 => message().prop_map(Op::Replay),
        1 => (message(), message()).prop_map(|(m, n)| Op::Swap(m, n)),
        1 => vec(any::<u8>(), 1..100).prop_map(Op::Garbage),
    ]
}

fn handshake() -> (Channel, Channel) {
    let (a_id, b_id) = (Identity::from_private([1; 32]), Identity::from_private([2; 32]));
    let (mut a, mut to_b) = Channel::initiator(&a_id);
    let (mut b, mut to_a) = Channel::responder(&b_id);
    let mut plain = Vec::new();
    for _ in 0..3 {
        let mut out = Vec::new();
        b.receive(&std::mem::take(&mut to_b), &mut out, &mut plain).unwrap();
        to_a.extend(out);
        let mut out = Vec::new();
        a.receive(&std::mem::take(&mut to_a), &mut out, &mut plain).unwrap();
        to_b.extend(out);
    }
    assert!(a.is_established() && b.is_established() && plain.is_empty());
    (a, b)
}

struct Receiver {
    b: Channel,
    sealed: Vec<u8>,
    plain: Vec<u8>,
    failed: bool,
    clean: bool,
}

impl Receiver {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), TestCaseError> {
        let before = self.plain.len();
        if self.b.receive(bytes, &mut Vec::new(), &mut self.plain).is_err() {
            self.failed = true;
            self.clean = false;
        } else {
            prop_assert!(!self.failed, "a failed channel accepted bytes again");
        }
        prop_assert!(self.plain.len() >= before);
        prop_assert!(self.sealed.starts_with(&self.plain), "B let out bytes A did not seal, or out of order");
        Ok(())
    }
}

fn seal(a: &mut Channel, message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    a.seal(message, &mut wire).expect("an established channel seals");
    wire
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn damaged_records_never_let_out_anything_but_a_prefix_of_what_was_sealed(ops in vec(op(), 1..24)) {
        let (mut a, b) = handshake();
        let mut rx = Receiver { b, sealed: Vec::new(), plain: Vec::new(), failed: false, clean: true };
        for op in ops {
            let after_failure = rx.failed;
            let out_before = rx.plain.len();
            match op {
                Op::Send(m) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    rx.feed(&wire)?;
                }
                Op::Split(m, at) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    let at = at % (wire.len() + 1);
                    rx.feed(&wire[..at])?;
                    rx.feed(&wire[at..])?;
                }
                Op::Flip(m, at, x) => {
                    let mut wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    let at = at % wire.len();
                    wire[at] ^= x;
                    rx.clean = false;
                    rx.feed(&wire)?;
                }
                Op::Drop(m) => {
                    seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    rx.clean = false;
                }
                Op::Replay(m) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    rx.feed(&wire)?;
                    rx.clean = false;
                    rx.feed(&wire)?;
                }
                Op::Swap(m, n) => {
                    let (w1, w2) = (seal(&mut a, &m), seal(&mut a, &n));
                    rx.sealed.extend_from_slice(&m);
                    rx.sealed.extend_from_slice(&n);
                    rx.clean = false;
                    rx.feed(&w2)?;
                    rx.feed(&w1)?;
                }
                Op::Garbage(g) => {
                    rx.clean = false;
                    rx.feed(&g)?;
                }
            }
            if after_failure {
                prop_assert_eq!(rx.plain.len(), out_before, "plaintext came out after a failure");
            }
            if rx.clean {
                prop_assert_eq!(rx.plain.len(), rx.sealed.len(), "whole records were held back");
                prop_assert!(!rx.b.has_partial());
            }
        }
    }
}
