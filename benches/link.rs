//! `cargo bench --no-default-features --bench link`: one large file through
//! a long link, PeerConn next to socat.
//!
//! On loopback (`benches/transfer.rs`) a round trip takes microseconds, so
//! any flow-control window keeps the pipe full. Across a link with a real
//! round trip a sender can have at most its window in flight, so it moves at
//! most window / RTT; this bench shows where that puts PeerConn next to a
//! plain TCP copy.
//!
//! The link is a relay in this file: it accepts one connection on loopback,
//! connects on to the real listener and forwards both directions. Each
//! direction is paced to a rate (`PEERCONN_LINK_RATE_MBS`, default 100 MB/s;
//! 0 for no cap) and each chunk it reads is stamped with the time it is
//! due, its end of serialisation plus the one-way delay
//! (`PEERCONN_LINK_DELAY_MS`, default 50 ms), and written when that time
//! comes. An application-level window (PeerConn's grants) crosses the relay
//! like data, so it sees the full round trip. The kernel's TCP windows do
//! not: the relay terminates TCP on each side and the hops are on loopback.
//! It stands in for them: a direction holds at most `PEERCONN_LINK_WINDOW`
//! bytes (default 64 MiB, far above the 10 MB the default link holds) from
//! the moment it reads them until their acknowledgement would be back, one
//! delay after it wrote them. So plain TCP through it behaves like TCP with
//! that window; the default lets socat fill the link, as a kernel whose
//! buffers autotune high enough would.
//!
//! Generates a 1 GiB file (`PEERCONN_BENCH_BYTES`) in the temp folder, then
//! in each of 3 rounds (`PEERCONN_BENCH_ROUNDS`), one after the other:
//! * PeerConn: the file sent between two engines through the relay (offer,
//!   accept, BLAKE3 on both sides), timed until the receiver reports it
//!   received, verified, synced and renamed into place;
//! * socat: `socat -b 1048576 -u TCP-LISTEN:… OPEN:…,creat` receiving,
//!   `socat -u OPEN:… TCP:…` sending through the relay, timed until the
//!   receiver exits and its output is synced to the disk (and checked
//!   afterwards, untimed).
//!
//! Prints the median and best MB/s of each, the ratio PeerConn / socat and
//! the CPU seconds each used: PeerConn's engines are in this process, so
//! theirs is the process's minus the relay's threads; socat's is its two
//! processes'. The relay's own CPU is printed apart.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use peerconn::net::{frame, Engine, EngineConfig, Event, ListenOptions, PeerState};

const DEFAULT_BYTES: u64 = 1024 * 1024 * 1024;
const BUFFER: usize = 256 * 1024;
/// Most the relay reads from a socket at a time.
const CHUNK: usize = 128 * 1024;
/// Most the relay writes to a socket at a time (chunks that are due together).
const BATCH: usize = 1024 * 1024;

fn main() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let bytes = env("PEERCONN_BENCH_BYTES").unwrap_or(DEFAULT_BYTES);
    let rounds = env("PEERCONN_BENCH_ROUNDS").unwrap_or(3).max(1) as usize;
    let rate = env("PEERCONN_LINK_RATE_MBS").unwrap_or(100);
    let link = Link {
        delay: Duration::from_millis(env("PEERCONN_LINK_DELAY_MS").unwrap_or(50)),
        rate: (rate > 0).then_some(rate as f64 * 1e6),
        window: env("PEERCONN_LINK_WINDOW").unwrap_or(64 * 1024 * 1024).max(CHUNK as u64),
    };
    let socat = Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !socat {
        println!("socat is not installed: only PeerConn is measured (apt-get install -y socat to compare)");
    }

    let dir = std::env::temp_dir().join(format!("peerconn-link-{}", std::process::id()));
    fs::create_dir_all(dir.join("downloads")).unwrap();
    fs::create_dir_all(dir.join("socat")).unwrap();
    let source = dir.join("payload.zip");
    print!("generating {} MiB of test data... ", bytes >> 20);
    let _ = std::io::stdout().flush();
    generate(&source, bytes);
    let source_hash = hash(&source);
    println!("done");
    let rtt = link.delay * 2;
    println!(
        "link: {} ms each way ({} ms round trip), {} each way, at most {} MiB in flight per direction",
        link.delay.as_millis(),
        rtt.as_millis(),
        link.rate.map_or("no rate cap".to_string(), |r| format!("{:.0} MB/s", r / 1e6)),
        link.window >> 20
    );
    println!(
        "relay sockets: TCP_NODELAY, buffers left to the kernel (autotuned; tcp_rmem {}, tcp_wmem {})",
        sysctl("net/ipv4/tcp_rmem"),
        sysctl("net/ipv4/tcp_wmem")
    );

    // One after the other in every round, each copy removed before the
    // next run, compared by their medians.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let cpu = process_cpu();
        let (took, relay_cpu) = peerconn(&source, &dir.join("downloads"), link);
        let our = Run { took, cpu: process_cpu() - cpu - relay_cpu, relay_cpu };
        let _ = fs::remove_file(dir.join("downloads/payload.zip"));
        print!("  round {}: peerconn {:.2} s ({:.2} s CPU)", round + 1, our.took.as_secs_f64(), our.cpu);
        ours.push(our);
        if socat {
            let target = dir.join("socat/payload.zip");
            let (cpu, own) = (children_cpu(), process_cpu());
            let (took, relay_cpu) = socat_copy(&source, &target, link);
            let (cpu, own) = (children_cpu() - cpu, process_cpu() - own - relay_cpu);
            assert_eq!(hash(&target), source_hash, "socat's copy arrived damaged");
            let _ = fs::remove_file(&target);
            print!(", socat {:.2} s ({cpu:.2} s CPU, this process {own:.2} s)", took.as_secs_f64());
            theirs.push(Run { took, cpu, relay_cpu });
        }
        println!();
    }

    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!();
    println!(
        "PeerConn over a long link ({} MiB, {} ms round trip, {} each way, {rounds} rounds, files in {})",
        bytes >> 20,
        rtt.as_millis(),
        link.rate.map_or("uncapped".to_string(), |r| format!("{:.0} MB/s", r / 1e6)),
        dir.display()
    );
    println!("                                              median              best   CPU (median)");
    let row = |what: &str, t: &Summary| {
        let (m, b) = (t.took.median, t.took.best);
        println!(
            "  {what:<40} {:>5.1} MB/s {:>5.2} s  {:>5.1} MB/s   {:>5.2} s",
            mbs(m),
            m.as_secs_f64(),
            mbs(b),
            t.cpu
        );
    };
    let mine = Summary::of(&ours);
    row("peerconn engines (encrypted, verified)", &mine);
    if !theirs.is_empty() {
        let other = Summary::of(&theirs);
        row("socat -u, plain TCP, + fsync", &other);
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "  {:<40} {:>10.2}          {:>6.2}",
            "ratio peerconn / socat (speed)",
            ratio(other.took.median, mine.took.median),
            ratio(other.took.best, mine.took.best)
        );
        println!(
            "  relay CPU per run (median, not counted above): {:.2} s with peerconn, {:.2} s with socat",
            mine.relay_cpu, other.relay_cpu
        );
    } else {
        println!("  relay CPU per run (median, not counted above): {:.2} s", mine.relay_cpu);
    }
    if !rtt.is_zero() {
        println!(
            "  PeerConn's window per file (4 MiB, growing to {} MiB while the disk keeps up) allows at most \
             {:.1} MB/s at a {} ms round trip",
            frame::MAX_WINDOW >> 20,
            frame::MAX_WINDOW as f64 / 1e6 / rtt.as_secs_f64(),
            rtt.as_millis()
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// One timed transfer.
struct Run {
    took: Duration,
    /// CPU seconds of the transfer itself (not the relay's).
    cpu: f64,
    relay_cpu: f64,
}

/// The median and best of the times, the median CPU.
struct Summary {
    took: Times,
    cpu: f64,
    relay_cpu: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Summary {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Summary {
            took: Times::of(runs.iter().map(|r| r.took).collect()),
            cpu: median(runs.iter().map(|r| r.cpu).collect()),
            relay_cpu: median(runs.iter().map(|r| r.relay_cpu).collect()),
        }
    }
}

/// The median and best of a few timings.
struct Times {
    median: Duration,
    best: Duration,
}

impl Times {
    fn of(mut times: Vec<Duration>) -> Times {
        times.sort();
        Times { median: times[times.len() / 2], best: times[0] }
    }
}

/// The file sent between two engines through the relay; how long until the
/// receiver had it verified and stored, and the relay's CPU seconds.
fn peerconn(source: &Path, downloads: &Path, link: Link) -> (Duration, f64) {
    let a = Engine::start().unwrap();
    let b =
        Engine::with_config(EngineConfig { downloads: downloads.to_path_buf(), ..EngineConfig::default() }).unwrap();
    let sa = a.listen("bench-a", "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = loop {
        if let Ok(Event::State { state: PeerState::Listening { local }, .. }) = a.events().recv() {
            break local;
        }
    };
    let relay = Relay::start(addr, link);
    b.connect("bench-b", relay.addr).unwrap();
    for engine in [&a, &b] {
        loop {
            if let Ok(Event::State { state: PeerState::Connected { .. }, .. }) = engine.events().recv() {
                break;
            }
        }
    }
    let size = fs::metadata(source).unwrap().len();
    let started = Instant::now();
    let took = thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            while let Ok(event) = b.events().recv() {
                match event {
                    Event::FileIncoming { transfer, .. } => b.accept_file(transfer),
                    Event::FileReceived { size: got, .. } => {
                        assert_eq!(got, size);
                        return started.elapsed();
                    }
                    Event::FileFailed { reason, .. } => panic!("receiving failed: {reason}"),
                    _ => {}
                }
            }
            panic!("the receiving engine stopped");
        });
        a.send_file(sa, source);
        while let Ok(event) = a.events().recv() {
            match event {
                Event::FileSent { .. } => break,
                Event::FileFailed { reason, .. } => panic!("sending failed: {reason}"),
                _ => {}
            }
        }
        receiver.join().unwrap()
    });
    drop((a, b)); // closes the connection: the relay ends
    (took, relay.join())
}

/// The file copied by two socat processes through the relay; how long
/// until the receiver exited and its output was on the disk, and the
/// relay's CPU seconds.
fn socat_copy(source: &Path, target: &Path, link: Link) -> (Duration, f64) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut receiver = Command::new("socat")
        .args(["-b", "1048576", "-u"])
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
        .arg(format!("OPEN:{},creat", target.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The relay connects on when the sender arrives, trying until the
    // receiver listens.
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], port)), link);
    let started = Instant::now();
    let mut sender = Command::new("socat")
        .arg("-u")
        .arg(format!("OPEN:{}", source.display()))
        .arg(format!("TCP:{}", relay.addr))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(receiver.wait().unwrap().success(), "the receiving socat failed");
    File::open(target).unwrap().sync_all().unwrap();
    let took = started.elapsed();
    assert!(sender.wait().unwrap().success(), "the sending socat failed");
    (took, relay.join())
}

/// What the relay does to each direction.
#[derive(Clone, Copy)]
struct Link {
    /// One way.
    delay: Duration,
    /// Bytes per second; `None`: as fast as it reads.
    rate: Option<f64>,
    /// Most bytes a direction holds between reading them and the moment
    /// their acknowledgement would be back.
    window: u64,
}

/// A long link between one client and `upstream`.
struct Relay {
    addr: SocketAddr,
    thread: JoinHandle<f64>,
}

impl Relay {
    /// Listens on loopback; the first connection there is forwarded to
    /// `upstream` through the link.
    fn start(upstream: SocketAddr, link: Link) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = thread::Builder::new()
            .name("link".into())
            .spawn(move || {
                let (client, _) = listener.accept().unwrap();
                drop(listener);
                let server = connect(upstream);
                for s in [&client, &server] {
                    s.set_nodelay(true).unwrap();
                }
                let (up, down) = (Pipe::new(), Pipe::new());
                let cpu = thread::scope(|scope| {
                    let up = direction(scope, &client, &server, &up, link, "up");
                    let down = direction(scope, &server, &client, &down, link, "down");
                    [up, down].into_iter().flatten().map(|t| t.join().unwrap()).sum::<f64>()
                });
                cpu + thread_cpu()
            })
            .unwrap();
        Relay { addr, thread }
    }

    /// Waits for both directions to end; the CPU seconds the relay used.
    fn join(self) -> f64 {
        self.thread.join().unwrap()
    }
}

/// Connects to `addr`, retrying for a while as long as nobody listens yet.
fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("the relay cannot connect to {addr}: {e}"),
        }
    }
}

/// Chunks read from one side, waiting for their time to be written to the
/// other.
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

struct PipeState {
    /// In order; an empty chunk is the end of the stream.
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes read whose acknowledgement is not back yet.
    in_flight: u64,
    /// Written bytes and when their acknowledgement is back.
    acks: VecDeque<(Instant, u64)>,
    /// The writer cannot write any more.
    broken: bool,
}

impl Pipe {
    fn new() -> Pipe {
        let state = PipeState { chunks: VecDeque::new(), in_flight: 0, acks: VecDeque::new(), broken: false };
        Pipe { state: Mutex::new(state), changed: Condvar::new() }
    }
}

/// Forwards `from` to `to` through the link on two threads (a reader and a
/// writer); each returns its CPU seconds.
fn direction<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    from: &'scope TcpStream,
    to: &'scope TcpStream,
    pipe: &'scope Pipe,
    link: Link,
    name: &str,
) -> [thread::ScopedJoinHandle<'scope, f64>; 2] {
    let reader = thread::Builder::new()
        .name(format!("link-{name}-read"))
        .spawn_scoped(scope, move || {
            read_side(from, pipe, link);
            thread_cpu()
        })
        .unwrap();
    let writer = thread::Builder::new()
        .name(format!("link-{name}-write"))
        .spawn_scoped(scope, move || {
            write_side(from, to, pipe, link);
            thread_cpu()
        })
        .unwrap();
    [reader, writer]
}

/// Reads while the window has room; stamps each chunk with the time it is
/// due at the other end: when the link has finished sending it (paced to
/// the rate after the chunks before it) plus the delay.
fn read_side(from: &TcpStream, pipe: &Pipe, link: Link) {
    let mut buf = vec![0u8; CHUNK];
    let mut free = Instant::now(); // when the link is done with what it holds
    loop {
        {
            let mut s = pipe.state.lock().unwrap();
            loop {
                if s.broken {
                    return;
                }
                let now = Instant::now();
                while let Some(&(at, n)) = s.acks.front() {
                    if at > now {
                        break;
                    }
                    s.in_flight -= n;
                    s.acks.pop_front();
                }
                if s.in_flight + CHUNK as u64 <= link.window {
                    break;
                }
                s = match s.acks.front() {
                    Some(&(at, _)) => pipe.changed.wait_timeout(s, at - now).unwrap().0,
                    None => pipe.changed.wait(s).unwrap(),
                };
            }
        }
        let n = (&*from).read(&mut buf).unwrap_or(0);
        let now = Instant::now();
        free = free.max(now) + link.rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(n as f64 / r));
        let mut s = pipe.state.lock().unwrap();
        s.chunks.push_back((free + link.delay, buf[..n].to_vec()));
        s.in_flight += n as u64;
        pipe.changed.notify_all();
        if n == 0 {
            return;
        }
    }
}

/// Writes each chunk when it is due (those due together at once), and
/// hands its bytes back to the window one delay later. At the end of the
/// stream, shuts down the other side's sending half.
fn write_side(from: &TcpStream, to: &TcpStream, pipe: &Pipe, link: Link) {
    let mut out = Vec::with_capacity(BATCH + CHUNK);
    loop {
        let (due, first) = {
            let mut s = pipe.state.lock().unwrap();
            loop {
                if let Some(chunk) = s.chunks.pop_front() {
                    break chunk;
                }
                s = pipe.changed.wait(s).unwrap();
            }
        };
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let mut end = first.is_empty();
        out.clear();
        out.extend_from_slice(&first);
        {
            let mut s = pipe.state.lock().unwrap();
            let now = Instant::now();
            while !end && out.len() < BATCH {
                match s.chunks.front() {
                    Some((due, _)) if *due <= now => {
                        let (_, chunk) = s.chunks.pop_front().unwrap();
                        end = chunk.is_empty();
                        out.extend_from_slice(&chunk);
                    }
                    _ => break,
                }
            }
        }
        if !out.is_empty() {
            if (&*to).write_all(&out).is_err() {
                pipe.state.lock().unwrap().broken = true;
                pipe.changed.notify_all();
                let _ = from.shutdown(Shutdown::Read); // the reader stops reading
                return;
            }
            let mut s = pipe.state.lock().unwrap();
            s.acks.push_back((Instant::now() + link.delay, out.len() as u64));
            pipe.changed.notify_all();
        }
        if end {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// Writes `bytes` of incompressible data quickly (xorshift).
fn generate(path: &Path, bytes: u64) {
    let file = File::create(path).unwrap();
    let mut out = BufWriter::with_capacity(BUFFER, &file);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; BUFFER];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(BUFFER as u64) as usize;
        out.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    drop(out);
    // On disk before anything is timed, so its write-back does not slow a run.
    file.sync_all().unwrap();
}

/// BLAKE3 of a file.
fn hash(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).unwrap()).unwrap();
    hasher.finalize()
}

/// A kernel setting, as its file says it (Linux; "?" elsewhere).
fn sysctl(name: &str) -> String {
    fs::read_to_string(Path::new("/proc/sys").join(name))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) this process has used, all threads (Linux;
/// 0 elsewhere).
fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat", 11)
}

/// CPU seconds of this process's children that have ended and been waited
/// for.
fn children_cpu() -> f64 {
    stat_cpu("/proc/self/stat", 13)
}

/// CPU seconds the calling thread has used.
fn thread_cpu() -> f64 {
    stat_cpu("/proc/thread-self/stat", 11)
}

/// The user and system ticks at `field` and the next one of a `stat` file,
/// in seconds.
fn stat_cpu(path: &str, field: usize) -> f64 {
    let Ok(stat) = fs::read_to_string(path) else { return 0.0 };
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(field) + ticks(field + 1)) / 100.0
}
