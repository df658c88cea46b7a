//! A client peersocket that reconnects by itself: it comes back when its
//! peer's program restarts, waits longer after each failed try, and stops
//! for good when the other person disconnects, when we do, or when the
//! key changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerconn::net::{ConnectOptions, EndKind, Event, ListenOptions, PeerId, PeerState};

use crate::support::Node;

fn reconnecting(node: &mut Node, id: PeerId) -> (Duration, u32) {
    node.wait_within(Duration::from_secs(5), "reconnecting", |e| match e {
        Event::Reconnecting { id: i, after, attempt } if *i == id => Some((*after, *attempt)),
        _ => None,
    })
}

fn connected_within(node: &mut Node, id: PeerId, within: Duration) {
    node.wait_within(within, "connected", |e| match e {
        Event::State { id: i, state: PeerState::Connected { .. } } if *i == id => Some(()),
        _ => None,
    })
}

fn listen_at(node: &mut Node, name: &str, at: SocketAddr) -> PeerId {
    let options = ListenOptions { keep_listening: true, ..Default::default() };
    node.listen_on(name, at, options).0
}

fn dial(node: &mut Node, addr: SocketAddr) -> PeerId {
    let options = ConnectOptions { reconnect: true, ..Default::default() };
    node.engine.connect_with("client", addr, options).unwrap()
}

#[test]
fn a_client_comes_back_by_itself_when_its_peers_program_restarts() {
    let server_key = peerconn::net::Identity::generate();
    let mut server = Node::with_config(crate::support::fast_config_with(&server_key));
    let (_, addr) = server.listen("server");
    let mut client = Node::new();
    let c = dial(&mut client, addr);
    connected_within(&mut client, c, Duration::from_secs(5));

    // The server's program closes: it says it is leaving, not that the
    // person closed the conversation.
    drop(server);
    assert_eq!(client.ended(c).0, EndKind::PeerLeft);
    let (after, attempt) = reconnecting(&mut client, c);
    assert_eq!(attempt, 1);
    assert!((0.8..=1.2).contains(&after.as_secs_f64()), "{after:?}");
    // Nothing listens yet: the next wait is twice as long.
    assert_eq!(client.ended(c).0, EndKind::Unreachable);
    let (after, attempt) = reconnecting(&mut client, c);
    assert_eq!(attempt, 2);
    assert!((1.6..=2.4).contains(&after.as_secs_f64()), "{after:?}");

    // The program is back, on the same port (with the same key, as an
    // installation's key is kept): the client gets in by itself.
    let started = Instant::now();
    let mut again = Node::with_config(crate::support::fast_config_with(&server_key));
    listen_at(&mut again, "server", addr);
    connected_within(&mut client, c, Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_millis(2600), "within the second wait: {:?}", started.elapsed());
}

#[test]
fn the_other_persons_disconnect_our_disconnect_and_a_changed_key_stop_it() {
    // The other person closes the conversation: final.
    let mut server = Node::new();
    let (s, addr) = server.listen("server");
    let mut client = Node::new();
    let c = dial(&mut client, addr);
    connected_within(&mut client, c, Duration::from_secs(5));
    server.engine.disconnect(s);
    assert_eq!(client.ended(c).0, EndKind::PeerClosed);
    client.assert_quiet(c, Duration::from_millis(1500));

    // Waiting to try again, we disconnect: it stops trying.
    let gone: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let c = dial(&mut client, gone);
    assert_eq!(client.ended(c).0, EndKind::Unreachable);
    reconnecting(&mut client, c);
    client.engine.disconnect(c);
    let (kind, reason) = client.ended(c);
    assert_eq!((kind, reason.as_str()), (EndKind::Closed, "you stopped reconnecting"));
    client.assert_quiet(c, Duration::from_millis(1500));

    // The listener at the address now has another key: stopped, and no
    // new try (the person must choose to trust it).
    let mut first = Node::new();
    let keep = ListenOptions { keep_listening: true, ..Default::default() };
    let (_, addr) = first.listen_on("den", "127.0.0.1:0".parse().unwrap(), keep);
    let c = dial(&mut client, addr);
    connected_within(&mut client, c, Duration::from_secs(5));
    drop(first);
    assert_eq!(client.ended(c).0, EndKind::PeerLeft);
    reconnecting(&mut client, c);
    let mut impostor = Node::new();
    listen_at(&mut impostor, "den", addr);
    assert_eq!(client.ended(c).0, EndKind::KeyChanged);
    client.assert_quiet(c, Duration::from_millis(2500));
}
