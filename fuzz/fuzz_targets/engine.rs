//! `engine`: the whole engine (reactor, peersockets, sessions, transfers
//! and the disk), over real loopback TCP with its threads and real time,
//! against a peer that completes the encrypted handshake and then says
//! anything at all. (Until 2026-12-04 this target was called `session`;
//! that name is now the in-memory target that drives `net::session::Session`
//! alone on a virtual clock, several times as many inputs a second.)
//!
//! One engine is started per fuzz process (in a `OnceLock`) with short
//! timers and its downloads in a temporary folder. It listens twice (a
//! plain listener and one that asks for a pairing code, both going back to
//! listening after each peer). Each input is one connection:
//!
//! 1. either we connect to one of the listeners, or we ask the engine to
//!    connect to us (with or without a pairing code) and accept it;
//! 2. a real Noise handshake, with a fixed key of ours or a fresh one;
//! 3. a sequence of actions built from the input with `arbitrary`: every
//!    frame type with arbitrary fields (hello, pairing, chat, ping, bye,
//!    offer, accept, decline, data, done, cancel, received, window), frames
//!    with a raw type and payload, raw plaintext, raw bytes outside the
//!    encryption, the real pairing protocol with the right code, waiting
//!    for the engine's answers, and commands to the engine (send a chat
//!    message or a file, cancel a transfer, disconnect);
//! 4. we close our side and the engine must close its side within 5 s.
//!
//! Offers reach a thread that drains the engine's events and accepts,
//! declines or ignores them (the input chooses), and deletes files that
//! were received.
//!
//! Aborts (a crash for libFuzzer) when: any engine thread panics (libFuzzer
//! turns every panic into an abort); the engine stops answering handshakes
//! or stops closing connections; the engine sends a record that does not
//! decrypt or a frame that does not decode; its event channel closes (the
//! reactor thread ended); every 16 inputs, a well-behaved peer can no longer
//! connect, exchange hellos and get a pong; or anything appears beside the
//! downloads folder, or a file is stored anywhere else than directly in it.

#![no_main]

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use peerconn::net::frame::{self, ByeCode, Frame};
use peerconn::net::pairing::Pairing;
use peerconn::net::secure::{Channel, Identity};
use peerconn::net::{Engine, EngineConfig, Event, ListenOptions, PeerId, PeerState, TransferId};

/// The pairing code of the second listener (and of the engine's
/// connections that use one).
const CODE: &str = "2468-1357";
/// How long we wait for what must happen (a handshake, a close).
const MUST: Duration = Duration::from_secs(5);
/// How long one "wait for an answer" action waits at most.
const ANSWER: Duration = Duration::from_millis(150);
/// Total waiting for answers in one input, so slow inputs stay rare.
const WAIT_BUDGET: Duration = Duration::from_millis(600);
/// A full check that a well-behaved peer still gets through, every so many inputs.
const PROBE_EVERY: u64 = 16;
const MAX_ACTIONS: usize = 48;
/// File data we send in one input, at most.
const MAX_DATA: usize = 256 * 1024;

// ----- the input ----------------------------------------------------------------

#[derive(Arbitrary, Debug)]
struct Input {
    side: Side,
    /// A key never seen before instead of our usual one (a "key change"
    /// when it comes with a name or address the engine remembers).
    fresh_key: bool,
    /// What the engine's owner does with offers: 0-1 accept, 2 decline, 3 ignore.
    policy: u8,
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
enum Side {
    /// We connect to the engine's plain listener.
    Plain,
    /// We connect to the engine's listener that asks for a pairing code.
    Paired,
    /// The engine connects to us.
    EngineConnects { with_code: bool },
}

#[derive(Arbitrary, Debug)]
enum Action {
    Hello { version: Version, pairing: bool, name: Text },
    Pair(Vec<u8>),
    Confirm([u8; 32]),
    /// The real SPAKE2 exchange with the right code.
    PairProperly,
    Chat(Text),
    Ping(u64),
    Pong(u64),
    Bye { code: u8, reason: String },
    Offer { transfer: Wire, size: Size, name: FileName },
    Accept(Wire),
    Decline(Wire, String),
    Data { transfer: Wire, len: u16, seed: u8 },
    /// The rest of an offered file (when it is small), in frames.
    DataRest(Wire),
    Done { transfer: Wire, hash: Hash },
    Cancel { transfer: Wire, mine: bool, reason: String },
    Received(Wire),
    Window { transfer: Wire, granted: u64 },
    /// A frame with any type byte and payload (the length is right).
    RawFrame { kind: u8, payload: Vec<u8> },
    /// Bytes encrypted as if they were frames.
    Plain(Vec<u8>),
    /// Bytes straight onto the socket, outside the encryption.
    Wire(Vec<u8>),
    /// A ping, then read until its pong: everything before it was handled.
    Sync,
    /// Read until the engine answers something about files or pairing.
    AwaitAnswer,
    EngineChat,
    EngineSendFile { empty: bool },
    EngineCancel,
    /// Only when the engine connected to us (a listener would stop).
    EngineDisconnect,
}

#[derive(Arbitrary, Debug)]
enum Version {
    Ours,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Given(String),
    Known(u8),
}

#[derive(Arbitrary, Debug)]
enum FileName {
    Given(String),
    Tricky(u8),
}

#[derive(Arbitrary, Debug)]
enum Size {
    Tiny(u8),
    Small(u16),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Wire {
    /// One of a few numbers, so offers, data and answers meet.
    Mine(u8),
    /// A number the engine used in one of its offers.
    Theirs(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Hash {
    /// The BLAKE3 hash of the data we sent for that transfer.
    Right,
    Given([u8; 32]),
}

const NAMES: &[&str] = &["alice", "probe", "mallory", "", " ", "a\u{202e}b", "tab\tname", "名前", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"];
const FILE_NAMES: &[&str] = &[
    "photo.jpg",
    "../escape.txt",
    "..",
    ".",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "C:evil",
    "CON",
    "nul.txt",
    "COM1.tar.gz",
    "LPT\u{b9}",
    ".peerconn-0123456789abcdef.part",
    "report. . ",
    "x\u{202e}gpj.exe",
    "what?<>|*\".txt",
    "\u{3000}",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z",
];

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Given(s) => s.clone(),
            Text::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
        }
    }
}

impl FileName {
    fn get(&self) -> String {
        match self {
            FileName::Given(s) => s.clone(),
            FileName::Tricky(i) if usize::from(*i) >= FILE_NAMES.len() => match i % 4 {
                0 => format!("{}.zip", "é".repeat(120)),
                1 => "x".repeat(255),
                2 => format!("a.{}", "y".repeat(240)),
                _ => format!(". .{}", "z".repeat(240)),
            },
            FileName::Tricky(i) => FILE_NAMES[usize::from(*i)].to_owned(),
        }
    }
}

impl Size {
    fn get(&self) -> u64 {
        match self {
            Size::Tiny(n) => u64::from(*n),
            Size::Small(n) => u64::from(*n),
            Size::Any(n) => *n,
        }
    }
}

// ----- the engine under test ------------------------------------------------------

struct World {
    engine: Engine,
    plain: (PeerId, SocketAddr),
    paired: (PeerId, SocketAddr),
    /// Where the engine connects to when the input says so.
    server: TcpListener,
    root: PathBuf,
    downloads: PathBuf,
    outbox: PathBuf,
    /// Our usual key.
    identity: Identity,
    policy: AtomicU8,
    last_incoming: Mutex<Option<TransferId>>,
    dead: AtomicBool,
    inputs: AtomicU64,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    static WATCH: Once = Once::new();
    let w = WORLD.get_or_init(World::start);
    WATCH.call_once(|| {
        std::thread::Builder::new().name("fuzz-events".into()).spawn(move || w.watch()).expect("event thread");
        // The first well-behaved connection: our usual key is known from now on.
        w.probe();
    });
    w
}

impl World {
    fn start() -> World {
        // libFuzzer's main is not Rust's, so writing to a closed socket
        // would kill the process with SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let root = std::env::temp_dir().join(format!("peerconn-fuzz-engine-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let downloads = root.join("downloads");
        let outbox = root.join("outbox");
        fs::create_dir_all(&downloads).expect("downloads folder");
        fs::create_dir_all(&outbox).expect("outbox folder");
        fs::write(outbox.join("sample.bin"), (0..3000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>()).unwrap();
        fs::write(outbox.join("empty.txt"), b"").unwrap();
        let config = EngineConfig {
            connect_timeout: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(4),
            close_linger: Duration::from_millis(500),
            frame_timeout: Duration::from_secs(2),
            known_peers: None,
            downloads: downloads.clone(),
            ..EngineConfig::default()
        };
        let engine = Engine::with_config(config).expect("the engine starts");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let keep = ListenOptions { keep_listening: true, pairing_code: None };
        let plain_id = engine.listen("fuzz-plain", any, keep.clone()).expect("listen");
        let paired_id = engine
            .listen("fuzz-paired", any, ListenOptions { pairing_code: Some(CODE.into()), ..keep })
            .expect("listen with a code");
        let (mut plain, mut paired) = (None, None);
        let deadline = Instant::now() + MUST;
        while plain.is_none() || paired.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match engine.events().recv_timeout(left) {
                Ok(Event::State { id, state: PeerState::Listening { local } }) if id == plain_id => plain = Some(local),
                Ok(Event::State { id, state: PeerState::Listening { local } }) if id == paired_id => {
                    paired = Some(local)
                }
                Ok(_) => {}
                Err(e) => panic!("the engine did not start listening: {e}"),
            }
        }
        let server = TcpListener::bind(any).expect("our own listener");
        server.set_nonblocking(true).expect("non-blocking listener");
        World {
            engine,
            plain: (plain_id, plain.unwrap()),
            paired: (paired_id, paired.unwrap()),
            server,
            root,
            downloads,
            outbox,
            identity: Identity::generate(),
            policy: AtomicU8::new(0),
            last_incoming: Mutex::new(None),
            dead: AtomicBool::new(false),
            inputs: AtomicU64::new(0),
        }
    }

    /// Plays the engine's owner: answers offers, clears received files.
    fn watch(&self) {
        loop {
            match self.engine.events().recv() {
                Ok(Event::FileIncoming { transfer, .. }) => {
                    *self.last_incoming.lock().unwrap() = Some(transfer);
                    match self.policy.load(Ordering::Relaxed) % 4 {
                        0 | 1 => self.engine.accept_file(transfer),
                        2 => self.engine.decline_file(transfer),
                        _ => {}
                    }
                }
                Ok(Event::FileReceived { path, .. }) => {
                    assert_eq!(
                        path.parent(),
                        Some(self.downloads.as_path()),
                        "a received file was stored outside the downloads folder: {}",
                        path.display()
                    );
                    let _ = fs::remove_file(&path);
                }
                Ok(_) => {}
                Err(_) => {
                    self.dead.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    /// A well-behaved peer still gets a hello and a pong.
    fn probe(&self) {
        let mut peer = Peer::connect(self.plain.1, &self.identity);
        peer.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "probe".into() });
        let deadline = Instant::now() + MUST;
        let hello = peer.read_until(deadline, |f| matches!(f, Frame::Hello { .. } | Frame::Bye { .. }));
        assert!(
            matches!(hello, Some(Frame::Hello { .. })),
            "a well-behaved peer got {hello:?} instead of a hello (the engine no longer works)"
        );
        peer.send(&Frame::Ping(0x5eed));
        let pong = peer.read_until(deadline, |f| matches!(f, Frame::Pong(0x5eed)));
        assert!(pong.is_some(), "a well-behaved peer got no pong (the engine no longer works)");
        peer.send(&Frame::Bye { code: ByeCode::Normal, reason: String::new() });
        peer.finish();
    }

    /// Nothing but our two folders beside each other, nothing but files in
    /// the downloads folder, and the files to send untouched.
    fn check_folders(&self) {
        let mut top: Vec<String> = names(&self.root);
        top.sort();
        assert_eq!(top, ["downloads", "outbox"], "something was written beside the downloads folder");
        let mut outbox = names(&self.outbox);
        outbox.sort();
        assert_eq!(outbox, ["empty.txt", "sample.bin"], "the folder of files to send changed");
        for entry in fs::read_dir(&self.downloads).expect("downloads folder").flatten() {
            let kind = entry.file_type().expect("file type");
            assert!(kind.is_file(), "the downloads folder holds {:?}, which is not a plain file", entry.file_name());
        }
    }

    /// Waits for the engine to connect to our listener.
    fn accept(&self) -> TcpStream {
        let deadline = Instant::now() + MUST;
        loop {
            match self.server.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking stream");
                    return stream;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("the engine did not connect to us within {MUST:?}: {e}"),
            }
        }
    }
}

fn names(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("readable folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

// ----- our side of the connection --------------------------------------------------

/// What we know about a file we offered.
struct Sent {
    size: u64,
    sent: u64,
    hasher: blake3::Hasher,
}

struct Peer {
    stream: TcpStream,
    link: Channel,
    /// Decrypted bytes from the engine not yet decoded.
    inbuf: Vec<u8>,
    /// We are the TCP server (the engine connected to us).
    server: bool,
    /// The engine closed (or reset) the connection.
    eof: bool,
    /// A write failed: the engine is gone.
    broken: bool,
    their_offers: Vec<u32>,
    their_pair: Option<Vec<u8>>,
    pairing: Option<Pairing>,
    mine: HashMap<u32, Sent>,
    data_sent: usize,
    pings: u64,
    waited: Duration,
}

impl Peer {
    fn connect(addr: SocketAddr, identity: &Identity) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, MUST)
            .unwrap_or_else(|e| panic!("the engine no longer accepts connections on {addr}: {e}"));
        Peer::handshake(stream, Channel::initiator(identity), false)
    }

    fn handshake(mut stream: TcpStream, (mut link, first): (Channel, Vec<u8>), server: bool) -> Peer {
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(MUST)).expect("read timeout");
        stream.set_write_timeout(Some(MUST)).expect("write timeout");
        stream.write_all(&first).unwrap_or_else(|e| panic!("the engine dropped a new connection: {e}"));
        let mut inbuf = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !link.is_established() {
            let n = match stream.read(&mut buf) {
                Ok(0) => panic!("the engine closed a new connection during the handshake"),
                Ok(n) => n,
                Err(e) => panic!("the engine did not answer the handshake: {e}"),
            };
            let mut out = Vec::new();
            link.receive(&buf[..n], &mut out, &mut inbuf).unwrap_or_else(|e| panic!("the engine's handshake failed: {e}"));
            stream.write_all(&out).unwrap_or_else(|e| panic!("the engine dropped the connection in the handshake: {e}"));
        }
        Peer {
            stream,
            link,
            inbuf,
            server,
            eof: false,
            broken: false,
            their_offers: Vec::new(),
            their_pair: None,
            pairing: None,
            mine: HashMap::new(),
            data_sent: 0,
            pings: 0,
            waited: Duration::ZERO,
        }
    }

    fn gone(&self) -> bool {
        self.eof || self.broken
    }

    fn send(&mut self, frame: &Frame) {
        self.send_plain(&frame.to_bytes());
    }

    fn send_plain(&mut self, bytes: &[u8]) {
        let mut wire = Vec::new();
        if let Err(e) = self.link.seal(bytes, &mut wire) {
            panic!("our own channel could not seal: {e}");
        }
        self.send_wire(&wire);
    }

    fn send_wire(&mut self, bytes: &[u8]) {
        if !self.broken && self.stream.write_all(bytes).is_err() {
            self.broken = true;
        }
    }

    /// Reads until a frame `pick` wants arrives (returned), the engine
    /// closes, or `deadline`.
    fn read_until(&mut self, deadline: Instant, mut pick: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        let mut buf = vec![0u8; 65536];
        loop {
            loop {
                let decoded = frame::decode(&self.inbuf).unwrap_or_else(|e| panic!("the engine sent a bad frame: {e}"));
                let Some((frame, used)) = decoded else { break };
                self.inbuf.drain(..used);
                self.note(&frame);
                if pick(&frame) {
                    return Some(frame);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.eof || left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let mut out = Vec::new();
                    self.link
                        .receive(&buf[..n], &mut out, &mut self.inbuf)
                        .unwrap_or_else(|e| panic!("the engine sent a record that does not decrypt: {e}"));
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true, // reset
            }
        }
    }

    /// Waits up to [`ANSWER`] (within the input's budget).
    fn answer(&mut self, pick: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        let wait = ANSWER.min(WAIT_BUDGET.saturating_sub(self.waited));
        let started = Instant::now();
        let got = self.read_until(started + wait, pick);
        self.waited += started.elapsed();
        got
    }

    /// Remembers what the engine tells us that later actions need.
    fn note(&mut self, frame: &Frame) {
        match frame {
            Frame::Offer { transfer, .. } => self.their_offers.push(*transfer),
            Frame::Pair(msg) => self.their_pair = Some(msg.clone()),
            Frame::Ping(n) => {
                let pong = Frame::Pong(*n);
                self.send(&pong);
            }
            _ => {}
        }
    }

    fn wire(&self, w: &Wire) -> u32 {
        match w {
            Wire::Mine(n) => u32::from(n % 4),
            Wire::Theirs(i) if !self.their_offers.is_empty() => {
                self.their_offers[usize::from(*i) % self.their_offers.len()]
            }
            Wire::Theirs(_) => 0,
            Wire::Any(n) => *n,
        }
    }

    fn data(&mut self, wire: u32, bytes: &[u8]) {
        if let Some(sent) = self.mine.get_mut(&wire) {
            sent.sent += bytes.len() as u64;
            sent.hasher.update(bytes);
        }
        self.data_sent += bytes.len();
        for piece in bytes.chunks(frame::MAX_DATA) {
            let mut plain = Vec::new();
            frame::encode_data(&mut plain, wire, piece);
            self.send_plain(&plain);
        }
    }

    fn pair_properly(&mut self) {
        let Some(hash) = self.link.peer().map(|p| p.handshake_hash.clone()) else { return };
        if self.pairing.is_none() {
            let (state, msg) = Pairing::start(CODE, self.server, &hash);
            self.send(&Frame::Pair(msg));
            self.pairing = Some(state);
        }
        if self.their_pair.is_none() {
            self.answer(|f| matches!(f, Frame::Pair(_)));
        }
        if let (Some(state), Some(msg)) = (self.pairing.as_mut(), self.their_pair.take()) {
            if state.receive(&msg).is_ok() {
                if let Some(mac) = state.confirmation() {
                    self.send(&Frame::Confirm(mac));
                }
            }
        }
    }

    fn act(&mut self, w: &World, engine_side: PeerId, action: &Action) {
        match action {
            Action::Hello { version, pairing, name } => {
                let version = match version {
                    Version::Ours => frame::VERSION,
                    Version::Other(v) => *v,
                };
                self.send(&Frame::Hello { version, pairing: *pairing, name: name.get() });
            }
            Action::Pair(msg) if !msg.is_empty() => self.send(&Frame::Pair(msg.clone())),
            Action::Pair(_) => self.send_plain(&[0, 0, 0, 1, frame::kind::PAIR]),
            Action::Confirm(mac) => self.send(&Frame::Confirm(*mac)),
            Action::PairProperly => self.pair_properly(),
            Action::Chat(text) => {
                let text = text.get();
                if text.is_empty() {
                    self.send_plain(&[0, 0, 0, 1, frame::kind::CHAT]);
                } else {
                    self.send(&Frame::Chat(text));
                }
            }
            Action::Ping(n) => self.send(&Frame::Ping(*n)),
            Action::Pong(n) => self.send(&Frame::Pong(*n)),
            Action::Bye { code, reason } => {
                let mut bytes = Frame::Bye { code: ByeCode::Normal, reason: reason.clone() }.to_bytes();
                bytes[5] = code % 8; // unknown codes too
                self.send_plain(&bytes);
            }
            Action::Offer { transfer, size, name } => {
                let wire = self.wire(transfer);
                let size = size.get();
                self.mine.insert(wire, Sent { size, sent: 0, hasher: blake3::Hasher::new() });
                let name = name.get();
                if name.is_empty() {
                    let mut bytes = Frame::Offer { transfer: wire, size, name: "x".into() }.to_bytes();
                    bytes.pop();
                    bytes[3] -= 1;
                    self.send_plain(&bytes);
                } else {
                    self.send(&Frame::Offer { transfer: wire, size, name });
                }
            }
            Action::Accept(t) => {
                let transfer = self.wire(t);
                self.send(&Frame::Accept { transfer });
            }
            Action::Decline(t, reason) => {
                let transfer = self.wire(t);
                self.send(&Frame::Decline { transfer, reason: reason.clone() });
            }
            Action::Data { transfer, len, seed } => {
                let wire = self.wire(transfer);
                let len = usize::from(*len).min(MAX_DATA - self.data_sent.min(MAX_DATA));
                if len == 0 {
                    // An empty DATA frame (a protocol error) instead.
                    let mut plain = Frame::Data { transfer: wire, bytes: vec![0] }.to_bytes();
                    plain.pop();
                    plain[3] -= 1;
                    self.send_plain(&plain);
                } else {
                    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect();
                    self.data(wire, &bytes);
                }
            }
            Action::DataRest(t) => {
                let wire = self.wire(t);
                let Some(sent) = self.mine.get(&wire) else { return };
                let rest = sent.size.saturating_sub(sent.sent);
                if rest > 0 && rest <= (MAX_DATA - self.data_sent.min(MAX_DATA)) as u64 {
                    let bytes: Vec<u8> = (0..rest).map(|i| (i % 251) as u8).collect();
                    self.data(wire, &bytes);
                }
            }
            Action::Done { transfer, hash } => {
                let wire = self.wire(transfer);
                let hash = match hash {
                    Hash::Right => self.mine.get(&wire).map(|s| *s.hasher.finalize().as_bytes()).unwrap_or([0; 32]),
                    Hash::Given(h) => *h,
                };
                self.send(&Frame::Done { transfer: wire, hash });
            }
            Action::Cancel { transfer, mine, reason } => {
                let transfer = self.wire(transfer);
                self.send(&Frame::Cancel { transfer, mine: *mine, reason: reason.clone() });
            }
            Action::Received(t) => {
                let transfer = self.wire(t);
                self.send(&Frame::Received { transfer });
            }
            Action::Window { transfer, granted } => {
                let transfer = self.wire(transfer);
                self.send(&Frame::Window { transfer, granted: *granted });
            }
            Action::RawFrame { kind, payload } => {
                let mut bytes = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
                bytes.push(*kind);
                bytes.extend_from_slice(payload);
                self.send_plain(&bytes);
            }
            Action::Plain(bytes) => self.send_plain(bytes),
            Action::Wire(bytes) => self.send_wire(bytes),
            Action::Sync => {
                self.pings += 1;
                let n = 0xf00d_0000 + self.pings;
                self.send(&Frame::Ping(n));
                self.answer(|f| matches!(f, Frame::Pong(m) if *m == n));
            }
            Action::AwaitAnswer => {
                self.answer(|f| {
                    matches!(
                        f,
                        Frame::Accept { .. }
                            | Frame::Decline { .. }
                            | Frame::Offer { .. }
                            | Frame::Done { .. }
                            | Frame::Received { .. }
                            | Frame::Cancel { .. }
                            | Frame::Pair(_)
                            | Frame::Confirm(_)
                            | Frame::Bye { .. }
                    )
                });
            }
            Action::EngineChat => {
                let _ = w.engine.send_text(engine_side, "a message from the engine");
            }
            Action::EngineSendFile { empty } => {
                let file = if *empty { "empty.txt" } else { "sample.bin" };
                w.engine.send_file(engine_side, w.outbox.join(file));
            }
            Action::EngineCancel => {
                if let Some(t) = w.last_incoming.lock().unwrap().take() {
                    w.engine.cancel_file(t);
                }
            }
            Action::EngineDisconnect => {
                if self.server {
                    w.engine.disconnect(engine_side);
                }
            }
        }
    }

    /// Closes our side; the engine must close its side soon after.
    fn finish(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + MUST;
        while !self.eof && Instant::now() < deadline {
            self.read_until(deadline, |_| false);
        }
        assert!(self.eof, "the engine kept the connection open {MUST:?} after we closed ours");
    }
}

fn run(input: &Input) {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{input:#?}");
    }
    let w = world();
    let n = w.inputs.fetch_add(1, Ordering::Relaxed);
    w.policy.store(input.policy, Ordering::Relaxed);
    let fresh;
    let identity = if input.fresh_key {
        fresh = Identity::generate();
        &fresh
    } else {
        &w.identity
    };
    let (mut peer, engine_side) = match input.side {
        Side::Plain => (Peer::connect(w.plain.1, identity), w.plain.0),
        Side::Paired => (Peer::connect(w.paired.1, identity), w.paired.0),
        Side::EngineConnects { with_code } => {
            let addr = w.server.local_addr().expect("our address");
            let code = with_code.then_some(CODE);
            let id = w.engine.connect_with_code("fuzz-client", addr, code).expect("a valid connect");
            let stream = w.accept();
            (Peer::handshake(stream, Channel::responder(identity), true), id)
        }
    };
    for action in input.actions.iter().take(MAX_ACTIONS) {
        if peer.gone() {
            break;
        }
        peer.act(w, engine_side, action);
    }
    peer.finish();
    if let Side::EngineConnects { .. } = input.side {
        w.engine.remove(engine_side);
    }
    assert!(!w.dead.load(Ordering::SeqCst), "the engine's event channel closed: the reactor thread is gone");
    if (n + 1) % PROBE_EVERY == 0 {
        w.probe();
    }
    w.check_folders();
}

fuzz_target!(|input: Input| {
    run(&input);
});
