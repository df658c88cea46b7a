//! Chat between two engines: both directions, both address families, order,
//! size limits, and what happens when there is nobody to talk to.

use std::time::Duration;

use peerconn::net::frame::MAX_CHAT;
use peerconn::net::{Event, ListenOptions};

use crate::support::{pair, Node};

#[test]
fn chat_flows_both_ways_over_ipv4() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    b.engine.send_text(c, "hello from the client").unwrap();
    assert_eq!(a.message(s), "hello from the client");
    a.engine.send_text(s, "hello from the server").unwrap();
    assert_eq!(b.message(c), "hello from the server");
}

#[test]
fn chat_flows_both_ways_over_ipv6() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, addr) = a.listen_on("six", "[::1]:0".parse().unwrap(), ListenOptions::default());
    assert!(addr.is_ipv6());
    let c = b.engine.connect("client", addr).unwrap();
    b.connected(c);
    let (name, peer_addr) = a.connected(s);
    assert_eq!(name, "client");
    assert!(peer_addr.is_ipv6());
    b.engine.send_text(c, "over ::1").unwrap();
    assert_eq!(a.message(s), "over ::1");
    a.engine.send_text(s, "and back").unwrap();
    assert_eq!(b.message(c), "and back");
}

#[test]
fn messages_arrive_in_the_order_they_were_sent() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    for i in 0..500 {
        b.engine.send_text(c, &format!("message {i}")).unwrap();
    }
    for i in 0..500 {
        assert_eq!(a.message(s), format!("message {i}"));
    }
}

#[test]
fn unicode_and_multiline_text_arrive_unchanged() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    let text = "Grüße, 世界! 🎉\nsecond line\ttab";
    a.engine.send_text(s, text).unwrap();
    assert_eq!(b.message(c), text);
}

#[test]
fn largest_message_arrives_and_a_larger_one_is_refused_before_sending() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    let big = "é".repeat(MAX_CHAT / 2);
    assert_eq!(big.len(), MAX_CHAT);
    b.engine.send_text(c, &big).unwrap();
    assert_eq!(a.message(s), big);
    let err = b.engine.send_text(c, &format!("{big}x")).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(b.engine.send_text(c, "").is_err());
    // The connection is unaffected.
    b.engine.send_text(c, "still here").unwrap();
    assert_eq!(a.message(s), "still here");
}

#[test]
fn sending_without_a_peer_is_an_error_event_not_a_crash() {
    let mut a = Node::new();
    let (s, _) = a.listen("lonely");
    a.engine.send_text(s, "anyone?").unwrap();
    let reason = a.error(s);
    assert!(reason.contains("no peer is connected"), "{reason}");
}

#[test]
fn idle_connection_stays_up_across_many_heartbeat_timeouts() {
    let (mut a, mut b) = (Node::new(), Node::new());
    let (s, c) = pair(&mut a, &mut b);
    // fast_config loses a peer after 1 s of silence; heartbeats must keep
    // this idle connection alive for three times that.
    a.assert_quiet(s, Duration::from_secs(3));
    b.assert_quiet(c, Duration::from_millis(10));
    b.engine.send_text(c, "still connected").unwrap();
    assert_eq!(a.message(s), "still connected");
    assert!(!matches!(a.engine.events().try_recv(), Ok(Event::State { .. })));
}
