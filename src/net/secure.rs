//! The encrypted channel every connection runs before any PeerConn frame.
//!
//! Each side first sends a ten-byte preamble (`PEERCONN`, then the protocol
//! version as a big-endian `u16`), so a peer that is not PeerConn, or speaks
//! the old unencrypted protocol 1, gets a clear reason instead of a failed
//! handshake. Then a `Noise_XX` handshake (through `snow`) runs: both sides
//! prove their long-term static keys, and each learns the other's. From
//! then on the byte stream of frames is cut into Noise transport messages.
//! There is no plaintext mode and nothing to negotiate, so there is nothing
//! to downgrade.
//!
//! On the wire every handshake and transport message is a *record*:
//! `length: u16 BE | noise message`. A transport record carries at most
//! [`MAX_PLAINTEXT`] bytes of frames, the size of one whole frame, so a file
//! data frame is one record.
//!
//! Like `frame`, this module does no I/O: [`Channel::receive`] takes the
//! bytes read from the socket and gives back what to send and the decrypted
//! frame bytes. It can be driven by the reactor, by a test peer, or by a
//! fuzzer. Tampered, replayed, reordered or truncated records fail
//! authentication (Noise's message counter is implicit), and the error ends
//! the connection.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use snow::resolvers::CryptoResolver;

use super::link::KeyPin;

/// The Noise protocol: XX (both static keys sent encrypted, mutual
/// authentication), X25519, AES-256-GCM (hardware-accelerated through
/// `ring` on every desktop CPU of the last decade), BLAKE2s.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_BLAKE2s";
/// The protocol version this build speaks. Version 1 was unencrypted;
/// version 2 could not resume a transfer. Both are refused.
pub const VERSION: u16 = 3;
/// What each side sends first: `PEERCONN` and the version.
pub const PREAMBLE: [u8; 10] = [b'P', b'E', b'E', b'R', b'C', b'O', b'N', b'N', 0, VERSION as u8];
/// Bound into the handshake, so both sides agree on what they speak.
const PROLOGUE: &[u8] = b"PeerConn protocol 3";
/// Largest Noise message.
pub const MAX_RECORD: usize = 65_535;
/// Authentication tag of each transport message.
pub const TAG_LEN: usize = 16;
/// Largest plaintext of one record: exactly one maximal frame.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// Bytes before each record's Noise message.
pub const RECORD_HEADER: usize = 2;
/// Messages one direction may carry before the connection is ended: Noise
/// forbids a nonce of 2^64 − 1, and we stop well before.
pub const DEFAULT_NONCE_LIMIT: u64 = u64::MAX - (1 << 16);

/// A long-term X25519 key pair: who this installation is.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: [u8; 32],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half, not even in a debug log.
        write!(f, "Identity({})", fingerprint(&self.public))
    }
}

impl Identity {
    /// A fresh random key pair.
    pub fn generate() -> Identity {
        let builder = snow::Builder::new(params());
        // Generation only fails if the OS has no randomness to give, and
        // then nothing in this program can be made secure.
        let pair = builder.generate_keypair().expect("the operating system gave no random bytes");
        let mut id = Identity { private: [0; 32], public: [0; 32] };
        id.private.copy_from_slice(&pair.private);
        id.public.copy_from_slice(&pair.public);
        id
    }

    /// The key pair whose private half is `private`.
    pub fn from_private(private: [u8; 32]) -> Identity {
        let resolver = snow::resolvers::DefaultResolver;
        let mut dh = resolver.resolve_dh(&snow::params::DHChoice::Curve25519).expect("X25519 is always available");
        dh.set(&private);
        let mut public = [0; 32];
        public.copy_from_slice(dh.pubkey());
        Identity { private, public }
    }

    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// A key for one purpose (`context` names it), derived from the
    /// private half, which never leaves this type: the window seals the
    /// pairing codes it keeps on disk with one.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.private)
    }

    /// What a person compares to know this installation.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }

    /// Reads the key stored at `path`, or creates one there (readable by
    /// the owner only) on first start.
    pub fn load_or_create(path: &Path) -> io::Result<Identity> {
        match fs::read_to_string(path) {
            Ok(text) => {
                restrict(path);
                Identity::parse(&text).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a PeerConn key; move it away to make a new one (peers will see a new key)",
                            path.display()
                        ),
                    )
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate();
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                let text = format!("peerconn identity 1\n{}\n", hex(&id.private));
                write_private(path, text.as_bytes())?;
                log::info!("created this installation's key {} in {}", id.fingerprint(), path.display());
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    fn parse(text: &str) -> Option<Identity> {
        let mut lines = text.lines();
        if lines.next()? != "peerconn identity 1" {
            return None;
        }
        let bytes = unhex(lines.next()?.trim())?;
        Some(Identity::from_private(bytes.try_into().ok()?))
    }
}

/// Writes a file only its owner can read, whole or not at all: to a
/// temporary file first, flushed to the disk, then renamed over the old one
/// (a crash leaves the old file as it was).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // On Windows the file inherits the ACL of the user's own profile
    // folder, which other users cannot read.
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Takes group and other permissions off a key file someone loosened.
fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!("{} was readable by others; made it owner-only", path.display());
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn params() -> snow::params::NoiseParams {
    NOISE_PARAMS.parse().expect("the Noise parameters are valid")
}

/// A static key as people compare it: the first 80 bits of its BLAKE3
/// hash, in five groups of four hex digits.
pub fn fingerprint(key: &[u8]) -> String {
    let hash = fingerprint_hash(key);
    let hex = hex(&hash[..10]);
    let groups: Vec<&str> = (0..5).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    groups.join("-")
}

/// The whole hash a fingerprint is the start of (links pin all of it).
pub fn fingerprint_hash(key: &[u8]) -> [u8; 32] {
    blake3::derive_key("PeerConn 2026 key fingerprint", key)
}

/// Twelve digits from the handshake hash, the same on both sides of one
/// connection and different on each side of a man in the middle. Twelve
/// digits (40 bits) keep an attacker from grinding handshakes until two
/// codes match within the handshake deadline.
pub fn safety_code(handshake_hash: &[u8]) -> String {
    let hash = blake3::derive_key("PeerConn 2026 safety code", handshake_hash);
    let n = u64::from_be_bytes(hash[..8].try_into().unwrap_or([0; 8])) % 1_000_000_000_000;
    let digits = format!("{n:012}");
    format!("{} {} {}", &digits[..4], &digits[4..8], &digits[8..])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Why the channel failed. Each ends the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureError {
    /// The first bytes were not a PeerConn preamble.
    NotPeerConn,
    /// A PeerConn of another protocol version.
    Version(u16),
    /// The Noise handshake failed (a tampered or foreign message).
    Handshake(String),
    /// A transport message failed authentication.
    Tampered,
    /// The message counter reached its limit.
    Exhausted,
    /// The peer's key is not the one pinned (by a link or an
    /// announcement): we stopped before sending our own.
    NotPinned { presented: [u8; 32], expected: String },
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::NotPeerConn => {
                f.write_str("it is not a PeerConn (its first bytes are not a PeerConn greeting)")
            }
            SecureError::Version(1) => f.write_str(
                "it runs an old PeerConn that sends everything unencrypted (protocol 1); it must be updated",
            ),
            SecureError::Version(v) if *v > VERSION => {
                write!(f, "it speaks protocol {v}, newer than this PeerConn's {VERSION}; update this one")
            }
            SecureError::Version(v) if *v > 1 => {
                write!(f, "it speaks protocol {v}, older than this PeerConn's {VERSION}; the peer must update")
            }
            SecureError::Version(v) => write!(f, "it speaks protocol {v}; this PeerConn speaks {VERSION}"),
            SecureError::Handshake(what) => write!(f, "the encrypted handshake failed ({what})"),
            SecureError::Tampered => f.write_str(
                "a message failed its integrity check: data was changed, replayed, reordered or cut on the way",
            ),
            SecureError::Exhausted => {
                f.write_str("the connection's message counter is used up; connect again for fresh keys")
            }
            SecureError::NotPinned { presented, expected } => write!(
                f,
                "it presented the key {}, not the key {expected} it was expected to have",
                fingerprint(presented)
            ),
        }
    }
}

impl std::error::Error for SecureError {}

/// What the handshake established about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerKey {
    /// The peer's long-term static public key.
    pub key: [u8; 32],
    /// Noise's handshake hash: unique to this connection, equal on both sides.
    pub handshake_hash: Vec<u8>,
}

impl PeerKey {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }
    pub fn safety_code(&self) -> String {
        safety_code(&self.handshake_hash)
    }
}

enum State {
    /// Waiting for the peer's preamble.
    Preamble(Box<snow::HandshakeState>),
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<Transport>),
    Failed,
}

/// Noise's transport phase with AESGCM (Noise spec §5.1, §12.3): one key
/// per direction from the handshake's split, the message counter as the
/// nonce (4 zero bytes, then the counter big-endian), no associated data.
/// The records are the ones snow's `TransportState` makes (a unit test
/// checks both ways); it is done here on ring directly so records are
/// sealed and opened in place, where snow zero-fills its output and then
/// copies each record into it.
struct Transport {
    send: LessSafeKey,
    recv: LessSafeKey,
    /// Messages sealed and opened so far: the next nonce each way.
    sent: u64,
    received: u64,
}

impl Transport {
    fn new(hs: &mut snow::HandshakeState) -> Transport {
        let (initiator_to_responder, responder_to_initiator) = hs.dangerously_get_raw_split();
        let (send, recv) = if hs.is_initiator() {
            (initiator_to_responder, responder_to_initiator)
        } else {
            (responder_to_initiator, initiator_to_responder)
        };
        let key = |k: [u8; 32]| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("a 32-byte AES-256 key"));
        Transport { send: key(send), recv: key(recv), sent: 0, received: 0 }
    }

    fn nonce(counter: u64) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&counter.to_be_bytes());
        Nonce::assume_unique_for_key(bytes)
    }

    /// Encrypts `out[start..]` in place and appends the tag.
    fn seal_tail(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), SecureError> {
        let tag = self
            .send
            .seal_in_place_separate_tag(Transport::nonce(self.sent), Aad::empty(), &mut out[start..])
            .map_err(|_| SecureError::Exhausted)?;
        out.extend_from_slice(tag.as_ref());
        self.sent += 1;
        Ok(())
    }

    /// Decrypts `plain[start..]` (a whole record) in place, leaving only
    /// the plaintext.
    fn open_tail(&mut self, plain: &mut Vec<u8>, start: usize) -> Result<(), SecureError> {
        match self.recv.open_in_place(Transport::nonce(self.received), Aad::empty(), &mut plain[start..]) {
            Ok(opened) => {
                let n = opened.len();
                plain.truncate(start + n);
                self.received += 1;
                Ok(())
            }
            Err(_) => {
                plain.truncate(start);
                Err(SecureError::Tampered)
            }
        }
    }
}

/// One side of an encrypted connection.
pub struct Channel {
    state: State,
    /// Received bytes not yet making a whole record.
    raw: Vec<u8>,
    peer: Option<PeerKey>,
    nonce_limit: u64,
    /// Why receiving failed, once it has: a failure is final, later bytes
    /// (even a valid record) get the same error and no plaintext.
    read_error: Option<SecureError>,
    /// The key the peer must present (initiator only).
    pin: Option<KeyPin>,
}

impl Channel {
    /// The connecting side. Returns the channel and the bytes to send first.
    pub fn initiator(identity: &Identity) -> (Channel, Vec<u8>) {
        Channel::initiator_pinned(identity, None)
    }

    /// The connecting side, expecting the key `pin` from the peer: any
    /// other key fails the handshake before ours is sent.
    pub fn initiator_pinned(identity: &Identity, pin: Option<KeyPin>) -> (Channel, Vec<u8>) {
        let mut hs = builder(identity).build_initiator().expect("the Noise parameters are valid");
        let mut out = PREAMBLE.to_vec();
        // -> e
        let mut msg = [0u8; 128];
        let n = hs.write_message(&[], &mut msg).expect("the first handshake message always fits");
        push_record(&mut out, &msg[..n]);
        let mut channel = Channel::new(State::Preamble(Box::new(hs)));
        channel.pin = pin;
        (channel, out)
    }

    /// The accepting side. Returns the channel and the bytes to send first.
    pub fn responder(identity: &Identity) -> (Channel, Vec<u8>) {
        let hs = builder(identity).build_responder().expect("the Noise parameters are valid");
        (Channel::new(State::Preamble(Box::new(hs))), PREAMBLE.to_vec())
    }

    fn new(state: State) -> Channel {
        Channel { state, raw: Vec::new(), peer: None, nonce_limit: DEFAULT_NONCE_LIMIT, read_error: None, pin: None }
    }

    /// Ends the connection once either direction has carried `limit`
    /// messages (tests lower it to see the end arrive).
    pub fn set_nonce_limit(&mut self, limit: u64) {
        self.nonce_limit = limit;
    }

    /// True once the handshake is done: frames can be sealed and opened.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// The peer's key and the handshake hash, once established.
    pub fn peer(&self) -> Option<&PeerKey> {
        self.peer.as_ref()
    }

    /// True while part of a record has arrived and the rest has not: a
    /// connection that closes now was cut, and one that stays like this
    /// is stalling.
    pub fn has_partial(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Takes bytes read from the socket. Handshake replies are appended to
    /// `out`, decrypted frame bytes to `plain`.
    pub fn receive(&mut self, bytes: &[u8], out: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<(), SecureError> {
        if let Some(e) = &self.read_error {
            return Err(e.clone());
        }
        let result = self.receive_inner(bytes, out, plain);
        if let Err(e) = &result {
            self.read_error = Some(e.clone());
            self.raw = Vec::new();
        }
        result
    }

    fn receive_inner(&mut self, mut bytes: &[u8], out: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<(), SecureError> {
        if !self.raw.is_empty() && matches!(self.state, State::Transport(_)) {
            // Most reads end inside a record. Complete that record with
            // just the bytes it lacks, then take the rest of this read
            // where it lies: copying whole reads into `raw` first cost a
            // copy of every byte received.
            if !self.take_into_raw(&mut bytes, RECORD_HEADER) {
                return Ok(());
            }
            let want = RECORD_HEADER + usize::from(u16::from_be_bytes([self.raw[0], self.raw[1]]));
            if !self.take_into_raw(&mut bytes, want) {
                return Ok(());
            }
            let raw = std::mem::take(&mut self.raw);
            let result = self.process(&raw, out, plain);
            self.raw = raw;
            self.raw.clear();
            result?;
        }
        if self.raw.is_empty() {
            let used = self.process(bytes, out, plain)?;
            self.raw.extend_from_slice(&bytes[used..]);
        } else {
            self.raw.extend_from_slice(bytes);
            let raw = std::mem::take(&mut self.raw);
            let result = self.process(&raw, out, plain);
            self.raw = raw;
            let used = result?;
            self.raw.drain(..used);
        }
        Ok(())
    }

    /// Moves bytes from the front of `bytes` into `raw` until it holds
    /// `want`; returns whether it does.
    fn take_into_raw(&mut self, bytes: &mut &[u8], want: usize) -> bool {
        let take = want.saturating_sub(self.raw.len()).min(bytes.len());
        self.raw.extend_from_slice(&bytes[..take]);
        *bytes = &bytes[take..];
        self.raw.len() >= want
    }

    /// Handles every whole record in `input`; returns the bytes used.
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<usize, SecureError> {
        let mut used = 0;
        loop {
            if let State::Preamble(_) = self.state {
                if input.len() - used < PREAMBLE.len() {
                    // A wrong start is known before the whole preamble is in.
                    let have = &input[used..];
                    if have.len() >= 8 || !PREAMBLE.starts_with(&have[..have.len().min(8)]) {
                        check_preamble(have).inspect_err(|_| self.state = State::Failed)?;
                    }
                    return Ok(used);
                }
                if let Err(e) = check_preamble(&input[used..used + PREAMBLE.len()]) {
                    self.state = State::Failed;
                    return Err(e);
                }
                used += PREAMBLE.len();
                let State::Preamble(hs) = std::mem::replace(&mut self.state, State::Failed) else { unreachable!() };
                self.state = State::Handshake(hs);
                continue;
            }
            let rest = &input[used..];
            if rest.len() < RECORD_HEADER {
                return Ok(used);
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            if rest.len() < RECORD_HEADER + len {
                return Ok(used);
            }
            let record = &rest[RECORD_HEADER..RECORD_HEADER + len];
            used += RECORD_HEADER + len;
            if let Err(e) = self.record(record, out, plain) {
                // A failed transport message ends the connection, but our own
                // sending direction is intact: it can still say why.
                if !self.is_established() {
                    self.state = State::Failed;
                }
                return Err(e);
            }
        }
    }

    fn record(&mut self, record: &[u8], out: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<(), SecureError> {
        match &mut self.state {
            State::Handshake(hs) => {
                if hs.is_my_turn() {
                    return Err(SecureError::Handshake("the peer spoke out of turn".into()));
                }
                let mut payload = [0u8; MAX_RECORD];
                hs.read_message(record, &mut payload).map_err(|e| SecureError::Handshake(e.to_string()))?;
                // The responder's key arrives in its message; ours goes in
                // the reply, so a key that is not the pinned one stops us
                // before the peer learns who we are.
                if let (Some(pin), Some(key)) = (&self.pin, hs.get_remote_static()) {
                    let key: [u8; 32] = key.try_into().map_err(|_| SecureError::Handshake("a short key".into()))?;
                    if !pin.matches(&key) {
                        return Err(SecureError::NotPinned { presented: key, expected: pin.fingerprint() });
                    }
                }
                if !hs.is_handshake_finished() {
                    let mut msg = vec![0u8; MAX_RECORD];
                    let n = hs.write_message(&[], &mut msg).map_err(|e| SecureError::Handshake(e.to_string()))?;
                    push_record(out, &msg[..n]);
                }
                if hs.is_handshake_finished() {
                    let key: [u8; 32] = hs
                        .get_remote_static()
                        .and_then(|k| k.try_into().ok())
                        .ok_or_else(|| SecureError::Handshake("the peer sent no key".into()))?;
                    let handshake_hash = hs.get_handshake_hash().to_vec();
                    let transport = Transport::new(hs);
                    self.state = State::Transport(Box::new(transport));
                    self.peer = Some(PeerKey { key, handshake_hash });
                }
                Ok(())
            }
            State::Transport(ts) => {
                if ts.received >= self.nonce_limit {
                    return Err(SecureError::Exhausted);
                }
                if record.len() < TAG_LEN {
                    return Err(SecureError::Tampered);
                }
                let start = plain.len();
                plain.extend_from_slice(record);
                ts.open_tail(plain, start)
            }
            State::Preamble(_) | State::Failed => Err(SecureError::Tampered),
        }
    }

    /// Encrypts `plain` (frame bytes) into records appended to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        self.seal_parts(&[plain], out)
    }

    /// Encrypts the bytes of `parts`, one after the other, as if they were
    /// one slice (a frame's header and its data need not be copied
    /// together first).
    pub fn seal_parts(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), SecureError> {
        let State::Transport(ts) = &mut self.state else {
            return Err(SecureError::Handshake("not established".into()));
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        // All the records or none: a message is never cut off half sent.
        let records = total.div_ceil(MAX_PLAINTEXT) as u64;
        if ts.sent.saturating_add(records) > self.nonce_limit {
            return Err(SecureError::Exhausted);
        }
        let mut parts = parts.iter().copied();
        let mut current: &[u8] = &[];
        let mut left = total;
        while left > 0 {
            let n = left.min(MAX_PLAINTEXT);
            out.extend_from_slice(&((n + TAG_LEN) as u16).to_be_bytes());
            let start = out.len();
            let mut need = n;
            while need > 0 {
                while current.is_empty() {
                    current = parts.next().unwrap_or_default();
                }
                let k = need.min(current.len());
                out.extend_from_slice(&current[..k]);
                current = &current[k..];
                need -= k;
            }
            if let Err(e) = ts.seal_tail(out, start) {
                out.truncate(start - RECORD_HEADER);
                return Err(e);
            }
            left -= n;
        }
        Ok(())
    }
}

fn builder(identity: &Identity) -> snow::Builder<'_> {
    snow::Builder::new(params())
        .local_private_key(&identity.private)
        .and_then(|b| b.prologue(PROLOGUE))
        .expect("a 32-byte key and a prologue are always accepted")
}

fn push_record(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
}

/// Checks the peer's first bytes (all ten, or fewer when they already
/// show a mismatch).
fn check_preamble(have: &[u8]) -> Result<(), SecureError> {
    // An old, unencrypted PeerConn opens with its hello frame: a 4-byte
    // length, the type 0x01, then PEERCONN and version 1.
    if have.len() >= 5 && have[..3] == [0, 0, 0] && have[4] == 0x01 {
        return Err(SecureError::Version(1));
    }
    let magic = &PREAMBLE[..8];
    let n = have.len().min(8);
    if have[..n] != magic[..n] {
        return Err(SecureError::NotPeerConn);
    }
    if have.len() < PREAMBLE.len() {
        return Ok(());
    }
    match u16::from_be_bytes([have[8], have[9]]) {
        VERSION => Ok(()),
        other => Err(SecureError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel) {
        let (a_id, b_id) = (Identity::generate(), Identity::generate());
        let (mut a, a_first) = Channel::initiator(&a_id);
        let (mut b, b_first) = Channel::responder(&b_id);
        let (mut to_b, mut to_a) = (a_first, b_first);
        let mut plain = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            b.receive(&std::mem::take(&mut to_b), &mut out, &mut plain).unwrap();
            to_a.extend(out);
            let mut out = Vec::new();
            a.receive(&std::mem::take(&mut to_a), &mut out, &mut plain).unwrap();
            to_b.extend(out);
        }
        assert!(a.is_established() && b.is_established());
        assert_eq!(a.peer().unwrap().key, *b_id.public());
        assert_eq!(b.peer().unwrap().key, *a_id.public());
        assert_eq!(a.peer().unwrap().safety_code(), b.peer().unwrap().safety_code());
        assert!(plain.is_empty());
        (a, b)
    }

    /// Our transport makes exactly the records snow's `TransportState`
    /// makes, both ways: the wire format is Noise's, not our own.
    #[test]
    fn records_are_the_ones_snow_makes_and_reads() {
        let (a_id, b_id) = (Identity::generate(), Identity::generate());
        let mut a = builder(&a_id).build_initiator().unwrap();
        let mut b = builder(&b_id).build_responder().unwrap();
        let (mut msg, mut payload) = ([0u8; 256], [0u8; 256]);
        for step in 0..3 {
            let (from, to) = if step % 2 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
            let n = from.write_message(&[], &mut msg).unwrap();
            to.read_message(&msg[..n], &mut payload).unwrap();
        }
        assert!(a.is_handshake_finished() && b.is_handshake_finished());
        let mut ours = Transport::new(&mut b);
        let mut snows = a.into_transport_mode().unwrap();
        for text in [&b"first"[..], &[7u8; 1000][..], b""] {
            // snow seals, we open.
            let mut record = vec![0u8; text.len() + TAG_LEN];
            let n = snows.write_message(text, &mut record).unwrap();
            let mut plain = b"kept".to_vec();
            plain.extend_from_slice(&record[..n]);
            ours.open_tail(&mut plain, 4).unwrap();
            assert_eq!(&plain[4..], text);
            // We seal, snow opens.
            let mut out = b"xx".to_vec();
            out.extend_from_slice(text);
            ours.seal_tail(&mut out, 2).unwrap();
            let mut back = vec![0u8; text.len()];
            assert_eq!(snows.read_message(&out[2..], &mut back).unwrap(), text.len());
            assert_eq!(back, text);
        }
        // A record from snow that was changed does not open.
        let mut record = vec![0u8; 3 + TAG_LEN];
        snows.write_message(b"abc", &mut record).unwrap();
        record[1] ^= 1;
        assert_eq!(ours.open_tail(&mut record, 0), Err(SecureError::Tampered));
        assert!(record.is_empty());
    }

    #[test]
    fn a_message_sealed_in_parts_is_the_same_as_sealed_whole() {
        let (mut a, mut b) = pair();
        let data: Vec<u8> = (0..MAX_PLAINTEXT * 2 + 77).map(|i| (i * 7) as u8).collect();
        let mut wire = Vec::new();
        a.seal_parts(&[&data[..9], &[], &data[9..MAX_PLAINTEXT + 3], &data[MAX_PLAINTEXT + 3..]], &mut wire).unwrap();
        a.seal_parts(&[], &mut wire).unwrap();
        a.seal(b"after", &mut wire).unwrap();
        let mut plain = Vec::new();
        b.receive(&wire, &mut Vec::new(), &mut plain).unwrap();
        assert_eq!(&plain[..data.len()], &data[..]);
        assert_eq!(&plain[data.len()..], b"after");
    }

    #[test]
    fn frames_cross_one_byte_at_a_time_and_whole() {
        let (mut a, mut b) = pair();
        let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        a.seal(&message, &mut wire).unwrap();
        let (mut out, mut plain) = (Vec::new(), Vec::new());
        for byte in &wire[..1000] {
            b.receive(std::slice::from_ref(byte), &mut out, &mut plain).unwrap();
        }
        b.receive(&wire[1000..], &mut out, &mut plain).unwrap();
        assert!(out.is_empty());
        assert_eq!(plain, message);
        assert!(!b.has_partial());
    }

    #[test]
    fn a_flipped_bit_a_replay_and_a_reorder_all_fail() {
        let (mut a, mut b) = pair();
        let (mut r1, mut r2) = (Vec::new(), Vec::new());
        a.seal(b"one", &mut r1).unwrap();
        a.seal(b"two", &mut r2).unwrap();
        let mut plain = Vec::new();
        let mut flipped = r1.clone();
        flipped[4] ^= 1;
        assert_eq!(b.receive(&flipped, &mut Vec::new(), &mut plain), Err(SecureError::Tampered));

        let (mut a, mut b) = pair();
        let mut r1 = Vec::new();
        a.seal(b"one", &mut r1).unwrap();
        b.receive(&r1, &mut Vec::new(), &mut plain).unwrap();
        assert_eq!(b.receive(&r1, &mut Vec::new(), &mut plain), Err(SecureError::Tampered), "replay");

        let (mut a, mut b) = pair();
        let (mut r1, mut r2) = (Vec::new(), Vec::new());
        a.seal(b"one", &mut r1).unwrap();
        a.seal(b"two", &mut r2).unwrap();
        assert_eq!(b.receive(&r2, &mut Vec::new(), &mut plain), Err(SecureError::Tampered), "reorder");
    }

    #[test]
    fn a_failure_is_final_even_for_valid_records_after_it() {
        let (mut a, mut b) = pair();
        let (mut r1, mut r2) = (Vec::new(), Vec::new());
        a.seal(b"one", &mut r1).unwrap();
        a.seal(b"two", &mut r2).unwrap();
        let mut plain = Vec::new();
        // Garbage shaped as a record, then the real records.
        assert_eq!(b.receive(&[0, 17, 1, 2, 3], &mut Vec::new(), &mut plain), Ok(()));
        assert_eq!(b.receive(&[0; 14], &mut Vec::new(), &mut plain), Err(SecureError::Tampered));
        assert_eq!(b.receive(&r1, &mut Vec::new(), &mut plain), Err(SecureError::Tampered));
        assert_eq!(b.receive(&r2, &mut Vec::new(), &mut plain), Err(SecureError::Tampered));
        assert!(plain.is_empty(), "nothing comes out after a failure");
        // Our sending direction still works, so a bye can say why.
        let mut wire = Vec::new();
        b.seal(b"bye", &mut wire).unwrap();
        let mut back = Vec::new();
        a.receive(&wire, &mut Vec::new(), &mut back).unwrap();
        assert_eq!(back, b"bye");
    }

    #[test]
    fn the_counter_limit_ends_the_channel() {
        let (mut a, mut b) = pair();
        a.set_nonce_limit(3);
        b.set_nonce_limit(3);
        let mut wire = Vec::new();
        for _ in 0..3 {
            a.seal(b"x", &mut wire).unwrap();
        }
        assert_eq!(a.seal(b"x", &mut wire), Err(SecureError::Exhausted));
        let mut plain = Vec::new();
        b.receive(&wire, &mut Vec::new(), &mut plain).unwrap();
        assert_eq!(plain, b"xxx");

        // A message of several records is sealed whole or not at all.
        let (mut a, mut b) = pair();
        a.set_nonce_limit(2);
        b.set_nonce_limit(2);
        let long = vec![7u8; MAX_PLAINTEXT * 2 + 1];
        let mut cut = Vec::new();
        assert_eq!(a.seal(&long, &mut cut), Err(SecureError::Exhausted));
        assert!(cut.is_empty(), "part of a message went out");
        let mut wire = Vec::new();
        a.seal(&long[..MAX_PLAINTEXT * 2], &mut wire).unwrap();
        let mut plain = Vec::new();
        b.receive(&wire, &mut Vec::new(), &mut plain).unwrap();
        assert_eq!(plain.len(), MAX_PLAINTEXT * 2);
    }

    #[test]
    fn preambles_are_told_apart() {
        assert_eq!(check_preamble(b"GET / HTTP/1.1"), Err(SecureError::NotPeerConn));
        assert_eq!(check_preamble(&[0, 0, 0, 20, 1, b'P']), Err(SecureError::Version(1)));
        assert_eq!(check_preamble(b"PEERCONN\x00\x02"), Err(SecureError::Version(2)));
        assert_eq!(check_preamble(b"PEERCONN\x00\x04"), Err(SecureError::Version(4)));
        assert_eq!(check_preamble(b"PEER"), Ok(()));
        assert_eq!(check_preamble(&PREAMBLE), Ok(()));
    }

    #[test]
    fn identities_survive_a_round_trip_through_their_file() {
        let dir = std::env::temp_dir().join(format!("peerconn-id-{}", std::process::id()));
        let path = dir.join("identity.key");
        let _ = fs::remove_dir_all(&dir);
        let made = Identity::load_or_create(&path).unwrap();
        let read = Identity::load_or_create(&path).unwrap();
        assert_eq!(made.public(), read.public());
        assert_eq!(Identity::from_private(made.private).public(), made.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::write(&path, "nonsense").unwrap();
        assert!(Identity::load_or_create(&path).unwrap_err().to_string().contains("not a PeerConn key"));
        let _ = fs::remove_dir_all(&dir);
    }
}
