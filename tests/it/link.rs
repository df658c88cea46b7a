//! Links that carry the key: a listener's `peerconn://HOST:PORT#KEY`
//! connects, lets in only the key it pins (stopping before our own key
//! goes out when another answers), carries the pairing code, and reads
//! back what a person may paste, with a clear error when it is not whole.

use std::net::SocketAddr;

use peerconn::net::secure::{Identity, PREAMBLE};
use peerconn::net::{ConnectOptions, EndKind, Event, KeyPin, LinkError, ListenOptions, PeerLink, PeerState, Trust};
use proptest::prelude::*;

use crate::support::{Node, Relay};

/// The link a person would copy from the listener `node` at `addr`, as
/// text and read back.
fn link_of(node: &Node, addr: SocketAddr, code: Option<&str>) -> PeerLink {
    let text = node.engine.link(addr.ip(), addr.port(), code).to_string();
    PeerLink::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn by_link(link: &PeerLink) -> ConnectOptions {
    ConnectOptions { pairing_code: link.code.clone(), pin: Some(link.pin.clone()), ..Default::default() }
}

fn connected_trust(node: &mut Node, id: peerconn::net::PeerId) -> (String, Trust) {
    node.wait("connected", |e| match e {
        Event::State { id: i, state: PeerState::Connected { peer, .. } } if *i == id => {
            Some((peer.fingerprint.clone(), peer.trust))
        }
        Event::State { id: i, state: PeerState::Lost { reason, .. } } if *i == id => {
            panic!("lost instead of connected: {reason}")
        }
        _ => None,
    })
}

fn remembers_verified(node: &mut Node, fingerprint: &str) {
    node.wait("the key remembered as verified", |e| match e {
        Event::KnownPeers { peers } if peers.iter().any(|p| p.fingerprint == fingerprint && p.verified) => Some(()),
        _ => None,
    })
}

#[test]
fn a_link_connects_and_the_key_it_pins_is_verified_at_first_contact() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let link = link_of(&a, addr, None);
    assert_eq!(link.socket_addr(), Some(addr));
    assert_eq!(link.pin.fingerprint(), a.engine.fingerprint(), "the link's key starts with the fingerprint shown");
    assert!(link.pin.is_full(), "a link pins the whole key hash, not 80 bits of it");

    let c = b.engine.connect_with("client", addr, by_link(&link)).unwrap();
    let (fingerprint, trust) = connected_trust(&mut b, c);
    assert_eq!(fingerprint, a.engine.fingerprint());
    assert_eq!(trust, Trust::Verified, "first contact by link is not trust on first use");
    remembers_verified(&mut b, a.engine.fingerprint());
    // The link vouches for the listener to the one who connects, not the
    // other way round.
    let (_, trust) = connected_trust(&mut a, s);
    assert_eq!(trust, Trust::New);
    b.engine.send_text(c, "hello by link").unwrap();
    assert_eq!(a.message(s), "hello by link");
}

#[test]
fn a_listener_with_another_key_is_left_before_our_key_or_any_frame_goes_out() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen("server");
    let relay = Relay::new(addr, None);
    let stranger = Identity::generate();
    let pin = KeyPin::of(stranger.public());
    let link = PeerLink { host: "127.0.0.1".into(), port: relay.addr.port(), pin: pin.clone(), code: None };

    let c = b.engine.connect_with("client", relay.addr, by_link(&link)).unwrap();
    let (kind, reason) = b.ended(c);
    assert_eq!(kind, EndKind::WrongKey, "{reason}");
    assert!(reason.contains(a.engine.fingerprint()) && reason.contains(&pin.fingerprint()), "{reason}");
    assert!(reason.contains("in the link") && reason.contains("ask its owner"), "{reason}");
    // Only the greeting and our ephemeral key went out: the Noise message
    // that carries our static key (and every frame after it) did not.
    let first_message = PREAMBLE.len() + 2 + 32;
    assert_eq!(relay.carried(), first_message as u64, "bytes sent to a listener with the wrong key");
    a.assert_quiet(s, std::time::Duration::from_millis(300));
    assert!(
        !a.take_events().iter().any(|e| matches!(e, Event::State { state: PeerState::Connected { .. }, .. })),
        "the listener never saw a peer"
    );

    // The same relay carries the handshake on when the pin is right.
    let right = link_of(&a, relay.addr, None);
    let c = b.engine.connect_with("client", relay.addr, by_link(&right)).unwrap();
    connected_trust(&mut b, c);
    assert!(relay.carried() > 2 * first_message as u64);
}

#[test]
fn a_link_carries_the_pairing_code_and_both_sides_end_verified() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let code = "4821 0937";
    let options = ListenOptions { keep_listening: true, pairing_code: Some(code.into()) };
    let (s, addr) = a.listen_on("server", "127.0.0.1:0".parse().unwrap(), options);
    let link = link_of(&a, addr, Some(code));
    assert!(link.to_string().contains("?code=4821%200937#"), "{link}");
    assert_eq!(link.code.as_deref(), Some(code));

    let c = b.engine.connect_with("client", addr, by_link(&link)).unwrap();
    assert_eq!(connected_trust(&mut b, c).1, Trust::Verified);
    assert_eq!(connected_trust(&mut a, s).1, Trust::Verified, "the code proved the client to the listener");
}

#[test]
fn a_new_link_from_a_peer_that_reinstalled_replaces_the_key_remembered_for_it() {
    let (mut old, mut b) = (Node::new(), Node::new());
    let (_, addr) = old.listen("alice");
    let c = b.engine.connect("client", addr).unwrap();
    connected_trust(&mut b, c);
    b.engine.disconnect(c);
    b.lost(c);

    // Alice reinstalled: same name, a new key. Without a link that is a
    // key change, and stopped.
    let mut new = Node::new();
    let again = ListenOptions { keep_listening: true, ..ListenOptions::default() };
    let (_, addr) = new.listen_on("alice", "127.0.0.1:0".parse().unwrap(), again);
    let c = b.engine.connect("client", addr).unwrap();
    assert_eq!(b.ended(c).0, EndKind::KeyChanged);
    // With her new link it is her, verified, and the old key is gone.
    let c = b.engine.connect_with("client", addr, by_link(&link_of(&new, addr, None))).unwrap();
    assert_eq!(connected_trust(&mut b, c), (new.engine.fingerprint().to_owned(), Trust::Verified));
    b.wait("the old key forgotten", |e| match e {
        Event::KnownPeers { peers }
            if peers.iter().any(|p| p.fingerprint == new.engine.fingerprint() && p.verified)
                && !peers.iter().any(|p| p.fingerprint == old.engine.fingerprint()) =>
        {
            Some(())
        }
        _ => None,
    });
}

#[test]
fn a_typed_fingerprint_pins_the_key_too() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (_, addr) = a.listen("server");
    let typed = format!("peerconn://{addr}#{}", a.engine.fingerprint().to_uppercase());
    let link = PeerLink::parse(&typed).unwrap();
    assert!(!link.pin.is_full());
    let c = b.engine.connect_with("client", addr, by_link(&link)).unwrap();
    assert_eq!(connected_trust(&mut b, c).1, Trust::Verified);

    let other = format!("peerconn://{addr}#{}", Identity::generate().fingerprint());
    let c = b.engine.connect_with("client", addr, by_link(&PeerLink::parse(&other).unwrap())).unwrap();
    assert_eq!(b.ended(c).0, EndKind::WrongKey);
}

/// What a person may paste, and what they are told.
#[test]
fn links_that_are_not_whole_say_what_is_missing() {
    let key = "a".repeat(64);
    let cases: &[(&str, &str)] = &[
        ("192.168.1.7:50000", "starts with peerconn://"),
        ("peerconn://192.168.1.7#K", "no port"),
        ("peerconn://192.168.1.7:50000", "no key after '#'"),
        ("peerconn://192.168.1.7:50000#", "no key after '#'"),
        ("peerconn://192.168.1.7:0#K", "'0' is not a port"),
        ("peerconn://192.168.1.7:70000#K", "'70000' is not a port"),
        ("peerconn://:50000#K", "no host"),
        ("peerconn://fe80::1:50000#K", "must be in brackets"),
        ("peerconn://[fe80::1:50000#K", "lacks its ']'"),
        ("peerconn://[nothex::zz]:50000#K", "not an IPv6 address"),
        ("peerconn://user@host:50000#K", "not a host name"),
        ("peerconn://192.168.1.7:50000#3f2a-9b1c", "8 hex digits"),
        ("peerconn://192.168.1.7:50000#3f2a-9b1c-0d4e-77a1-c0dx", "only hold the hex digits"),
        ("peerconn://192.168.1.7:50000?code=%zz#K", "pairing code in this link is not valid"),
        ("peerconn://192.168.1.7:50000?code=12#K", "at least 4"),
    ];
    for (text, says) in cases {
        let text = text.replace("#K", &format!("#{key}"));
        match PeerLink::parse(&text) {
            Ok(link) => panic!("{text} was read as {link:?}"),
            Err(e) => assert!(e.to_string().contains(says), "{text}: '{e}' does not say '{says}'"),
        }
    }
    assert_eq!(PeerLink::parse("http://x:1#aa"), Err(LinkError::NotALink));
    // What a person adds around a pasted link does not matter.
    let link = PeerLink::parse(&format!("  PeerConn://host.lan:50000/?code=abcd&v=9#{key}\n")).unwrap();
    assert_eq!((link.host.as_str(), link.port, link.code.as_deref()), ("host.lan", 50000, Some("abcd")));
    assert_eq!(link.socket_addr(), None, "a host name is looked up, not parsed");
}

proptest! {
    #[test]
    fn a_link_reads_back_as_it_was_made(
        v6 in any::<bool>(),
        octets in any::<[u8; 16]>(),
        port in 1u16..,
        code in proptest::option::of("[ -~\u{e9}\u{4e2d}]{4,20}"),
        key in any::<[u8; 32]>(),
    ) {
        prop_assume!(code.as_deref().is_none_or(|c| peerconn::net::pairing::check_code(c).is_ok()));
        let ip: std::net::IpAddr = if v6 { octets.into() } else { [octets[0], octets[1], octets[2], octets[3]].into() };
        let link = PeerLink::new(ip, port, &key, code.as_deref());
        let back = PeerLink::parse(&link.to_string()).unwrap();
        prop_assert_eq!(back.socket_addr(), Some(SocketAddr::new(ip, port)));
        prop_assert_eq!(back.code, code);
        prop_assert!(back.pin.matches(&key));
        prop_assert!(!link.to_string().contains(' '), "{}", link);
    }
}
