//! Every hostile input we could think of, in one table, against one engine.
//!
//! Each row says how the input reaches the engine (a bare TCP socket, a
//! finished handshake, a finished hello, or a fake server the engine dials),
//! what is sent, and what must happen: the connection closed for a reason
//! that says why, a file refused or made safe, a text delivered verbatim
//! (and `printable` escaping it). After every row the folder around the
//! downloads folder holds what it held, the downloads folder holds only the
//! files rows stored on purpose, every reason the engine wrote is free of
//! control and text-direction characters, and a healthy pair on the same
//! engine still chats. One line per row is printed, so a failure reads as
//! "which input, what happened".
//!
//! Connections still in their handshake or hello are not the listener's
//! peer, so the engine reports nothing for them; their reason is only in
//! the log. This module installs a small logger that keeps those lines (if
//! no other logger is installed in the test binary) to check them too.

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peerconn::net::frame::{ByeCode, Frame, MAGIC, VERSION};
use peerconn::net::secure::{Identity, PREAMBLE, RECORD_HEADER};
use peerconn::net::{printable, EngineConfig, Event, ListenOptions, PeerId, PeerState, TransferId};

use crate::support::{fast_config, Node, RawPeer, TempDir, PATIENCE};

// ----- the table ----------------------------------------------------------------

/// How the input reaches the engine.
#[derive(Clone, Debug)]
enum Via {
    /// A plain TCP connection to the listener; no handshake.
    Tcp,
    /// A finished Noise handshake with the listener; no hello yet.
    Handshake,
    /// The same with a key the listener has never seen.
    Stranger,
    /// The handshake and a hello as "mallory".
    Hello,
    /// The handshake and a hello under this name.
    HelloAs(String),
    /// The engine dials a fake server, which sends the input.
    FakeServer,
}

/// One thing the hostile side does.
#[derive(Clone, Debug)]
enum Step {
    /// Bytes on the socket, outside any encryption.
    Wire(Vec<u8>),
    /// One frame, sealed.
    Send(Frame),
    /// Frames, each sealed as its own record, in one write.
    Burst(Vec<Frame>),
    /// Frame bytes as given (malformed ones too), sealed.
    Plain(Vec<u8>),
    /// The frame's record with one bit flipped.
    Flipped(Frame),
    /// The frame's record, sent twice.
    Twice(Frame),
    /// Two frames' records, the second sent first.
    Swapped(Frame, Frame),
    /// The first half of the frame's record.
    HalfRecord(Frame),
    /// Half-close: nothing more will come.
    Shut,
    /// The person is shown the file just offered (offers are measured
    /// against the free space first; one withdrawn before that is never shown).
    Shown,
    /// The person accepts the file just offered.
    Accept,
    /// The hostile side waits for the ACCEPT frame.
    Accepted,
}

/// What must happen.
#[derive(Clone, Debug)]
enum Expect {
    /// A connection still in its handshake or hello is closed for a reason
    /// (in the log, and in the bye when the channel allows one) containing
    /// this; the listener reports nothing, it never was its peer.
    Dropped(&'static str),
    /// The listener's peer is lost, not cleanly, for a reason containing this.
    Lost(&'static str),
    /// The peer left cleanly; the reason contains this.
    LostClean(&'static str),
    /// The engine's client peersocket, dialling the fake server, is lost
    /// for a reason containing this.
    ClientLost(&'static str),
    /// The file is refused or stopped for a reason containing this, and the
    /// peer is told so (DECLINE or CANCEL); the connection stays.
    Stopped(&'static str),
    /// The transfer fails for a reason containing this; the connection stays.
    Failed(&'static str),
    /// The offer arrives under this safe name, and accepted, is stored under it.
    Stored(String),
    /// Offers beyond 64 waiting are declined; the connection stays.
    OffersCapped,
    /// Ignored: the connection stays and the peer can still chat.
    Ignored,
    /// This text arrives verbatim as a message.
    Delivered(String),
    /// The peer connects under this name, verbatim.
    Named(String),
    /// A hello under this name, which the listener knows with another key:
    /// stopped as a key change before it is the listener's peer, and told so.
    Impersonation(&'static str),
}

struct Row {
    group: &'static str,
    input: String,
    via: Via,
    steps: Vec<Step>,
    expect: Expect,
    /// Messages the engine may deliver during the row, each at most once.
    may_deliver: Vec<String>,
}

fn row(group: &'static str, input: impl Into<String>, via: Via, steps: Vec<Step>, expect: Expect) -> Row {
    let may_deliver = match &expect {
        Expect::Delivered(text) => vec![text.clone()],
        Expect::Ignored => vec![STILL_TALKING.to_owned()],
        _ => Vec::new(),
    };
    Row { group, input: input.into(), via, steps, expect, may_deliver }
}

impl Row {
    fn may_deliver(mut self, texts: impl IntoIterator<Item = String>) -> Row {
        self.may_deliver.extend(texts);
        self
    }
}

/// What a raw peer says to show its connection survived an ignored input.
const STILL_TALKING: &str = "still talking";

fn chat(text: &str) -> Frame {
    Frame::Chat(text.into())
}

fn offer(name: &str, size: u64) -> Frame {
    Frame::Offer { transfer: 1, size, name: name.into() }
}

/// OFFER bytes with any name bytes (over-long or not UTF-8).
fn offer_bytes(name: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x10, 0, 0, 0, 1];
    payload.extend_from_slice(&5u64.to_be_bytes());
    payload.extend_from_slice(name);
    framed(payload)
}

/// HELLO bytes with any magic.
fn hello_bytes(magic: &[u8; 8], name: &str) -> Vec<u8> {
    let mut payload = vec![0x01];
    payload.extend_from_slice(magic);
    payload.extend_from_slice(&VERSION.to_be_bytes());
    payload.extend_from_slice(&[0, name.len() as u8]);
    payload.extend_from_slice(name.as_bytes());
    framed(payload)
}

/// A protocol 1 (unencrypted) hello, as an old PeerConn opens with.
fn v1_hello() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 14, 1];
    bytes.extend_from_slice(b"PEERCONN\x00\x01\x02Al");
    bytes
}

fn framed(payload: Vec<u8>) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend(payload);
    bytes
}

/// A record header announcing `len` bytes, and then `len` bytes of junk.
fn junk_record(len: u16) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend(crate::support::noise(len as usize, u64::from(len)));
    bytes
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// One row per line: the table reads as a list.
#[rustfmt::skip]
fn table() -> Vec<Row> {
    use Expect::*;
    use Step::*;
    use Via::*;
    let mut rows = vec![
        // ----- framing -----
        row("framing", "garbage before the preamble", Tcp, vec![Wire(cat(&[b"\x16\x03\x01garbage", &PREAMBLE]))], Dropped("not a PeerConn")),
        row("framing", "garbage before the preamble, from a server", FakeServer, vec![Wire(cat(&[b"\x16\x03\x01garbage", &PREAMBLE]))], ClientLost("not a PeerConn")),
        row("framing", "an HTTP request", Tcp, vec![Wire(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())], Dropped("not a PeerConn")),
        row("framing", "an HTTP response, from a server", FakeServer, vec![Wire(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())], ClientLost("not a PeerConn")),
        row("framing", "an old protocol 1 plaintext hello", Tcp, vec![Wire(v1_hello())], Dropped("unencrypted (protocol 1)")),
        row("framing", "an old protocol 1 plaintext hello, from a server", FakeServer, vec![Wire(v1_hello())], ClientLost("must be updated")),
        row("framing", "a protocol 4 preamble", Tcp, vec![Wire(b"PEERCONN\x00\x04".to_vec())], Dropped("protocol 4")),
        row("framing", "a protocol 4 preamble, from a server", FakeServer, vec![Wire(b"PEERCONN\x00\x04".to_vec())], ClientLost("protocol 4")),
        row("framing", "a protocol 0 preamble", Tcp, vec![Wire(b"PEERCONN\x00\x00".to_vec())], Dropped("protocol 0")),
        row("framing", "a handshake message too short to be one", Tcp, vec![Wire(cat(&[&PREAMBLE, &junk_record(8)]))], Dropped("handshake failed")),
        row("framing", "a junk handshake answer, from a server", FakeServer, vec![Wire(cat(&[&PREAMBLE, &junk_record(48)]))], ClientLost("handshake failed")),
        row("framing", "an empty frame (length 0)", Handshake, vec![Plain(vec![0, 0, 0, 0])], Dropped("empty frame")),
        row("framing", "an oversized frame length before the hello", Handshake, vec![Plain(vec![0xff; 4])], Dropped("over the limit")),
        row("framing", "an oversized frame length after the hello", Hello, vec![Plain(vec![0, 1, 0, 0, 0x02])], Lost("over the limit")),
        row("framing", "a frame length one over the limit", Hello, vec![Plain(vec![0, 0, 0xff, 0xec, 0x02])], Lost("over the limit")),
        row("framing", "a chat one byte over 16 KiB", Hello, vec![Plain(framed(cat(&[&[0x02], &[b'x'; 16 * 1024 + 1]])))], Lost("the limit is 16384")),
        row("framing", "an empty chat", Hello, vec![Plain(vec![0, 0, 0, 1, 0x02])], Lost("the message is empty")),
        row("framing", "a hello name over 64 bytes", Handshake, vec![Plain(hello_bytes(&MAGIC, &"n".repeat(65)))], Dropped("the limit is 64")),
        row("framing", "a hello name of only spaces", Handshake, vec![Plain(hello_bytes(&MAGIC, "   "))], Dropped("the name is empty")),
        row("framing", "a hello with unknown flags", Handshake, vec![Plain(framed(cat(&[&[0x01], &MAGIC, &VERSION.to_be_bytes(), &[0x80, 1, b'x']])))], Dropped("unknown flags")),
        row("framing", "an unknown frame type 0x42", Hello, vec![Plain(vec![0, 0, 0, 3, 0x42, 1, 2])], Lost("unknown frame type 0x42")),
        row("framing", "a reserved frame type 0x1e", Hello, vec![Plain(vec![0, 0, 0, 1, 0x1E])], Lost("unknown frame type 0x1e")),
        row("framing", "a chat before the hello", Handshake, vec![Send(chat("let me in"))], Dropped("chat message before the hello")),
        row("framing", "a file offer before the hello", Handshake, vec![Send(offer("early.txt", 5))], Dropped("file offer before the hello")),
        row("framing", "a hello with the wrong magic", Handshake, vec![Plain(hello_bytes(b"PEERCHAT", "impostor"))], Dropped("not speaking the PeerConn protocol")),
        row("framing", "a hello of protocol 4 inside the channel", Handshake, vec![Send(Frame::Hello { version: 4, pairing: false, name: "future".into() })], Dropped("version 4")),
        row("framing", "a second hello", Hello, vec![Send(Frame::Hello { version: VERSION, pairing: false, name: "again".into() })], Lost("second hello")),
        row("framing", "a pairing message before the hello", Handshake, vec![Send(Frame::Pair(vec![9; 33]))], Dropped("pairing message before the hello")),
        row("framing", "a pairing confirmation before the hello", Handshake, vec![Send(Frame::Confirm([7; 32]))], Dropped("pairing confirmation before the hello")),
        row("framing", "a pairing message after the hello", Hello, vec![Send(Frame::Pair(vec![9; 33]))], Lost("pairing message after pairing")),
        row("framing", "a pairing confirmation after the hello", Hello, vec![Send(Frame::Confirm([7; 32]))], Lost("pairing message after pairing")),
        row("framing", "a chat that is not UTF-8", Hello, vec![Plain(vec![0, 0, 0, 4, 0x02, b'o', 0xff, b'k'])], Lost("not valid UTF-8")),
        row("framing", "a ping of 3 bytes", Hello, vec![Plain(vec![0, 0, 0, 4, 0x03, 1, 2, 3])], Lost("malformed ping")),
        row("framing", "a bye with an unknown code", Hello, vec![Plain(vec![0, 0, 0, 2, 0x05, 99])], Lost("unknown reason code 99")),
        row("framing", "an ACCEPT for a file never offered", Hello, vec![Send(Frame::Accept { transfer: 41 })], Ignored),
        row("framing", "a WINDOW of u64::MAX for a file never sent", Hello, vec![Send(Frame::Window { transfer: 42, granted: u64::MAX })], Ignored),
        row("framing", "a RECEIVED for a file never sent", Hello, vec![Send(Frame::Received { transfer: 43 })], Ignored),
    ];

    // ----- names and paths -----
    for name in [
        "../x",
        "../../../../etc/passwd",
        "/etc/passwd",
        "C:\\x",
        "C:x",
        "\\\\server\\share\\x",
        "sub/dir.txt",
        "..",
        ".",
        "...",
        "   ",
        "a\u{202e}txt.exe",
        "\u{2066}isolated\u{2069}.txt",
        "mark\u{200f}.txt",
        "bell\u{7}.txt",
        "esc\u{1b}[31mred.txt",
        "tab\t.txt",
        "nul\0.txt",
        "new\nline.txt",
        "del\u{7f}.txt",
        "next line\u{85}.txt",
    ] {
        rows.push(row("names", format!("an offer named {name:?}"), Hello, vec![Send(offer(name, 5))], Stopped("unsafe file name")));
    }
    let long_name = format!("{}.txt", "x".repeat(251));
    for (name, safe) in [
        ("CON", "_CON".to_owned()),
        ("nul.txt", "_nul.txt".into()),
        ("COM1.log", "_COM1.log".into()),
        ("LPT9", "_LPT9".into()),
        ("report.", "report".into()),
        ("notes ", "notes".into()),
        ("both. . ", "both".into()),
        ("what?<>|*\".txt", "what______.txt".into()),
        ("stream:hidden.txt", "stream_hidden.txt".into()),
        (".peerconn-0123456789abcdef.part", "_.peerconn-0123456789abcdef.part".into()),
        ("ünïcödé ✓.txt", "ünïcödé ✓.txt".into()),
        ("%2e%2e%2fescape", "%2e%2e%2fescape".into()),
        ("full\u{ff0f}width", "full\u{ff0f}width".into()),
        (long_name.as_str(), format!("{}.txt", "x".repeat(196))),
    ] {
        let what = if name.len() > 60 { format!("an offer named with {} bytes", name.len()) } else { format!("an offer named {name:?}") };
        rows.push(row("names", what, Hello, vec![Send(offer(name, 5))], Stored(safe)));
    }
    rows.extend([
        row("names", "a hello under the healthy peer's name, with a never seen key", Stranger, vec![Send(Frame::Hello { version: VERSION, pairing: false, name: "client".into() })], Impersonation("client")),
        row("names", "an offer with an empty name", Hello, vec![Send(offer("", 5))], Lost("the name is 0 bytes")),
        row("names", "an offer named with 300 bytes", Hello, vec![Plain(offer_bytes(&[b'y'; 300]))], Lost("the name is 300 bytes")),
        row("names", "an offer named with bytes that are not UTF-8", Hello, vec![Plain(offer_bytes(b"caf\xe9.txt"))], Lost("file name that is not valid UTF-8")),
    ]);

    // ----- sizes and disk -----
    let hello_hash = *blake3::hash(b"hello").as_bytes();
    rows.extend([
        row("sizes", "a size larger than the free space (1 EiB)", Hello, vec![Send(offer("huge.bin", 1 << 60))], Stopped("not enough free space")),
        row("sizes", "a size of u64::MAX", Hello, vec![Send(offer("max.bin", u64::MAX))], Stopped("not enough free space")),
        row("sizes", "data past the declared size", Hello, vec![Send(offer("small.bin", 3)), Accept, Accepted, Send(Frame::Data { transfer: 1, bytes: vec![1; 20] })], Lost("more file data than the size it offered")),
        row("sizes", "DONE with a wrong hash", Hello, vec![Send(offer("report.pdf", 5)), Accept, Accepted, Send(Frame::Data { transfer: 1, bytes: b"hello".to_vec() }), Send(Frame::Done { transfer: 1, hash: [7; 32] })], Stopped("damaged")),
        row("sizes", "DONE before all the data", Hello, vec![Send(offer("short.bin", 10)), Accept, Accepted, Send(Frame::Data { transfer: 1, bytes: b"hello".to_vec() }), Send(Frame::Done { transfer: 1, hash: hello_hash })], Lost("after 5 of 10 bytes")),
        row("sizes", "data before the accept", Hello, vec![Send(offer("eager.bin", 5)), Send(Frame::Data { transfer: 1, bytes: b"hello".to_vec() })], Lost("before the file was accepted")),
        row("sizes", "data for a file never offered", Hello, vec![Send(Frame::Data { transfer: 77, bytes: b"surprise".to_vec() })], Lost("never offered")),
        row("sizes", "DONE for a file never offered", Hello, vec![Send(Frame::Done { transfer: 78, hash: hello_hash })], Lost("never offered")),
        row("sizes", "a DATA frame with no data", Hello, vec![Send(offer("empty.bin", 5)), Accept, Accepted, Plain(vec![0, 0, 0, 5, 0x13, 0, 0, 0, 1])], Lost("carries no data")),
        row("sizes", "a CANCEL right after the accept", Hello, vec![Send(offer("late.bin", 5)), Accept, Send(Frame::Cancel { transfer: 1, mine: true, reason: "changed my mind".into() })], Failed("the peer stopped the transfer")),
        row("sizes", "the same transfer number offered twice", Hello, vec![Send(offer("one.bin", 1)), Send(offer("two.bin", 1))], Lost("twice")),
    ]);

    // ----- connection abuse -----
    let spam: Vec<String> = (0..1000).map(|n| format!("spam {n}")).collect();
    let chat_flood = vec![Burst(spam.iter().map(|s| chat(s)).collect())];
    let offer_flood = (0..100u32).map(|n| Send(Frame::Offer { transfer: n, size: 1, name: format!("f{n}") })).collect();
    let half_frame = chat("this frame stops halfway").to_bytes();
    rows.extend([
        row("abuse", "a chat flood over the rate limit", Hello, chat_flood, Lost("more than 1000 chat messages a second")).may_deliver(spam),
        row("abuse", "an offer flood", Hello, offer_flood, OffersCapped),
        row("abuse", "half a record, then silence", Hello, vec![HalfRecord(chat("never finished"))], Lost("left a message unfinished")),
        row("abuse", "half a frame, then silence", Hello, vec![Plain(half_frame[..half_frame.len() / 2].to_vec())], Lost("left a message unfinished")),
        row("abuse", "half a record, then close", Hello, vec![HalfRecord(chat("cut off")), Shut], Lost("middle of a message")),
        row("abuse", "a connection that sends nothing", Tcp, vec![], Dropped("did not complete the encrypted handshake")),
        row("abuse", "a preamble, then no handshake", Tcp, vec![Wire(PREAMBLE.to_vec())], Dropped("did not complete the encrypted handshake")),
        row("abuse", "half a preamble, then silence", Tcp, vec![Wire(b"PEER".to_vec())], Dropped("left a message unfinished")),
        row("abuse", "half a preamble, then close", Tcp, vec![Wire(b"PEER".to_vec()), Shut], Dropped("middle of a message")),
        row("abuse", "a handshake, then no hello", Handshake, vec![], Dropped("did not complete the hello")),
    ]);

    // ----- crypto -----
    rows.extend([
        row("crypto", "a record that fails authentication", Hello, vec![Flipped(chat("tampered"))], Lost("integrity")),
        row("crypto", "a replayed record", Hello, vec![Twice(chat("only once"))], Lost("integrity")).may_deliver(["only once".to_owned()]),
        row("crypto", "two records swapped", Hello, vec![Swapped(chat("first"), chat("second"))], Lost("integrity")),
        row("crypto", "a record shorter than the tag", Hello, vec![Wire(vec![0, 5, 1, 2, 3, 4, 5])], Lost("integrity")),
        row("crypto", "an empty record", Hello, vec![Wire(vec![0, 0])], Lost("integrity")),
        row("crypto", "a largest record of junk", Hello, vec![Wire(junk_record(u16::MAX))], Lost("integrity")),
    ]);

    // ----- display -----
    let ansi = "\u{1b}[2J\u{1b}[31mred alert\u{1b}]0;pwned\u{7}";
    rows.extend([
        row("display", "a hello name with an ANSI escape", Handshake, vec![Send(Frame::Hello { version: VERSION, pairing: false, name: "\u{1b}[31mred".into() })], Dropped("control characters")),
        row("display", "a hello name with a bidi override", HelloAs("evil\u{202e}gnp.exe".into()), vec![], Named("evil\u{202e}gnp.exe".into())),
        row("display", "a hello name with bidi isolates", HelloAs("\u{2067}admin\u{2069}".into()), vec![], Named("\u{2067}admin\u{2069}".into())),
        row("display", "a chat with ANSI escapes", Hello, vec![Send(chat(ansi))], Delivered(ansi.into())),
        row("display", "a chat with a bidi override", Hello, vec![Send(chat("invoice\u{202e}fdp.exe"))], Delivered("invoice\u{202e}fdp.exe".into())),
        row("display", "a chat with CR, NUL and backspaces", Hello, vec![Send(chat("fine\rFAKE\0\u{8}\u{8}"))], Delivered("fine\rFAKE\0\u{8}\u{8}".into())),
        row("display", "a bye whose reason has ANSI and bidi", Hello, vec![Send(Frame::Bye { code: ByeCode::Normal, reason: format!("{ansi}gone\u{202e}") })], LostClean("the peer closed the connection")),
        row("display", "a file cancel whose reason has ANSI and bidi", Hello, vec![Send(offer("x.txt", 5)), Shown, Send(Frame::Cancel { transfer: 1, mine: true, reason: format!("{ansi}\u{202e}") })], Failed("the peer stopped the transfer")),
    ]);
    rows
}

// ----- the bench the rows run on ---------------------------------------------

/// Engine `a` (the victim) with a listener that takes one hostile peer after
/// another, and a healthy pair with engine `b` that must never notice.
struct Bench {
    a: Node,
    b: Node,
    /// The healthy pair: `s` on `a`, `c` on `b`.
    s: PeerId,
    c: PeerId,
    target: PeerId,
    addr: SocketAddr,
    /// One key for every raw peer, so the listener knows it by now.
    mallory: Identity,
    /// Holds `downloads` and a file nothing may touch.
    parent: TempDir,
    /// What the downloads folder should hold: files stored on purpose.
    stored: BTreeSet<String>,
    /// Every event `a` reported during the current row, and which of them
    /// a check has already taken.
    seen: Vec<Event>,
    taken: Vec<bool>,
    log_captured: bool,
}

/// How the hostile side is connected during a row.
enum Link {
    Tcp(TcpStream),
    Raw(Box<RawPeer>),
    /// The engine's client peersocket, dialling a fake server.
    Probe {
        id: PeerId,
        server: JoinHandle<()>,
    },
}

impl Bench {
    fn new() -> Bench {
        let parent = TempDir::new("table");
        fs::create_dir_all(parent.path().join("downloads")).unwrap();
        fs::write(parent.path().join("precious.txt"), b"do not touch").unwrap();
        let config = EngineConfig {
            downloads: parent.path().join("downloads"),
            hello_timeout: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            frame_timeout: Duration::from_millis(600),
            chat_burst: 50,
            chat_per_sec: 1000,
            ..fast_config()
        };
        let mut a = Node::with_config(config);
        let mut b = Node::new();
        let (s, c) = crate::support::pair(&mut a, &mut b);
        let options = ListenOptions { keep_listening: true, ..Default::default() };
        let (target, addr) = a.listen_on("target", "127.0.0.1:0".parse().unwrap(), options);
        a.take_events();
        let log_captured = captured_log::install();
        if !log_captured {
            eprintln!("another logger is installed: reasons of dropped connections are not checked");
        }
        Bench {
            a,
            b,
            s,
            c,
            target,
            addr,
            mallory: Identity::generate(),
            parent,
            stored: BTreeSet::new(),
            seen: Vec::new(),
            taken: Vec::new(),
            log_captured,
        }
    }

    fn downloads(&self) -> PathBuf {
        self.parent.path().join("downloads")
    }

    /// The first event of this row no check has taken that `pick` accepts.
    fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        for (event, taken) in self.seen.iter().zip(self.taken.iter_mut()) {
            if let Some(t) = pick(event).filter(|_| !*taken) {
                *taken = true;
                return t;
            }
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(event) = self.a.engine.events().recv_timeout(left) else {
                panic!("waited {PATIENCE:?} for {what}; this row's events: {:#?}", self.seen)
            };
            let got = pick(&event);
            self.taken.push(got.is_some());
            self.seen.push(event);
            if let Some(t) = got {
                return t;
            }
        }
    }

    fn target_lost(&mut self) -> (String, bool) {
        let target = self.target;
        self.until("the listener's peer lost", |e| match e {
            Event::State { id, state: PeerState::Lost { reason, clean, .. } } if *id == target => {
                Some((reason.clone(), *clean))
            }
            _ => None,
        })
    }

    fn file_failed(&mut self) -> String {
        let target = self.target;
        self.until("a failed file", |e| match e {
            Event::FileFailed { id, reason, .. } if *id == target => Some(reason.clone()),
            _ => None,
        })
    }

    fn file_offered(&mut self) -> (TransferId, String) {
        let target = self.target;
        self.until("a file offer", |e| match e {
            Event::FileIncoming { id, transfer, name, .. } if *id == target => Some((*transfer, name.clone())),
            _ => None,
        })
    }

    fn message(&mut self, on: PeerId) -> String {
        self.until("a message", |e| match e {
            Event::Message { id, text } if *id == on => Some(text.clone()),
            _ => None,
        })
    }

    /// Runs one row and every check that follows it; returns what happened.
    fn play(&mut self, row: &Row) -> String {
        self.seen.clear();
        self.taken.clear();
        let parent_before = listing(self.parent.path());
        let mut link = self.connect(row);
        for step in &row.steps {
            self.step(&mut link, step);
        }
        let outcome = self.expect(row, link);
        self.after(row, &parent_before);
        outcome
    }

    fn connect(&mut self, row: &Row) -> Link {
        match &row.via {
            Via::Tcp => Link::Tcp(RawPeer::tcp(self.addr)),
            Via::Handshake => Link::Raw(Box::new(RawPeer::connect_as(self.addr, self.mallory.clone()))),
            Via::Stranger => Link::Raw(Box::new(RawPeer::connect(self.addr))),
            Via::Hello => Link::Raw(Box::new(self.hello("mallory"))),
            Via::HelloAs(name) => Link::Raw(Box::new(self.hello(name))),
            Via::FakeServer => {
                let bytes: Vec<u8> = row
                    .steps
                    .iter()
                    .flat_map(|s| match s {
                        Step::Wire(bytes) => bytes.clone(),
                        other => panic!("a fake server only sends bytes, not {other:?}"),
                    })
                    .collect();
                let (addr, server) = fake_server(bytes);
                let id = self.a.engine.connect("prober", addr).unwrap();
                Link::Probe { id, server }
            }
        }
    }

    /// A raw peer that completed its hello as `name` with the listener.
    fn hello(&mut self, name: &str) -> RawPeer {
        let mut raw = RawPeer::connect_as(self.addr, self.mallory.clone());
        raw.send(&Frame::Hello { version: VERSION, pairing: false, name: name.into() });
        match raw.recv() {
            Some(Frame::Hello { name, .. }) => assert_eq!(name, "target"),
            other => panic!("expected the listener's hello, got {other:?}"),
        }
        let target = self.target;
        let seen_as = self.until("the hostile peer connected", |e| match e {
            Event::State { id, state: PeerState::Connected { peer_name, .. } } if *id == target => {
                Some(peer_name.clone())
            }
            _ => None,
        });
        assert_eq!(seen_as, name, "the listener shows the peer's name verbatim");
        raw
    }

    fn step(&mut self, link: &mut Link, step: &Step) {
        let raw = match link {
            Link::Probe { .. } => return, // the fake server already has its bytes
            Link::Tcp(stream) => {
                match step {
                    Step::Wire(bytes) => stream.write_all(bytes).unwrap(),
                    Step::Shut => stream.shutdown(Shutdown::Write).unwrap(),
                    other => panic!("a bare TCP connection cannot send {other:?}"),
                }
                return;
            }
            Link::Raw(raw) => raw,
        };
        let record = |raw: &mut RawPeer, frame: &Frame| {
            let mut wire = Vec::new();
            raw.link.seal(&frame.to_bytes(), &mut wire).unwrap();
            wire
        };
        match step {
            Step::Wire(bytes) => raw.send_wire(bytes),
            Step::Send(frame) => raw.send(frame),
            Step::Burst(frames) => {
                let wire: Vec<u8> = frames.iter().flat_map(|f| record(raw, f)).collect();
                raw.send_wire(&wire);
            }
            Step::Plain(bytes) => raw.send_bytes(bytes),
            Step::Flipped(frame) => {
                let mut wire = record(raw, frame);
                let middle = RECORD_HEADER + (wire.len() - RECORD_HEADER) / 2;
                wire[middle] ^= 0x20;
                raw.send_wire(&wire);
            }
            Step::Twice(frame) => {
                let wire = record(raw, frame);
                raw.send_wire(&wire);
                raw.send_wire(&wire);
            }
            Step::Swapped(first, second) => {
                let (one, two) = (record(raw, first), record(raw, second));
                raw.send_wire(&two);
                raw.send_wire(&one);
            }
            Step::HalfRecord(frame) => {
                let wire = record(raw, frame);
                raw.send_wire(&wire[..wire.len() / 2]);
            }
            Step::Shut => raw.stream.shutdown(Shutdown::Write).unwrap(),
            Step::Shown => {
                self.file_offered();
            }
            Step::Accept => {
                let (transfer, _) = self.file_offered();
                self.a.engine.accept_file(transfer);
            }
            Step::Accepted => match raw.recv() {
                Some(Frame::Accept { .. }) => {}
                other => panic!("expected the engine's accept, got {other:?}"),
            },
        }
    }

    /// Checks what must happen; leaves no hostile connection open.
    fn expect(&mut self, row: &Row, link: Link) -> String {
        match (&row.expect, link) {
            (Expect::Dropped(why), link) => self.dropped(why, link),
            (Expect::ClientLost(why), Link::Probe { id, server }) => {
                let (reason, clean) = self.until("the probe lost", |e| match e {
                    Event::State { id: i, state: PeerState::Lost { reason, clean, .. } } if *i == id => {
                        Some((reason.clone(), *clean))
                    }
                    Event::State { id: i, state: PeerState::Connected { .. } } if *i == id => {
                        panic!("the engine connected to a fake server")
                    }
                    _ => None,
                });
                assert!(!clean && reason.contains(why), "expected {why:?} in the reason {reason:?}");
                self.a.engine.remove(id);
                server.join().unwrap();
                format!("client lost: {reason}")
            }
            (Expect::Lost(why), Link::Raw(mut raw)) => {
                let (reason, clean) = self.target_lost();
                assert!(!clean && reason.contains(why), "expected {why:?} in the reason {reason:?} (clean: {clean})");
                raw.until_closed();
                format!("lost: {reason}")
            }
            (Expect::LostClean(why), Link::Raw(mut raw)) => {
                let (reason, clean) = self.target_lost();
                assert!(clean && reason.contains(why), "expected a clean end with {why:?}, got {reason:?}");
                raw.until_closed();
                format!("left: {reason}")
            }
            (Expect::Stopped(why), Link::Raw(mut raw)) => {
                let reason = self.file_failed();
                assert!(reason.contains(why), "expected {why:?} in the reason {reason:?}");
                match raw.recv() {
                    Some(Frame::Decline { reason: told, .. } | Frame::Cancel { reason: told, mine: false, .. }) => {
                        assert!(told.contains(why), "the peer was told {told:?}, expected {why:?}")
                    }
                    other => panic!("expected the peer to be told (decline or cancel), got {other:?}"),
                }
                self.leave(raw);
                format!("refused: {reason}")
            }
            (Expect::Failed(why), Link::Raw(raw)) => {
                let reason = self.file_failed();
                assert!(reason.contains(why), "expected {why:?} in the reason {reason:?}");
                self.leave(raw);
                format!("failed: {reason}")
            }
            (Expect::Stored(safe), Link::Raw(raw)) => self.stored(safe, raw),
            (Expect::OffersCapped, Link::Raw(raw)) => {
                let (mut offered, mut declined) = (0, 0);
                let target = self.target;
                while offered + declined < 100 {
                    let refusal = self.until("an offer or a refusal", |e| match e {
                        Event::FileIncoming { id, .. } if *id == target => Some(None),
                        Event::FileFailed { id, reason, .. } if *id == target => Some(Some(reason.clone())),
                        _ => None,
                    });
                    match refusal {
                        None => offered += 1,
                        Some(reason) => {
                            assert!(reason.contains("already waiting or under way"), "{reason}");
                            declined += 1;
                        }
                    }
                }
                assert_eq!((offered, declined), (64, 36));
                self.leave(raw);
                format!("{offered} offers wait, {declined} declined")
            }
            (Expect::Ignored, Link::Raw(mut raw)) => {
                raw.send(&chat(STILL_TALKING));
                assert_eq!(self.message(self.target), STILL_TALKING);
                self.leave(raw);
                "ignored; the peer still talks".into()
            }
            (Expect::Delivered(text), Link::Raw(raw)) => {
                assert_eq!(&self.message(self.target), text, "delivered verbatim");
                let shown = printable(text);
                assert!(!shown.contains(['\u{1b}', '\u{202e}']), "printable left {shown:?}");
                assert!(!shown.chars().any(char::is_control), "printable left {shown:?}");
                self.leave(raw);
                format!("delivered verbatim, printed as {shown}")
            }
            (Expect::Named(name), Link::Raw(raw)) => {
                // `hello` checked the Connected state carries the name verbatim.
                let shown = printable(name);
                assert!(!shown.contains(['\u{202e}', '\u{2067}', '\u{2069}']), "printable left {shown:?}");
                self.leave(raw);
                format!("connected as the name verbatim, printed as {shown}")
            }
            (Expect::Impersonation(name), Link::Raw(mut raw)) => {
                let target = self.target;
                let (old, new) = self.until("a key change", |e| match e {
                    Event::KeyChanged { id, peer_name, old_fingerprint, new_fingerprint, .. }
                        if *id == target && peer_name == name =>
                    {
                        Some((old_fingerprint.clone(), new_fingerprint.clone()))
                    }
                    _ => None,
                });
                assert_eq!(
                    (old.as_str(), new.as_str()),
                    (self.b.engine.fingerprint(), raw.identity.fingerprint().as_str())
                );
                match raw.until_closed() {
                    Some(Frame::Bye { code: ByeCode::Untrusted, .. }) => {}
                    other => panic!("expected an untrusted bye, got {other:?}"),
                }
                format!("stopped as a key change from {old} to {new}, told it is not trusted")
            }
            (expect, _) => panic!("{expect:?} does not go with {:?}", row.via),
        }
    }

    /// A connection still in its handshake or hello was closed, for `why`.
    fn dropped(&mut self, why: &str, link: Link) -> String {
        let (local, said) = match link {
            Link::Tcp(mut stream) => {
                let local = stream.local_addr().unwrap();
                assert_closed_by_engine(&mut stream);
                (local, None)
            }
            Link::Raw(mut raw) => {
                let local = raw.stream.local_addr().unwrap();
                let bye = raw.until_closed();
                (local, bye)
            }
            Link::Probe { .. } => panic!("a probe is not dropped by the listener"),
        };
        let mut outcome = "dropped".to_owned();
        if let Some(bye) = said {
            let Frame::Bye { reason, .. } = &bye else { unreachable!() };
            assert!(reason.contains(why), "expected {why:?} in the bye {bye:?}");
            outcome = format!("dropped, told {reason:?}");
        }
        if self.log_captured {
            let line = captured_log::about(local, Duration::from_secs(2))
                .unwrap_or_else(|| panic!("no log line says why the connection from {local} was dropped"));
            assert!(line.contains(why), "expected {why:?} in the log line {line:?}");
            outcome = format!("{outcome}; log: {}", line.split_once(": ").map_or(line.as_str(), |(_, r)| r));
        }
        outcome
    }

    /// The offer arrives under the safe name; accepted, it is stored under it.
    fn stored(&mut self, safe: &str, mut raw: Box<RawPeer>) -> String {
        let (transfer, name) = self.file_offered();
        assert_eq!(name, safe, "the name offered to the person");
        self.a.engine.accept_file(transfer);
        assert!(matches!(raw.recv(), Some(Frame::Accept { transfer: 1 })));
        raw.send(&Frame::Data { transfer: 1, bytes: b"hello".to_vec() });
        raw.send(&Frame::Done { transfer: 1, hash: *blake3::hash(b"hello").as_bytes() });
        assert_eq!(raw.recv(), Some(Frame::Received { transfer: 1 }));
        let target = self.target;
        let path = self.until("the file stored", |e| match e {
            Event::FileReceived { id, path, .. } if *id == target => Some(path.clone()),
            _ => None,
        });
        assert_eq!(path, self.downloads().join(safe), "where the file went");
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        self.stored.insert(safe.to_owned());
        self.leave(raw);
        format!("stored as {safe:?}")
    }

    /// The hostile peer says bye and goes; the listener lets it go cleanly.
    fn leave(&mut self, mut raw: Box<RawPeer>) {
        raw.send(&Frame::Bye { code: ByeCode::Normal, reason: String::new() });
        let (reason, clean) = self.target_lost();
        assert!(clean, "the peer's bye should end it cleanly: {reason}");
        raw.until_closed();
    }

    /// The checks after every row.
    fn after(&mut self, row: &Row, parent_before: &[String]) {
        // The healthy pair still chats both ways.
        let (s, c) = (self.s, self.c);
        let there = format!("a to b after {:?}", row.input);
        self.a.engine.send_text(s, &there).unwrap();
        assert_eq!(self.b.message(c), there, "the healthy pair stopped chatting");
        let back = format!("b to a after {:?}", row.input);
        self.b.engine.send_text(c, &back).unwrap();
        assert_eq!(self.message(s), back, "the healthy pair stopped chatting");
        for event in self.b.take_events() {
            if let Event::State { id, state: state @ PeerState::Lost { .. } } = &event {
                assert_ne!(*id, c, "the healthy client was lost: {state:?}");
            }
        }

        self.seen.extend(self.a.engine.events().try_iter());
        let mut delivered: Vec<&str> = Vec::new();
        for event in &self.seen {
            // Whatever the engine says in its own words carries none of the
            // peer's control or text-direction characters.
            let own_words: Vec<&str> = match event {
                Event::State { state: PeerState::Lost { reason, .. }, .. } | Event::Error { reason, .. } => {
                    vec![reason.as_str()]
                }
                Event::FileFailed { name, reason, .. } => vec![name.as_str(), reason.as_str()],
                Event::FileIncoming { name, .. } | Event::FileReceived { name, .. } => vec![name.as_str()],
                _ => vec![],
            };
            for text in own_words {
                assert_eq!(printable(text), text, "unescaped text in {event:?}");
            }
            match event {
                Event::Message { id, text } if *id == self.target => delivered.push(text),
                Event::State { id, state: state @ (PeerState::Lost { .. } | PeerState::Connected { .. }) }
                    if *id == self.target && matches!(row.expect, Expect::Dropped(_) | Expect::Impersonation(_)) =>
                {
                    panic!("the listener reported {state:?} for a connection that never was its peer")
                }
                Event::State { id, state: state @ PeerState::Lost { .. } } if *id == s => {
                    panic!("the healthy server was lost: {state:?}")
                }
                Event::Error { id, reason } if *id == s || *id == self.target => panic!("error on {id}: {reason}"),
                _ => {}
            }
        }
        for (i, text) in delivered.iter().enumerate() {
            assert!(row.may_deliver.iter().any(|m| m == text), "delivered {text:?}, which it must not");
            assert!(!delivered[..i].contains(text), "delivered {text:?} twice");
        }
        if let Expect::Lost(why) = row.expect {
            if why.contains("chat messages a second") {
                assert!(delivered.len() <= 100, "{} messages got through the flood limit", delivered.len());
            }
        }

        // Nothing changed next to the downloads folder, and in it only what
        // a row stored on purpose (temporary files go once their writer ends).
        assert_eq!(listing(self.parent.path()), parent_before, "the downloads folder's parent changed");
        assert_eq!(fs::read(self.parent.path().join("precious.txt")).unwrap(), b"do not touch");
        let want: Vec<String> = self.stored.iter().cloned().collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while listing(&self.downloads()) != want {
            assert!(
                Instant::now() < deadline,
                "the downloads folder holds {:?}, expected {want:?}",
                listing(&self.downloads())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A server that sends `bytes` to the first connection and then listens
/// until the other side closes.
fn fake_server(bytes: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.write_all(&bytes);
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    (addr, server)
}

/// The engine closed `stream`, having sent nothing but its preamble.
fn assert_closed_by_engine(stream: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => break,
            Err(e) => panic!("the engine left the connection open ({e})"),
        }
    }
    assert!(PREAMBLE.starts_with(&got), "the engine sent more than its preamble: {got:?}");
}

/// Keeps the log lines about dropped connections, the only place their
/// reason is written.
mod captured_log {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static CAPTURE: Capture = Capture;

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Info
        }
        fn log(&self, record: &log::Record) {
            if !self.enabled(record.metadata()) {
                return;
            }
            let line = record.args().to_string();
            if line.contains("dropped the connection from") {
                let mut lines = LINES.lock().unwrap();
                if lines.len() < 100_000 {
                    lines.push(line);
                }
            }
        }
        fn flush(&self) {}
    }

    /// True if the capture is installed (no other logger was).
    pub fn install() -> bool {
        static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *INSTALLED.get_or_init(|| {
            let ok = log::set_logger(&CAPTURE).is_ok();
            if ok {
                log::set_max_level(log::LevelFilter::Info);
            }
            ok
        })
    }

    /// The newest line about the connection from `remote`, waiting up to `within`.
    pub fn about(remote: SocketAddr, within: Duration) -> Option<String> {
        let needle = format!("dropped the connection from {remote}: ");
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = LINES.lock().unwrap().iter().rev().find(|l| l.contains(&needle)) {
                return Some(line.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn every_hostile_input_in_the_table_is_refused_or_made_harmless() {
    let started = Instant::now();
    let mut bench = Bench::new();
    let rows = table();
    for (n, row) in rows.iter().enumerate() {
        let took = Instant::now();
        eprintln!("[{}] {} ...", row.group, row.input);
        let outcome = bench.play(row);
        eprintln!(
            "[{}] {}: {outcome} ({} ms, row {}/{})",
            row.group,
            row.input,
            took.elapsed().as_millis(),
            n + 1,
            rows.len()
        );
    }
    // The listener still takes a real peer after all that.
    let real = bench.b.engine.connect("real", bench.addr).unwrap();
    assert_eq!(bench.b.connected(real).0, "target");
    bench.b.engine.send_text(real, "the end").unwrap();
    let target = bench.target;
    assert_eq!(bench.message(target), "the end");
    eprintln!("{} rows in {:?}", rows.len(), started.elapsed());
}
