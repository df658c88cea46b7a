//! `cargo bench --bench transfer`: file transfer speed, CPU, memory and chat
//! latency during a transfer, over loopback.
//!
//! Generates a 2 GiB file (`PEERCONN_BENCH_BYTES` to change it) in the temp
//! folder (`TMPDIR`: on a disk by default, `/dev/shm` to leave the disk
//! out), then in each of 3 rounds (`PEERCONN_BENCH_ROUNDS`), one after the
//! other:
//! * baseline: the file pushed through a plain file → `std::net` socket →
//!   file copy over loopback (two threads, 256 KiB buffers, no hashing),
//!   synced to the disk at the end;
//! * floor: the same copy doing the work no encrypted, verified transfer can
//!   skip: BLAKE3 on both sides and AES-256-GCM sealed and opened in place;
//! * socat: `socat -b 1048576 -u TCP-LISTEN:… OPEN:…,creat` receiving,
//!   `socat -u OPEN:… TCP:…` sending over loopback (the commands of
//!   `benches/link.rs`, without its relay), timed until the receiver exits
//!   and its output is synced to the disk (and checked afterwards, untimed);
//!   skipped if socat is not installed;
//! * PeerConn: the same file sent between two engines over loopback
//!   (offer, accept, BLAKE3 on both sides, verified, synced, renamed into
//!   place), while a chat message goes back and forth every 10 ms.
//!
//! Prints the median and best MB/s of each and its median CPU seconds per
//! GiB (baseline, floor: this process's; socat: its two processes' user +
//! system; PeerConn: this process's during the transfer, both engines
//! together), PeerConn's speed ratio to the baseline, the floor and socat,
//! its CPU per GiB relative to the floor's, the growth of resident memory
//! during a transfer (both engines together), and the chat round trip
//! p50/p99 measured during the transfers.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerconn::net::{Engine, EngineConfig, Event, ListenOptions, PeerState};

const DEFAULT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const BUFFER: usize = 256 * 1024;

fn main() {
    let bytes = std::env::var("PEERCONN_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_BYTES);
    let socat = Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !socat {
        println!("socat is not installed: its row is skipped (apt-get install -y socat to compare)");
    }
    let dir = std::env::temp_dir().join(format!("peerconn-bench-{}", std::process::id()));
    fs::create_dir_all(dir.join("baseline")).unwrap();
    fs::create_dir_all(dir.join("socat")).unwrap();
    fs::create_dir_all(dir.join("downloads")).unwrap();
    let source = dir.join("payload.zip");
    print!("generating {} MiB of test data... ", bytes >> 20);
    let _ = std::io::stdout().flush();
    generate(&source, bytes);
    let source_hash = socat.then(|| hash(&source));
    println!("done");

    // Disk write-back and the file system make single runs noisy: alternate
    // the four, removing each copy before the next run, and compare the
    // medians (and the best of each).
    let rounds: usize = std::env::var("PEERCONN_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let (mut bases, mut floors, mut socats, mut runs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let copy = dir.join("baseline/copy.zip");
        let cpu = process_cpu();
        let took = baseline(&source, &copy, false);
        bases.push(Run { took, cpu: process_cpu() - cpu });
        let _ = fs::remove_file(&copy);
        let cpu = process_cpu();
        let took = baseline(&source, &copy, true);
        floors.push(Run { took, cpu: process_cpu() - cpu });
        let _ = fs::remove_file(&copy);
        let shown = |what: &str, r: &Run| format!("{what} {:.2} s ({:.2} s CPU)", r.took.as_secs_f64(), r.cpu);
        let mut line =
            format!("  round {}: {}, {}", round + 1, shown("baseline", &bases[round]), shown("floor", &floors[round]));
        if let Some(source_hash) = source_hash {
            let target = dir.join("socat/payload.zip");
            let (cpu, own) = (children_cpu(), process_cpu());
            let took = socat_copy(&source, &target);
            let (cpu, own) = (children_cpu() - cpu, process_cpu() - own);
            assert_eq!(hash(&target), source_hash, "socat's copy arrived damaged");
            let _ = fs::remove_file(&target);
            let run = Run { took, cpu };
            line += &format!(", {} [this process {own:.2} s]", shown("socat", &run));
            socats.push(run);
        }
        let run = peerconn(&source, &dir.join("downloads"));
        let _ = fs::remove_file(dir.join("downloads/payload.zip"));
        println!("{line}, {}", shown("peerconn", &Run { took: run.took, cpu: run.cpu }));
        runs.push(run);
    }
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let (base, floor) = (Summary::of(&bases, gib), Summary::of(&floors, gib));
    let theirs = (!socats.is_empty()).then(|| Summary::of(&socats, gib));
    let ours: Vec<Run> = runs.iter().map(|r| Run { took: r.took, cpu: r.cpu }).collect();
    let mine = Summary::of(&ours, gib);
    runs.sort_by_key(|r| r.took);
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!();
    println!(
        "PeerConn file transfer benchmark ({} MiB over loopback in {}, {rounds} rounds)",
        bytes >> 20,
        dir.display()
    );
    println!("                                              median              best   CPU s/GiB (median)");
    let row = |what: &str, t: &Summary| {
        let (m, b) = (t.took.median, t.took.best);
        println!(
            "  {what:<40} {:>5.0} MB/s {:>5.2} s  {:>5.0} MB/s   {:>5.2}",
            mbs(m),
            m.as_secs_f64(),
            mbs(b),
            t.cpu_per_gib
        );
    };
    row("baseline file → std::net → file", &base);
    row("floor: the same + BLAKE3 + AES-GCM", &floor);
    match &theirs {
        Some(theirs) => row("socat -u, plain TCP, + fsync", theirs),
        None => println!("  {:<40} skipped: socat is not installed", "socat -u, plain TCP, + fsync"),
    }
    row("peerconn engines (encrypted, verified)", &mine);
    let ratios = |what: &str, other: &Summary| {
        let (m, b) = (ratio(other.took.median, mine.took.median), ratio(other.took.best, mine.took.best));
        println!("  {what:<40} {m:>10.2}          {b:>6.2}");
    };
    ratios("ratio peerconn / baseline (speed)", &base);
    ratios("ratio peerconn / floor (speed)", &floor);
    if let Some(theirs) = &theirs {
        ratios("ratio peerconn / socat (speed)", theirs);
    }
    println!(
        "  {:<40} {:>10.2}   ({:.2} against {:.2} CPU s/GiB)",
        "ratio peerconn / floor (CPU per GiB)",
        mine.cpu_per_gib / floor.cpu_per_gib,
        mine.cpu_per_gib,
        floor.cpu_per_gib
    );
    let median = &runs[runs.len() / 2];
    match median.memory {
        Some((before, peak)) => println!(
            "  resident memory: {} MiB before, {} MiB peak during the transfer (+{} MiB, both engines)",
            before >> 20,
            peak >> 20,
            peak.saturating_sub(before) >> 20
        ),
        None => println!("  resident memory: not measured on this system"),
    }
    let samples: Vec<Duration> = runs.iter().flat_map(|r| r.chat.iter().copied()).collect();
    let count = samples.len();
    let (p50, p99) = percentiles(samples);
    println!("  chat round trip during the transfers: p50 {p50:.2} ms, p99 {p99:.2} ms ({count} samples)");
    fs::remove_dir_all(&dir).unwrap();
}

/// One timed copy and the CPU seconds it used.
struct Run {
    took: Duration,
    cpu: f64,
}

/// The median and best of the times, the median CPU seconds per GiB.
struct Summary {
    took: Times,
    cpu_per_gib: f64,
}

impl Summary {
    fn of(runs: &[Run], gib: f64) -> Summary {
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu / gib).collect();
        cpu.sort_by(f64::total_cmp);
        Summary { took: Times::of(runs.iter().map(|r| r.took).collect()), cpu_per_gib: cpu[cpu.len() / 2] }
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

/// Plaintext bytes the floor copy seals at a time: with its tag, as large
/// as a Noise record can be.
const PIECE: usize = 65_535 - 16;

/// The plain copy. With `floor`, also what any encrypted and verified copy
/// must do and nothing more: the sender hashes each buffer with BLAKE3 and
/// seals it in place with AES-256-GCM in `PIECE`s, the receiver opens them in
/// place, hashes, writes, and checks the hash at the end.
fn baseline(source: &Path, target: &Path, floor: bool) -> Duration {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = || LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    let nonce = |n: &mut u64| {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        *n += 1;
        Nonce::assume_unique_for_key(bytes)
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.to_path_buf();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = File::create(&target).unwrap();
        let mut buf = vec![0u8; BUFFER + BUFFER.div_ceil(PIECE) * 16];
        let (key, mut n, mut hasher) = (key(), 0u64, blake3::Hasher::new());
        loop {
            if !floor {
                let got = s.read(&mut buf).unwrap();
                if got == 0 {
                    break;
                }
                out.write_all(&buf[..got]).unwrap();
                continue;
            }
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                let mut hash = [0u8; 32];
                s.read_exact(&mut hash).unwrap();
                assert_eq!(hasher.finalize().as_bytes(), &hash, "the floor copy arrived damaged");
                break;
            }
            s.read_exact(&mut buf[..len]).unwrap();
            for piece in buf[..len].chunks_mut(PIECE + 16) {
                let opened = key.open_in_place(nonce(&mut n), Aad::empty(), piece).unwrap();
                hasher.update(opened);
                out.write_all(opened).unwrap();
            }
        }
        out.sync_all().unwrap();
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let mut file = File::open(source).unwrap();
    let mut buf = vec![0u8; BUFFER];
    let (key, mut n, mut hasher) = (key(), 0u64, blake3::Hasher::new());
    loop {
        let got = file.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        if !floor {
            s.write_all(&buf[..got]).unwrap();
            continue;
        }
        hasher.update(&buf[..got]);
        let tags: Vec<_> = buf[..got]
            .chunks_mut(PIECE)
            .map(|piece| key.seal_in_place_separate_tag(nonce(&mut n), Aad::empty(), piece).unwrap())
            .collect();
        // Length, then each piece followed by its tag, without copying.
        let len = ((got + tags.len() * 16) as u32).to_le_bytes();
        let mut parts = vec![IoSlice::new(&len)];
        for (piece, tag) in buf[..got].chunks(PIECE).zip(&tags) {
            parts.push(IoSlice::new(piece));
            parts.push(IoSlice::new(tag.as_ref()));
        }
        let mut parts = &mut parts[..];
        while !parts.is_empty() {
            let sent = s.write_vectored(parts).unwrap();
            IoSlice::advance_slices(&mut parts, sent);
        }
    }
    if floor {
        s.write_all(&0u32.to_le_bytes()).unwrap();
        s.write_all(hasher.finalize().as_bytes()).unwrap();
    }
    drop(s);
    receiver.join().unwrap();
    started.elapsed()
}

/// The file copied by two socat processes over loopback, with the commands
/// of `benches/link.rs`; how long from the receiver listening until it
/// exited and its output was on the disk.
fn socat_copy(source: &Path, target: &Path) -> Duration {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut receiver = Command::new("socat")
        .args(["-b", "1048576", "-u"])
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
        .arg(format!("OPEN:{},creat", target.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The receiver takes one connection: wait for it to listen without
    // connecting to it.
    wait_listening(port);
    let started = Instant::now();
    let mut sender = Command::new("socat")
        .arg("-u")
        .arg(format!("OPEN:{}", source.display()))
        .arg(format!("TCP:127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(receiver.wait().unwrap().success(), "the receiving socat failed");
    File::open(target).unwrap().sync_all().unwrap();
    let took = started.elapsed();
    assert!(sender.wait().unwrap().success(), "the sending socat failed");
    took
}

/// Waits until a socket listens on 127.0.0.1:`port`, as `/proc/net/tcp`
/// lists them (Linux; elsewhere a fixed pause).
fn wait_listening(port: u16) {
    let local = format!("0100007F:{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
            std::thread::sleep(Duration::from_millis(200));
            return;
        };
        // Columns: slot, local address, remote address, state (0A: listen).
        let listening = table.lines().skip(1).any(|line| {
            let columns: Vec<&str> = line.split_whitespace().take(4).collect();
            columns.len() == 4 && columns[1] == local && columns[3] == "0A"
        });
        if listening {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the receiving socat does not listen on port {port}");
}

/// BLAKE3 of a file.
fn hash(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).unwrap()).unwrap();
    hasher.finalize()
}

/// One PeerConn transfer.
struct Transfer {
    /// Until the sender heard that the receiver had verified and stored it.
    took: Duration,
    /// This process's CPU seconds over that time: both engines, and the
    /// bench's chat and memory sampling threads.
    cpu: f64,
    memory: Option<(u64, u64)>,
    chat: Vec<Duration>,
}

fn peerconn(source: &Path, downloads: &Path) -> Transfer {
    let a = Engine::start().unwrap();
    let b =
        Engine::with_config(EngineConfig { downloads: downloads.to_path_buf(), ..EngineConfig::default() }).unwrap();
    let sa = a.listen("bench-a", "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = loop {
        if let Ok(Event::State { state: PeerState::Listening { local }, .. }) = a.events().recv() {
            break local;
        }
    };
    let sb = b.connect("bench-b", addr).unwrap();
    for engine in [&a, &b] {
        loop {
            if let Ok(Event::State { state: PeerState::Connected { .. }, .. }) = engine.events().recv() {
                break;
            }
        }
    }
    let before = resident();
    let peak = AtomicU64::new(before.unwrap_or(0));
    let done = AtomicBool::new(false);
    let pings: Mutex<HashMap<u64, Instant>> = Mutex::new(HashMap::new());
    let mut chat = Vec::new();
    let cpu = process_cpu();
    let started = Instant::now();
    let (mut took, mut used) = (Duration::ZERO, 0.0);
    std::thread::scope(|scope| {
        // Memory sampler.
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = resident() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Receiver side: accept the file, echo chat.
        scope.spawn(|| {
            while let Ok(event) = b.events().recv() {
                match event {
                    Event::FileIncoming { transfer, .. } => b.accept_file(transfer),
                    Event::Message { text, .. } => {
                        let _ = b.send_text(sb, &text);
                    }
                    Event::FileReceived { .. } | Event::FileFailed { .. } => break,
                    _ => {}
                }
            }
        });
        // Chat sender on A: a ping every 10 ms until the transfer ends.
        scope.spawn(|| {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                pings.lock().unwrap().insert(n, Instant::now());
                let _ = a.send_text(sa, &format!("ping {n}"));
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        a.send_file(sa, source);
        while let Ok(event) = a.events().recv() {
            match event {
                Event::Message { text, .. } => {
                    let n: u64 = text.trim_start_matches("ping ").parse().unwrap_or(u64::MAX);
                    if let Some(sent) = pings.lock().unwrap().remove(&n) {
                        chat.push(sent.elapsed());
                    }
                }
                Event::FileSent { .. } => {
                    took = started.elapsed();
                    used = process_cpu() - cpu;
                    break;
                }
                Event::FileFailed { reason, .. } => panic!("transfer failed: {reason}"),
                _ => {}
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    Transfer { took, cpu: used, memory: before.map(|b| (b, peak.load(Ordering::Relaxed))), chat }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

/// CPU seconds (user + system) this process has used, all threads (Linux;
/// 0 elsewhere).
fn process_cpu() -> f64 {
    stat_cpu(11)
}

/// CPU seconds (user + system) of this process's children that have ended
/// and been waited for (Linux; 0 elsewhere).
fn children_cpu() -> f64 {
    stat_cpu(13)
}

/// The user and system ticks at `field` and the next one of
/// `/proc/self/stat`, in seconds.
fn stat_cpu(field: usize) -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(field) + ticks(field + 1)) / 100.0
}

/// Resident set size in bytes (Linux).
fn resident() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
