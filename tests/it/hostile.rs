//! Hostile peers against a real engine over 127.0.0.1.
//!
//! Each test gives engine `a` two things to do: a healthy conversation with
//! engine `b`, and a server peersocket "target" that a raw TCP peer abuses.
//! The engine must close the abusive connection (telling it why where the
//! protocol allows), report the right thing on the target, and carry on with
//! the healthy conversation as if nothing happened.

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use peerconn::net::frame::{ByeCode, Frame, MAGIC, VERSION};
use peerconn::net::secure::PREAMBLE;
use peerconn::net::{EngineConfig, Event, PeerId, PeerState};

use crate::support::{fast_config, pair, Node, RawPeer, PATIENCE};

/// Engine `a` with a healthy pair to `b` and a listening "target".
struct Arena {
    a: Node,
    b: Node,
    /// The healthy pair: `s` on `a`, `c` on `b`.
    s: PeerId,
    c: PeerId,
    target: PeerId,
    addr: SocketAddr,
    round: u32,
}

impl Arena {
    fn new() -> Arena {
        Arena::with_config(fast_config())
    }

    /// `a` runs with `config`; `b` always with the fast timers.
    fn with_config(config: EngineConfig) -> Arena {
        let mut a = Node::with_config(config);
        let mut b = Node::new();
        let (s, c) = pair(&mut a, &mut b);
        let (target, addr) = a.listen("target");
        Arena { a, b, s, c, target, addr, round: 0 }
    }

    /// The healthy pair still chats both ways.
    fn healthy(&mut self) {
        self.round += 1;
        let there = format!("a to b, round {}", self.round);
        self.a.engine.send_text(self.s, &there).unwrap();
        assert_eq!(self.b.message(self.c), there);
        let back = format!("b to a, round {}", self.round);
        self.b.engine.send_text(self.c, &back).unwrap();
        assert_eq!(self.a.message(self.s), back);
        // And neither side reported a loss or an error along the way.
        no_trouble(&mut self.a, self.s, &format!("server {}", self.round));
        no_trouble(&mut self.b, self.c, &format!("client {}", self.round));
    }

    /// A raw peer that completed the hello with the target.
    fn raw_hello(&mut self, name: &str) -> RawPeer {
        let (raw, server_name) = RawPeer::hello(self.addr, name);
        assert_eq!(server_name, "target");
        assert_eq!(self.a.connected(self.target).0, name);
        raw
    }

    /// The target reported nothing about a connection that never finished
    /// its hello, and still takes a real peer, who can chat with it.
    fn target_still_takes_a_real_peer(&mut self) {
        no_trouble(&mut self.a, self.target, "target");
        let real = self.b.engine.connect("real", self.addr).unwrap();
        assert_eq!(self.b.connected(real).0, "target");
        assert_eq!(self.a.connected(self.target).0, "real");
        chat_both_ways(&mut self.a, self.target, &mut self.b, real);
    }

    /// The target lost its peer, not cleanly, for a reason that mentions
    /// every word in `mentions`.
    fn target_lost(&mut self, mentions: &[&str]) -> String {
        let (reason, clean) = self.a.lost(self.target);
        assert!(!clean, "lost cleanly: {reason:?}");
        for m in mentions {
            assert!(reason.contains(m), "expected {m:?} in the reason {reason:?}");
        }
        reason
    }
}

/// No `Lost` or `Error` was reported on `id` so far (including events other
/// waits have set aside). A rename is the marker: events for one peersocket
/// arrive in order, so any trouble reported before it is found first.
fn no_trouble(node: &mut Node, id: PeerId, new_name: &str) {
    node.engine.rename(id, new_name).unwrap();
    let seen = node.wait("the rename marker", |e| match e {
        Event::State { id: i, state: state @ PeerState::Lost { .. } } if *i == id => Some(Err(format!("{state:?}"))),
        Event::Error { id: i, reason } if *i == id => Some(Err(format!("error: {reason}"))),
        Event::Renamed { id: i, name } if *i == id && name == new_name => Some(Ok(())),
        _ => None,
    });
    if let Err(trouble) = seen {
        panic!("the healthy peersocket {id} reported {trouble}");
    }
}

fn chat_both_ways(a: &mut Node, on_a: PeerId, b: &mut Node, on_b: PeerId) {
    a.engine.send_text(on_a, "from a").unwrap();
    assert_eq!(b.message(on_b), "from a");
    b.engine.send_text(on_b, "from b").unwrap();
    assert_eq!(a.message(on_a), "from b");
}

/// Reads until the engine closes the connection and checks that it really
/// did (end of stream or reset), rather than the read timing out. Returns
/// the bye the engine sent, if any.
fn closed_by_engine(raw: &mut RawPeer) -> Option<Frame> {
    let bye = raw.until_closed();
    assert_closed(&mut raw.stream, Duration::from_millis(500));
    bye
}

/// The other end of `stream` has closed it (or closes it within `within`),
/// having sent nothing more.
/// The engine's preamble, which a connection that never started its
/// handshake still receives, is not "more bytes".
fn assert_closed(stream: &mut TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return,
            Ok(n) if seen.len() + n <= PREAMBLE.len() && PREAMBLE.starts_with(&[&seen[..], &buf[..n]].concat()) => {
                seen.extend_from_slice(&buf[..n]);
            }
            Ok(n) => panic!("expected the engine to have closed the connection, got {n} more bytes"),
            Err(e) => panic!("the engine left the connection open ({e})"),
        }
    }
}

/// `bye` is a bye with `code` whose reason mentions `mention`.
fn assert_bye(bye: Option<Frame>, code: ByeCode, mention: &str) {
    match bye {
        Some(Frame::Bye { code: got, reason }) => {
            assert_eq!(got, code, "bye reason {reason:?}");
            assert!(reason.contains(mention), "expected {mention:?} in the bye's reason {reason:?}");
        }
        other => panic!("expected a bye ({code:?}), got {other:?}"),
    }
}

/// Hello frame bytes with any magic, version and name.
fn hello_bytes(magic: &[u8; 8], version: u16, name: &str) -> Vec<u8> {
    let mut payload = vec![0x01];
    payload.extend_from_slice(magic);
    payload.extend_from_slice(&version.to_be_bytes());
    payload.push(0); // flags: no pairing
    payload.push(name.len() as u8);
    payload.extend_from_slice(name.as_bytes());
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

/// Connects a client peersocket on `node` to `addr`, restarting it each time
/// the server drops the attempt, until it connects or `within` runs out.
fn connect_with_retries(node: &mut Node, addr: SocketAddr, within: Duration) -> PeerId {
    let deadline = Instant::now() + within;
    let id = node.engine.connect("real", addr).unwrap();
    let mut attempts = 1;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = node.wait_within(left, "connected or lost", |e| match e {
            Event::State { id: i, state } if *i == id => match state {
                PeerState::Connected { peer_name, .. } => Some(Ok(peer_name.clone())),
                PeerState::Lost { reason, .. } => Some(Err(reason.clone())),
                _ => None,
            },
            _ => None,
        });
        match outcome {
            Ok(name) => {
                assert_eq!(name, "target");
                return id;
            }
            Err(reason) => {
                assert!(
                    Instant::now() < deadline,
                    "no connection within {within:?} after {attempts} attempts; last: {reason}"
                );
                // Pacing only: the attempt is retried until the deadline.
                std::thread::sleep(Duration::from_millis(50));
                attempts += 1;
                node.engine.restart(id);
            }
        }
    }
}

/// Timers that never fire during a test, so only the behaviour under test
/// can close a connection.
fn patient_config() -> EngineConfig {
    EngineConfig { hello_timeout: Duration::from_secs(60), heartbeat_timeout: Duration::from_secs(60), ..fast_config() }
}

// ----- before the hello -------------------------------------------------------

#[test]
fn garbage_instead_of_hello_closes_only_that_connection() {
    let mut t = Arena::new();
    let mut raw = RawPeer::connect(t.addr);
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // "GET " read as a length is far over the limit.
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "over the limit");
    t.healthy();
    t.target_still_takes_a_real_peer();
    t.healthy();
}

#[test]
fn oversized_length_before_hello_is_refused_from_the_header_alone() {
    // With a minute-long hello timeout, only the length check can close it.
    let mut t = Arena::with_config(patient_config());
    let started = Instant::now();
    let mut raw = RawPeer::connect(t.addr);
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "4294967299 bytes, over the limit");
    assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());
    t.healthy();
    t.target_still_takes_a_real_peer();
}

#[test]
fn oversized_length_after_hello_loses_the_peer_without_waiting_for_the_body() {
    let mut t = Arena::with_config(patient_config());
    let mut raw = t.raw_hello("greedy");
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0x02]);
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "over the limit");
    t.target_lost(&["protocol error", "over the limit"]);
    t.healthy();
}

#[test]
fn chat_before_hello_is_refused_as_a_protocol_error() {
    let mut t = Arena::new();
    let mut raw = RawPeer::connect(t.addr);
    raw.send(&Frame::Chat("let me in".into()));
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "chat message before the hello");
    t.healthy();
    t.target_still_takes_a_real_peer();
}

#[test]
fn hello_with_wrong_magic_is_refused_as_not_peerconn() {
    let mut t = Arena::new();
    let mut raw = RawPeer::connect(t.addr);
    raw.send_bytes(&hello_bytes(b"PEERCHAT", VERSION, "impostor"));
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "not speaking the PeerConn protocol");
    t.healthy();
    t.target_still_takes_a_real_peer();
}

#[test]
fn hello_with_the_next_protocol_version_is_answered_unsupported() {
    let mut t = Arena::new();
    let mut raw = RawPeer::connect(t.addr);
    raw.send_bytes(&hello_bytes(&MAGIC, 4, "future"));
    // The engine does not say hello to a version it cannot speak: the
    // first thing back is the bye.
    assert_bye(raw.recv(), ByeCode::Unsupported, "version 4");
    assert_eq!(closed_by_engine(&mut raw), None);
    t.healthy();
    t.target_still_takes_a_real_peer();
}

#[test]
fn silent_connection_does_not_take_the_servers_slot() {
    let hello_timeout = Duration::from_secs(3);
    let mut t = Arena::with_config(EngineConfig { hello_timeout, ..fast_config() });
    let started = Instant::now();
    let mut silent = RawPeer::connect(t.addr);

    // A real peer gets in while the silent one sits there...
    let real = t.b.engine.connect("real", t.addr).unwrap();
    assert_eq!(t.b.connected(real).0, "target");
    assert_eq!(t.a.connected(t.target).0, "real");
    chat_both_ways(&mut t.a, t.target, &mut t.b, real);
    silent.stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match silent.stream.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the silent connection should still be waiting for its hello \
             ({:?} after connecting), got {other:?}",
            started.elapsed()
        ),
    }
    silent.stream.set_nonblocking(false).unwrap();

    // ...and the silent one is closed when its hello time is up, not before.
    assert_eq!(closed_by_engine(&mut silent), None);
    assert!(
        started.elapsed() >= hello_timeout,
        "closed after {:?}, before the hello timeout of {hello_timeout:?}",
        started.elapsed()
    );
    chat_both_ways(&mut t.a, t.target, &mut t.b, real);
    // Connections that never finished their hello are not the target's
    // business: it reported no loss for them.
    no_trouble(&mut t.a, t.target, "target");
    t.healthy();
}

#[test]
fn many_idle_connections_do_not_lock_out_a_real_peer() {
    let mut t = Arena::new();
    let mut idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(t.addr).expect("raw connect")).collect();
    let started = Instant::now();
    let real = connect_with_retries(&mut t.b, t.addr, Duration::from_secs(8));
    assert_eq!(t.a.connected(t.target).0, "real");
    chat_both_ways(&mut t.a, t.target, &mut t.b, real);
    // Every idle connection was closed, either at once (over the cap) or
    // when its hello time ran out.
    for stream in &mut idle {
        assert_closed(stream, PATIENCE.saturating_sub(started.elapsed()));
    }
    no_trouble(&mut t.a, t.target, "target");
    t.healthy();
}

#[test]
fn pending_hellos_from_one_address_are_capped_at_8_per_listener() {
    // Hello timeout of a minute: the connections that are kept stay pending
    // for the whole test.
    let mut t = Arena::with_config(patient_config());
    let mut idle: Vec<Option<TcpStream>> = (0..40)
        .map(|_| {
            let s = TcpStream::connect(t.addr).expect("raw connect");
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    let scan = |idle: &mut Vec<Option<TcpStream>>| {
        let mut buf = [0u8; 16];
        for slot in idle.iter_mut() {
            if let Some(s) = slot {
                match s.read(&mut buf) {
                    Ok(0) => *slot = None,
                    // The engine's preamble, sent to every connection.
                    Ok(n) if n <= PREAMBLE.len() => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                        *slot = None
                    }
                    other => panic!("unexpected read on an idle connection: {other:?}"),
                }
            }
        }
        idle.iter().filter(|s| s.is_some()).count()
    };
    // The engine drops what is over the cap as it accepts: all forty come
    // from one address, which holds at most 8 (the listener holds 64 from
    // all sources together; see flood.rs for a flood beside a real peer).
    let deadline = Instant::now() + PATIENCE;
    let mut open = scan(&mut idle);
    while open > 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        open = scan(&mut idle);
    }
    assert_eq!(open, 8, "connections still open after {PATIENCE:?}");
    // The 8 it keeps stay open (their hello time is a minute).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scan(&mut idle), 8, "the engine closed a connection it had kept");

    // The cap is per listener: another server peersocket on the same engine
    // still takes a peer at once.
    let (other, other_addr) = t.a.listen("other");
    let to_other = t.b.engine.connect("visitor", other_addr).unwrap();
    assert_eq!(t.b.connected(to_other).0, "other");
    assert_eq!(t.a.connected(other).0, "visitor");
    chat_both_ways(&mut t.a, other, &mut t.b, to_other);

    // Once the idle ones leave, the target takes a real peer.
    idle.clear();
    let real = connect_with_retries(&mut t.b, t.addr, Duration::from_secs(8));
    assert_eq!(t.a.connected(t.target).0, "real");
    chat_both_ways(&mut t.a, t.target, &mut t.b, real);
    // Connections that never finished their hello are not the target's
    // business: it reported no loss for them.
    no_trouble(&mut t.a, t.target, "target");
    t.healthy();
}

// ----- after the hello --------------------------------------------------------

#[test]
fn truncated_frame_then_close_loses_the_peer_mid_message() {
    let mut t = Arena::new();
    let mut raw = t.raw_hello("cutter");
    let chat = Frame::Chat("this message is cut in half".into()).to_bytes();
    raw.send_bytes(&chat[..chat.len() / 2]);
    raw.stream.shutdown(Shutdown::Write).unwrap();
    closed_by_engine(&mut raw);
    t.target_lost(&["middle of a message"]);
    t.healthy();
}

#[test]
fn invalid_utf8_chat_after_hello_loses_the_peer() {
    let mut t = Arena::new();
    let mut raw = t.raw_hello("mangler");
    raw.send_bytes(&[0, 0, 0, 4, 0x02, b'o', 0xff, b'k']);
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "not valid UTF-8");
    t.target_lost(&["protocol error", "not valid UTF-8"]);
    t.healthy();
}

#[test]
fn unknown_frame_type_after_hello_loses_the_peer() {
    let mut t = Arena::new();
    let mut raw = t.raw_hello("stranger");
    raw.send_bytes(&[0, 0, 0, 3, 0x42, 1, 2]);
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "unknown frame type 0x42");
    t.target_lost(&["protocol error", "unknown frame type 0x42"]);
    t.healthy();
}

#[test]
fn second_hello_after_hello_loses_the_peer() {
    let mut t = Arena::new();
    let mut raw = t.raw_hello("twice");
    raw.send(&Frame::Hello { version: VERSION, pairing: false, name: "twice again".into() });
    assert_bye(closed_by_engine(&mut raw), ByeCode::ProtocolError, "second hello");
    t.target_lost(&["protocol error", "second hello"]);
    t.healthy();
}

#[test]
fn peer_that_goes_silent_after_hello_is_lost_within_the_heartbeat_timeout() {
    let mut t = Arena::new();
    let heartbeat_timeout = fast_config().heartbeat_timeout;
    let started = Instant::now();
    // Completes the hello, then never sends another byte, not even a pong.
    let mut raw = t.raw_hello("mute");
    t.target_lost(&["stopped answering"]);
    assert!(
        started.elapsed() >= heartbeat_timeout,
        "lost after {:?}, before the heartbeat timeout of {heartbeat_timeout:?}",
        started.elapsed()
    );
    // Nothing but pings came before the engine closed the connection.
    while let Some(frame) = raw.recv_any() {
        assert!(matches!(frame, Frame::Ping(_)), "expected only pings, got {frame:?}");
    }
    assert_closed(&mut raw.stream, Duration::from_millis(500));
    t.healthy();
}

/// Regression: sixteen idle sockets used to lock a listener for a whole
/// hello timeout, since the newest connection was the one dropped.
#[test]
fn a_real_peer_gets_in_at_once_past_a_full_set_of_silent_connections() {
    let config = EngineConfig { hello_timeout: Duration::from_secs(60), ..fast_config() };
    let mut a = Node::with_config(config);
    let (s, addr) = a.listen("target");
    let silent: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut b = Node::new();
    let started = Instant::now();
    let c = b.engine.connect("real", addr).unwrap();
    b.connected(c);
    a.connected(s);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    b.engine.send_text(c, "made it").unwrap();
    assert_eq!(a.message(s), "made it");
    drop(silent);
}

#[test]
fn a_peer_that_never_reads_is_dropped_before_its_replies_pile_up() {
    // Long timers: only the output cap may end this connection.
    let config = EngineConfig { heartbeat_timeout: Duration::from_secs(60), ..fast_config() };
    let mut a = Node::with_config(config);
    let (s, addr) = a.listen("target");
    let (mut raw, _) = RawPeer::hello(addr, "deaf");
    a.connected(s);
    let mut batch = Vec::new();
    for n in 0..100_000u64 {
        Frame::Ping(n).encode(&mut batch);
    }
    raw.stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        assert!(Instant::now() < deadline, "still connected after a minute of unanswered pings");
        let mut wire = Vec::new();
        raw.link.seal(&batch, &mut wire).unwrap();
        let _ = std::io::Write::write_all(&mut raw.stream, &wire);
        if let Some(reason) = std::iter::from_fn(|| a.engine.events().try_recv().ok()).find_map(|e| match e {
            Event::State { id, state: PeerState::Lost { reason, .. } } if id == s => Some(reason),
            _ => None,
        }) {
            break reason;
        }
    };
    assert!(reason.contains("stopped reading"), "{reason}");
}

/// Regression: zero-width and other invisible characters passed in names,
/// so `al\u{200b}ice` read as "alice".
#[test]
fn a_hello_whose_name_hides_invisible_characters_is_refused() {
    let mut server = Node::new();
    let (s, addr) = server.listen("server");
    for spoof in ["al\u{200b}ice", "al\u{00ad}ice", "\u{feff}alice", "alice\u{3164}", "al\u{200d}ice"] {
        let mut raw = RawPeer::connect(addr);
        raw.send(&Frame::Hello { version: VERSION, pairing: false, name: spoof.into() });
        let bye = closed_by_engine(&mut raw);
        assert_bye(bye, ByeCode::ProtocolError, "would hide what it says");
    }
    // Names in real scripts still pass.
    let (_raw, _) = RawPeer::hello(addr, "می\u{200c}خواهم");
    assert_eq!(server.connected(s).0, "می\u{200c}خواهم");
}

#[test]
fn a_file_name_with_an_invisible_character_is_refused_before_anyone_is_asked() {
    let mut server = Node::new();
    let (s, addr) = server.listen("server");
    let (mut raw, _) = RawPeer::hello(addr, "sender");
    server.connected(s);
    raw.send(&Frame::Offer { transfer: 1, size: 10, name: "invoice\u{200b}.pdf.exe".into() });
    let reason = server.wait("the refusal", |e| match e {
        Event::FileFailed { reason, .. } => Some(reason.clone()),
        Event::FileIncoming { .. } => panic!("offered to the person"),
        _ => None,
    });
    assert!(reason.contains("invisible character \\u{200b}"), "{reason}");
    assert!(matches!(raw.recv(), Some(Frame::Decline { transfer: 1, .. })));
}
