//! Pairing codes: a short code the listener shows and the connecting
//! person types, proven with SPAKE2 inside the encrypted channel.
//!
//! A short code used as a key (a Noise pre-shared key, say) could be
//! guessed offline by anyone who saw one handshake. SPAKE2 gives an
//! attacker exactly one guess per connection, and the listener counts
//! wrong codes and makes each further attempt wait longer. The SPAKE2 key
//! is bound to the Noise handshake hash in the confirmation MACs, so a
//! proof made on one connection is worthless on any other, and a man in
//! the middle (who has two different handshakes) cannot relay it.
//!
//! Order on the wire, after both hellos said `pairing`:
//! the server sends `Pair(B)`; the client sends `Pair(A)` and then
//! `Confirm(client MAC)`; the server checks that MAC before it answers
//! `Confirm(server MAC)`, so a wrong code learns nothing from the server.

use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Digits in a generated code (shown as two groups of four).
pub const CODE_DIGITS: usize = 8;

/// A new random code, like `4821-0937`.
pub fn new_code() -> String {
    let mut bytes = [0u8; 8];
    // Randomness from the same source as the Noise keys.
    let id = super::secure::Identity::generate();
    bytes.copy_from_slice(&blake3::hash(id.public()).as_bytes()[..8]);
    let n = u64::from_le_bytes(bytes) % 100_000_000;
    let digits = format!("{n:08}");
    format!("{}-{}", &digits[..4], &digits[4..])
}

/// What is compared: the code without spaces or dashes, lower-cased, so
/// "4821 0937" and "4821-0937" are the same code.
pub fn normalize(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// Checks a code a person chose or typed.
pub fn check_code(code: &str) -> Result<(), String> {
    let n = normalize(code);
    if n.chars().count() < 4 {
        return Err("a pairing code needs at least 4 letters or digits".into());
    }
    if n.len() > 64 {
        return Err("a pairing code is at most 64 characters".into());
    }
    Ok(())
}

/// One side's pairing in progress.
pub struct Pairing {
    spake: Option<Spake2<Ed25519Group>>,
    server: bool,
    handshake_hash: Vec<u8>,
    keys: Option<Keys>,
}

struct Keys {
    client: blake3::Hash,
    server: blake3::Hash,
}

impl Pairing {
    /// Starts pairing with `code` on the connection whose Noise handshake
    /// hash is `handshake_hash`. Returns the state and our SPAKE2 message.
    pub fn start(code: &str, server: bool, handshake_hash: &[u8]) -> (Pairing, Vec<u8>) {
        let password = Password::new(normalize(code).as_bytes());
        let (a, b) = (Identity::new(b"peerconn client"), Identity::new(b"peerconn server"));
        let (spake, msg) = if server {
            Spake2::<Ed25519Group>::start_b(&password, &a, &b)
        } else {
            Spake2::start_a(&password, &a, &b)
        };
        (Pairing { spake: Some(spake), server, handshake_hash: handshake_hash.to_vec(), keys: None }, msg)
    }

    /// Takes the peer's SPAKE2 message. Fails only on a malformed message;
    /// a wrong code shows later, as a confirmation that does not match.
    pub fn receive(&mut self, msg: &[u8]) -> Result<(), String> {
        let spake = self.spake.take().ok_or("sent a second pairing message")?;
        let key = spake.finish(msg).map_err(|e| format!("sent a bad pairing message ({e})"))?;
        let mut material = key;
        material.extend_from_slice(&self.handshake_hash);
        let mac_key = blake3::derive_key("PeerConn 2026 pairing confirmation", &material);
        self.keys = Some(Keys {
            client: blake3::keyed_hash(&mac_key, b"client"),
            server: blake3::keyed_hash(&mac_key, b"server"),
        });
        Ok(())
    }

    /// Our confirmation MAC, once the peer's message is in.
    pub fn confirmation(&self) -> Option<[u8; 32]> {
        let keys = self.keys.as_ref()?;
        Some(if self.server { *keys.server.as_bytes() } else { *keys.client.as_bytes() })
    }

    /// True when `mac` is the peer's correct confirmation (compared in
    /// constant time).
    pub fn check(&self, mac: &[u8; 32]) -> bool {
        match &self.keys {
            Some(keys) => {
                let want = if self.server { keys.client } else { keys.server };
                want == blake3::Hash::from(*mac)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server_code: &str, client_code: &str, hash_s: &[u8], hash_c: &[u8]) -> (bool, bool) {
        let (mut s, s_msg) = Pairing::start(server_code, true, hash_s);
        let (mut c, c_msg) = Pairing::start(client_code, false, hash_c);
        s.receive(&c_msg).unwrap();
        c.receive(&s_msg).unwrap();
        let server_accepts = s.check(&c.confirmation().unwrap());
        let client_accepts = c.check(&s.confirmation().unwrap());
        (server_accepts, client_accepts)
    }

    #[test]
    fn the_same_code_on_the_same_connection_pairs() {
        assert_eq!(run("4821-0937", "4821 0937", b"h", b"h"), (true, true));
    }

    #[test]
    fn a_wrong_code_or_another_connection_does_not() {
        assert_eq!(run("4821-0937", "4821-0938", b"h", b"h"), (false, false));
        assert_eq!(run("4821-0937", "4821-0937", b"h1", b"h2"), (false, false));
    }

    #[test]
    fn codes_are_eight_digits_and_checked() {
        let code = new_code();
        assert_eq!(normalize(&code).len(), CODE_DIGITS);
        assert_ne!(code, new_code());
        assert!(check_code("12").is_err());
        assert!(check_code(&code).is_ok());
    }

    #[test]
    fn a_garbage_message_is_an_error_not_a_panic() {
        let (mut s, _) = Pairing::start("1234", true, b"h");
        assert!(s.receive(&[0xff; 33]).is_err() || s.confirmation().is_some());
        assert!(s.receive(&[1]).is_err());
    }
}
