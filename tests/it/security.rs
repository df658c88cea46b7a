//! Who the peer is: keys, trust on first use, key changes, pairing codes,
//! and the limits that keep one abusive peer from hurting the rest.

use std::time::{Duration, Instant};

use peerconn::net::frame::{self, ByeCode, Frame};
use peerconn::net::secure::Identity;
use peerconn::net::{EngineConfig, Event, ListenOptions, PeerId, PeerIdentity, PeerState, Trust};

use crate::support::{fast_config, Node, RawPeer, PATIENCE};

/// The identity a `Connected` state reports for `id`.
fn connected_as(node: &mut Node, id: PeerId) -> (String, PeerIdentity) {
    node.wait("connected", |e| match e {
        Event::State { id: i, state: PeerState::Connected { peer_name, peer, .. } } if *i == id => {
            Some((peer_name.clone(), peer.clone()))
        }
        Event::State { id: i, state: PeerState::Lost { reason, .. } } if *i == id => {
            panic!("lost instead of connected: {reason}")
        }
        _ => None,
    })
}

fn listen_with_code(node: &mut Node, code: &str) -> (PeerId, std::net::SocketAddr) {
    let options = ListenOptions { keep_listening: true, pairing_code: Some(code.into()) };
    node.listen_on("server", "127.0.0.1:0".parse().unwrap(), options)
}

fn key_changed(node: &mut Node, id: PeerId) -> (String, String, String) {
    node.wait("a key change", |e| match e {
        Event::KeyChanged { id: i, peer_name, old_fingerprint, new_fingerprint, .. } if *i == id => {
            Some((peer_name.clone(), old_fingerprint.clone(), new_fingerprint.clone()))
        }
        _ => None,
    })
}

#[test]
fn both_sides_see_each_others_real_key_and_the_same_safety_code() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let c = b.engine.connect("client", addr).unwrap();
    let (_, seen_by_client) = connected_as(&mut b, c);
    let (_, seen_by_server) = connected_as(&mut a, s);
    assert_eq!(seen_by_client.fingerprint, a.engine.fingerprint());
    assert_eq!(seen_by_server.fingerprint, b.engine.fingerprint());
    assert_eq!(seen_by_client.safety_code, seen_by_server.safety_code);
    assert_eq!(seen_by_client.safety_code.len(), 14, "{}", seen_by_client.safety_code);
    assert_eq!((seen_by_client.trust, seen_by_server.trust), (Trust::New, Trust::New));
}

#[test]
fn a_peer_seen_before_is_known_and_stays_verified_once_marked() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen_on(
        "server",
        "127.0.0.1:0".parse().unwrap(),
        ListenOptions { keep_listening: true, ..Default::default() },
    );
    let c = b.engine.connect("client", addr).unwrap();
    assert_eq!(connected_as(&mut b, c).1.trust, Trust::New);
    assert_eq!(connected_as(&mut a, s).1.trust, Trust::New);
    a.engine.set_verified(s, true);
    a.wait("trust", |e| matches!(e, Event::Trust { id, trust: Trust::Verified } if *id == s).then_some(()));
    b.engine.disconnect(c);
    b.lost(c);
    a.lost(s);
    b.engine.restart(c);
    assert_eq!(connected_as(&mut b, c).1.trust, Trust::Known);
    assert_eq!(connected_as(&mut a, s).1.trust, Trust::Verified);
}

#[test]
fn a_new_key_under_a_remembered_name_is_stopped_before_any_message_until_trusted() {
    let mut a = Node::new();
    let options = ListenOptions { keep_listening: true, ..Default::default() };
    let (s, addr) = a.listen_on("server", "127.0.0.1:0".parse().unwrap(), options);
    // The real bob connects once: his key is remembered under "bob".
    let (mut raw, _) = RawPeer::hello(addr, "bob");
    let (_, first) = connected_as(&mut a, s);
    raw.send(&Frame::Bye { code: ByeCode::Normal, reason: String::new() });
    drop(raw);
    a.lost(s);

    // Someone else says he is bob, with another key: stopped, told why.
    let mut impostor = RawPeer::connect(addr);
    impostor.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "bob".into() });
    impostor.send(&Frame::Chat("it is me, bob".into()));
    match impostor.until_closed() {
        Some(Frame::Bye { code: ByeCode::Untrusted, reason }) => assert!(reason.contains("trust"), "{reason}"),
        other => panic!("expected an untrusted bye, got {other:?}"),
    }
    let (name, old, new) = key_changed(&mut a, s);
    assert_eq!((name.as_str(), old.as_str()), ("bob", first.fingerprint.as_str()));
    assert_eq!(new, peerconn::net::secure::fingerprint(impostor.identity.public()));
    // Nothing the impostor sent arrived, and the server is still listening.
    for event in a.take_events() {
        assert!(
            !matches!(event, Event::Message { .. } | Event::State { state: PeerState::Connected { .. }, .. }),
            "{event:?}"
        );
    }

    // The person accepts the new key on purpose: the same key gets in.
    a.engine.trust_new_key(s);
    let identity = impostor.identity.clone();
    let mut again = RawPeer::connect_as(addr, identity);
    again.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "bob".into() });
    assert!(matches!(again.recv(), Some(Frame::Hello { .. })));
    let (_, now) = connected_as(&mut a, s);
    assert_eq!((now.fingerprint, now.trust), (new, Trust::Known));
}

#[test]
fn a_client_is_stopped_when_the_server_it_dialled_comes_back_with_another_key() {
    let mut b = Node::new();
    let (c, port) = {
        let mut a = Node::new();
        let (_, addr) = a.listen("office");
        let c = b.engine.connect("client", addr).unwrap();
        connected_as(&mut b, c);
        (c, addr.port())
        // `a` is dropped: the office computer is "reinstalled".
    };
    b.lost(c);
    let mut a = Node::new();
    let bind = format!("127.0.0.1:{port}").parse().unwrap();
    let (s, _) = a.listen_on("a new name", bind, ListenOptions::default());
    b.engine.restart(c);
    let (_, old, new) = key_changed(&mut b, c);
    assert_ne!(old, new);
    assert_eq!(new, a.engine.fingerprint());
    let (reason, clean) = b.lost(c);
    assert!(!clean);
    assert!(reason.contains("presented the key") && reason.contains("Trust new key"), "{reason}");
    // The server heard the refusal; nothing connected on either side.
    let (reason, _) = a.lost(s);
    assert!(reason.contains("refused our key"), "{reason}");

    // Trusting the new key reconnects at once.
    a.engine.restart(s);
    a.wait("listening", |e| matches!(e, Event::State { state: PeerState::Listening { .. }, .. }).then_some(()));
    b.engine.trust_new_key(c);
    assert_eq!(connected_as(&mut b, c).1.trust, Trust::Known);
}

#[test]
fn the_right_pairing_code_verifies_both_sides() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = listen_with_code(&mut a, "4821-0937");
    let c = b.engine.connect_with_code("client", addr, Some("4821 0937")).unwrap();
    let (name, seen) = connected_as(&mut b, c);
    assert_eq!((name.as_str(), seen.trust), ("server", Trust::Verified));
    assert_eq!(connected_as(&mut a, s).1.trust, Trust::Verified);
    b.engine.send_text(c, "paired").unwrap();
    assert_eq!(a.message(s), "paired");
}

#[test]
fn a_wrong_pairing_code_is_refused_counted_and_slowed_down() {
    let config = EngineConfig { max_wrong_codes: 2, ..fast_config() };
    let mut a = Node::with_config(config);
    let mut b = Node::new();
    let (s, addr) = listen_with_code(&mut a, "4821-0937");

    let c = b.engine.connect_with_code("client", addr, Some("1111-1111")).unwrap();
    let (reason, _) = b.lost(c);
    assert!(reason.contains("wrong pairing code"), "{reason}");
    let said = a.error(s);
    assert!(said.contains("wrong pairing code (1 of 2"), "{said}");

    // At once again: even the right code must wait.
    let c2 = b.engine.connect_with_code("client", addr, Some("4821-0937")).unwrap();
    let (reason, _) = b.lost(c2);
    assert!(reason.contains("try again in"), "{reason}");

    std::thread::sleep(Duration::from_millis(1100));
    let c3 = b.engine.connect_with_code("client", addr, Some("2222-2222")).unwrap();
    b.lost(c3);
    assert!(a.error(s).contains("no longer works"));
    std::thread::sleep(Duration::from_millis(2100));
    let c4 = b.engine.connect_with_code("client", addr, Some("4821-0937")).unwrap();
    let (reason, _) = b.lost(c4);
    assert!(reason.contains("too many wrong pairing codes"), "{reason}");
    // None of this cost the listener its state: it still listens.
    for event in a.take_events() {
        assert!(
            !matches!(event, Event::State { state: PeerState::Lost { .. } | PeerState::Connected { .. }, .. }),
            "{event:?}"
        );
    }
}

#[test]
fn a_missing_or_unasked_pairing_code_ends_with_a_reason_a_person_can_act_on() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (_, with_code) = listen_with_code(&mut a, "4821-0937");
    let c = b.engine.connect("client", with_code).unwrap();
    let (reason, _) = b.lost(c);
    assert!(reason.contains("asks for a pairing code"), "{reason}");

    let (_, without) = a.listen("plain");
    let c = b.engine.connect_with_code("client", without, Some("4821-0937")).unwrap();
    let (reason, _) = b.lost(c);
    assert!(reason.contains("did not ask for one"), "{reason}");
}

#[test]
fn a_confirmation_without_the_code_counts_as_a_wrong_code() {
    let mut a = Node::new();
    let (s, addr) = listen_with_code(&mut a, "4821-0937");
    let mut raw = RawPeer::connect(addr);
    raw.send(&Frame::Hello { version: frame::VERSION, pairing: true, name: "guesser".into() });
    assert!(matches!(raw.recv(), Some(Frame::Hello { pairing: true, .. })));
    assert!(matches!(raw.recv(), Some(Frame::Pair(_))));
    raw.send(&Frame::Confirm([7; 32]));
    match raw.until_closed() {
        Some(Frame::Bye { code: ByeCode::Pairing, .. }) => {}
        other => panic!("expected a pairing bye, got {other:?}"),
    }
    assert!(a.error(s).contains("wrong pairing code"));
}

#[test]
fn the_message_counter_limit_ends_the_connection_cleanly() {
    let config = EngineConfig { nonce_limit: 40, ..fast_config() };
    let (mut a, mut b) = (Node::with_config(config.clone()), Node::with_config(config));
    let (s, addr) = a.listen("server");
    let c = b.engine.connect("client", addr).unwrap();
    connected_as(&mut b, c);
    connected_as(&mut a, s);
    for n in 0..60 {
        let _ = b.engine.send_text(c, &format!("message {n}"));
    }
    let (reason, clean) = b.lost(c);
    assert!(!clean);
    assert!(reason.contains("message counter is used up"), "{reason}");
    a.lost(s);
}

#[test]
fn half_a_record_then_silence_is_cut_off_after_the_frame_timeout() {
    let config = EngineConfig {
        frame_timeout: Duration::from_millis(800),
        heartbeat_timeout: Duration::from_secs(60),
        ..fast_config()
    };
    let mut a = Node::with_config(config);
    let (s, addr) = a.listen("server");
    let (mut raw, _) = RawPeer::hello(addr, "slow");
    connected_as(&mut a, s);
    let mut record = Vec::new();
    raw.link.seal(&Frame::Chat("never finished".into()).to_bytes(), &mut record).unwrap();
    let started = Instant::now();
    raw.send_wire(&record[..record.len() / 2]);
    let (reason, _) = a.lost_within(s, PATIENCE);
    assert!(reason.contains("left a message unfinished"), "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
}

#[test]
fn a_chat_flood_over_the_rate_limit_is_disconnected_without_hurting_others() {
    let config = EngineConfig { chat_burst: 20, chat_per_sec: 10, ..fast_config() };
    let (mut a, mut b) = (Node::with_config(config), Node::new());
    let (healthy_s, healthy_c) = crate::support::pair(&mut a, &mut b);
    let (s, addr) = a.listen("target");
    let (mut raw, _) = RawPeer::hello(addr, "flood");
    connected_as(&mut a, s);
    for n in 0..100 {
        raw.send(&Frame::Chat(format!("spam {n}")));
    }
    match raw.until_closed() {
        Some(Frame::Bye { code: ByeCode::Limit, reason }) => assert!(reason.contains("10 chat messages a second")),
        other => panic!("expected a limit bye, got {other:?}"),
    }
    let (reason, _) = a.lost(s);
    assert!(reason.contains("more than 10 chat messages a second"), "{reason}");
    b.engine.send_text(healthy_c, "still here").unwrap();
    assert_eq!(a.message(healthy_s), "still here");
}

#[test]
fn an_engine_that_is_not_peerconn_gets_a_clear_reason() {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        let _ = std::io::Write::write_all(&mut s, b"SSH-2.0-OpenSSH_9.2\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut b = Node::new();
    let c = b.engine.connect("client", addr).unwrap();
    let (reason, _) = b.lost(c);
    assert!(reason.contains("not a PeerConn"), "{reason}");
    server.join().unwrap();
}

#[test]
fn an_old_unencrypted_peerconn_is_told_to_update() {
    let mut a = Node::new();
    let (_, addr) = a.listen("server");
    let mut old = RawPeer::tcp(addr);
    // A protocol 1 hello: length, type 1, PEERCONN, version 1, name.
    let mut hello = vec![0, 0, 0, 14, 1];
    hello.extend_from_slice(b"PEERCONN\x00\x01\x02Al");
    std::io::Write::write_all(&mut old, &hello).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut old, &mut answer);
    // Our preamble went out first; then the engine closed the connection.
    assert!(answer.starts_with(&peerconn::net::secure::PREAMBLE), "{answer:?}");

    // And our client, meeting such a server, says what is wrong.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        let _ = std::io::Write::write_all(&mut s, &hello);
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut b = Node::new();
    let c = b.engine.connect("client", fake_addr).unwrap();
    let (reason, _) = b.lost(c);
    assert!(reason.contains("unencrypted") && reason.contains("updated"), "{reason}");
    server.join().unwrap();
}

#[test]
fn the_installation_key_and_known_peers_survive_a_restart() {
    let dir = crate::support::TempDir::new("keys");
    let key_path = dir.path().join("identity.key");
    let known = dir.path().join("known_peers.json");
    let config = || EngineConfig {
        identity: Identity::load_or_create(&key_path).unwrap(),
        known_peers: Some(known.clone()),
        ..fast_config()
    };
    let mut server = Node::new();
    let (s, addr) = server.listen_on(
        "server",
        "127.0.0.1:0".parse().unwrap(),
        ListenOptions { keep_listening: true, ..Default::default() },
    );
    let first_key = {
        let mut b = Node::with_config(config());
        let c = b.engine.connect("client", addr).unwrap();
        assert_eq!(connected_as(&mut b, c).1.trust, Trust::New);
        connected_as(&mut server, s);
        b.engine.fingerprint().to_owned()
    };
    server.lost(s);
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.contains(server.engine.fingerprint()), "{text}");
    let mut b = Node::with_config(config());
    assert_eq!(b.engine.fingerprint(), first_key);
    let c = b.engine.connect("client", addr).unwrap();
    assert_eq!(connected_as(&mut b, c).1.trust, Trust::Known);
    assert_eq!(connected_as(&mut server, s).1.trust, Trust::Known);
}

/// The next `KnownPeers` list `node` reports.
fn known_list(node: &mut Node) -> Vec<peerconn::net::KnownPeerInfo> {
    node.wait("the known peers", |e| match e {
        Event::KnownPeers { peers } => Some(peers.clone()),
        _ => None,
    })
}

/// The engine reports the remembered keys (at start and on each change);
/// a forgotten key's name may then come with another key as a new peer,
/// and a forgotten key cannot be marked verified until it is remembered.
#[test]
fn known_peers_are_listed_and_a_forgotten_key_is_trusted_on_first_use_again() {
    let mut a = Node::new();
    assert_eq!(known_list(&mut a), vec![], "an empty list at start");
    let options = ListenOptions { keep_listening: true, ..Default::default() };
    let (s, addr) = a.listen_on("server", "127.0.0.1:0".parse().unwrap(), options);
    let (raw, _) = RawPeer::hello(addr, "bob");
    let (_, bob) = connected_as(&mut a, s);
    let listed = known_list(&mut a);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].fingerprint.as_str()), ("bob", bob.fingerprint.as_str()));
    assert!(!listed[0].verified && listed[0].address.is_none(), "{listed:?}");
    a.engine.set_verified(s, true);
    assert!(known_list(&mut a)[0].verified);

    a.engine.forget_key(&bob.fingerprint);
    assert_eq!(known_list(&mut a), vec![]);
    // Still connected, but no longer remembered: it cannot be verified.
    a.engine.set_verified(s, true);
    assert!(a.error(s).contains("not remembered"));
    drop(raw);
    a.lost(s);

    // Another key calling itself bob is now simply a new peer.
    let (_raw, _) = RawPeer::hello(addr, "bob");
    let (_, second) = connected_as(&mut a, s);
    assert_eq!(second.trust, Trust::New);
    assert_ne!(second.fingerprint, bob.fingerprint);
    assert_eq!(known_list(&mut a)[0].fingerprint, second.fingerprint);
}

/// A known-peers file with these keys (name, verified, talked), as a
/// previous run would have left it.
fn store_with(dir: &crate::support::TempDir, peers: &[([u8; 32], String, bool, bool)]) -> std::path::PathBuf {
    use peerconn::net::secure::{fingerprint, hex};
    let list: Vec<serde_json::Value> = peers
        .iter()
        .map(|(key, name, verified, talked)| {
            serde_json::json!({"key": hex(key), "fingerprint": fingerprint(key), "name": name, "address": null,
                "verified": verified, "talked": talked})
        })
        .collect();
    let path = dir.path().join("known_peers.json");
    std::fs::write(&path, serde_json::json!({"version": 1, "peers": list}).to_string()).unwrap();
    path
}

fn numbered_key(i: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[31] = 0xee;
    key
}

/// Regression: after 1,000 throw-away keys the store stopped remembering,
/// so an impostor using a real peer's name later got in as "new".
#[test]
fn a_full_key_store_gives_up_strangers_not_the_peers_a_person_talked_with() {
    let dir = crate::support::TempDir::new("full-store");
    let alice = Identity::generate();
    let mut peers = vec![(*alice.public(), "alice".to_owned(), false, true)];
    peers.extend((0..999).map(|i| (numbered_key(i), format!("stranger {i}"), false, false)));
    let known = store_with(&dir, &peers);
    let mut node = Node::with_config(EngineConfig { known_peers: Some(known), ..fast_config() });
    let (s, addr) = node.listen("server");
    // A peer seen for the first time is remembered (a stranger gives way)...
    let (_bob, _) = RawPeer::hello(addr, "bob");
    node.connected(s);
    let listed = node.wait("the known peers", |e| match e {
        Event::KnownPeers { peers } if peers.iter().any(|p| p.name == "bob") => Some(peers.clone()),
        _ => None,
    });
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().any(|p| p.name == "alice"), "alice, talked with, is kept");
    // ...and an impostor using alice's name is refused as a key change.
    drop(_bob);
    node.lost(s);
    let mut node = node;
    let (s2, addr2) = node.listen("server 2");
    let mut impostor = RawPeer::connect(addr2);
    impostor.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "alice".into() });
    assert!(matches!(impostor.until_closed(), Some(Frame::Bye { code: ByeCode::Untrusted, .. })));
    node.wait("the key change", |e| matches!(e, Event::KeyChanged { id, .. } if *id == s2).then_some(()));
}

#[test]
fn a_full_store_of_peers_worth_keeping_says_a_new_key_was_not_remembered() {
    let dir = crate::support::TempDir::new("full-friends");
    let peers: Vec<_> = (0..1000).map(|i| (numbered_key(i), format!("friend {i}"), false, true)).collect();
    let known = store_with(&dir, &peers);
    let mut node = Node::with_config(EngineConfig { known_peers: Some(known), ..fast_config() });
    let (s, addr) = node.listen("server");
    let (_newcomer, _) = RawPeer::hello(addr, "newcomer");
    node.connected(s);
    let said = node.error(s);
    assert!(said.contains("not remembered"), "{said}");
}

/// Regression: names are not identities; a stranger who first used a name
/// locked out the peer whose key was verified.
#[test]
fn a_verified_key_gets_in_under_a_name_a_stranger_took_first() {
    let dir = crate::support::TempDir::new("name-squat");
    let carol = Identity::generate();
    let squatter = Identity::generate();
    let known = store_with(
        &dir,
        &[(*carol.public(), "carol's laptop".into(), true, true), (*squatter.public(), "carol".into(), false, false)],
    );
    let mut node = Node::with_config(EngineConfig { known_peers: Some(known), ..fast_config() });
    let (s, addr) = node.listen("server");
    let mut real = RawPeer::connect_as(addr, carol);
    real.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: "carol".into() });
    assert!(matches!(real.recv(), Some(Frame::Hello { .. })), "the verified key gets in");
    let trust = node.wait("connected", |e| match e {
        Event::State { id, state: PeerState::Connected { peer, .. } } if *id == s => Some(peer.trust),
        _ => None,
    });
    assert_eq!(trust, Trust::Verified);
}
