//! `cargo bench --bench chat`: chat latency and idle cost of the reactor.
//!
//! Prints, each next to a baseline measured in the same run:
//! * round-trip latency p50/p99 of 10,000 chat messages between two engines
//!   over loopback, against a blocking `std::net` ping-pong of the same
//!   size over the same loopback;
//! * the CPU time the reactor threads use while 200 connected, idle
//!   peersockets sit for 10 s, against a thread that sleeps as long.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use peerconn::net::{Engine, EngineConfig, Event, ListenOptions, PeerId, PeerState};

const ROUND_TRIPS: usize = 10_000;
const MESSAGE: &str = "the quick brown fox jumps over the lazy dog";
const IDLE_PEERS: usize = 200;
const IDLE_FOR: Duration = Duration::from_secs(10);

fn main() {
    println!("PeerConn chat benchmark ({ROUND_TRIPS} round trips of {} bytes, loopback)", MESSAGE.len());
    let base = percentiles(baseline_round_trips());
    let ours = percentiles(engine_round_trips());
    println!("  round trip        p50          p99");
    println!("  std::net baseline {:>9.1} µs {:>9.1} µs", base.0, base.1);
    println!("  peerconn engines  {:>9.1} µs {:>9.1} µs", ours.0, ours.1);
    println!("  ratio (ours/base) {:>9.2}x    {:>9.2}x", ours.0 / base.0, ours.1 / base.1);
    println!();
    idle_cpu();
}

/// Microseconds at the 50th and 99th percentiles.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// A length-prefixed echo over blocking sockets: the floor for any design.
fn baseline_round_trips() -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 5 + MESSAGE.len()];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut frame = vec![0u8; 5];
    frame.extend_from_slice(MESSAGE.as_bytes());
    let mut back = vec![0u8; frame.len()];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        s.write_all(&frame).unwrap();
        s.read_exact(&mut back).unwrap();
        samples.push(t.elapsed());
    }
    drop(s);
    echo.join().unwrap();
    samples
}

fn listening(engine: &Engine, id: PeerId) -> std::net::SocketAddr {
    loop {
        if let Event::State { id: i, state: PeerState::Listening { local } } = engine.events().recv().unwrap() {
            if i == id {
                return local;
            }
        }
    }
}

fn wait_connected(engine: &Engine, count: usize) {
    let mut n = 0;
    while n < count {
        match engine.events().recv_timeout(Duration::from_secs(30)).expect("connected in time") {
            Event::State { state: PeerState::Connected { .. }, .. } => n += 1,
            Event::State { state: PeerState::Lost { reason, .. }, .. } => panic!("lost: {reason}"),
            _ => {}
        }
    }
}

/// An engine whose chat rate limit (500 a second from a peer) does not
/// stop a round-trip benchmark that sends tens of thousands a second.
fn unlimited() -> Engine {
    Engine::with_config(EngineConfig { chat_burst: u32::MAX, chat_per_sec: u32::MAX, ..EngineConfig::default() })
        .unwrap()
}

/// Engine A sends, engine B's owner echoes each message back.
fn engine_round_trips() -> Vec<Duration> {
    let a = unlimited();
    let b = unlimited();
    let s = a.listen("bench-a", "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = listening(&a, s);
    let c = b.connect("bench-b", addr).unwrap();
    wait_connected(&a, 1);
    wait_connected(&b, 1);
    let echo = std::thread::spawn(move || {
        let mut echoed = 0;
        while echoed < ROUND_TRIPS {
            match b.events().recv() {
                Ok(Event::Message { text, .. }) => {
                    b.send_text(c, &text).unwrap();
                    echoed += 1;
                }
                Ok(Event::State { state: PeerState::Lost { reason, .. }, .. }) => panic!("lost: {reason}"),
                _ => {}
            }
        }
        b
    });
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        a.send_text(s, MESSAGE).unwrap();
        loop {
            match a.events().recv().unwrap() {
                Event::Message { .. } => break,
                Event::State { state: PeerState::Lost { reason, .. }, .. } => panic!("lost: {reason}"),
                _ => {}
            }
        }
        samples.push(t.elapsed());
    }
    drop(echo.join().unwrap());
    samples
}

fn idle_cpu() {
    let a = Engine::start().unwrap();
    let b = Engine::start().unwrap();
    let mut addrs = Vec::new();
    for i in 0..IDLE_PEERS {
        let s = a.listen(&format!("idle {i}"), "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
        addrs.push(listening(&a, s));
    }
    for (i, addr) in addrs.into_iter().enumerate() {
        b.connect(&format!("idle {i}"), addr).unwrap();
    }
    wait_connected(&a, IDLE_PEERS);
    wait_connected(&b, IDLE_PEERS);
    println!("{IDLE_PEERS} connected idle peersockets (each engine holds {IDLE_PEERS}), for {} s:", IDLE_FOR.as_secs());
    let sleeper = std::thread::Builder::new()
        .name("bench-sleeper".into())
        .spawn(|| std::thread::sleep(IDLE_FOR + Duration::from_millis(200)))
        .unwrap();
    let before = thread_cpu();
    std::thread::sleep(IDLE_FOR);
    let after = thread_cpu();
    sleeper.join().unwrap();
    let (Some(before), Some(after)) = (before, after) else {
        println!("  thread CPU times are only read on Linux (/proc); not measured here");
        return;
    };
    let used = |name: &str| -> f64 {
        let sum = |m: &Vec<(String, u64)>| m.iter().filter(|(n, _)| n == name).map(|(_, t)| *t).sum::<u64>();
        sum(&after).saturating_sub(sum(&before)) as f64 / 1e6
    };
    let reactors = used("peerconn-net");
    let sleeper = used("bench-sleeper");
    println!("  baseline: a sleeping thread        {sleeper:>8.2} ms CPU");
    println!(
        "  both reactor threads together      {reactors:>8.2} ms CPU ({:.3} % of one core)",
        reactors / IDLE_FOR.as_secs_f64() / 10.0
    );
}

/// CPU time in nanoseconds of each thread of this process, by thread name.
fn thread_cpu() -> Option<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).ok()?.trim().to_owned();
        let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        out.push((name, ns));
    }
    Some(out)
}
