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

use peerconn::net::secure::{Channel, MAX_PLAINTEXT};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::channel_model::{handshake, Receiver};

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

fn feed(rx: &mut Receiver, bytes: &[u8]) -> Result<(), TestCaseError> {
    rx.feed(bytes).map_err(TestCaseError::fail)
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
        let mut rx = Receiver::new(b);
        for op in ops {
            let after_failure = rx.failed;
            let out_before = rx.plain.len();
            match op {
                Op::Send(m) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    feed(&mut rx, &wire)?;
                }
                Op::Split(m, at) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    let at = at % (wire.len() + 1);
                    feed(&mut rx, &wire[..at])?;
                    feed(&mut rx, &wire[at..])?;
                }
                Op::Flip(m, at, x) => {
                    let mut wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    let at = at % wire.len();
                    wire[at] ^= x;
                    rx.clean = false;
                    feed(&mut rx, &wire)?;
                }
                Op::Drop(m) => {
                    seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    rx.clean = false;
                }
                Op::Replay(m) => {
                    let wire = seal(&mut a, &m);
                    rx.sealed.extend_from_slice(&m);
                    feed(&mut rx, &wire)?;
                    rx.clean = false;
                    feed(&mut rx, &wire)?;
                }
                Op::Swap(m, n) => {
                    let (w1, w2) = (seal(&mut a, &m), seal(&mut a, &n));
                    rx.sealed.extend_from_slice(&m);
                    rx.sealed.extend_from_slice(&n);
                    rx.clean = false;
                    feed(&mut rx, &w2)?;
                    feed(&mut rx, &w1)?;
                }
                Op::Garbage(g) => {
                    rx.clean = false;
                    feed(&mut rx, &g)?;
                }
            }
            if after_failure {
                prop_assert_eq!(rx.plain.len(), out_before, "plaintext came out after a failure");
            }
            rx.check_complete().map_err(TestCaseError::fail)?;
        }
    }
}
