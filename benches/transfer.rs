//! `cargo bench --bench transfer`: file transfer speed, memory and chat
//! latency during a transfer.
//!
//! Generates a 2 GiB file (`PEERCONN_BENCH_BYTES` to change it), then in the
//! same run:
//! * baseline: the file pushed through a plain file → `std::net` socket →
//!   file copy over loopback (two threads, 256 KiB buffers, no hashing);
//! * PeerConn: the same file sent between two engines over loopback
//!   (offer, accept, BLAKE3 on both sides, verified, renamed into place),
//!   while a chat message goes back and forth every 10 ms.
//!
//! Prints MB/s for both and their ratio, the growth of resident memory
//! during the transfer (both engines together), and the chat round trip
//! p50/p99 measured during the transfer.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerconn::net::{Engine, EngineConfig, Event, ListenOptions, PeerState};

const DEFAULT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const BUFFER: usize = 256 * 1024;

fn main() {
    let bytes = std::env::var("PEERCONN_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_BYTES);
    let dir = std::env::temp_dir().join(format!("peerconn-bench-{}", std::process::id()));
    fs::create_dir_all(dir.join("baseline")).unwrap();
    fs::create_dir_all(dir.join("downloads")).unwrap();
    let source = dir.join("payload.zip");
    print!("generating {} MiB of test data... ", bytes >> 20);
    let _ = std::io::stdout().flush();
    generate(&source, bytes);
    println!("done");

    // Disk write-back makes single runs noisy: alternate the two, twice,
    // removing each copy before the next run, and compare the best of each.
    let mut bases = Vec::new();
    let mut runs = Vec::new();
    for round in 0..2 {
        let copy = dir.join("baseline/copy.zip");
        let cpu = process_cpu();
        bases.push(baseline(&source, &copy));
        let base_cpu = process_cpu() - cpu;
        let _ = fs::remove_file(&copy);
        let cpu = process_cpu();
        let run = peerconn(&source, &dir.join("downloads"));
        let our_cpu = process_cpu() - cpu;
        let _ = fs::remove_file(dir.join("downloads/payload.zip"));
        println!(
            "  round {}: baseline {:.2} s ({base_cpu:.2} s CPU), peerconn {:.2} s ({our_cpu:.2} s CPU)",
            round + 1,
            bases[round].as_secs_f64(),
            run.took.as_secs_f64()
        );
        runs.push(run);
    }
    let base = *bases.iter().min().expect("two runs");
    runs.sort_by_key(|r| r.took);
    let ours = runs.remove(0);
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!();
    println!("PeerConn file transfer benchmark ({} MiB over loopback, best of 2 each)", bytes >> 20);
    println!("  baseline file → std::net → file   {:>8.0} MB/s  ({:.2} s)", mbs(base), base.as_secs_f64());
    println!("  peerconn engines (BLAKE3-verified) {:>8.0} MB/s  ({:.2} s)", mbs(ours.took), ours.took.as_secs_f64());
    println!("  ratio peerconn / baseline          {:>8.2}", base.as_secs_f64() / ours.took.as_secs_f64());
    match ours.memory {
        Some((before, peak)) => println!(
            "  resident memory: {} MiB before, {} MiB peak during the transfer (+{} MiB, both engines)",
            before >> 20,
            peak >> 20,
            peak.saturating_sub(before) >> 20
        ),
        None => println!("  resident memory: not measured on this system"),
    }
    let (p50, p99) = percentiles(ours.chat);
    println!("  chat round trip during the transfer: p50 {p50:.2} ms, p99 {p99:.2} ms ({} samples)", ours.samples);
    fs::remove_dir_all(&dir).unwrap();
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

fn baseline(source: &Path, target: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.to_path_buf();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut out = File::create(&target).unwrap();
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
        }
        out.sync_all().unwrap();
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let mut file = File::open(source).unwrap();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    drop(s);
    receiver.join().unwrap();
    started.elapsed()
}

struct Run {
    took: Duration,
    memory: Option<(u64, u64)>,
    chat: Vec<Duration>,
    samples: usize,
}

fn peerconn(source: &Path, downloads: &Path) -> Run {
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
    let started = Instant::now();
    let mut took = Duration::ZERO;
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
                    break;
                }
                Event::FileFailed { reason, .. } => panic!("transfer failed: {reason}"),
                _ => {}
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    let samples = chat.len();
    Run { took, memory: before.map(|b| (b, peak.load(Ordering::Relaxed))), chat, samples }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

/// CPU seconds this process has used, all threads (Linux; 0 elsewhere).
fn process_cpu() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident set size in bytes (Linux).
fn resident() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
