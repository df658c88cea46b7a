//! The session on a virtual clock: two `Session`s wired back to back in
//! memory, no socket, no thread, no sleeping. Every timer of the protocol
//! (heartbeat, hello and pairing deadlines, the half-sent message, the
//! linger of a close, the pairing back-off) is run by moving a clock that
//! only the test owns, so a 15-second heartbeat loss takes microseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerconn::net::frame::{self, ByeCode, Frame};
use peerconn::net::secure::{Channel, Identity};
use peerconn::net::session::{ChatRefused, EndKind, Host, NoFiles, PairingGuard, Session, SessionConfig, SessionEvent};
use peerconn::net::trust::KnownPeers;
use peerconn::net::{End, EngineConfig, Trust};

fn client_addr() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "192.0.2.2:4000".parse().unwrap()
}

/// One end: its session and what its peersocket would hand it.
struct Side {
    session: Session,
    name: String,
    known: KnownPeers,
    guard: PairingGuard,
    busy: bool,
    events: Vec<SessionEvent>,
    /// Deliver nothing more from this side (it went silent).
    mute: bool,
    /// Deliver nothing more to this side (it stopped reading).
    deaf: bool,
    /// Its socket was closed (after its session closed).
    gone: bool,
}

impl Side {
    fn new(session: Session, name: &str) -> Side {
        Side {
            session,
            name: name.into(),
            known: KnownPeers::in_memory(),
            guard: PairingGuard::default(),
            busy: false,
            events: Vec::new(),
            mute: false,
            deaf: false,
            gone: false,
        }
    }

    fn receive(&mut self, bytes: &[u8], now: Instant) {
        let mut host = Host { name: &self.name, known: &self.known, busy: self.busy, guard: &mut self.guard };
        self.session.receive(bytes, now, &mut host, &mut NoFiles);
        self.collect();
    }

    /// Takes what the session reported, applying what the trust store
    /// should remember as the reactor does.
    fn collect(&mut self) {
        while let Some(event) = self.session.poll_event() {
            if let SessionEvent::Remember { key, name, dialled, verified, .. } = &event {
                self.known.remember(key, name, dialled.as_deref());
                if *verified {
                    self.known.set_verified(key, true);
                }
            }
            self.events.push(event);
        }
    }

    fn take_output(&mut self) -> Vec<u8> {
        let out = self.session.output().to_vec();
        self.session.sent(out.len());
        out
    }

    fn connected(&self) -> Option<(&str, Trust, &str)> {
        self.events.iter().find_map(|e| match e {
            SessionEvent::Connected { peer_name, peer } => {
                Some((peer_name.as_str(), peer.trust, peer.safety_code.as_str()))
            }
            _ => None,
        })
    }

    fn ended(&self) -> Option<&End> {
        let mut ends = self.events.iter().filter_map(|e| match e {
            SessionEvent::Ended(end) => Some(end),
            _ => None,
        });
        let first = ends.next();
        assert!(ends.next().is_none(), "Ended is reported once: {:?}", self.events);
        first
    }

    fn messages(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::Message(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A client and a server session joined by an in-memory wire.
struct Wire {
    now: Instant,
    client: Side,
    server: Side,
}

impl Wire {
    fn new(config: SessionConfig, client_code: Option<&str>, server_code: Option<&str>) -> Wire {
        Wire::with_identities(config, Identity::generate(), Identity::generate(), client_code, server_code)
    }

    fn with_identities(
        config: SessionConfig,
        client_id: Identity,
        server_id: Identity,
        client_code: Option<&str>,
        server_code: Option<&str>,
    ) -> Wire {
        let now = Instant::now();
        let mut client = Session::client(&client_id, config, server_addr(), client_code.map(Into::into), now);
        client.tcp_connected(now);
        let server = Session::server(&server_id, config, client_addr(), server_code.map(Into::into), now);
        Wire { now, client: Side::new(client, "laptop"), server: Side::new(server, "desk") }
    }

    /// Moves bytes both ways until neither side has anything to say; a side
    /// whose session closed has its socket closed, which the other side
    /// reads as the end of the stream.
    fn run(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for (from_client, _) in [(true, ()), (false, ())] {
                let (from, to) = if from_client {
                    (&mut self.client, &mut self.server)
                } else {
                    (&mut self.server, &mut self.client)
                };
                from.collect();
                if from.session.is_closed() && !from.gone {
                    from.gone = true;
                    if to.deaf {
                        continue;
                    }
                    to.session.eof();
                    to.collect();
                    moved = true;
                }
                if from.mute || from.gone {
                    continue;
                }
                let out = from.take_output();
                if !out.is_empty() && !to.gone && !to.deaf {
                    to.receive(&out, self.now);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the two sessions never went quiet");
    }

    /// Moves the clock on in steps no longer than `step`, running both
    /// sides' timers when they are due and delivering what they say.
    fn advance(&mut self, by: Duration, step: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + step).min(end);
            for side in [&mut self.client, &mut self.server] {
                if side.session.deadline().is_some_and(|d| d <= self.now) {
                    side.session.handle_timeout(self.now, false);
                    side.collect();
                    // A session never asks to be woken in the past.
                    assert!(side.session.deadline().is_none_or(|d| d > self.now), "due again at once");
                }
            }
            self.run();
        }
    }

    fn connect(&mut self) {
        self.run();
        assert!(self.client.connected().is_some(), "client connected: {:?}", self.client.events);
        assert!(self.server.connected().is_some(), "server connected: {:?}", self.server.events);
    }
}

/// The app's own timers: what the engine uses by default.
fn config() -> SessionConfig {
    let config = EngineConfig::default().session();
    assert_eq!(config, SessionConfig::default());
    config
}

#[test]
fn two_sessions_connect_with_the_same_safety_code_and_chat_in_memory() {
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    let (server_name, client_trust, client_code) = wire.client.connected().unwrap();
    let (client_name, server_trust, server_code) = wire.server.connected().unwrap();
    assert_eq!((server_name, client_name), ("desk", "laptop"));
    assert_eq!((client_trust, server_trust), (Trust::New, Trust::New));
    assert_eq!(client_code, server_code, "both ends see the same safety code");
    wire.client.session.send_chat("hello desk", wire.now).unwrap();
    wire.server.session.send_chat("hello laptop", wire.now).unwrap();
    wire.run();
    assert_eq!(wire.server.messages(), ["hello desk"]);
    assert_eq!(wire.client.messages(), ["hello laptop"]);
}

#[test]
fn an_idle_connection_is_kept_alive_by_pings_for_a_virtual_hour() {
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    let started = Instant::now();
    wire.advance(Duration::from_secs(3600), Duration::from_secs(1));
    assert!(wire.client.ended().is_none() && wire.server.ended().is_none());
    assert!(wire.client.session.is_open() && wire.server.session.is_open());
    assert!(started.elapsed() < Duration::from_secs(2), "an hour took {:?}", started.elapsed());
}

#[test]
fn a_silent_peer_is_lost_exactly_at_the_heartbeat_timeout() {
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    wire.server.mute = true; // the server's machine vanished: nothing more arrives from it
    wire.advance(Duration::from_millis(14_900), Duration::from_millis(100));
    assert!(wire.client.ended().is_none(), "not lost before 15 s: {:?}", wire.client.events);
    wire.advance(Duration::from_millis(100), Duration::from_millis(100));
    let end = wire.client.ended().expect("lost at 15 s");
    assert_eq!(end.kind, EndKind::TimedOut);
    assert_eq!(end.reason, "the peer stopped answering (nothing received for 15 s)");
    assert!(!end.is_clean());
}

#[test]
fn a_quiet_session_pings_after_five_seconds_and_the_pong_keeps_the_peer_alive() {
    // The raw peer never pings: only its pong can keep it alive.
    let mut raw = RawClient::connect(config());
    raw.hello();
    let t0 = raw.now;
    assert_eq!(raw.server.session.deadline(), Some(t0 + Duration::from_secs(5)), "the ping is due first");
    raw.now = t0 + Duration::from_secs(5);
    raw.server.session.handle_timeout(raw.now, false);
    assert_eq!(raw.answer(), [Frame::Ping(1)]);
    raw.now = t0 + Duration::from_secs(10);
    raw.send(&Frame::Pong(1));
    // Lost 15 s after the pong, not 15 s after the hellos.
    for secs in [15, 20, 24] {
        raw.now = t0 + Duration::from_secs(secs);
        raw.server.session.handle_timeout(raw.now, false);
        raw.server.collect();
        assert!(raw.server.ended().is_none(), "alive at {secs} s: {:?}", raw.server.events);
    }
    raw.now = t0 + Duration::from_secs(25);
    raw.server.session.handle_timeout(raw.now, false);
    raw.server.collect();
    assert_eq!(raw.server.ended().map(|e| e.kind), Some(EndKind::TimedOut));
}

#[test]
fn a_server_whose_peer_never_starts_the_handshake_gives_up_at_the_hello_deadline() {
    let now = Instant::now();
    let mut server = Session::server(&Identity::generate(), config(), client_addr(), None, now);
    assert!(server.output().starts_with(b"PEERCONN"), "the preamble goes out at once");
    assert_eq!(server.deadline(), Some(now + Duration::from_secs(10)));
    server.handle_timeout(now + Duration::from_millis(9_999), false);
    assert!(server.poll_event().is_none());
    server.handle_timeout(now + Duration::from_secs(10), false);
    match server.poll_event() {
        Some(SessionEvent::Ended(end)) => {
            assert_eq!(end.kind, EndKind::TimedOut);
            assert!(end.reason.contains("did not complete the encrypted handshake within 10 s"), "{}", end.reason);
        }
        other => panic!("expected the end, got {other:?}"),
    }
    assert!(server.is_closed());
}

#[test]
fn a_peer_that_completes_the_handshake_but_never_says_hello_is_cut_at_the_hello_deadline() {
    let mut raw = RawClient::connect(config());
    assert!(matches!(raw.server.events.as_slice(), [SessionEvent::Secured { .. }]), "{:?}", raw.server.events);
    raw.server.session.handle_timeout(raw.now + Duration::from_secs(10), false);
    raw.server.collect();
    let end = raw.server.ended().expect("the end");
    assert_eq!(end.kind, EndKind::TimedOut);
    assert!(end.reason.contains("did not complete the hello within 10 s"), "{}", end.reason);
}

#[test]
fn a_client_whose_tcp_connect_never_completes_gives_up_at_the_connect_deadline() {
    let now = Instant::now();
    let mut client = Session::client(&Identity::generate(), config(), server_addr(), None, now);
    assert!(client.output().is_empty(), "nothing goes out before the TCP connection is up");
    client.handle_timeout(now + Duration::from_secs(10), false);
    match client.poll_event() {
        Some(SessionEvent::Ended(end)) => {
            assert_eq!(end.kind, EndKind::TimedOut);
            assert_eq!(end.reason, "no answer from 192.0.2.2:4000 within 10 s");
        }
        other => panic!("expected the end, got {other:?}"),
    }
}

#[test]
fn a_message_trickled_a_byte_a_second_is_cut_at_the_frame_timeout() {
    // Each byte counts as life for the heartbeat (60 s here); only the
    // half-message timer can end it, and it counts from the first byte.
    let config =
        SessionConfig { frame_timeout: Duration::from_secs(4), heartbeat_timeout: Duration::from_secs(60), ..config() };
    let mut wire = Wire::new(config, None, None);
    wire.connect();
    wire.client.session.send_chat("trickled", wire.now).unwrap();
    let record = wire.client.take_output();
    wire.client.mute = true;
    let t0 = wire.now;
    for (i, byte) in record.iter().enumerate().take(4) {
        wire.now = t0 + Duration::from_secs(i as u64);
        wire.server.receive(std::slice::from_ref(byte), wire.now);
        wire.server.session.handle_timeout(wire.now, false);
        wire.server.collect();
        assert!(wire.server.ended().is_none(), "not cut after {i} s");
    }
    wire.now = t0 + Duration::from_secs(4);
    wire.server.receive(&record[4..5], wire.now);
    wire.server.session.handle_timeout(wire.now, false);
    wire.server.collect();
    let end = wire.server.ended().expect("cut at 4 s");
    assert_eq!(end.kind, EndKind::TimedOut);
    // Bytes kept coming: the reason must not say nothing more came.
    assert_eq!(end.reason, "192.0.2.1:50000 left a message unfinished for 4 s");
}

#[test]
fn a_normal_close_is_clean_on_both_sides_and_reported_when_the_peer_has_closed() {
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    wire.client.session.close("you closed the connection", "you cancelled the connection", "", wire.now);
    wire.client.collect();
    assert!(wire.client.ended().is_none(), "reported only once the peer closed its side");
    assert!(!wire.client.session.take_shutdown(), "the bye is not out yet");
    let bye = wire.client.take_output();
    assert!(wire.client.session.take_shutdown(), "the bye is out: shut the write side");
    assert!(!wire.client.session.take_shutdown(), "once");
    wire.server.receive(&bye, wire.now);
    wire.run();
    let server_end = wire.server.ended().expect("the server heard the bye");
    assert_eq!(server_end.kind, EndKind::PeerClosed);
    assert_eq!(server_end.reason, "the peer closed the connection");
    let client_end = wire.client.ended().expect("the client saw the server close");
    assert_eq!(client_end.kind, EndKind::Closed);
    assert_eq!(client_end.reason, "you closed the connection");
}

#[test]
fn a_close_whose_peer_never_closes_ends_after_the_linger() {
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    wire.server.deaf = true;
    wire.client.session.close("you closed the connection", "you cancelled the connection", "", wire.now);
    wire.advance(Duration::from_millis(2_900), Duration::from_millis(100));
    assert!(wire.client.ended().is_none());
    wire.advance(Duration::from_millis(100), Duration::from_millis(100));
    assert_eq!(wire.client.ended().map(|e| e.kind), Some(EndKind::Closed));
    assert!(wire.client.session.is_closed());
}

/// A client written from the protocol document, not from `Session`: a raw
/// Noise channel that completes the handshake and the hellos with a
/// server session, then says whatever the test wants.
struct RawClient {
    channel: Channel,
    server: Side,
    now: Instant,
}

impl RawClient {
    fn connect(config: SessionConfig) -> RawClient {
        let now = Instant::now();
        let server = Session::server(&Identity::generate(), config, client_addr(), None, now);
        let (channel, first) = Channel::initiator(&Identity::generate());
        let mut raw = RawClient { channel, server: Side::new(server, "desk"), now };
        raw.server.receive(&first, now);
        raw.answer();
        raw
    }

    /// Takes what the server said (returning its frames) and sends what
    /// our channel has to say back.
    fn answer(&mut self) -> Vec<Frame> {
        let (mut reply, mut plain) = (Vec::new(), Vec::new());
        let said = self.server.take_output();
        self.channel.receive(&said, &mut reply, &mut plain).expect("the server's records open");
        if !reply.is_empty() {
            self.server.receive(&reply, self.now);
        }
        let mut frames = Vec::new();
        let mut used = 0;
        while let Ok(Some((frame, len))) = frame::decode(&plain[used..]) {
            used += len;
            frames.push(frame);
        }
        frames
    }

    fn hello(&mut self) -> Vec<Frame> {
        self.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "raw".into() })
    }

    fn send(&mut self, frame: &Frame) -> Vec<Frame> {
        let mut plain = Vec::new();
        frame.encode(&mut plain);
        self.send_plain(&plain)
    }

    /// Seals any bytes as if they were frames.
    fn send_plain(&mut self, plain: &[u8]) -> Vec<Frame> {
        let mut sealed = Vec::new();
        self.channel.seal(plain, &mut sealed).unwrap();
        self.server.receive(&sealed, self.now);
        self.answer()
    }
}

#[test]
fn every_bye_code_from_the_peer_ends_the_session_as_its_kind_with_its_sentence() {
    let cases = [
        (ByeCode::Normal, EndKind::PeerClosed, "the peer closed the connection (\"because\")"),
        (
            ByeCode::Busy,
            EndKind::PeerRefused(ByeCode::Busy),
            "the peersocket at 192.0.2.1:50000 is busy with another peer",
        ),
        (
            ByeCode::ProtocolError,
            EndKind::PeerRefused(ByeCode::ProtocolError),
            "the peer reported a protocol error (\"because\")",
        ),
        (
            ByeCode::Unsupported,
            EndKind::PeerRefused(ByeCode::Unsupported),
            "the peer refused our protocol version (\"because\")",
        ),
        (ByeCode::Untrusted, EndKind::PeerRefused(ByeCode::Untrusted), "the peer refused our key (\"because\")"),
        (ByeCode::Pairing, EndKind::PeerRefused(ByeCode::Pairing), "the peer refused the pairing (\"because\")"),
        (
            ByeCode::Limit,
            EndKind::PeerRefused(ByeCode::Limit),
            "the peer ended the connection: we went over a limit (\"because\")",
        ),
    ];
    for (code, kind, reason) in cases {
        let mut raw = RawClient::connect(config());
        let hello = raw.hello();
        assert!(matches!(hello.as_slice(), [Frame::Hello { .. }]), "{hello:?}");
        assert!(raw.server.connected().is_some());
        let answer = raw.send(&Frame::Bye { code, reason: "because".into() });
        assert!(answer.is_empty(), "nothing is said back to a bye: {answer:?}");
        let end = raw.server.ended().expect("ended");
        assert_eq!((end.kind, end.reason.as_str()), (kind, reason), "{code:?}");
        assert_eq!(end.is_clean(), code == ByeCode::Normal);
        assert!(raw.server.session.is_closed(), "a bye from the peer closes at once");
    }
}

#[test]
fn a_bye_during_the_hello_ends_the_session_too() {
    let mut raw = RawClient::connect(config());
    raw.send(&Frame::Bye { code: ByeCode::Untrusted, reason: String::new() });
    assert_eq!(raw.server.ended().map(|e| e.kind), Some(EndKind::PeerRefused(ByeCode::Untrusted)));
}

#[test]
fn frames_out_of_turn_are_protocol_errors_answered_with_the_protocol_bye() {
    let cases: [(&[Frame], &str); 4] = [
        (&[Frame::Chat("early".into())], "sent a chat message before the hello"),
        (&[Frame::Pair(vec![1; 33])], "sent a pairing message before the hello"),
        (&[Frame::Ping(1), Frame::Ping(2)], "sent a ping before the hello"),
        (&[Frame::Offer { transfer: 0, size: 1, name: "a".into() }], "sent a file offer before the hello"),
    ];
    for (frames, why) in cases {
        let mut raw = RawClient::connect(config());
        let mut answer = Vec::new();
        for frame in frames {
            answer.extend(raw.send(frame));
        }
        let end = raw.server.ended().expect("ended");
        assert_eq!(end.kind, EndKind::Protocol);
        assert_eq!(end.reason, format!("protocol error from 192.0.2.1:50000: {why}"));
        assert!(
            matches!(answer.last(), Some(Frame::Bye { code: ByeCode::ProtocolError, .. })),
            "the peer is told: {answer:?}"
        );
    }
    let mut raw = RawClient::connect(config());
    raw.hello();
    let answer = raw.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "again".into() });
    assert!(matches!(answer.as_slice(), [Frame::Bye { code: ByeCode::ProtocolError, .. }]));
    assert!(raw.server.ended().unwrap().reason.ends_with("sent a second hello"));
}

#[test]
fn bytes_that_are_no_frame_end_the_session_and_frames_before_them_still_count() {
    let mut raw = RawClient::connect(config());
    raw.hello();
    let mut plain = Vec::new();
    Frame::Chat("said before the garbage".into()).encode(&mut plain);
    plain.extend_from_slice(&[0, 0, 0, 3, 0x02, 0xff, 0xfe]); // a chat that is not UTF-8
    let answer = raw.send_plain(&plain);
    assert_eq!(raw.server.messages(), ["said before the garbage"]);
    let end = raw.server.ended().unwrap();
    assert_eq!(end.kind, EndKind::Protocol);
    assert!(end.reason.contains("not valid UTF-8"), "{}", end.reason);
    assert!(matches!(answer.as_slice(), [Frame::Bye { code: ByeCode::ProtocolError, .. }]));
}

#[test]
fn a_ping_is_answered_with_a_pong_carrying_its_number() {
    let mut raw = RawClient::connect(config());
    raw.hello();
    assert_eq!(raw.send(&Frame::Ping(0xdead_beef)), [Frame::Pong(0xdead_beef)]);
}

#[test]
fn file_frames_on_a_session_without_transfers_are_protocol_errors() {
    let mut raw = RawClient::connect(config());
    raw.hello();
    let answer = raw.send(&Frame::Offer { transfer: 1, size: 10, name: "a.txt".into() });
    assert!(matches!(answer.as_slice(), [Frame::Bye { code: ByeCode::ProtocolError, .. }]));
    assert!(raw.server.ended().unwrap().reason.contains("takes no files"));
}

/// The server refuses for `why`; the client must hear the bye as `code`.
fn refused_with(mut wire: Wire, code: ByeCode, server_kind: EndKind) {
    wire.run();
    let client_end = wire.client.ended().unwrap_or_else(|| panic!("client ended: {:?}", wire.client.events));
    assert_eq!(client_end.kind, EndKind::PeerRefused(code), "{client_end:?}");
    let server_end = wire.server.ended().unwrap_or_else(|| panic!("server ended: {:?}", wire.server.events));
    assert_eq!(server_end.kind, server_kind, "{server_end:?}");
    assert!(wire.client.connected().is_none(), "refused before the hellos finished");
}

#[test]
fn a_busy_server_refuses_with_the_busy_bye() {
    let mut wire = Wire::new(config(), None, None);
    wire.server.busy = true;
    refused_with(wire, ByeCode::Busy, EndKind::Refused);
}

#[test]
fn a_listener_that_asks_for_a_code_refuses_a_client_without_one_with_the_pairing_bye() {
    let wire = Wire::new(config(), None, Some("4821-0937"));
    refused_with(wire, ByeCode::Pairing, EndKind::Refused);
}

#[test]
fn a_client_with_a_code_refuses_a_listener_that_asks_for_none() {
    let mut wire = Wire::new(config(), Some("4821-0937"), None);
    wire.run();
    let end = wire.client.ended().unwrap();
    assert_eq!(end.kind, EndKind::Refused);
    assert!(end.reason.contains("did not ask for one"), "{}", end.reason);
    assert_eq!(wire.server.ended().unwrap().kind, EndKind::PeerRefused(ByeCode::Pairing));
}

#[test]
fn a_changed_key_is_refused_before_the_hellos_finish_with_the_untrusted_bye() {
    let server_id = Identity::generate();
    let mut wire = Wire::with_identities(config(), Identity::generate(), server_id.clone(), None, None);
    // The client remembers another key under the server's name.
    let old = Identity::generate();
    wire.client.known.remember(old.public(), "desk", None);
    wire.run();
    let changed = wire.client.events.iter().find_map(|e| match e {
        SessionEvent::KeyChanged { peer_name, address, key, old_key } => Some((peer_name, *address, *key, *old_key)),
        _ => None,
    });
    let (name, address, key, old_key) = changed.expect("KeyChanged reported");
    assert_eq!((name.as_str(), address), ("desk", server_addr()));
    assert_eq!((&key, &old_key), (server_id.public(), old.public()));
    assert!(wire.client.connected().is_none(), "no Connected after a key change");
    assert_eq!(wire.client.ended().unwrap().kind, EndKind::KeyChanged);
    assert_eq!(wire.server.ended().unwrap().kind, EndKind::PeerRefused(ByeCode::Untrusted));
    assert!(!wire.client.known.contains(server_id.public()), "the new key is not remembered");
}

#[test]
fn a_key_remembered_but_not_verified_is_known() {
    let server_id = Identity::generate();
    let mut wire = Wire::with_identities(config(), Identity::generate(), server_id.clone(), None, None);
    wire.client.known.remember(server_id.public(), "desk", Some("192.0.2.2:4000"));
    wire.connect();
    assert_eq!(wire.client.connected().unwrap().1, Trust::Known);
}

#[test]
fn a_verified_key_is_verified_and_both_sides_remember_the_other() {
    let (client_id, server_id) = (Identity::generate(), Identity::generate());
    let mut wire = Wire::with_identities(config(), client_id.clone(), server_id.clone(), None, None);
    wire.client.known.remember(server_id.public(), "desk", Some("192.0.2.2:4000"));
    wire.client.known.set_verified(server_id.public(), true);
    wire.connect();
    assert_eq!(wire.client.connected().unwrap().1, Trust::Verified);
    assert_eq!(wire.server.connected().unwrap().1, Trust::New);
    assert!(wire.server.known.contains(client_id.public()), "the server remembers the client it met");
}

#[test]
fn another_protocol_version_is_refused_with_the_unsupported_bye() {
    let mut raw = RawClient::connect(config());
    let answer = raw.send(&Frame::Hello { version: frame::VERSION + 1, pairing: false, name: "future".into() });
    let end = raw.server.ended().expect("ended");
    assert_eq!(end.kind, EndKind::Refused);
    assert!(end.reason.contains("speaks protocol version 4"), "{}", end.reason);
    // The bye that went out says Unsupported.
    match answer.as_slice() {
        [Frame::Bye { code, .. }] => assert_eq!(*code, ByeCode::Unsupported),
        other => panic!("expected a bye, got {other:?}"),
    }
}

#[test]
fn a_chat_flood_past_the_burst_ends_with_the_limit_bye_and_the_rate_refills_with_time() {
    let config = SessionConfig { chat_burst: 5, chat_per_sec: 1, ..config() };
    let mut wire = Wire::new(config, None, None);
    wire.connect();
    for i in 0..5 {
        wire.client.session.send_chat(&format!("m{i}"), wire.now).unwrap();
    }
    wire.run();
    assert_eq!(wire.server.messages().len(), 5);
    wire.advance(Duration::from_secs(1), Duration::from_secs(1));
    wire.client.session.send_chat("one more after a second", wire.now).unwrap();
    wire.run();
    assert_eq!(wire.server.messages().len(), 6, "a second refilled one message");
    assert!(wire.server.ended().is_none());
    wire.client.session.send_chat("too many", wire.now).unwrap();
    wire.run();
    let end = wire.server.ended().expect("flood ended");
    assert_eq!(end.kind, EndKind::Limit);
    assert_eq!(wire.server.messages().len(), 6, "the message over the limit is not delivered");
    assert_eq!(wire.client.ended().unwrap().kind, EndKind::PeerRefused(ByeCode::Limit));
}

#[test]
fn chat_is_refused_before_the_hellos_and_while_closing() {
    let mut wire = Wire::new(config(), None, None);
    assert_eq!(wire.client.session.send_chat("early", wire.now), Err(ChatRefused::NotOpen));
    wire.connect();
    wire.client.session.close("you closed the connection", "you cancelled the connection", "", wire.now);
    assert_eq!(wire.client.session.send_chat("late", wire.now), Err(ChatRefused::Closing));
}

/// A client with `code` tries the server's `guard`; returns both ends.
fn pairing_try(server_code: &str, client_code: &str, guard: PairingGuard, now: Instant) -> Wire {
    let mut wire = Wire::new(config(), Some(client_code), Some(server_code));
    wire.now = now;
    wire.server.guard = guard;
    wire.run();
    wire
}

#[test]
fn the_right_pairing_code_verifies_both_sides() {
    let wire = pairing_try("4821-0937", "4821-0937", PairingGuard::default(), Instant::now());
    assert_eq!(wire.client.connected().map(|c| c.1), Some(Trust::Verified));
    assert_eq!(wire.server.connected().map(|c| c.1), Some(Trust::Verified));
}

#[test]
fn wrong_pairing_codes_double_the_wait_and_stop_the_code_after_ten() {
    let code = "4821-0937";
    let mut now = Instant::now();
    let mut guard = PairingGuard::default();
    let mut waits = Vec::new();
    for n in 1..=10u32 {
        let mut wire = pairing_try(code, "1111-2222", guard.clone(), now);
        let wrong = wire.server.events.iter().find_map(|e| match e {
            SessionEvent::WrongCode { count, max, wait } => Some((*count, *max, *wait)),
            _ => None,
        });
        let (count, max, wait) = wrong.unwrap_or_else(|| panic!("try {n}: {:?}", wire.server.events));
        assert_eq!((count, max), (n, 10));
        waits.push(wait.as_secs());
        assert_eq!(wire.client.ended().unwrap().kind, EndKind::PeerRefused(ByeCode::Pairing));
        guard = std::mem::take(&mut wire.server.guard);
        // Trying again before the wait is over is refused without a check.
        if n < 10 {
            let early = pairing_try(code, code, guard.clone(), now + wait - Duration::from_millis(1));
            assert!(early.server.connected().is_none(), "a try during the wait is refused");
            let why = &early.server.ended().unwrap().reason;
            assert!(why.contains("waiting after a wrong code"), "{why}");
            assert_eq!(early.server.guard.wrong_codes, n, "a refused try is not counted");
        }
        now += wait;
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
    // Even the right code no longer works.
    let last = pairing_try(code, code, guard, now + Duration::from_secs(1000));
    assert!(last.server.connected().is_none());
    assert!(last.server.ended().unwrap().reason.contains("no longer works"));
}

#[test]
fn a_right_code_after_a_wrong_one_resets_the_back_off() {
    let code = "4821-0937";
    let now = Instant::now();
    let mut wrong = pairing_try(code, "1111-2222", PairingGuard::default(), now);
    let guard = std::mem::take(&mut wrong.server.guard);
    assert_eq!(guard.wrong_codes, 1);
    let mut right = pairing_try(code, code, guard, now + Duration::from_secs(1));
    assert!(right.server.connected().is_some());
    let guard = std::mem::take(&mut right.server.guard);
    assert_eq!((guard.wrong_codes, guard.blocked_until), (0, None));
}

#[test]
fn pairing_that_stalls_is_cut_at_the_hello_deadline() {
    let mut wire = Wire::new(config(), Some("4821-0937"), Some("4821-0937"));
    // The handshake and the client's hello reach the server, whose pairing
    // message then never reaches the client.
    for to_server in [true, false, true] {
        let (from, to) =
            if to_server { (&mut wire.client, &mut wire.server) } else { (&mut wire.server, &mut wire.client) };
        let out = from.take_output();
        to.receive(&out, wire.now);
    }
    assert!(wire.server.events.iter().any(|e| matches!(e, SessionEvent::Secured { .. })));
    wire.server.mute = true;
    wire.advance(Duration::from_secs(10), Duration::from_secs(1));
    let end = wire.server.ended().expect("pairing cut");
    assert_eq!(end.kind, EndKind::TimedOut);
    assert!(end.reason.contains("did not complete the pairing within 10 s"), "{}", end.reason);
}

#[test]
fn the_end_of_the_stream_mid_record_or_before_the_hello_says_where_it_was_cut() {
    let now = Instant::now();
    let mut server = Session::server(&Identity::generate(), config(), client_addr(), None, now);
    server.eof();
    match server.poll_event() {
        Some(SessionEvent::Ended(end)) => {
            assert_eq!(end.kind, EndKind::Reset);
            assert!(end.reason.contains("during the handshake"), "{}", end.reason);
        }
        other => panic!("{other:?}"),
    }
    let mut wire = Wire::new(config(), None, None);
    wire.connect();
    wire.client.session.send_chat("cut", wire.now).unwrap();
    let record = wire.client.take_output();
    wire.server.receive(&record[..3], wire.now);
    wire.server.session.eof();
    wire.server.collect();
    let end = wire.server.ended().unwrap();
    assert_eq!(
        (end.kind, end.reason.as_str()),
        (EndKind::Reset, "the peer closed the connection in the middle of a message")
    );
}

#[test]
fn pairing_attempts_held_at_the_proof_and_released_together_wait_their_turn() {
    // Sixteen clients with a wrong code each get through the hellos while
    // the listener has no wrong code on record, then all prove their code
    // at once: only the first is checked; the rest must wait like attempts
    // one after the other, and none counts against the limit.
    let code = "4821-0937";
    let mut held = Vec::new();
    let t0 = Instant::now();
    for _ in 0..16 {
        let mut wire = Wire::new(config(), Some("1111-2222"), Some(code));
        wire.now = t0; // one virtual instant for all of them
        for to_server in [true, false, true, false] {
            let (from, to) =
                if to_server { (&mut wire.client, &mut wire.server) } else { (&mut wire.server, &mut wire.client) };
            let out = from.take_output();
            to.receive(&out, wire.now);
        }
        let proof = wire.client.take_output();
        assert!(!proof.is_empty(), "the client's pairing message and proof wait to go out");
        held.push((wire, proof));
    }
    let mut guard = PairingGuard::default();
    let mut checked = 0;
    for (wire, proof) in &mut held {
        wire.server.guard = std::mem::take(&mut guard);
        wire.server.receive(proof, wire.now);
        guard = std::mem::take(&mut wire.server.guard);
        let end = wire.server.ended().expect("refused");
        assert!(wire.server.connected().is_none());
        if wire.server.events.iter().any(|e| matches!(e, SessionEvent::WrongCode { .. })) {
            checked += 1;
            assert_eq!(end.reason, "wrong pairing code");
        } else {
            assert_eq!(end.reason, "pairing refused: waiting after a wrong code");
        }
    }
    assert_eq!(checked, 1, "only one code was checked");
    assert_eq!(guard.wrong_codes, 1);
}
