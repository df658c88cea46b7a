//! Protocol 2 frames: how PeerConn messages look on the wire.
//!
//! This module is deliberately pure: [`decode`] is a function from bytes to a
//! frame, with no I/O, no clocks and no state, so it can be property-tested
//! and fuzzed in isolation. The byte layout is specified in
//! `docs/PROTOCOL.md`; keep the two in step.
//!
//! Every frame is `length: u32 BE | type: u8 | payload`, where `length`
//! counts the type byte and the payload. A whole frame is at most
//! [`MAX_FRAME`] bytes, the plaintext capacity of one Noise transport
//! message, so an encryption layer can wrap frames one-to-one later.
//!
//! Decoding is strict and bounded: the length is checked against the cap
//! before anything else, so a peer can never make us allocate more than one
//! frame's worth of memory, and every field is validated (UTF-8, caps,
//! exact payload length) before a [`Frame`] is returned.

use std::fmt;

/// Eight bytes that open every hello: "PEERCONN".
pub const MAGIC: [u8; 8] = *b"PEERCONN";
/// The protocol version this build speaks.
pub const VERSION: u16 = super::secure::VERSION;
/// Largest whole frame (header included): 65 535 − 16, the plaintext that
/// fits in one Noise transport message.
pub const MAX_FRAME: usize = 65_519;
/// Bytes before the payload: the length (4) and the type (1).
pub const HEADER_LEN: usize = 5;
/// Largest payload of any frame.
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER_LEN;
/// Largest display name, in UTF-8 bytes.
pub const MAX_NAME: usize = 64;
/// Largest chat message, in UTF-8 bytes.
pub const MAX_CHAT: usize = 16 * 1024;
/// Largest reason text in a bye, decline or cancel, in UTF-8 bytes.
pub const MAX_REASON: usize = 200;
/// Largest file name in an offer, in UTF-8 bytes.
pub const MAX_FILE_NAME: usize = 255;
/// Largest SPAKE2 message (an Ed25519 point and a side byte: 33).
pub const MAX_PAIR: usize = 64;
/// Largest piece of file data in one frame.
pub const MAX_DATA: usize = MAX_PAYLOAD - 4;
/// File bytes a sender may have sent beyond what the receiver has written
/// to disk. Small enough that a chat message never waits long behind file
/// data in the socket buffers, large enough to fill a LAN.
pub const WINDOW: u64 = 4 * 1024 * 1024;
/// The most a receiver lets its window grow to (WINDOW frames may grant
/// up to what it has written plus this): a long, fast link needs its
/// round trip's worth of data in flight, and what is in flight may have to
/// wait in the receiver's memory for its disk.
pub const MAX_WINDOW: u64 = 16 * 1024 * 1024;
// The PROOF's block rule belongs to the protocol, and the disk side
// hashes by it; it lives there, which imports nothing from the network.
pub use crate::files::resume::{proof_block, proof_blocks, MAX_PROOF_BLOCKS};
// A folder's entries are the disk side's description of a tree.
pub use crate::files::tree::TreeEntry;

mod entries;
pub use entries::entries_frames;
use entries::{decode_entry, encode_entry, entry_len};
/// Most path components in one folder entry.
pub const MAX_DEPTH: usize = 32;

/// Frame type bytes: 0x01..=0x07 for the connection, pairing and chat, 0x10..=0x1A
/// for file transfer.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const CHAT: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const PONG: u8 = 0x04;
    pub const BYE: u8 = 0x05;
    pub const PAIR: u8 = 0x06;
    pub const CONFIRM: u8 = 0x07;
    pub const OFFER: u8 = 0x10;
    pub const ACCEPT: u8 = 0x11;
    pub const DECLINE: u8 = 0x12;
    pub const DATA: u8 = 0x13;
    pub const DONE: u8 = 0x14;
    pub const CANCEL: u8 = 0x15;
    pub const RECEIVED: u8 = 0x16;
    pub const WINDOW: u8 = 0x17;
    pub const RESUME: u8 = 0x18;
    pub const PROOF: u8 = 0x19;
    pub const ACCEPT_FROM: u8 = 0x1A;
    pub const OFFER_FOLDER: u8 = 0x1B;
    pub const ENTRIES: u8 = 0x1C;
    pub const FILE_DONE: u8 = 0x1D;

    pub(super) fn known(t: u8) -> bool {
        matches!(t, HELLO..=CONFIRM | OFFER..=FILE_DONE)
    }
}

/// Why a peer ends a connection with [`Frame::Bye`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByeCode {
    /// The person closed the connection or the program is exiting.
    Normal,
    /// A server peersocket already has a peer.
    Busy,
    /// We received something that breaks the protocol.
    ProtocolError,
    /// The peer's protocol version is not one we speak.
    Unsupported,
    /// We do not accept the peer's key (it changed since we last saw it).
    Untrusted,
    /// The pairing code was missing, wrong, or tried too often.
    Pairing,
    /// The peer went over a limit (messages per second, offers).
    Limit,
    /// The program is closing (not the person): it may come back, and a
    /// peer that reconnects by itself tries again.
    Leaving,
}

impl ByeCode {
    fn to_byte(self) -> u8 {
        match self {
            ByeCode::Normal => 0,
            ByeCode::Busy => 1,
            ByeCode::ProtocolError => 2,
            ByeCode::Unsupported => 3,
            ByeCode::Untrusted => 4,
            ByeCode::Pairing => 5,
            ByeCode::Limit => 6,
            ByeCode::Leaving => 7,
        }
    }
    fn from_byte(b: u8) -> Option<ByeCode> {
        Some(match b {
            0 => ByeCode::Normal,
            1 => ByeCode::Busy,
            2 => ByeCode::ProtocolError,
            3 => ByeCode::Unsupported,
            4 => ByeCode::Untrusted,
            5 => ByeCode::Pairing,
            6 => ByeCode::Limit,
            7 => ByeCode::Leaving,
            _ => return None,
        })
    }
}

/// One decoded protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame in each direction: who we are and what we speak.
    Hello {
        version: u16,
        /// The sender wants a pairing code checked on this connection.
        pairing: bool,
        name: String,
    },
    /// A SPAKE2 message: the pairing code proven without showing it.
    Pair(Vec<u8>),
    /// Key confirmation of the pairing: a MAC only the holder of the
    /// same code, on this very connection, can compute.
    Confirm([u8; 32]),
    /// A chat message, 1..=[`MAX_CHAT`] bytes of UTF-8.
    Chat(String),
    /// Heartbeat; the peer answers with a pong carrying the same nonce.
    Ping(u64),
    Pong(u64),
    /// Graceful close, with a reason a person can read.
    Bye {
        code: ByeCode,
        reason: String,
    },
    /// The sender offers a file. `transfer` is the sender's number for it,
    /// unique on this connection in that direction.
    Offer {
        transfer: u32,
        size: u64,
        name: String,
    },
    /// The receiver accepts an offer: data may flow.
    Accept {
        transfer: u32,
    },
    /// The receiver declines an offer.
    Decline {
        transfer: u32,
        reason: String,
    },
    /// A piece of the file, 1..=[`MAX_DATA`] bytes, in order.
    Data {
        transfer: u32,
        bytes: Vec<u8>,
    },
    /// All data was sent; the BLAKE3 hash of the whole file.
    Done {
        transfer: u32,
        hash: [u8; 32],
    },
    /// Either side stops a transfer. `mine` is true when the transfer is
    /// one the sender of this frame is sending.
    Cancel {
        transfer: u32,
        mine: bool,
        reason: String,
    },
    /// The receiver verified and stored the file.
    Received {
        transfer: u32,
    },
    /// The receiver lets the sender send file data up to byte `granted`
    /// (counted from the start of the file). ACCEPT grants [`WINDOW`].
    Window {
        transfer: u32,
        granted: u64,
    },
    /// Instead of ACCEPT: the receiver holds the first `have` bytes of this
    /// file from an earlier attempt and asks the sender to prove them.
    Resume {
        transfer: u32,
        have: u64,
    },
    /// The sender's answer to RESUME: the BLAKE3 hash of each
    /// [`proof_block`] of the first `have` bytes of its file, or none when
    /// it cannot read them.
    Proof {
        transfer: u32,
        hashes: Vec<[u8; 32]>,
    },
    /// After a PROOF: the receiver verified its first `offset` bytes (at
    /// least one) and accepts the rest.
    AcceptFrom {
        transfer: u32,
        offset: u64,
    },
    /// The sender offers a folder called `name`: `entries` folders and
    /// files (ENTRIES frames follow) whose files hold `size` bytes in all.
    OfferFolder {
        transfer: u32,
        size: u64,
        entries: u32,
        name: String,
    },
    /// Entries of an offered folder, in order: each one's path inside it,
    /// and a file's size.
    Entries {
        transfer: u32,
        entries: Vec<TreeEntry>,
    },
    /// In a folder's data: entry `index` (a file) ended here; its BLAKE3
    /// hash.
    FileDone {
        transfer: u32,
        index: u32,
        hash: [u8; 32],
    },
}

/// Why bytes from a peer are not a valid frame. Every variant reads as a
/// sentence a person can understand in a log or a status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is zero (no type byte).
    Empty,
    /// The length field exceeds [`MAX_FRAME`]; nothing was allocated.
    Oversized(u64),
    UnknownType(u8),
    /// The hello does not start with [`MAGIC`].
    BadMagic,
    /// A text field is not UTF-8.
    BadUtf8(&'static str),
    /// The payload has the wrong size or content for its type.
    Malformed(&'static str, String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => write!(f, "received an empty frame"),
            FrameError::Oversized(n) => {
                write!(f, "received a frame of {n} bytes, over the limit of {MAX_FRAME}")
            }
            FrameError::UnknownType(t) => write!(f, "received an unknown frame type 0x{t:02x}"),
            FrameError::BadMagic => write!(f, "the peer is not speaking the PeerConn protocol"),
            FrameError::BadUtf8(what) => write!(f, "received a {what} that is not valid UTF-8"),
            FrameError::Malformed(what, why) => write!(f, "received a malformed {what}: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a display name: 1..=[`MAX_NAME`] bytes, no control or invisible
/// characters (see [`crate::text`]; text-direction marks are escaped
/// wherever a name is shown), not only white space. Used for our own names
/// and for names in a hello.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("the name is {} bytes long; the limit is {MAX_NAME}", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    if let Some(c) = crate::text::hidden_char(name) {
        return Err(format!("the name contains {}, which would hide what it says", c.escape_unicode()));
    }
    Ok(())
}

/// Checks a chat message: 1..=[`MAX_CHAT`] bytes.
pub fn check_chat(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the message is empty".into());
    }
    if text.len() > MAX_CHAT {
        return Err(format!("the message is {} bytes long; the limit is {MAX_CHAT}", text.len()));
    }
    Ok(())
}

impl Frame {
    /// Appends the encoded frame to `out`.
    ///
    /// Callers validate text with [`check_name`]/[`check_chat`] first; an
    /// over-long field is cut at a character boundary here rather than
    /// producing a frame the peer must reject.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello { version, pairing, name } => {
                out.push(kind::HELLO);
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version.to_be_bytes());
                out.push(u8::from(*pairing));
                let name = clip(name, MAX_NAME);
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
            Frame::Pair(msg) => {
                out.push(kind::PAIR);
                out.extend_from_slice(&msg[..msg.len().min(MAX_PAIR)]);
            }
            Frame::Confirm(mac) => {
                out.push(kind::CONFIRM);
                out.extend_from_slice(mac);
            }
            Frame::Chat(text) => {
                out.push(kind::CHAT);
                out.extend_from_slice(clip(text, MAX_CHAT).as_bytes());
            }
            Frame::Ping(n) => {
                out.push(kind::PING);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Pong(n) => {
                out.push(kind::PONG);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Bye { code, reason } => {
                out.push(kind::BYE);
                out.push(code.to_byte());
                out.extend_from_slice(clip(reason, MAX_REASON).as_bytes());
            }
            Frame::Offer { transfer, size, name } => {
                out.push(kind::OFFER);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(clip(name, MAX_FILE_NAME).as_bytes());
            }
            Frame::Accept { transfer } => {
                out.push(kind::ACCEPT);
                out.extend_from_slice(&transfer.to_be_bytes());
            }
            Frame::Decline { transfer, reason } => {
                out.push(kind::DECLINE);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(clip(reason, MAX_REASON).as_bytes());
            }
            Frame::Data { transfer, bytes } => {
                out.truncate(start);
                encode_data(out, *transfer, &bytes[..bytes.len().min(MAX_DATA)]);
                return;
            }
            Frame::Done { transfer, hash } => {
                out.push(kind::DONE);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(hash);
            }
            Frame::Cancel { transfer, mine, reason } => {
                out.push(kind::CANCEL);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.push(if *mine { 0 } else { 1 });
                out.extend_from_slice(clip(reason, MAX_REASON).as_bytes());
            }
            Frame::Received { transfer } => {
                out.push(kind::RECEIVED);
                out.extend_from_slice(&transfer.to_be_bytes());
            }
            Frame::Window { transfer, granted } => {
                out.push(kind::WINDOW);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&granted.to_be_bytes());
            }
            Frame::Resume { transfer, have } => {
                out.push(kind::RESUME);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&have.to_be_bytes());
            }
            Frame::Proof { transfer, hashes } => {
                out.push(kind::PROOF);
                out.extend_from_slice(&transfer.to_be_bytes());
                for hash in hashes.iter().take(MAX_PROOF_BLOCKS as usize) {
                    out.extend_from_slice(hash);
                }
            }
            Frame::AcceptFrom { transfer, offset } => {
                out.push(kind::ACCEPT_FROM);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Frame::OfferFolder { transfer, size, entries, name } => {
                out.push(kind::OFFER_FOLDER);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&entries.to_be_bytes());
                out.extend_from_slice(clip(name, MAX_FILE_NAME).as_bytes());
            }
            Frame::Entries { transfer, entries } => {
                out.push(kind::ENTRIES);
                out.extend_from_slice(&transfer.to_be_bytes());
                for entry in entries {
                    if out.len() - start + entry_len(entry) > MAX_FRAME {
                        break; // the rest does not fit: see `entries_frames`
                    }
                    encode_entry(out, entry);
                }
            }
            Frame::FileDone { transfer, index, hash } => {
                out.push(kind::FILE_DONE);
                out.extend_from_slice(&transfer.to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(hash);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// One of the frames of a file transfer (OFFER … WINDOW), which only
    /// whoever keeps the transfers handles.
    pub fn is_file_frame(&self) -> bool {
        matches!(
            self,
            Frame::Offer { .. }
                | Frame::Accept { .. }
                | Frame::Decline { .. }
                | Frame::Data { .. }
                | Frame::Done { .. }
                | Frame::Cancel { .. }
                | Frame::Received { .. }
                | Frame::Window { .. }
                | Frame::Resume { .. }
                | Frame::Proof { .. }
                | Frame::AcceptFrom { .. }
                | Frame::OfferFolder { .. }
                | Frame::Entries { .. }
                | Frame::FileDone { .. }
        )
    }

    /// A short name of the frame type for logs ("hello", "chat", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Pair(_) => "pairing message",
            Frame::Confirm(_) => "pairing confirmation",
            Frame::Chat(_) => "chat message",
            Frame::Ping(_) => "ping",
            Frame::Pong(_) => "pong",
            Frame::Bye { .. } => "bye",
            Frame::Offer { .. } => "file offer",
            Frame::Accept { .. } => "file accept",
            Frame::Decline { .. } => "file decline",
            Frame::Data { .. } => "file data",
            Frame::Done { .. } => "file end",
            Frame::Cancel { .. } => "file cancel",
            Frame::Received { .. } => "file receipt",
            Frame::Resume { .. } => "file resume",
            Frame::Proof { .. } => "file proof",
            Frame::AcceptFrom { .. } => "file accept from",
            Frame::OfferFolder { .. } => "folder offer",
            Frame::Entries { .. } => "folder entries",
            Frame::FileDone { .. } => "folder file end",
            Frame::Window { .. } => "file window",
        }
    }
}

/// Appends a DATA frame straight from a slice (no intermediate frame).
/// `bytes` must be 1..=[`MAX_DATA`] long.
pub fn encode_data(out: &mut Vec<u8>, transfer: u32, bytes: &[u8]) {
    out.extend_from_slice(&data_header(transfer, bytes.len()));
    out.extend_from_slice(bytes);
}

/// The bytes that come before `len` bytes of file data in a DATA frame
/// (`len` must be 1..=[`MAX_DATA`]): with the data after them, a frame.
pub fn data_header(transfer: u32, len: usize) -> [u8; DATA_HEADER_LEN] {
    debug_assert!(len > 0 && len <= MAX_DATA);
    let mut header = [0u8; DATA_HEADER_LEN];
    header[..4].copy_from_slice(&((len + 5) as u32).to_be_bytes());
    header[4] = kind::DATA;
    header[5..].copy_from_slice(&transfer.to_be_bytes());
    header
}

/// Length of [`data_header`]'s result.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 4;

/// Fast path for the frame that carries nearly every byte of a transfer:
/// if `buf` starts with a complete, well-formed DATA frame, returns its
/// transfer number, a slice of its data (no copy) and the frame's length.
/// Anything else (a partial frame, another type, a malformed one) gives
/// `None`, and [`decode`] says what it is.
pub fn decode_data(buf: &[u8]) -> Option<(u32, &[u8], usize)> {
    if buf.len() < HEADER_LEN + 5 || buf[4] != kind::DATA {
        return None;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(6..=MAX_FRAME - 4).contains(&len) || buf.len() < 4 + len {
        return None;
    }
    let transfer = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    Some((transfer, &buf[9..4 + len], 4 + len))
}

/// Longest prefix of `s` that is at most `max` bytes and ends on a char
/// boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more and
/// call again), `Ok(Some((frame, used)))` with the number of bytes the frame
/// took, or an error when the bytes can never become a valid frame. An
/// oversized length is reported as soon as the four length bytes are in,
/// before the body arrives.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME - 4 {
        return Err(FrameError::Oversized(len as u64 + 4));
    }
    // The type byte alone lets us refuse unknown types early.
    if buf.len() >= HEADER_LEN && !kind::known(buf[4]) {
        return Err(FrameError::UnknownType(buf[4]));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let payload = &buf[HEADER_LEN..4 + len];
    let frame = match buf[4] {
        kind::HELLO => decode_hello(payload)?,
        kind::CHAT => {
            let text = std::str::from_utf8(payload).map_err(|_| FrameError::BadUtf8("chat message"))?;
            check_chat(text).map_err(|why| FrameError::Malformed("chat message", why))?;
            Frame::Chat(text.to_owned())
        }
        kind::PAIR => {
            if payload.is_empty() || payload.len() > MAX_PAIR {
                return Err(FrameError::Malformed("pairing message", format!("{} bytes", payload.len())));
            }
            Frame::Pair(payload.to_vec())
        }
        kind::CONFIRM => Frame::Confirm(payload.try_into().map_err(|_| {
            FrameError::Malformed("pairing confirmation", format!("{} bytes instead of 32", payload.len()))
        })?),
        kind::PING => Frame::Ping(u64_payload(payload, "ping")?),
        kind::PONG => Frame::Pong(u64_payload(payload, "pong")?),
        kind::BYE => {
            let (&code, reason) =
                payload.split_first().ok_or_else(|| FrameError::Malformed("bye", "it has no reason code".into()))?;
            let code = ByeCode::from_byte(code)
                .ok_or_else(|| FrameError::Malformed("bye", format!("unknown reason code {code}")))?;
            if reason.len() > MAX_REASON {
                return Err(FrameError::Malformed("bye", format!("the reason is over {MAX_REASON} bytes")));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8("bye reason"))?;
            Frame::Bye { code, reason: reason.to_owned() }
        }
        kind::OFFER => {
            let (transfer, rest) = transfer_id(payload, "file offer")?;
            if rest.len() < 8 {
                return Err(FrameError::Malformed("file offer", "it has no size".into()));
            }
            let size = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let name = &rest[8..];
            if name.is_empty() || name.len() > MAX_FILE_NAME {
                return Err(FrameError::Malformed(
                    "file offer",
                    format!("the name is {} bytes; it must be 1 to {MAX_FILE_NAME}", name.len()),
                ));
            }
            let name = std::str::from_utf8(name).map_err(|_| FrameError::BadUtf8("file name"))?;
            Frame::Offer { transfer, size, name: name.to_owned() }
        }
        kind::ACCEPT => Frame::Accept { transfer: only_transfer_id(payload, "file accept")? },
        kind::RECEIVED => Frame::Received { transfer: only_transfer_id(payload, "file receipt")? },
        kind::WINDOW => {
            let (transfer, rest) = transfer_id(payload, "file window")?;
            let granted: [u8; 8] = rest
                .try_into()
                .map_err(|_| FrameError::Malformed("file window", format!("{} bytes instead of 8", rest.len())))?;
            Frame::Window { transfer, granted: u64::from_be_bytes(granted) }
        }
        kind::RESUME => {
            let (transfer, rest) = transfer_id(payload, "file resume")?;
            let have: [u8; 8] = rest
                .try_into()
                .map_err(|_| FrameError::Malformed("file resume", format!("{} bytes instead of 8", rest.len())))?;
            Frame::Resume { transfer, have: u64::from_be_bytes(have) }
        }
        kind::ACCEPT_FROM => {
            let (transfer, rest) = transfer_id(payload, "file accept from")?;
            let offset: [u8; 8] = rest
                .try_into()
                .map_err(|_| FrameError::Malformed("file accept from", format!("{} bytes instead of 8", rest.len())))?;
            Frame::AcceptFrom { transfer, offset: u64::from_be_bytes(offset) }
        }
        kind::OFFER_FOLDER => {
            let (transfer, rest) = transfer_id(payload, "folder offer")?;
            if rest.len() < 12 {
                return Err(FrameError::Malformed("folder offer", "it has no size or entry count".into()));
            }
            let size = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let entries = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
            let name = &rest[12..];
            if name.is_empty() || name.len() > MAX_FILE_NAME {
                let why = format!("the name is {} bytes; it must be 1 to {MAX_FILE_NAME}", name.len());
                return Err(FrameError::Malformed("folder offer", why));
            }
            let name = std::str::from_utf8(name).map_err(|_| FrameError::BadUtf8("folder name"))?;
            Frame::OfferFolder { transfer, size, entries, name: name.to_owned() }
        }
        kind::ENTRIES => {
            let (transfer, mut rest) = transfer_id(payload, "folder entries")?;
            let mut entries = Vec::new();
            while !rest.is_empty() {
                let (entry, after) = decode_entry(rest)?;
                entries.push(entry);
                rest = after;
            }
            if entries.is_empty() {
                return Err(FrameError::Malformed("folder entries", "it holds no entry".into()));
            }
            Frame::Entries { transfer, entries }
        }
        kind::FILE_DONE => {
            let (transfer, rest) = transfer_id(payload, "folder file end")?;
            if rest.len() != 36 {
                let why = format!("{} bytes after the transfer instead of 36", rest.len());
                return Err(FrameError::Malformed("folder file end", why));
            }
            let index = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            Frame::FileDone { transfer, index, hash: rest[4..].try_into().expect("32 bytes") }
        }
        kind::PROOF => {
            let (transfer, rest) = transfer_id(payload, "file proof")?;
            if rest.len() % 32 != 0 || rest.len() as u64 > MAX_PROOF_BLOCKS * 32 {
                let why = format!("{} bytes of hashes: a whole number of 32, at most {MAX_PROOF_BLOCKS}", rest.len());
                return Err(FrameError::Malformed("file proof", why));
            }
            let hashes = rest.chunks_exact(32).map(|h| h.try_into().expect("32 bytes")).collect();
            Frame::Proof { transfer, hashes }
        }
        kind::DECLINE => {
            let (transfer, reason) = transfer_id(payload, "file decline")?;
            Frame::Decline { transfer, reason: reason_text(reason, "file decline")? }
        }
        kind::DATA => {
            let (transfer, bytes) = transfer_id(payload, "file data")?;
            if bytes.is_empty() {
                return Err(FrameError::Malformed("file data", "it carries no data".into()));
            }
            Frame::Data { transfer, bytes: bytes.to_vec() }
        }
        kind::DONE => {
            let (transfer, hash) = transfer_id(payload, "file end")?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| FrameError::Malformed("file end", format!("the hash is {} bytes, not 32", hash.len())))?;
            Frame::Done { transfer, hash }
        }
        kind::CANCEL => {
            let (transfer, rest) = transfer_id(payload, "file cancel")?;
            let (&whose, reason) =
                rest.split_first().ok_or_else(|| FrameError::Malformed("file cancel", "it has no direction".into()))?;
            let mine = match whose {
                0 => true,
                1 => false,
                other => return Err(FrameError::Malformed("file cancel", format!("unknown direction {other}"))),
            };
            Frame::Cancel { transfer, mine, reason: reason_text(reason, "file cancel")? }
        }
        t => return Err(FrameError::UnknownType(t)),
    };
    Ok(Some((frame, 4 + len)))
}

fn transfer_id<'a>(payload: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8]), FrameError> {
    if payload.len() < 4 {
        return Err(FrameError::Malformed(what, "it has no transfer number".into()));
    }
    let (id, rest) = payload.split_at(4);
    Ok((u32::from_be_bytes(id.try_into().expect("4 bytes")), rest))
}

fn only_transfer_id(payload: &[u8], what: &'static str) -> Result<u32, FrameError> {
    match transfer_id(payload, what)? {
        (id, []) => Ok(id),
        (_, rest) => Err(FrameError::Malformed(what, format!("{} bytes too many", rest.len()))),
    }
}

fn reason_text(bytes: &[u8], what: &'static str) -> Result<String, FrameError> {
    if bytes.len() > MAX_REASON {
        return Err(FrameError::Malformed(what, format!("the reason is over {MAX_REASON} bytes")));
    }
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| FrameError::BadUtf8("reason"))
}

fn u64_payload(payload: &[u8], what: &'static str) -> Result<u64, FrameError> {
    let bytes: [u8; 8] =
        payload.try_into().map_err(|_| FrameError::Malformed(what, format!("{} bytes instead of 8", payload.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_hello(p: &[u8]) -> Result<Frame, FrameError> {
    // magic (8) | version (2) | flags (1) | name length (1) | name
    if p.len() < 8 || p[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if p.len() < 12 {
        return Err(FrameError::Malformed("hello", format!("{} bytes is too short", p.len())));
    }
    let version = u16::from_be_bytes([p[8], p[9]]);
    let pairing = match p[10] {
        0 => false,
        1 => true,
        other => return Err(FrameError::Malformed("hello", format!("unknown flags 0x{other:02x}"))),
    };
    let name_len = p[11] as usize;
    let name = &p[12..];
    if name.len() != name_len {
        return Err(FrameError::Malformed(
            "hello",
            format!("the name should be {name_len} bytes but {} follow", name.len()),
        ));
    }
    let name = std::str::from_utf8(name).map_err(|_| FrameError::BadUtf8("name"))?;
    check_name(name).map_err(|why| FrameError::Malformed("hello", why))?;
    Ok(Frame::Hello { version, pairing, name: name.to_owned() })
}

#[cfg(test)]
mod tests;
