//! A man in the middle on loopback, two kinds.
//!
//! A *terminating* one has a key of its own: it answers the client as if it
//! were the server and dials the server as if it were the client, so it can
//! read and change everything. The handshake cannot stop that on a first
//! meeting, but it must show: each side sees the proxy's key and the two
//! safety codes differ. A client that knew the server's key stops it.
//!
//! A *transparent* one only copies bytes, and tampers with the client's
//! records on their way (flips a bit, replays, drops, reorders, cuts). The
//! server must end that connection for a reason a person can read, deliver
//! none of the tampered messages, and go on serving its other peers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peerconn::net::frame::Frame;
use peerconn::net::secure::{Channel, Identity, PREAMBLE, RECORD_HEADER};
use peerconn::net::{EngineConfig, Event, PeerId, PeerIdentity, PeerState};

use crate::support::{fast_config, pair, Node, RawPeer, PATIENCE};

// ----- the terminating proxy ---------------------------------------------------

/// Serves one client on `listener`: completes a handshake with it as
/// `identity`, another with the server at `server` as the same identity,
/// then relays the decrypted frame bytes both ways. `inject` (frame bytes)
/// goes to the client in the same record as the server's first frames.
fn terminating_mitm(
    listener: TcpListener,
    server: SocketAddr,
    identity: Identity,
    inject: Option<Vec<u8>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("mitm".into())
        .spawn(move || {
            let (mut client, _) = listener.accept().expect("the client reaches the proxy");
            let mut upstream = TcpStream::connect(server).expect("the proxy reaches the server");
            for s in [&client, &upstream] {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                s.set_nodelay(true).unwrap();
            }
            let (mut to_client, first) = Channel::responder(&identity);
            let Ok(client_hello) = handshake(&mut client, &mut to_client, &first) else { return };
            let (mut to_server, first) = Channel::initiator(&identity);
            let Ok(early) = handshake(&mut upstream, &mut to_server, &first) else { return };
            assert!(early.is_empty(), "the server spoke before the client's hello");
            let (to_client, to_server) = (Arc::new(Mutex::new(to_client)), Arc::new(Mutex::new(to_server)));
            let up = {
                let (from, to) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (opener, sealer) = (to_client.clone(), to_server.clone());
                std::thread::spawn(move || relay(from, to, &opener, &sealer, client_hello, None))
            };
            relay(upstream, client, &to_server, &to_client, Vec::new(), inject);
            let _ = up.join();
        })
        .unwrap()
}

/// Runs `link`'s handshake over `stream`; returns the frame bytes that came
/// with the peer's last handshake message (a client's hello, typically).
fn handshake(stream: &mut TcpStream, link: &mut Channel, first: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(first)?;
    let (mut buf, mut plain) = (vec![0u8; 65_536], Vec::new());
    while !link.is_established() {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut out = Vec::new();
        link.receive(&buf[..n], &mut out, &mut plain).map_err(io::Error::other)?;
        stream.write_all(&out)?;
    }
    Ok(plain)
}

/// Opens what arrives on `from` with `opener` and seals it for `to` with
/// `sealer`, until either side ends. `pending` goes first; `inject` rides
/// along with the first frames read.
fn relay(
    mut from: TcpStream,
    mut to: TcpStream,
    opener: &Mutex<Channel>,
    sealer: &Mutex<Channel>,
    mut pending: Vec<u8>,
    mut inject: Option<Vec<u8>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        if !pending.is_empty() {
            if let Some(extra) = inject.take() {
                pending.extend(extra);
            }
            let mut wire = Vec::new();
            if sealer.lock().unwrap().seal(&pending, &mut wire).is_err() || to.write_all(&wire).is_err() {
                break;
            }
            pending.clear();
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if opener.lock().unwrap().receive(&buf[..n], &mut Vec::new(), &mut pending).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The identity a `Connected` state reports for `id`.
fn connected_as(node: &mut Node, id: PeerId) -> (String, PeerIdentity) {
    node.wait(&format!("{id} connected"), |e| match e {
        Event::State { id: i, state: PeerState::Connected { peer_name, peer, .. } } if *i == id => {
            Some((peer_name.clone(), peer.clone()))
        }
        Event::State { id: i, state: PeerState::Lost { reason, .. } } if *i == id => {
            panic!("{id} lost instead of connected: {reason}")
        }
        _ => None,
    })
}

fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn a_terminating_mitm_works_but_shows_its_own_key_and_different_safety_codes() {
    let (mut server, mut client) = (Node::new(), Node::new());
    let (s, server_addr) = server.listen("server");
    let mallory = Identity::generate();
    let proxy = loopback();
    let proxy_addr = proxy.local_addr().unwrap();
    let mitm = terminating_mitm(proxy, server_addr, mallory.clone(), None);

    let c = client.engine.connect("client", proxy_addr).unwrap();
    let (name_seen_by_client, seen_by_client) = connected_as(&mut client, c);
    let (name_seen_by_server, seen_by_server) = connected_as(&mut server, s);
    // It "works": the names went through and chat flows both ways.
    assert_eq!((name_seen_by_client.as_str(), name_seen_by_server.as_str()), ("server", "client"));
    client.engine.send_text(c, "hello through the middle").unwrap();
    assert_eq!(server.message(s), "hello through the middle");
    server.engine.send_text(s, "and back").unwrap();
    assert_eq!(client.message(c), "and back");

    // But neither side sees the other's key: both see the proxy's...
    assert_eq!(seen_by_client.fingerprint, mallory.fingerprint());
    assert_eq!(seen_by_server.fingerprint, mallory.fingerprint());
    assert_ne!(seen_by_client.fingerprint, server.engine.fingerprint());
    assert_ne!(seen_by_server.fingerprint, client.engine.fingerprint());
    // ...and the codes the two people would read to each other differ.
    assert_ne!(
        seen_by_client.safety_code, seen_by_server.safety_code,
        "a man in the middle must not get the same safety code on both sides"
    );

    client.engine.disconnect(c);
    client.lost(c);
    server.lost(s);
    mitm.join().unwrap();
}

#[test]
fn a_client_that_knows_the_server_stops_a_mitm_at_the_servers_address() {
    let server_identity = Identity::generate();
    let server_config = || EngineConfig { identity: server_identity.clone(), ..fast_config() };
    let mut client = Node::new();

    // The client meets the real server directly once: its key is pinned
    // under the name "server" and the address dialled.
    let (c, addr) = {
        let mut server = Node::with_config(server_config());
        let (s, addr) = server.listen("server");
        let c = client.engine.connect("client", addr).unwrap();
        assert_eq!(connected_as(&mut client, c).1.fingerprint, server.engine.fingerprint());
        connected_as(&mut server, s);
        client.engine.disconnect(c);
        client.lost(c);
        // A server peersocket that is not kept listening closes its
        // listener when its peer leaves: the port is free.
        server.lost(s);
        (c, addr)
    };

    // The real server runs again (same key, fresh memory) elsewhere, and
    // Mallory takes over the address the client knows. She slips in a chat
    // message of her own with the server's hello.
    let mut server = Node::with_config(server_config());
    let (s, server_addr) = server.listen("server");
    let proxy = bind_again(addr);
    let mallory = Identity::generate();
    let lure = Frame::Chat("it is really me, click this link".into()).to_bytes();
    let mitm = terminating_mitm(proxy, server_addr, mallory.clone(), Some(lure));

    client.engine.restart(c);
    let (peer_name, address, old, new) = client.wait("a key change", |e| match e {
        Event::KeyChanged { id, peer_name, address, old_fingerprint, new_fingerprint } if *id == c => {
            Some((peer_name.clone(), *address, old_fingerprint.clone(), new_fingerprint.clone()))
        }
        _ => None,
    });
    assert_eq!((peer_name.as_str(), address), ("server", addr));
    assert_eq!(old, server.engine.fingerprint());
    assert_eq!(new, mallory.fingerprint());
    let (reason, clean) = client.lost(c);
    assert!(!clean, "{reason}");
    for words in ["presented the key", &new, "not the key", &old, "someone may be in between"] {
        assert!(reason.contains(words), "expected {words:?} in {reason:?}");
    }

    // The real server did get a peer (Mallory) and says hello; what it says
    // next never reaches the client, and neither does Mallory's lure.
    connected_as(&mut server, s);
    let _ = server.engine.send_text(s, "from the real server");
    let (reason, _) = server.lost(s);
    assert!(reason.contains("refused our key"), "{reason}");
    client.assert_quiet(c, Duration::from_millis(300));
    for event in client.take_events() {
        assert!(
            !matches!(&event, Event::Message { .. } | Event::State { state: PeerState::Connected { .. }, .. }),
            "the client must connect to nothing and hear nothing through the proxy: {event:?}"
        );
    }
    mitm.join().unwrap();
}

/// A listener on exactly `addr`, which an engine just let go of.
fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{addr} not free yet ({e}); trying again");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot take over {addr}: {e}"),
        }
    }
}

// ----- the transparent, tampering proxy ---------------------------------------

/// What the byte proxy does to one record from the client.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Flips one bit in the middle of the record.
    Flip,
    /// Sends the record twice.
    Replay,
    /// Leaves the record out.
    Drop,
    /// Holds the record back and sends it after the next one.
    Reorder,
    /// Sends half the record, then closes the server's side.
    Truncate,
}

/// Copies bytes between a client (accepted on `listener`) and the server at
/// `server`, doing `tamper` to the client's transport record number `at`
/// (the client's hello is number 0).
fn tampering_proxy(listener: TcpListener, server: SocketAddr, tamper: Tamper, at: usize) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("tamperer".into())
        .spawn(move || {
            let (client, _) = listener.accept().expect("the client reaches the proxy");
            let upstream = TcpStream::connect(server).expect("the proxy reaches the server");
            for s in [&client, &upstream] {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                s.set_nodelay(true).unwrap();
            }
            let down = {
                let (mut from, mut to) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            let _ = tamper_records(client, upstream, tamper, at);
            let _ = down.join();
        })
        .unwrap()
}

/// The client-to-server half of the byte proxy.
fn tamper_records(mut from: TcpStream, mut to: TcpStream, tamper: Tamper, at: usize) -> io::Result<()> {
    // The two handshake messages a client sends before its first transport record.
    const HANDSHAKE_RECORDS: usize = 2;
    let mut preamble = [0u8; PREAMBLE.len()];
    from.read_exact(&mut preamble)?;
    to.write_all(&preamble)?;
    let mut n = 0;
    while let Some(record) = next_record(&mut from)? {
        let index = n;
        n += 1;
        if index != HANDSHAKE_RECORDS + at {
            to.write_all(&record)?;
            continue;
        }
        match tamper {
            Tamper::Flip => {
                let mut flipped = record;
                let middle = RECORD_HEADER + (flipped.len() - RECORD_HEADER) / 2;
                flipped[middle] ^= 0x08;
                to.write_all(&flipped)?;
            }
            Tamper::Replay => {
                to.write_all(&record)?;
                to.write_all(&record)?;
            }
            Tamper::Drop => {}
            Tamper::Reorder => {
                let next = next_record(&mut from)?.expect("a record after the one held back");
                n += 1;
                to.write_all(&next)?;
                to.write_all(&record)?;
            }
            Tamper::Truncate => {
                to.write_all(&record[..record.len() / 2])?;
                to.shutdown(Shutdown::Write)?;
                // Keep taking what the client sends until it gives up.
                io::copy(&mut from, &mut io::sink())?;
                return Ok(());
            }
        }
    }
    to.shutdown(Shutdown::Write)
}

/// One whole record (header included), or `None` at the end of the stream.
fn next_record(from: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; RECORD_HEADER];
    match from.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(header) as usize;
    let mut record = header.to_vec();
    record.resize(RECORD_HEADER + len, 0);
    from.read_exact(&mut record[RECORD_HEADER..])?;
    Ok(Some(record))
}

/// Heartbeats that stay out of the way: the client's records are then
/// exactly its hello and the messages a test sends.
fn quiet_config() -> EngineConfig {
    EngineConfig {
        heartbeat_interval: Duration::from_secs(20),
        heartbeat_timeout: Duration::from_secs(60),
        ..fast_config()
    }
}

/// The client sends "one", "two" and "three" through a proxy that does
/// `tamper` to "two". The server must end the connection for a reason that
/// mentions `reason` and deliver "one" and, at most once each, only what is
/// in `authentic` (a replay's first copy is authentic, and may or may not
/// be delivered before the copy is caught); a healthy pair on the same two
/// engines keeps chatting throughout.
fn tampered_in_transit(tamper: Tamper, reason: &str, authentic: &[&str]) {
    let (mut a, mut b) = (Node::with_config(quiet_config()), Node::with_config(quiet_config()));
    let (healthy_s, healthy_c) = pair(&mut a, &mut b);
    let (s, server_addr) = a.listen("target");
    let proxy = loopback();
    let proxy_addr = proxy.local_addr().unwrap();
    // Transport record 0 is the client's hello, 1 is "one", 2 is "two".
    let tamperer = tampering_proxy(proxy, server_addr, tamper, 2);

    let c = b.engine.connect("victim", proxy_addr).unwrap();
    assert_eq!(connected_as(&mut b, c).0, "target");
    assert_eq!(connected_as(&mut a, s).0, "victim");
    b.engine.send_text(c, "one").unwrap();
    assert_eq!(a.message(s), "one");
    b.engine.send_text(c, "two").unwrap();
    b.engine.send_text(c, "three").unwrap();

    let (said, clean) = a.lost(s);
    assert!(!clean, "{tamper:?}: lost cleanly: {said}");
    assert!(said.contains(reason), "{tamper:?}: expected {reason:?} in the server's reason {said:?}");
    let (client_said, clean) = b.lost(c);
    assert!(!clean, "{tamper:?}: the client lost cleanly: {client_said}");
    eprintln!("{tamper:?}: server: {said}\n{tamper:?}: client: {client_said}");

    let mut got = vec!["one".to_owned()];
    for event in a.take_events() {
        match event {
            Event::Message { id, text } if id == s => got.push(text),
            Event::State { id, state: PeerState::Lost { reason, .. } } if id == healthy_s => {
                panic!("{tamper:?}: the healthy peersocket was lost: {reason}")
            }
            _ => {}
        }
    }
    for (i, text) in got.iter().enumerate() {
        assert!(
            text == "one" || authentic.contains(&text.as_str()),
            "{tamper:?}: the server delivered {text:?}, which the proxy tampered with or which came after: {got:?}"
        );
        assert!(!got[..i].contains(text), "{tamper:?}: {text:?} was delivered twice: {got:?}");
    }

    // The other conversation on the same engines never noticed.
    for n in 0..3 {
        a.engine.send_text(healthy_s, &format!("still here {n}")).unwrap();
        assert_eq!(b.message(healthy_c), format!("still here {n}"));
        b.engine.send_text(healthy_c, &format!("me too {n}")).unwrap();
        assert_eq!(a.message(healthy_s), format!("me too {n}"));
    }
    tamperer.join().unwrap();
}

#[test]
fn a_flipped_bit_in_transit_ends_the_connection_as_an_integrity_failure() {
    tampered_in_transit(Tamper::Flip, "integrity", &[]);
}

#[test]
fn a_replayed_record_is_never_delivered_twice_and_ends_the_connection() {
    tampered_in_transit(Tamper::Replay, "integrity", &["two"]);
}

#[test]
fn a_dropped_record_ends_the_connection_at_the_next_one() {
    tampered_in_transit(Tamper::Drop, "integrity", &[]);
}

#[test]
fn reordered_records_end_the_connection_without_delivering_either() {
    tampered_in_transit(Tamper::Reorder, "integrity", &[]);
}

#[test]
fn a_record_cut_in_half_then_closed_is_reported_as_cut_mid_message() {
    tampered_in_transit(Tamper::Truncate, "middle of a message", &[]);
}

/// Records that arrive intact in the same read as a damaged one are still
/// delivered (they are authentic); the damaged one and what follows it are
/// not, and the connection ends as an integrity failure.
#[test]
fn what_arrived_intact_before_a_damaged_record_is_still_delivered() {
    let mut a = Node::with_config(quiet_config());
    let (s, addr) = a.listen("target");
    let (mut peer, _) = RawPeer::hello(addr, "sender");
    a.connected(s);
    let mut wire = Vec::new();
    for text in ["first", "second"] {
        peer.link.seal(&Frame::Chat(text.into()).to_bytes(), &mut wire).unwrap();
    }
    let damaged_at = wire.len() + RECORD_HEADER;
    for text in ["damaged", "after"] {
        peer.link.seal(&Frame::Chat(text.into()).to_bytes(), &mut wire).unwrap();
    }
    wire[damaged_at] ^= 0x40;
    // One write: the engine reads all four records at once.
    peer.send_wire(&wire);
    assert_eq!(a.message(s), "first");
    assert_eq!(a.message(s), "second");
    let (reason, clean) = a.lost(s);
    assert!(!clean && reason.contains("integrity"), "{reason}");
    for event in a.take_events() {
        if let Event::Message { text, .. } = event {
            panic!("{text:?} was delivered after the damaged record");
        }
    }
}
