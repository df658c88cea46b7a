//! A flood of idle connections against a listener, with a real peer across
//! a slow link trying to get in. Regression: at 500 idle half-handshakes a
//! second, a peer with a 50 ms round trip got in 0 times of 3 (the listener
//! kept 16 pending connections and dropped the oldest for each newcomer).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use peerconn::net::{EngineConfig, Event, ListenOptions, PeerState};

use crate::support::{fast_config, Flood, Node, SlowLink};

fn patient() -> EngineConfig {
    EngineConfig { hello_timeout: Duration::from_secs(10), ..fast_config() }
}

#[test]
fn a_flood_of_idle_connections_cannot_keep_out_a_real_peer_with_a_100_ms_round_trip() {
    let mut server = Node::with_config(patient());
    let options = ListenOptions { keep_listening: true, pairing_code: None };
    let (s, addr) = server.listen_on("server", "127.0.0.1:0".parse().unwrap(), options);
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let flood = Flood::start(addr, flooder, 3000, 2000);
    let started = Instant::now();
    while flood.opened() < 500 {
        assert!(started.elapsed() < Duration::from_secs(10), "the flood never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    // 50 ms each way: a 100 ms round trip, from another address.
    let link = SlowLink::new(addr, "127.0.0.3".parse().unwrap(), Duration::from_millis(50));
    let during = flood.opened();
    let flooding = Instant::now();
    let mut client = Node::with_config(patient());
    for attempt in 1..=3 {
        let c = client.engine.connect("real", link.addr).unwrap();
        let got_in = client.wait_within(Duration::from_secs(8), "connected or lost", |e| match e {
            Event::State { id, state: PeerState::Connected { .. } } if *id == c => Some(Ok(())),
            Event::State { id, state: PeerState::Lost { reason, .. } } if *id == c => Some(Err(reason.clone())),
            _ => None,
        });
        if let Err(reason) = got_in {
            panic!("attempt {attempt}: the real peer was kept out: {reason}");
        }
        server.connected(s);
        client.engine.disconnect(c);
        client.lost(c);
        server.lost(s);
    }
    let rate = (flood.opened() - during) as f64 / flooding.elapsed().as_secs_f64();
    eprintln!("flood during the attempts: {rate:.0} connections a second");
    assert!(rate > 2000.0, "the flood was real: {rate:.0} a second");
}
