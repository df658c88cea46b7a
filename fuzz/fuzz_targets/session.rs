//! `session`: one connection's protocol (`net::session::Session`) alone,
//! in memory, on a virtual clock: no socket, no thread, no sleeping, so it
//! runs several times as many connections a second as `engine`, and a
//! 15-second heartbeat loss costs nothing.
//!
//! Each input builds one `Session` and a raw peer written against the
//! protocol document, a bare `secure::Channel`:
//!
//! * either a server session facing a raw initiator, or a client session
//!   (after `tcp_connected`) facing a raw responder;
//! * with or without a pairing code on the session; the raw peer can run
//!   the real SPAKE2 exchange (`pairing::Pairing`) with the same code, a
//!   wrong one, or on a wrong handshake hash;
//! * `Host.busy` true or false (and changing), a trust store that may
//!   already remember another key under the peer's name or address, or
//!   the peer's own key, a pairing guard with earlier wrong codes;
//! * timers and limits: the defaults, the engine target's short ones, or
//!   any (every duration at least 100 ms).
//!
//! Then operations built from the input with `arbitrary`: any frame
//! (every `Frame` variant with arbitrary fields, or a raw type and
//! payload), several frames in one record, raw plaintext sealed as
//! records, floods of pings or chat, raw bytes outside the encryption,
//! delivery now, cut at arbitrary points across `receive` calls, or held
//! back (and then flipped or cut short), the raw peer reading all, part or
//! none of what the session says, the virtual clock moved by arbitrary
//! amounts (with `handle_timeout` when `deadline()` is due, or at any
//! time), `send_chat`, `close`, `eof`, `io_failed`, file data pumped
//! through `open_link` as the reactor does, and the pairing guard bumped
//! by another connection. File frames go to a small `FileFrames` of ours
//! that takes them, answers them on the link, pauses reading (the input
//! later resumes) or refuses them with a `Violation`, as a script in the
//! input says. At the end the peer goes silent and the session's
//! deadlines are run until it ends.
//!
//! Aborts (a crash for libFuzzer) on a panic, or when one of these
//! properties breaks:
//!
//! 1. every record the session sends opens at the raw peer, and every
//!    frame in it decodes with `frame::decode` (unless what the session
//!    received was changed before the raw peer's channel was up: then the
//!    session answered another handshake, and the raw peer stops reading);
//! 2. `Ended` comes at most once, and no `Connected` or `Message` after
//!    it; a closed session has reported it;
//! 3. `Connected` comes at most once, never after `KeyChanged`, after
//!    `Secured`, and names the raw peer's key; `KeyChanged` names the raw
//!    peer's key and the key remembered before, and the changed key is
//!    not remembered;
//! 4. `Message` only while open: after `Connected`, before `Ended`, and
//!    never once we asked to close;
//! 5. once `is_closed()`, it stays closed, its output stays empty and
//!    `deadline()` is `None` (and before that, `deadline()` is `Some`);
//!    after `take_shutdown()` said true, nothing more is output;
//! 6. after `handle_timeout(now)`, `deadline()` is `None` or later than
//!    `now`;
//! 7. a peer that goes silent is given up within hello_timeout +
//!    heartbeat_timeout + close_linger + frame_timeout of virtual time,
//!    only by running the session's deadlines;
//! 8. `pending_output()` never exceeds `max_output_bytes + OUTPUT_SLACK`
//!    plus one maximal record while the session has not ended;
//! 9. with a pairing code on the session (either role), `Connected` comes
//!    only if the raw peer proved the same code on this connection, and
//!    then the peer is `Verified`; without one, it is `New`, `Known` or
//!    `Verified` as the trust store remembered it; either way its key is
//!    remembered from then on; `WrongCode` comes only from a server with a
//!    code and counts as the pairing guard does;
//! 10. file frames reach `FileFrames` only once connected and are file
//!     frames (OFFER, ACCEPT, DECLINE, DONE, CANCEL, RECEIVED, WINDOW),
//!     and file data is 1 to `MAX_DATA` bytes; `send_chat` is accepted
//!     only while open.
//!
//! `FUZZ_DEBUG=1` prints the input, every operation as it runs and every
//! event.

#![no_main]

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use peerconn::net::frame::{self, ByeCode, Frame};
use peerconn::net::pairing::{self, Pairing};
use peerconn::net::secure::{Channel, Identity, MAX_RECORD, RECORD_HEADER};
use peerconn::net::session::{
    self, ChatRefused, FileFrames, Host, Link, PairingGuard, Session, SessionConfig, SessionEvent, Violation,
};
use peerconn::net::trust::KnownPeers;
use peerconn::net::Trust;

const MAX_OPS: usize = 64;
/// Frames in one flood, at most (20 000 pings are answered by 620 KB of pongs).
const MAX_FLOOD: usize = 20_000;
/// Pumped file data per operation, at most.
const MAX_PUMP: usize = 64;

/// Pairing codes the session may ask for (and the raw peer may try).
const CODES: &[&str] = &["2468-1357", "2468 1357", "1234", "abcd-EFGH", "0000-0000"];
/// Names the raw peer may say in its hello (some a decoder refuses).
const NAMES: &[&str] = &[
    "laptop",
    "desk",
    "mallory",
    "名前",
    "a\u{202e}b",
    "",
    " ",
    "tab\tname",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
/// Our own peersocket's names: the engine checks them, so all are valid.
const HOST_NAMES: &[&str] =
    &["desk", "laptop", "名前", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"];
const BYE_CODES: [ByeCode; 7] = [
    ByeCode::Normal,
    ByeCode::Busy,
    ByeCode::ProtocolError,
    ByeCode::Unsupported,
    ByeCode::Untrusted,
    ByeCode::Pairing,
    ByeCode::Limit,
];
const IO_ERRORS: [io::ErrorKind; 6] = [
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::BrokenPipe,
    io::ErrorKind::TimedOut,
    io::ErrorKind::OutOfMemory,
    io::ErrorKind::Other,
];

fn client_addr() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "192.0.2.2:4000".parse().unwrap()
}

/// Fixed keys, so an input does the same thing each time it runs (the
/// ephemeral Noise and SPAKE2 keys are still random): ours, the raw
/// peer's, and another one a trust store may remember.
fn identities() -> &'static [Identity; 3] {
    static KEYS: OnceLock<[Identity; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [0x11, 0x22, 0x33].map(|b| Identity::from_private([b; 32])))
}

// ----- the input ----------------------------------------------------------------

#[derive(Arbitrary, Debug)]
struct Input {
    /// The session is the server (the raw peer connects), or the client.
    server: bool,
    /// The session's pairing code (an index into `CODES`).
    code: Option<u8>,
    busy: bool,
    host_name: u8,
    store: Store,
    guard: Guard,
    timers: Timers,
    /// What our `FileFrames` does with each file frame, in turn (then it takes them).
    files: Vec<FileAct>,
    /// The raw peer still reads while it says nothing at the end.
    reads_in_silence: bool,
    ops: Vec<Op>,
}

/// What the session's trust store remembers before the connection.
#[derive(Arbitrary, Debug)]
enum Store {
    Empty,
    /// Another key under one of the names.
    OtherUnderName(u8),
    /// Another key at the address the client dialled.
    OtherAtAddress,
    /// The raw peer's own key, under a name (and at the dialled address).
    Peer {
        name: u8,
        verified: bool,
        at_address: bool,
    },
    /// Both another key under a name and the peer's key under another.
    Both {
        other: u8,
        peer: u8,
        verified: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Guard {
    wrong_codes: u8,
    /// Seconds after (positive) or before the start the listener waits until.
    blocked: Option<i16>,
}

#[derive(Arbitrary, Debug)]
enum Timers {
    Default,
    /// The `engine` target's timers.
    Short,
    /// Any: durations are (1 + n) × 100 ms.
    Given {
        hello: u8,
        interval: u8,
        heartbeat: u8,
        linger: u8,
        frame: u8,
        chat_burst: u8,
        chat_per_sec: u8,
        max_wrong_codes: u8,
        max_output: u16,
        nonce_limit: Option<u8>,
    },
}

#[derive(Arbitrary, Clone, Debug)]
enum FileAct {
    Take,
    /// Take it and queue an answer of ours on the link.
    Answer(Answer),
    /// Take it and pause reading (a writer is full).
    Pause,
    /// A protocol violation.
    Refuse(String),
}

#[derive(Arbitrary, Clone, Debug)]
enum Answer {
    Accept(u32),
    Decline(u32, String),
    Window(u32, u64),
    Cancel(u32, bool, String),
    Received(u32),
    Offer(u32, u64, String),
    Done(u32, [u8; 32]),
    Data(u32, u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The raw peer sends one frame.
    Frame(FrameSpec, Delivery),
    /// Several frames sealed together (one record when they fit).
    Frames(Vec<FrameSpec>, Delivery),
    /// A well-formed hello of our protocol (`pairing` defaults to whether
    /// the session has a code).
    Hello {
        pairing: Option<bool>,
        name: u8,
    },
    /// Any plaintext, sealed as records.
    Plain(Payload, Delivery),
    /// Many frames at once.
    Flood(Flood, u16, Delivery),
    /// Bytes outside the encryption.
    Wire(Vec<u8>, Delivery),
    /// What is held back reaches the session in pieces of these sizes
    /// (all of it when there are none).
    Receive(Vec<u16>),
    /// One byte of what is held back is changed.
    Flip(u16, u8),
    /// What is held back loses its first bytes.
    Lose(u16),
    /// The raw peer reads this many bytes of what the session says.
    Read(u16),
    /// The raw peer stops (or starts again) reading by itself.
    Deaf(bool),
    /// The virtual clock moves on (ms); the deadline is run when due.
    Advance(u32),
    /// The clock moves to the session's deadline, which is run.
    ToDeadline,
    /// `handle_timeout` now, due or not.
    Poke,
    Chat(ChatText),
    Close {
        reason: String,
        said: String,
    },
    Eof,
    IoFailed(u8),
    /// The raw peer starts the real SPAKE2 exchange and sends its message.
    Pair {
        code: CodeChoice,
        right_hash: bool,
    },
    /// The raw peer finishes it and sends its confirmation.
    Confirm,
    /// Pair, let the answer come, Confirm.
    PairFully(CodeChoice),
    /// What a well-behaved peer does first: our hello (asking for pairing
    /// when the session has a code), then, with a code, the whole pairing
    /// (with the right code or another).
    Connect {
        name: u8,
        /// The code it proves, when the session asks for one.
        code: CodeChoice,
    },
    /// Our writer has room again.
    Resume,
    Busy(bool),
    /// Another connection of the listener tried a wrong code.
    OtherWrongCode,
    /// Our file data goes out through `open_link`, as the reactor's pump
    /// sends it (only below `max_output_bytes`).
    Pump {
        transfer: u32,
        len: u16,
        frames: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Delivery {
    /// Everything waiting reaches the session now, in one `receive`.
    Now,
    /// In pieces of these sizes; the rest is held back.
    Cut(Vec<u16>),
    /// Held back.
    Later,
}

#[derive(Arbitrary, Debug)]
enum CodeChoice {
    /// The session's code (or the first one when it has none).
    Same,
    Index(u8),
    Given(String),
}

#[derive(Arbitrary, Debug)]
enum Flood {
    Ping,
    Chat,
    Pong,
    Window,
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    /// A pattern of up to about four records.
    Big(u16, u8),
}

#[derive(Arbitrary, Debug)]
enum ChatText {
    Given(String),
    /// `x` repeated (0 and over `MAX_CHAT` are refused by the engine first).
    Long(u16),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Given(String),
}

#[derive(Arbitrary, Debug)]
enum Version {
    Ours,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum FrameSpec {
    Hello {
        version: Version,
        pairing: bool,
        name: Name,
    },
    Pair(Vec<u8>),
    Confirm([u8; 32]),
    Chat(String),
    Ping(u64),
    Pong(u64),
    Bye {
        code: u8,
        reason: String,
    },
    Offer {
        transfer: u32,
        size: u64,
        name: String,
    },
    Accept {
        transfer: u32,
    },
    Decline {
        transfer: u32,
        reason: String,
    },
    Data {
        transfer: u32,
        bytes: Vec<u8>,
    },
    /// File data of any length up to `MAX_DATA`, a pattern.
    BigData {
        transfer: u32,
        len: u16,
        seed: u8,
    },
    Done {
        transfer: u32,
        hash: [u8; 32],
    },
    Cancel {
        transfer: u32,
        mine: bool,
        reason: String,
    },
    Received {
        transfer: u32,
    },
    Window {
        transfer: u32,
        granted: u64,
    },
    Resume {
        transfer: u32,
        have: u64,
    },
    Proof {
        transfer: u32,
        hashes: Vec<[u8; 32]>,
    },
    AcceptFrom {
        transfer: u32,
        offset: u64,
    },
    OfferFolder {
        transfer: u32,
        size: u64,
        entries: u32,
        name: String,
    },
    /// A folder's entries: each a path and, for a file, a size.
    Entries {
        transfer: u32,
        entries: Vec<(Vec<String>, Option<u64>)>,
    },
    FileDone {
        transfer: u32,
        index: u32,
        hash: [u8; 32],
    },
    /// Any type byte and payload, with the right length.
    Raw {
        kind: u8,
        payload: Vec<u8>,
    },
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

impl Name {
    fn get(&self) -> String {
        match self {
            Name::Known(i) => pick(NAMES, *i).to_owned(),
            Name::Given(s) => s.clone(),
        }
    }
}

impl FrameSpec {
    /// The frame's bytes, as `Frame::encode` makes them (which cuts
    /// over-long fields), or raw.
    fn bytes(&self) -> Vec<u8> {
        let frame = match self {
            FrameSpec::Hello { version, pairing, name } => Frame::Hello {
                version: match version {
                    Version::Ours => frame::VERSION,
                    Version::Other(v) => *v,
                },
                pairing: *pairing,
                name: name.get(),
            },
            FrameSpec::Pair(msg) => Frame::Pair(msg.clone()),
            FrameSpec::Confirm(mac) => Frame::Confirm(*mac),
            FrameSpec::Chat(text) => Frame::Chat(text.clone()),
            FrameSpec::Ping(n) => Frame::Ping(*n),
            FrameSpec::Pong(n) => Frame::Pong(*n),
            FrameSpec::Bye { code, reason } => {
                Frame::Bye { code: BYE_CODES[usize::from(*code) % BYE_CODES.len()], reason: reason.clone() }
            }
            FrameSpec::Offer { transfer, size, name } => {
                Frame::Offer { transfer: *transfer, size: *size, name: name.clone() }
            }
            FrameSpec::Accept { transfer } => Frame::Accept { transfer: *transfer },
            FrameSpec::Decline { transfer, reason } => Frame::Decline { transfer: *transfer, reason: reason.clone() },
            FrameSpec::Data { transfer, bytes } => Frame::Data { transfer: *transfer, bytes: bytes.clone() },
            FrameSpec::BigData { transfer, len, seed } => {
                let len = usize::from(*len).min(frame::MAX_DATA);
                Frame::Data {
                    transfer: *transfer,
                    bytes: (0..len).map(|i| (i as u8).wrapping_mul(29) ^ seed).collect(),
                }
            }
            FrameSpec::Done { transfer, hash } => Frame::Done { transfer: *transfer, hash: *hash },
            FrameSpec::Cancel { transfer, mine, reason } => {
                Frame::Cancel { transfer: *transfer, mine: *mine, reason: reason.clone() }
            }
            FrameSpec::Received { transfer } => Frame::Received { transfer: *transfer },
            FrameSpec::Window { transfer, granted } => Frame::Window { transfer: *transfer, granted: *granted },
            FrameSpec::Resume { transfer, have } => Frame::Resume { transfer: *transfer, have: *have },
            FrameSpec::Proof { transfer, hashes } => Frame::Proof { transfer: *transfer, hashes: hashes.clone() },
            FrameSpec::AcceptFrom { transfer, offset } => Frame::AcceptFrom { transfer: *transfer, offset: *offset },
            FrameSpec::OfferFolder { transfer, size, entries, name } => {
                Frame::OfferFolder { transfer: *transfer, size: *size, entries: *entries, name: name.clone() }
            }
            FrameSpec::Entries { transfer, entries } => Frame::Entries {
                transfer: *transfer,
                entries: entries
                    .iter()
                    .map(|(path, size)| peerconn::net::frame::TreeEntry { path: path.clone(), size: *size })
                    .collect(),
            },
            FrameSpec::FileDone { transfer, index, hash } => {
                Frame::FileDone { transfer: *transfer, index: *index, hash: *hash }
            }
            FrameSpec::Raw { kind, payload } => {
                let mut bytes = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
                bytes.push(*kind);
                bytes.extend_from_slice(payload);
                return bytes;
            }
        };
        frame.to_bytes()
    }
}

impl Timers {
    fn config(&self) -> SessionConfig {
        let tenths = |n: u8| Duration::from_millis(100 * (1 + u64::from(n)));
        match self {
            Timers::Default => SessionConfig::default(),
            Timers::Short => SessionConfig {
                connect_timeout: Duration::from_secs(2),
                hello_timeout: Duration::from_secs(2),
                heartbeat_interval: Duration::from_secs(1),
                heartbeat_timeout: Duration::from_secs(4),
                close_linger: Duration::from_millis(500),
                frame_timeout: Duration::from_secs(2),
                ..SessionConfig::default()
            },
            Timers::Given {
                hello,
                interval,
                heartbeat,
                linger,
                frame,
                chat_burst,
                chat_per_sec,
                max_wrong_codes,
                max_output,
                nonce_limit,
            } => SessionConfig {
                connect_timeout: Duration::from_secs(10),
                hello_timeout: tenths(*hello),
                heartbeat_interval: tenths(*interval),
                heartbeat_timeout: tenths(*heartbeat),
                close_linger: tenths(*linger),
                frame_timeout: tenths(*frame),
                chat_burst: u32::from(*chat_burst),
                chat_per_sec: u32::from(*chat_per_sec),
                max_wrong_codes: u32::from(*max_wrong_codes % 16),
                max_output_bytes: usize::from(*max_output) * 16,
                nonce_limit: nonce_limit.map_or(SessionConfig::default().nonce_limit, u64::from),
            },
        }
    }
}

// ----- our transfers ------------------------------------------------------------

/// A `FileFrames` that follows the input's script.
struct Files {
    script: Vec<FileAct>,
    next: usize,
    paused: bool,
    /// At the end: takes everything and never pauses again.
    never_pause: bool,
    /// Calls since the last look.
    calls: u32,
    /// What was wrong with a call (checked outside, with the session).
    wrong: Option<String>,
}

impl Files {
    fn act(&mut self, link: &mut Link) -> Result<(), Violation> {
        self.calls += 1;
        let Some(act) = self.script.get(self.next) else { return Ok(()) };
        self.next += 1;
        match act {
            FileAct::Take => {}
            FileAct::Pause => self.paused = !self.never_pause,
            FileAct::Refuse(why) => return Err(Violation(why.clone())),
            FileAct::Answer(answer) => {
                let frame = match answer {
                    Answer::Accept(t) => Frame::Accept { transfer: *t },
                    Answer::Decline(t, r) => Frame::Decline { transfer: *t, reason: r.clone() },
                    Answer::Window(t, g) => Frame::Window { transfer: *t, granted: *g },
                    Answer::Cancel(t, m, r) => Frame::Cancel { transfer: *t, mine: *m, reason: r.clone() },
                    Answer::Received(t) => Frame::Received { transfer: *t },
                    Answer::Offer(t, size, name) => {
                        // Our own offers have names the decoder takes.
                        let name = if name.is_empty() { "file".to_owned() } else { name.clone() };
                        Frame::Offer { transfer: *t, size: *size, name }
                    }
                    Answer::Done(t, h) => Frame::Done { transfer: *t, hash: *h },
                    Answer::Data(t, len) => {
                        let len = usize::from(*len).clamp(1, frame::MAX_DATA);
                        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
                        link.queue_data(*t, &bytes);
                        return Ok(());
                    }
                };
                link.queue_file(&frame);
            }
        }
        Ok(())
    }
}

impl FileFrames for Files {
    fn paused(&self) -> bool {
        self.paused
    }

    fn frame(&mut self, frame: Frame, link: &mut Link) -> Result<(), Violation> {
        // DATA comes through `data`, never here.
        let file_frame = frame.is_file_frame() && !matches!(frame, Frame::Data { .. });
        if !file_frame {
            self.wrong.get_or_insert(format!("FileFrames::frame was handed a {}: {frame:?}", frame.kind_name()));
        }
        self.act(link)
    }

    fn data(&mut self, _transfer: u32, bytes: &[u8], link: &mut Link) -> Result<(), Violation> {
        if bytes.is_empty() || bytes.len() > frame::MAX_DATA {
            self.wrong.get_or_insert(format!("FileFrames::data was handed {} bytes", bytes.len()));
        }
        self.act(link)
    }
}

// ----- the raw peer and the session ----------------------------------------------

/// The raw peer's side of a real pairing.
struct RawPairing {
    pairing: Pairing,
    /// The session's code, on this connection's handshake hash.
    right: bool,
    /// The session's SPAKE2 message is in.
    received: bool,
}

struct Run {
    debug: bool,
    t0: Instant,
    now: Instant,
    config: SessionConfig,
    /// The session is the server.
    server: bool,
    code: Option<String>,
    session: Session,
    name: String,
    known: KnownPeers,
    guard: PairingGuard,
    busy: bool,
    files: Files,
    /// The raw peer's key was remembered before the connection (and
    /// whether as verified).
    peer_known_before: bool,
    peer_verified_before: bool,
    raw_key: [u8; 32],
    raw_fingerprint: String,
    other_key: [u8; 32],

    raw: Channel,
    /// Bytes from the raw peer not yet given to the session.
    to_session: Vec<u8>,
    /// Some of them are held back (until an operation delivers them).
    held: bool,
    /// Plaintext from the session not yet decoded.
    raw_plain: Vec<u8>,
    deaf: bool,
    /// What the session received was changed (flipped, cut short, or raw
    /// bytes put in) before the raw peer's channel was up: the session may
    /// then have answered another handshake than the raw peer's.
    tampered_early: bool,
    /// So the raw peer could not follow and stopped reading.
    raw_lost: bool,
    pairing: Option<RawPairing>,
    /// The session's last SPAKE2 message.
    their_pair: Option<Vec<u8>>,
    /// The raw peer sent the confirmation of the session's code.
    proved: bool,

    secured: u32,
    connected: u32,
    ended: u32,
    key_changed: bool,
    /// We asked the session to close (no message may be reported after).
    close_asked: bool,
    was_closed: bool,
    shut: bool,
}

impl Run {
    fn new(input: &Input) -> Run {
        let debug = std::env::var_os("FUZZ_DEBUG").is_some();
        let t0 = Instant::now();
        let config = input.timers.config();
        let code = input.code.map(|i| pick(CODES, i).to_owned());
        let [ours, raw_id, other] = identities();
        let mut known = KnownPeers::in_memory();
        let dialled = server_addr().to_string();
        let mut peer_known_before = false;
        match input.store {
            Store::Empty => {}
            Store::OtherUnderName(i) => {
                known.remember(other.public(), pick(NAMES, i), None);
            }
            Store::OtherAtAddress => {
                known.remember(other.public(), "someone else", Some(&dialled));
            }
            Store::Peer { name, verified, at_address } => {
                known.remember(raw_id.public(), pick(NAMES, name), at_address.then_some(dialled.as_str()));
                known.set_verified(raw_id.public(), verified);
                peer_known_before = true;
            }
            Store::Both { other: o, peer, verified } => {
                known.remember(other.public(), pick(NAMES, o), None);
                known.remember(raw_id.public(), pick(NAMES, peer), None);
                known.set_verified(raw_id.public(), verified);
                peer_known_before = true;
            }
        }
        let blocked_until = input.guard.blocked.map(|s| {
            let d = Duration::from_secs(u64::from(s.unsigned_abs()));
            if s >= 0 {
                t0 + d
            } else {
                t0.checked_sub(d).unwrap_or(t0)
            }
        });
        let guard = PairingGuard { wrong_codes: u32::from(input.guard.wrong_codes % 16), blocked_until };
        let (session, raw, first) = if input.server {
            let session = Session::server(ours, config, client_addr(), code.clone(), t0);
            let (raw, first) = Channel::initiator(raw_id);
            (session, raw, first)
        } else {
            let mut session = Session::client(ours, config, server_addr(), code.clone(), t0);
            session.tcp_connected(t0);
            let (raw, first) = Channel::responder(raw_id);
            (session, raw, first)
        };
        let files =
            Files { script: input.files.clone(), next: 0, paused: false, never_pause: false, calls: 0, wrong: None };
        Run {
            debug,
            t0,
            now: t0,
            config,
            server: input.server,
            code,
            session,
            name: pick(HOST_NAMES, input.host_name).to_owned(),
            known,
            guard,
            busy: input.busy,
            files,
            peer_known_before,
            peer_verified_before: matches!(
                input.store,
                Store::Peer { verified: true, .. } | Store::Both { verified: true, .. }
            ),
            raw_key: *raw_id.public(),
            raw_fingerprint: raw_id.fingerprint(),
            other_key: *other.public(),
            raw,
            to_session: first,
            held: false,
            raw_plain: Vec::new(),
            deaf: false,
            tampered_early: false,
            raw_lost: false,
            pairing: None,
            their_pair: None,
            proved: false,
            secured: 0,
            connected: 0,
            ended: 0,
            key_changed: false,
            close_asked: false,
            was_closed: false,
            shut: false,
        }
    }

    fn since_start(&self) -> Duration {
        self.now - self.t0
    }

    // ----- towards the session ----------------------------------------------------

    /// Gives the session up to `n` of the waiting bytes in one `receive`
    /// (none while our writer is full: the reactor does not read then).
    fn deliver(&mut self, n: usize) {
        if self.files.paused || self.to_session.is_empty() || n == 0 {
            return;
        }
        let n = n.min(self.to_session.len());
        let chunk: Vec<u8> = self.to_session.drain(..n).collect();
        if self.debug {
            eprintln!("  session receives {n} bytes");
        }
        let mut host = Host { name: &self.name, known: &self.known, busy: self.busy, guard: &mut self.guard };
        self.session.receive(&chunk, self.now, &mut host, &mut self.files);
    }

    fn deliver_all(&mut self) {
        self.deliver(self.to_session.len());
        self.held = !self.to_session.is_empty();
    }

    fn deliver_in(&mut self, sizes: &[u16]) {
        for &size in sizes {
            self.deliver(usize::from(size));
            self.check("receive");
        }
        self.held = !self.to_session.is_empty();
    }

    fn delivery(&mut self, how: &Delivery) {
        match how {
            Delivery::Now => self.deliver_all(),
            Delivery::Cut(sizes) => self.deliver_in(sizes),
            Delivery::Later => self.held = true,
        }
    }

    /// The raw peer seals plaintext for the session (nothing before its
    /// channel is up).
    fn seal(&mut self, plain: &[u8]) -> bool {
        let mut sealed = Vec::new();
        if self.raw.seal(plain, &mut sealed).is_err() {
            return false;
        }
        self.to_session.extend_from_slice(&sealed);
        true
    }

    fn send(&mut self, plain: &[u8], how: &Delivery) {
        if self.seal(plain) {
            self.delivery(how);
        }
    }

    fn send_frame(&mut self, frame: &Frame) {
        if self.seal(&frame.to_bytes()) {
            self.deliver_all();
        }
    }

    // ----- from the session ----------------------------------------------------

    /// The raw peer reads up to `n` bytes of the session's output.
    /// Returns whether anything moved.
    fn read(&mut self, n: usize) -> bool {
        let out = self.session.output();
        let n = n.min(out.len());
        if n == 0 || self.raw_lost {
            return false;
        }
        if self.shut {
            panic!("the session output {n} more bytes after its write side was shut");
        }
        let chunk = out[..n].to_vec();
        self.session.sent(n);
        let mut reply = Vec::new();
        if let Err(e) = self.raw.receive(&chunk, &mut reply, &mut self.raw_plain) {
            assert!(self.tampered_early, "a record the session sent does not open at the raw peer: {e}");
            if self.debug {
                eprintln!("  the raw peer cannot follow the handshake the session answered: {e}");
            }
            self.raw_lost = true;
            return false;
        }
        if !reply.is_empty() {
            self.to_session.extend_from_slice(&reply);
        }
        let mut used = 0;
        loop {
            match frame::decode(&self.raw_plain[used..]) {
                Ok(Some((frame, len))) => {
                    used += len;
                    self.heard(frame);
                }
                Ok(None) => break,
                Err(e) => panic!("the session sent a frame that does not decode: {e}"),
            }
        }
        self.raw_plain.drain(..used);
        true
    }

    fn heard(&mut self, frame: Frame) {
        if self.debug {
            match &frame {
                Frame::Data { transfer, bytes } => {
                    eprintln!("  raw peer hears DATA {transfer} ({} bytes)", bytes.len())
                }
                other => eprintln!("  raw peer hears {other:?}"),
            }
        }
        if let Frame::Pair(msg) = frame {
            self.their_pair = Some(msg);
        }
    }

    /// Bytes move both ways (as far as the peer reads and nothing is held
    /// back) until neither side has anything more to say.
    fn settle(&mut self) {
        for _ in 0..8 {
            let mut moved = false;
            if !self.deaf {
                moved |= self.read(usize::MAX);
            }
            self.check("read");
            if !self.held && !self.to_session.is_empty() && !self.files.paused {
                self.deliver_all();
                self.check("receive");
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    // ----- the clock ------------------------------------------------------------------

    fn handle_timeout(&mut self) {
        let paused = self.files.paused;
        if self.debug {
            eprintln!("  handle_timeout at {:?} (paused: {paused})", self.since_start());
        }
        self.session.handle_timeout(self.now, paused);
        if let Some(d) = self.session.deadline() {
            assert!(
                d > self.now,
                "after handle_timeout at {:?} the deadline is {:?}, not later",
                self.since_start(),
                d - self.t0
            );
        }
        self.check("handle_timeout");
    }

    fn run_if_due(&mut self) {
        if self.session.deadline().is_some_and(|d| d <= self.now) {
            self.handle_timeout();
        }
    }

    // ----- the properties ---------------------------------------------------------

    fn collect(&mut self) {
        while let Some(event) = self.session.poll_event() {
            if self.debug {
                eprintln!("  event {event:?}");
            }
            match event {
                SessionEvent::Secured { fingerprint } => {
                    assert_eq!(self.secured, 0, "Secured was reported twice");
                    assert_eq!(fingerprint, self.raw_fingerprint, "Secured names another key");
                    self.secured += 1;
                }
                SessionEvent::Connected { peer, .. } => {
                    assert_eq!(self.ended, 0, "Connected after Ended");
                    assert_eq!(self.connected, 0, "Connected was reported twice");
                    assert!(!self.key_changed, "Connected after KeyChanged");
                    assert_eq!(self.secured, 1, "Connected before Secured");
                    assert_eq!(peer.key, self.raw_key, "Connected names another key than the peer's");
                    if self.code.is_some() {
                        assert!(
                            self.proved,
                            "the session asked for a pairing code and reported Connected, but the raw peer never \
                             proved that code"
                        );
                        assert_eq!(peer.trust, Trust::Verified, "a peer that proved the code is verified");
                    } else {
                        // Trust on first use: new, or as the store remembered it.
                        let want = match (self.peer_known_before, self.peer_verified_before) {
                            (false, _) => Trust::New,
                            (true, false) => Trust::Known,
                            (true, true) => Trust::Verified,
                        };
                        assert_eq!(peer.trust, want, "Connected with the wrong trust");
                    }
                    assert!(self.known.contains(&self.raw_key), "a connected peer's key is not remembered");
                    self.connected += 1;
                }
                SessionEvent::Remember { key, name, dialled, verified, .. } => {
                    // What the reactor does with it: the session only reads the store.
                    assert_eq!(self.connected, 0, "Remember after Connected");
                    assert!(!self.key_changed, "Remember after KeyChanged");
                    assert_eq!(key, self.raw_key, "Remember names another key than the peer's");
                    self.known.remember(&key, &name, dialled.as_deref());
                    if verified {
                        assert!(self.proved, "verified without the raw peer proving the code");
                        self.known.set_verified(&key, true);
                    }
                }
                SessionEvent::Message(_) => {
                    assert_eq!(self.connected, 1, "a Message before Connected");
                    assert_eq!(self.ended, 0, "a Message after Ended");
                    assert!(!self.close_asked, "a Message after we asked to close");
                }
                SessionEvent::KeyChanged { key, old_key, .. } => {
                    assert_eq!(self.connected, 0, "KeyChanged after Connected");
                    assert_eq!(self.ended, 0, "KeyChanged after Ended");
                    assert_eq!(key, self.raw_key, "KeyChanged names another key than the peer's");
                    assert_eq!(old_key, self.other_key, "KeyChanged names a key that was never remembered");
                    self.key_changed = true;
                }
                SessionEvent::WrongCode { count, max, .. } => {
                    assert!(self.server && self.code.is_some(), "WrongCode without a code to check");
                    assert_eq!(max, self.config.max_wrong_codes);
                    assert_eq!(count, self.guard.wrong_codes, "WrongCode's count is not the guard's");
                }
                SessionEvent::Ended(_) => {
                    assert_eq!(self.ended, 0, "Ended was reported twice");
                    self.ended += 1;
                }
            }
        }
    }

    /// Every property that holds after any call.
    fn check(&mut self, after: &str) {
        self.collect();
        if let Some(wrong) = self.files.wrong.take() {
            panic!("after {after}: {wrong}");
        }
        if std::mem::take(&mut self.files.calls) > 0 {
            assert_eq!(self.connected, 1, "after {after}: file frames reached FileFrames before Connected");
            assert!(!self.was_closed, "after {after}: file frames reached FileFrames after the session closed");
        }
        let s = &self.session;
        if s.is_closed() {
            assert!(s.output().is_empty(), "after {after}: a closed session still has output");
            assert_eq!(s.pending_output(), 0, "after {after}: a closed session still has output pending");
            assert!(s.deadline().is_none(), "after {after}: a closed session still has a deadline");
            assert_eq!(self.ended, 1, "after {after}: the session closed without reporting Ended");
            self.was_closed = true;
        } else {
            assert!(!self.was_closed, "after {after}: a closed session is no longer closed");
            assert!(s.deadline().is_some(), "after {after}: a session that is not closed has no deadline");
            let most = self.config.max_output_bytes + session::OUTPUT_SLACK + RECORD_HEADER + MAX_RECORD;
            assert!(
                s.pending_output() <= most,
                "after {after}: {} bytes wait to go out (at most {most} before the session ends)",
                s.pending_output()
            );
        }
        if s.is_open() {
            assert!(self.connected == 1 && self.ended == 0, "after {after}: open without Connected, or after Ended");
        }
        if self.key_changed && !self.peer_known_before {
            assert!(!self.known.contains(&self.raw_key), "after {after}: a changed key was remembered");
        }
        if self.session.take_shutdown() {
            assert!(!self.shut, "take_shutdown said true twice");
            assert!(self.session.output().is_empty(), "take_shutdown with output waiting");
            self.shut = true;
        }
    }

    // ----- the operations -----------------------------------------------------

    fn tamper(&mut self) {
        if !self.raw.is_established() {
            self.tampered_early = true;
        }
    }

    fn code_for(&self, choice: &CodeChoice) -> String {
        match choice {
            CodeChoice::Same => self.code.clone().unwrap_or_else(|| CODES[0].to_owned()),
            CodeChoice::Index(i) => pick(CODES, *i).to_owned(),
            CodeChoice::Given(s) => s.clone(),
        }
    }

    fn pair(&mut self, choice: &CodeChoice, right_hash: bool) {
        let Some(hash) = self.raw.peer().map(|p| p.handshake_hash.clone()) else { return };
        let code = self.code_for(choice);
        let same = self.code.as_deref().is_some_and(|c| pairing::normalize(c) == pairing::normalize(&code));
        let hash = if right_hash { hash } else { vec![0x5a; hash.len()] };
        // The raw peer plays the other role.
        let (pairing, msg) = Pairing::start(&code, !self.server, &hash);
        self.pairing = Some(RawPairing { pairing, right: same && right_hash, received: false });
        self.send_frame(&Frame::Pair(msg));
    }

    fn confirm(&mut self) {
        let Some(p) = &mut self.pairing else { return };
        if !p.received {
            let Some(theirs) = &self.their_pair else { return };
            if p.pairing.receive(theirs).is_err() {
                return;
            }
            p.received = true;
        }
        let Some(mac) = p.pairing.confirmation() else { return };
        if p.right {
            self.proved = true;
        }
        self.send_frame(&Frame::Confirm(mac));
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Frame(spec, how) => self.send(&spec.bytes(), how),
            Op::Frames(specs, how) => {
                let plain: Vec<u8> = specs.iter().flat_map(FrameSpec::bytes).collect();
                self.send(&plain, how);
            }
            Op::Hello { pairing, name } => {
                let hello = Frame::Hello {
                    version: frame::VERSION,
                    pairing: pairing.unwrap_or(self.code.is_some()),
                    name: pick(NAMES, *name).to_owned(),
                };
                self.send_frame(&hello);
            }
            Op::Plain(payload, how) => {
                let plain = match payload {
                    Payload::Bytes(b) => b.clone(),
                    Payload::Big(len, seed) => {
                        (0..usize::from(*len) * 4).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
                    }
                };
                self.send(&plain, how);
            }
            Op::Flood(what, count, how) => {
                let count = usize::from(*count).min(MAX_FLOOD);
                let one = match what {
                    Flood::Ping => Frame::Ping(7),
                    Flood::Chat => Frame::Chat("flood".into()),
                    Flood::Pong => Frame::Pong(7),
                    Flood::Window => Frame::Window { transfer: 1, granted: 1 << 20 },
                }
                .to_bytes();
                let plain = one.repeat(count);
                self.send(&plain, how);
            }
            Op::Wire(bytes, how) => {
                self.tamper();
                self.to_session.extend_from_slice(bytes);
                self.delivery(how);
            }
            Op::Receive(sizes) => {
                if sizes.is_empty() {
                    self.deliver_all();
                } else {
                    self.deliver_in(sizes);
                }
            }
            Op::Flip(at, xor) => {
                if !self.to_session.is_empty() {
                    self.tamper();
                    let i = usize::from(*at) % self.to_session.len();
                    self.to_session[i] ^= xor | 1;
                }
            }
            Op::Lose(n) => {
                let n = usize::from(*n).min(self.to_session.len());
                if n > 0 {
                    self.tamper();
                }
                self.to_session.drain(..n);
            }
            Op::Read(n) => {
                self.read(usize::from(*n));
            }
            Op::Deaf(deaf) => self.deaf = *deaf,
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.run_if_due();
            }
            Op::ToDeadline => {
                if let Some(d) = self.session.deadline() {
                    self.now = self.now.max(d);
                    self.handle_timeout();
                }
            }
            Op::Poke => self.handle_timeout(),
            Op::Chat(text) => {
                let text = match text {
                    ChatText::Given(s) => s.clone(),
                    ChatText::Long(n) => "x".repeat(usize::from(*n)),
                };
                // The engine checks the text first (`Engine::send_text`).
                if frame::check_chat(&text).is_err() {
                    return;
                }
                let (open, closing) = (self.session.is_open(), self.session.is_closing());
                let waiting = self.session.pending_output();
                let result = self.session.send_chat(&text, self.now);
                if self.debug {
                    eprintln!("  send_chat: {result:?}");
                }
                match result {
                    Ok(()) => assert!(open, "send_chat was accepted while not open"),
                    Err(ChatRefused::NotOpen) => assert!(!open && !closing, "send_chat said NotOpen"),
                    Err(ChatRefused::Closing) => assert!(closing, "send_chat said Closing while not closing"),
                    Err(ChatRefused::Backlog(_)) => {
                        assert!(open && waiting + text.len() > self.config.max_output_bytes, "a wrong Backlog")
                    }
                }
            }
            Op::Close { reason, said } => {
                self.close_asked = true;
                self.session.close(reason, reason, said, self.now);
            }
            Op::Eof => self.session.eof(),
            Op::IoFailed(kind) => {
                let kind = IO_ERRORS[usize::from(*kind) % IO_ERRORS.len()];
                self.session.io_failed(&io::Error::from(kind));
            }
            Op::Pair { code, right_hash } => self.pair(code, *right_hash),
            Op::Confirm => self.confirm(),
            Op::PairFully(code) => {
                self.pair(code, true);
                self.settle();
                self.confirm();
            }
            Op::Connect { name, code } => {
                let pairing = self.code.is_some();
                self.settle();
                let hello =
                    Frame::Hello { version: frame::VERSION, pairing, name: pick(&NAMES[..4], *name).to_owned() };
                self.send_frame(&hello);
                if pairing {
                    self.settle();
                    self.pair(code, true);
                    self.settle();
                    self.confirm();
                }
            }
            Op::Resume => {
                self.files.paused = false;
                let mut host =
                    Host { name: &self.name, known: &self.known, busy: self.busy, guard: &mut self.guard };
                self.session.resume(self.now, &mut host, &mut self.files);
            }
            Op::Busy(busy) => self.busy = *busy,
            Op::OtherWrongCode => {
                self.guard.wrong_codes = self.guard.wrong_codes.saturating_add(1);
                self.guard.blocked_until = Some(self.now + Duration::from_secs(1));
            }
            Op::Pump { transfer, len, frames } => {
                let len = usize::from(*len).clamp(1, frame::MAX_DATA);
                let bytes: Vec<u8> = (0..len).map(|i| (i as u8) ^ 0xa5).collect();
                let max = self.config.max_output_bytes;
                if let Some(link) = self.session.open_link() {
                    for _ in 0..usize::from(*frames).min(MAX_PUMP) {
                        if link.pending_output() >= max || !link.queue_data(*transfer, &bytes) {
                            break;
                        }
                    }
                }
                self.session.settle_at(self.now);
            }
        }
    }

    /// The peer says nothing more; the session's deadlines are run as
    /// they come due and must end it in time.
    fn silence(&mut self, reads: bool) {
        if self.debug {
            eprintln!("silence from {:?}", self.since_start());
        }
        // Our writer has room again (the reactor resumes when it drains).
        self.files.never_pause = true;
        if self.files.paused {
            self.files.paused = false;
            let mut host = Host { name: &self.name, known: &self.known, busy: self.busy, guard: &mut self.guard };
            self.session.resume(self.now, &mut host, &mut self.files);
            self.check("resume");
        }
        let c = &self.config;
        let bound = c.hello_timeout + c.heartbeat_timeout + c.close_linger + c.frame_timeout;
        let start = self.now;
        for _ in 0..100_000 {
            if self.session.is_closed() {
                break;
            }
            if reads && !self.deaf {
                self.read(usize::MAX);
                self.check("read");
            }
            let due = self.session.deadline().expect("checked: a session that is not closed has a deadline");
            self.now = self.now.max(due);
            self.handle_timeout();
        }
        assert!(self.session.is_closed(), "the session never ended after the peer went silent");
        let took = self.now - start;
        assert!(took <= bound, "the session ended {took:?} after the peer went silent, later than {bound:?}");
    }
}

fn run(input: &Input) {
    let mut run = Run::new(input);
    if run.debug {
        eprintln!("{input:#?}");
    }
    run.check("start");
    for op in input.ops.iter().take(MAX_OPS) {
        if run.debug {
            eprintln!("at {:?}: {op:?}", run.since_start());
        }
        run.op(op);
        run.check("the operation");
        run.settle();
    }
    run.silence(input.reads_in_silence);
}

fuzz_target!(|input: Input| {
    run(&input);
});
