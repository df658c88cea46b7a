//! The accepting side of the encrypted channel fed whatever a stranger
//! sends: the preamble check, record framing and the Noise handshake.
//!
//! This is what every listener runs on bytes from anyone who can reach its
//! port, before any key is known. Checked:
//!
//! * `Channel::receive` never panics, however the bytes are cut up;
//! * without the initiator's keys the handshake can never complete, so the
//!   channel is never established and yields no plaintext;
//! * a failure is final: once `receive` returned an error, the channel
//!   never answers again;
//! * the handshake reply (our "e, ee, s, es") is only ever written once,
//!   and only after a valid preamble and first message.
//!
//! The first input byte chooses how the rest is cut into `receive` calls
//! (1 byte at a time up to whole), so partial preambles and records are
//! covered as well as whole ones.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use peerconn::net::secure::{Channel, Identity, PREAMBLE};

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_private([7; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let step = match cut {
        0 => rest.len().max(1),
        n => usize::from(n),
    };
    let (mut channel, first) = Channel::responder(identity());
    assert_eq!(first, PREAMBLE, "a responder opens with the preamble alone");
    let (mut out, mut plain) = (Vec::new(), Vec::new());
    let mut failed = false;
    let mut replies = 0;
    for chunk in rest.chunks(step) {
        let before = out.len();
        let result = channel.receive(chunk, &mut out, &mut plain);
        if failed {
            assert_eq!(out.len(), before, "a failed channel answered");
        }
        failed |= result.is_err();
        if out.len() > before {
            replies += 1;
        }
        assert!(!channel.is_established(), "the handshake completed without the initiator's keys");
        assert!(channel.peer().is_none());
        assert!(plain.is_empty(), "plaintext came out of an unestablished channel");
    }
    assert!(replies <= 1, "the handshake reply was written {replies} times");
    if replies == 1 {
        assert!(rest.starts_with(&PREAMBLE), "a reply was written without a valid preamble");
    }
});
