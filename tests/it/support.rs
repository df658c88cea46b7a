//! Helpers shared by the test modules: engines with short timers, an inbox
//! that waits for a particular event, and a raw peer that completes a real
//! Noise handshake and then speaks (or abuses) the protocol byte by byte.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use peerconn::net::frame::{self, Frame};
use peerconn::net::secure::{Channel, Identity};
use peerconn::net::{EndKind, Engine, EngineConfig, Event, ListenOptions, PeerId, PeerState};

/// How long any test waits for an event before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Timers short enough for tests: heartbeat every 200 ms, lost after 1 s.
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        connect_timeout: Duration::from_secs(3),
        hello_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        close_linger: Duration::from_secs(1),
        ..EngineConfig::default()
    }
}

/// `fast_config` for the installation whose key is `identity` (an
/// engine started again, as after a restart).
pub fn fast_config_with(identity: &peerconn::net::Identity) -> EngineConfig {
    EngineConfig { identity: identity.clone(), ..fast_config() }
}

/// An engine and the events it reported that no test has consumed yet.
pub struct Node {
    pub engine: Engine,
    backlog: VecDeque<Event>,
}

impl Node {
    pub fn new() -> Node {
        Node::with_config(fast_config())
    }

    pub fn with_config(config: EngineConfig) -> Node {
        Node { engine: Engine::with_config(config).expect("engine starts"), backlog: VecDeque::new() }
    }

    /// The first event (in order) that `pick` accepts, waiting up to `within`.
    /// Other events stay in the backlog for later calls.
    pub fn wait_within<T>(&mut self, within: Duration, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let event = self.backlog.remove(i).unwrap();
            return pick(&event).unwrap();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.engine.events().recv_timeout(left) {
                Ok(event) => match pick(&event) {
                    Some(t) => return t,
                    None => self.backlog.push_back(event),
                },
                Err(_) => panic!("waited {within:?} for {what}; other events: {:?}", self.backlog),
            }
        }
    }

    /// Every event up to and including the first that `last` matches, in
    /// the order they came.
    pub fn events_until(&mut self, what: &str, last: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen: Vec<Event> = Vec::new();
        while let Some(event) = self.backlog.pop_front() {
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.engine.events().recv_timeout(left) {
                Ok(event) => {
                    let done = last(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("waited for {what}; events: {seen:?}"),
            }
        }
    }

    pub fn wait<T>(&mut self, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
        self.wait_within(PATIENCE, what, pick)
    }

    pub fn listen(&mut self, name: &str) -> (PeerId, SocketAddr) {
        self.listen_on(name, "127.0.0.1:0".parse().unwrap(), ListenOptions::default())
    }

    pub fn listen_on(&mut self, name: &str, bind: SocketAddr, options: ListenOptions) -> (PeerId, SocketAddr) {
        let id = self.engine.listen(name, bind, options).expect("valid listen");
        let addr = self.wait("listening", |e| match e {
            Event::State { id: i, state: PeerState::Listening { local } } if *i == id => Some(*local),
            _ => None,
        });
        (id, addr)
    }

    pub fn connected(&mut self, id: PeerId) -> (String, SocketAddr) {
        self.wait(&format!("{id} connected"), |e| match e {
            Event::State { id: i, state: PeerState::Connected { peer_name, peer_addr, .. } } if *i == id => {
                Some((peer_name.clone(), *peer_addr))
            }
            _ => None,
        })
    }

    pub fn lost(&mut self, id: PeerId) -> (String, bool) {
        self.lost_within(id, PATIENCE)
    }

    pub fn lost_within(&mut self, id: PeerId, within: Duration) -> (String, bool) {
        self.wait_within(within, &format!("{id} lost"), |e| match e {
            Event::State { id: i, state: PeerState::Lost { reason, clean, .. } } if *i == id => {
                Some((reason.clone(), *clean))
            }
            _ => None,
        })
    }

    /// How `id` ended: the kind and the reason.
    pub fn ended(&mut self, id: PeerId) -> (EndKind, String) {
        self.wait_within(PATIENCE, &format!("{id} lost"), |e| match e {
            Event::State { id: i, state: PeerState::Lost { reason, kind, .. } } if *i == id => {
                Some((*kind, reason.clone()))
            }
            _ => None,
        })
    }

    pub fn message(&mut self, id: PeerId) -> String {
        self.wait(&format!("a message on {id}"), |e| match e {
            Event::Message { id: i, text } if *i == id => Some(text.clone()),
            _ => None,
        })
    }

    pub fn error(&mut self, id: PeerId) -> String {
        self.wait(&format!("an error on {id}"), |e| match e {
            Event::Error { id: i, reason } if *i == id => Some(reason.clone()),
            _ => None,
        })
    }

    /// Every event not consumed yet, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        let mut all: Vec<Event> = self.backlog.drain(..).collect();
        all.extend(self.engine.events().try_iter());
        all
    }

    /// No new event for `id` arrives within `quiet`.
    pub fn assert_quiet(&mut self, id: PeerId, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while let Ok(event) = self.engine.events().recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            assert_ne!(event.id(), Some(id), "unexpected event {event:?}");
            self.backlog.push_back(event);
        }
    }
}

/// A server on `server` and a client on `client`, connected; returns
/// (server id, client id).
pub fn pair(server: &mut Node, client: &mut Node) -> (PeerId, PeerId) {
    let (s, addr) = server.listen("server");
    let c = client.engine.connect("client", addr).expect("valid connect");
    assert_eq!(client.connected(c).0, "server");
    assert_eq!(server.connected(s).0, "client");
    (s, c)
}

/// A hand-driven peer for feeding the engine exact bytes. It completes a
/// real Noise handshake (with a key of its own), so what it sends reaches
/// the engine's frame handling; `send_wire` bypasses the encryption.
pub struct RawPeer {
    pub stream: TcpStream,
    /// Decrypted bytes not yet decoded.
    inbuf: Vec<u8>,
    pub link: Channel,
    pub identity: Identity,
}

impl RawPeer {
    /// Connects and completes the encrypted handshake.
    pub fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer::connect_as(addr, Identity::generate())
    }

    pub fn connect_as(addr: SocketAddr, identity: Identity) -> RawPeer {
        let mut stream = TcpStream::connect(addr).expect("raw connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut link, first) = Channel::initiator(&identity);
        stream.write_all(&first).expect("raw write");
        let mut inbuf = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !link.is_established() {
            let n = stream.read(&mut buf).expect("the engine answers the handshake");
            assert!(n > 0, "the engine closed the connection during the handshake");
            let mut out = Vec::new();
            link.receive(&buf[..n], &mut out, &mut inbuf).expect("a valid handshake");
            stream.write_all(&out).expect("raw write");
        }
        RawPeer { stream, inbuf, link, identity }
    }

    /// A plain TCP connection that has not even started the handshake.
    pub fn tcp(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("raw connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Connects and completes the hello as `name`; returns the server's name.
    pub fn hello(addr: SocketAddr, name: &str) -> (RawPeer, String) {
        let mut peer = RawPeer::connect(addr);
        peer.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: name.into() });
        match peer.recv() {
            Some(Frame::Hello { name, .. }) => (peer, name),
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    pub fn send(&mut self, frame: &Frame) {
        self.send_bytes(&frame.to_bytes());
    }

    /// Encrypts `bytes` as frame bytes (one record per 65 519) and sends them.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let mut wire = Vec::new();
        self.link.seal(bytes, &mut wire).expect("seal");
        self.send_wire(&wire);
    }

    /// Sends `bytes` as they are, outside the encryption.
    pub fn send_wire(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// The next frame, skipping pings and pongs; `None` at end of stream.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.recv_any()? {
                Frame::Ping(_) | Frame::Pong(_) => continue,
                frame => return Some(frame),
            }
        }
    }

    /// The next frame of any type; `None` at end of stream or on a reset.
    pub fn recv_any(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = frame::decode(&self.inbuf).expect("engine sends valid frames") {
                self.inbuf.drain(..used);
                return Some(frame);
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    let mut out = Vec::new();
                    self.link.receive(&buf[..n], &mut out, &mut self.inbuf).expect("the engine's records are valid");
                }
            }
        }
    }

    /// Reads until the engine closes the stream; returns the bye it sent, if any.
    pub fn until_closed(&mut self) -> Option<Frame> {
        let mut bye = None;
        while let Some(frame) = self.recv() {
            if let Frame::Bye { .. } = frame {
                bye = Some(frame);
            }
        }
        bye
    }
}

/// A folder under the system's temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peerconn-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Names of the entries in the folder, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes that look random and differ with `seed` (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Node {
    /// An engine with fast timers whose downloads go to `dir`.
    pub fn receiving_into(dir: &std::path::Path) -> Node {
        Node::with_config(EngineConfig { downloads: dir.to_path_buf(), ..fast_config() })
    }
}

/// A TCP relay in front of `upstream` that delays each direction by
/// `delay`, as a slow link would, and connects upstream from its own
/// loopback address (`from`, e.g. 127.0.0.3), so the listener sees it as
/// another computer. It stops when dropped.
#[cfg(target_os = "linux")]
pub struct SlowLink {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(target_os = "linux")]
impl SlowLink {
    pub fn new(upstream: SocketAddr, from: std::net::IpAddr, delay: Duration) -> SlowLink {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = connect_from(from, upstream) else { continue };
                let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                delayed_pump(down, up, delay);
                delayed_pump(up2, down2, delay);
            }
        });
        SlowLink { addr, stop }
    }
}

#[cfg(target_os = "linux")]
impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A blocking TCP connection to `to` from the address `from`.
#[cfg(target_os = "linux")]
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// Copies `from` to `to`, each piece `delay` after it was read.
#[cfg(target_os = "linux")]
fn delayed_pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Opens idle TCP connections to `target` from `from`, `per_sec` a second,
/// keeping the newest `hold` open and resetting older ones (no TIME_WAIT
/// piles up). Stops when dropped.
#[cfg(target_os = "linux")]
pub struct Flood {
    pub opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(target_os = "linux")]
impl Flood {
    pub fn start(target: SocketAddr, from: std::net::IpAddr, per_sec: u32, hold: usize) -> Flood {
        use std::sync::atomic::Ordering;
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, stopped) = (opened.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = VecDeque::new();
            let began = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                let due = (began.elapsed().as_secs_f64() * f64::from(per_sec)) as usize;
                if count.load(Ordering::Relaxed) >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) else {
                    continue;
                };
                let _ = socket.set_linger(Some(Duration::ZERO));
                // Not waiting for the connect to complete: the kernel does
                // it, as for any flooder.
                let _ = socket.set_nonblocking(true);
                if socket.bind(&SocketAddr::new(from, 0).into()).is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                match socket.connect(&target.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
                held.push_back(socket);
                if held.len() > hold {
                    held.pop_front();
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Flood { opened, stop, thread: Some(thread) }
    }

    pub fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// EINPROGRESS on Linux: a non-blocking connect under way.
#[cfg(target_os = "linux")]
fn libc_einprogress() -> i32 {
    115
}

#[cfg(target_os = "linux")]
impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP relay in front of `upstream` that counts the bytes it carries
/// from each client to the server, can cap that direction's rate (as a
/// slower link would), and can cut every connection through it at once,
/// as a network that goes away does. It stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    /// Bytes carried from clients to the server so far.
    pub upstream_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// `rate`: bytes per second from client to server, `None` for as fast
    /// as loopback goes.
    pub fn new(upstream: SocketAddr, rate: Option<u64>) -> Relay {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, counted, open) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (stopped, count, opened) = (stop.clone(), counted.clone(), open.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(upstream) else { continue };
                let mut held = opened.lock().unwrap();
                held.push(down.try_clone().unwrap());
                held.push(up.try_clone().unwrap());
                drop(held);
                let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let count = count.clone();
                std::thread::spawn(move || relay_pump(down, up, rate, Some(&count)));
                std::thread::spawn(move || relay_pump(up2, down2, None, None));
            }
        });
        Relay { addr, upstream_bytes: counted, open, stop }
    }

    /// Bytes carried from clients to the server so far.
    pub fn carried(&self) -> u64 {
        self.upstream_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Cuts every connection through the relay, both ways, at once.
    pub fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cut();
    }
}

fn relay_pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>, count: Option<&std::sync::atomic::AtomicU64>) {
    let started = Instant::now();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        if let Some(count) = count {
            count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A running `peerconn` (in a namespace, or not) whose JSON lines arrive
/// on a channel; killed when dropped. (The namespace tests use it.)
#[cfg(target_os = "linux")]
pub struct Running {
    child: std::process::Child,
    lines: crossbeam_channel::Receiver<serde_json::Value>,
}

#[cfg(target_os = "linux")]
impl Running {
    pub fn start(mut command: std::process::Command) -> Running {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Running { child, lines }
    }

    /// The next event among `names`.
    pub fn event(&self, names: &[&str]) -> serde_json::Value {
        loop {
            let value = self.lines.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("no {names:?}"));
            if names.iter().any(|n| value["event"] == *n) {
                return value;
            }
        }
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
    }

    /// SIGINT, as Ctrl-C: a clean stop; waits for the exit.
    pub fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        // `ip netns exec` passes the signal on to peerconn.
        let _ = std::process::Command::new("pkill").args(["-INT", "-P", &pid]).status();
        let _ = std::process::Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("peerconn did not stop");
    }
}

#[cfg(target_os = "linux")]
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
