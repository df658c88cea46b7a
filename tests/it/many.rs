//! Hundreds of peersockets in one reactor.

use peerconn::net::{Event, PeerState};

use crate::support::Node;

#[test]
fn two_hundred_peersockets_chat_in_one_reactor() {
    const N: usize = 200;
    let (mut a, mut b) = (Node::new(), Node::new());
    let mut servers = Vec::new();
    for i in 0..N {
        let id = a.engine.listen(&format!("server {i}"), "127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
        servers.push(id);
    }
    let mut addrs = Vec::new();
    for &s in &servers {
        addrs.push(a.wait("listening", |e| match e {
            Event::State { id, state: PeerState::Listening { local } } if *id == s => Some(*local),
            _ => None,
        }));
    }
    let clients: Vec<_> =
        addrs.iter().enumerate().map(|(i, addr)| b.engine.connect(&format!("client {i}"), *addr).unwrap()).collect();
    for (i, (&s, &c)) in servers.iter().zip(&clients).enumerate() {
        assert_eq!(b.connected(c).0, format!("server {i}"));
        assert_eq!(a.connected(s).0, format!("client {i}"));
    }
    for (i, (&s, &c)) in servers.iter().zip(&clients).enumerate() {
        b.engine.send_text(c, &format!("to server {i}")).unwrap();
        a.engine.send_text(s, &format!("to client {i}")).unwrap();
    }
    for (i, (&s, &c)) in servers.iter().zip(&clients).enumerate() {
        assert_eq!(a.message(s), format!("to server {i}"));
        assert_eq!(b.message(c), format!("to client {i}"));
    }
    // Closing half of them leaves the other half working.
    for &c in clients.iter().step_by(2) {
        b.engine.disconnect(c);
    }
    for &s in servers.iter().step_by(2) {
        assert!(a.lost(s).1);
    }
    for (&s, &c) in servers.iter().zip(&clients).skip(1).step_by(2) {
        a.engine.send_text(s, "still up").unwrap();
        assert_eq!(b.message(c), "still up");
    }
}
