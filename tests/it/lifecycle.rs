//! How peersockets start, end and start again: refused and lost
//! connections, graceful closes, the busy server, restart, rename, remove,
//! and shutting the engine down.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use peerconn::net::frame::{self, ByeCode, Frame};
use peerconn::net::{EndKind, EngineConfig, Event, ListenOptions, PeerState};

use crate::support::{pair, Node, RawPeer};

fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[test]
fn connect_to_a_closed_port_is_lost_with_a_reason_within_3_s() {
    let mut b = Node::new();
    let addr = closed_port();
    let started = Instant::now();
    let c = b.engine.connect("client", addr).unwrap();
    let (kind, reason) = b.ended(c);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(kind, EndKind::Unreachable);
    assert_eq!(reason, format!("connection refused by {addr} (nothing is listening there)"));
}

#[test]
fn graceful_disconnect_is_a_clean_end_on_both_sides() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    b.engine.send_text(c, "last words").unwrap();
    b.engine.disconnect(c);
    assert_eq!(a.message(s), "last words");
    assert_eq!(a.ended(s), (EndKind::PeerClosed, "the peer closed the connection".to_owned()));
    assert_eq!(b.ended(c), (EndKind::Closed, "you closed the connection".to_owned()));
}

#[test]
fn peer_that_vanishes_without_bye_is_lost() {
    let mut a = Node::new();
    let (s, addr) = a.listen("server");
    let (raw, _) = RawPeer::hello(addr, "ghost");
    a.connected(s);
    drop(raw);
    let (reason, clean) = a.lost(s);
    assert!(!clean);
    assert!(reason.contains("without saying goodbye"), "{reason}");
}

/// The engine runs the session's heartbeat over real sockets (the 15 s of
/// the default timers are checked on a virtual clock in `session`).
#[test]
fn silent_peer_is_lost_after_the_heartbeat_timeout() {
    let mut a = Node::new();
    let (s, addr) = a.listen("server");
    let (_raw, _) = RawPeer::hello(addr, "silent");
    a.connected(s);
    let started = Instant::now();
    let (reason, clean) = a.lost_within(s, Duration::from_secs(3));
    assert!(!clean);
    assert_eq!(reason, "the peer stopped answering (nothing received for 1 s)");
    assert!(started.elapsed() >= Duration::from_millis(900), "lost too early: {:?}", started.elapsed());
}

#[test]
fn busy_server_refuses_a_second_client_and_keeps_the_first() {
    let (mut a, mut b, mut c) = (Node::new(), Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let first = b.engine.connect("first", addr).unwrap();
    b.connected(first);
    a.connected(s);
    let second = c.engine.connect("second", addr).unwrap();
    let (kind, reason) = c.ended(second);
    assert_eq!(kind, EndKind::PeerRefused(ByeCode::Busy));
    assert_eq!(reason, format!("the peersocket at {addr} is busy with another peer"));
    b.engine.send_text(first, "still mine?").unwrap();
    assert_eq!(a.message(s), "still mine?");
    a.engine.send_text(s, "yes").unwrap();
    assert_eq!(b.message(first), "yes");
}

#[test]
fn busy_refusal_is_a_bye_with_the_busy_code() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let first = b.engine.connect("first", addr).unwrap();
    b.connected(first);
    a.connected(s);
    let mut raw = RawPeer::connect(addr);
    raw.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "second".into() });
    match raw.until_closed() {
        Some(Frame::Bye { code: ByeCode::Busy, .. }) => {}
        other => panic!("expected a busy bye, got {other:?}"),
    }
}

#[test]
fn lost_server_listens_again_on_the_same_port_and_a_client_reconnects() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let c = b.engine.connect("client", addr).unwrap();
    b.connected(c);
    a.connected(s);
    a.engine.disconnect(s);
    assert_eq!(a.lost(s), ("you closed the connection".to_owned(), true));
    assert_eq!(b.lost(c).0, "the peer closed the connection");
    // Inactive means the port is closed.
    b.engine.restart(c);
    assert!(b.lost(c).0.contains("refused"));
    a.engine.restart(s);
    let again = a.wait("listening again", |e| match e {
        Event::State { id, state: PeerState::Listening { local } } if *id == s => Some(*local),
        _ => None,
    });
    assert_eq!(again, addr);
    b.engine.restart(c);
    b.connected(c);
    a.connected(s);
    b.engine.send_text(c, "back again").unwrap();
    assert_eq!(a.message(s), "back again");
}

#[test]
fn restarting_an_active_peersocket_is_an_error() {
    let mut a = Node::new();
    let (s, _) = a.listen("server");
    a.engine.restart(s);
    assert!(a.error(s).contains("already active"));
}

#[test]
fn keep_listening_server_takes_the_next_peer_after_the_first_leaves() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen_on(
        "server",
        "127.0.0.1:0".parse().unwrap(),
        ListenOptions { keep_listening: true, ..Default::default() },
    );
    for round in 0..3 {
        let c = b.engine.connect(&format!("client{round}"), addr).unwrap();
        b.connected(c);
        assert_eq!(a.connected(s).0, format!("client{round}"));
        b.engine.disconnect(c);
        assert!(a.lost(s).1);
        a.wait("listening again", |e| match e {
            Event::State { id, state: PeerState::Listening { local } } if *id == s && *local == addr => Some(()),
            _ => None,
        });
    }
}

#[test]
fn rename_changes_the_name_the_next_peer_sees() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("old name");
    a.engine.rename(s, "new name").unwrap();
    assert_eq!(
        a.wait("renamed", |e| match e {
            Event::Renamed { id, name } if *id == s => Some(name.clone()),
            _ => None,
        }),
        "new name"
    );
    let c = b.engine.connect("client", addr).unwrap();
    assert_eq!(b.connected(c).0, "new name");
    assert!(a.engine.rename(s, "").is_err());
    assert!(a.engine.rename(s, "bell\x07").is_err());
}

#[test]
fn removing_a_connected_peersocket_says_bye_and_frees_the_port() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let c = b.engine.connect("client", addr).unwrap();
    b.connected(c);
    a.connected(s);
    a.engine.remove(s);
    a.wait("removed", |e| matches!(e, Event::Removed { id } if *id == s).then_some(()));
    assert_eq!(b.lost(c), ("the peer closed the connection".to_owned(), true));
    // The listener is closed: the port can be bound again.
    let again = TcpListener::bind(addr);
    assert!(again.is_ok(), "port still taken: {again:?}");
}

#[test]
fn dropping_the_engine_says_bye_to_every_peer() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (_s1, c1) = pair(&mut a, &mut b);
    let (_s2, c2) = pair(&mut a, &mut b);
    drop(a);
    // A program closing says so (`ByeCode::Leaving`): the peer may come back.
    assert_eq!(
        b.ended(c1),
        (peerconn::net::EndKind::PeerLeft, "the peer's PeerConn closed (\"PeerConn is closing\")".to_owned())
    );
    assert!(b.lost(c2).1);
}

#[test]
fn listening_on_a_port_in_use_is_lost_with_a_clear_reason() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut a = Node::new();
    let s = a.engine.listen("server", addr, ListenOptions::default()).unwrap();
    let (reason, clean) = a.lost(s);
    assert!(!clean);
    assert_eq!(reason, format!("port {} is already in use on 127.0.0.1", addr.port()));
}

#[test]
fn listening_on_an_address_of_another_computer_is_lost_with_a_clear_reason() {
    let mut a = Node::new();
    let s = a.engine.listen("server", "192.0.2.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    assert_eq!(a.lost(s).0, "192.0.2.1 is not an address of this computer");
}

#[test]
fn invalid_names_and_addresses_are_refused_before_anything_is_created() {
    let a = Node::new();
    let any: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert!(a.engine.listen("", any, ListenOptions::default()).is_err());
    assert!(a.engine.listen("   ", any, ListenOptions::default()).is_err());
    assert!(a.engine.connect(&"x".repeat(65), any).is_err());
    assert!(a.engine.connect("tab\tname", any).is_err());
    assert!(a.engine.connect("ok", "127.0.0.1:0".parse().unwrap()).is_err());
    assert!(a.engine.connect("ok", "0.0.0.0:5000".parse().unwrap()).is_err());
    // Only the known-peers list every engine reports at start.
    while let Ok(event) = a.engine.events().recv_timeout(Duration::from_millis(200)) {
        assert!(matches!(event, peerconn::net::Event::KnownPeers { .. }), "{event:?}");
    }
}

#[test]
fn server_that_never_answers_the_handshake_is_lost_after_the_hello_timeout() {
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut b = Node::new();
    let c = b.engine.connect("client", mute.local_addr().unwrap()).unwrap();
    let _accepted = mute.accept().unwrap();
    let (reason, clean) = b.lost_within(c, Duration::from_secs(5));
    assert!(!clean);
    assert!(reason.contains("did not complete the encrypted handshake"), "{reason}");
}

#[test]
fn cancelling_a_connection_in_its_hello_is_clean() {
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut b = Node::with_config(EngineConfig::default());
    let c = b.engine.connect("client", mute.local_addr().unwrap()).unwrap();
    let _accepted = mute.accept().unwrap();
    b.wait("connecting", |e| {
        matches!(e, Event::State { id, state: PeerState::Connecting { .. } } if *id == c).then_some(())
    });
    b.engine.disconnect(c);
    assert_eq!(b.lost(c), ("you cancelled the connection".to_owned(), true));
}
