//! `cargo bench --bench folder`: a folder of many small files.
//!
//! Makes a folder of 10 000 files of 16 KiB (`PEERCONN_BENCH_FILES`,
//! `PEERCONN_BENCH_FILE_BYTES` to change it) in 100 subfolders, in the temp
//! folder (`TMPDIR`), then in each of 3 rounds (`PEERCONN_BENCH_ROUNDS`),
//! interleaved:
//! * tar | socat: what a person would type instead: `tar c` piped into
//!   `socat -b 1048576 - TCP:…` on one side, `socat TCP-LISTEN:… -` piped
//!   into `tar x` on the other, then `sync -f` of the destination (tar does
//!   not make anything durable by itself; PeerConn does);
//! * PeerConn: the folder sent between two engines over loopback under one
//!   offer (listing, every file hashed and verified, the batch made durable,
//!   the folder named).
//!
//! Prints the median and best time of each, files per second, PeerConn's
//! ratio to tar | socat (higher is better for PeerConn), and the
//! CPU-seconds each used (all processes and threads).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerconn::net::{Engine, EngineConfig, Event, ListenOptions, PeerState};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let files = env("PEERCONN_BENCH_FILES", 10_000);
    let each = env("PEERCONN_BENCH_FILE_BYTES", 16 * 1024);
    let rounds = env("PEERCONN_BENCH_ROUNDS", 3).max(1) as usize;
    if Command::new("socat").arg("-V").output().is_err() || Command::new("tar").arg("--version").output().is_err() {
        eprintln!("this bench compares with tar | socat: install them (apt-get install socat tar)");
        std::process::exit(1);
    }
    let dir = std::env::temp_dir().join(format!("peerconn-folder-bench-{}", std::process::id()));
    let source = dir.join("outbox/album");
    print!("making {files} files of {each} bytes... ");
    let _ = std::io::stdout().flush();
    make_folder(&source, files, each);
    println!("done");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let target = dir.join("tar");
        let (t_tar, cpu_tar) = tar_socat(&source, &target);
        check_copy(&target.join("album"), files);
        fs::remove_dir_all(&target).unwrap();
        let downloads = dir.join("downloads");
        let (t_ours, cpu_ours) = peerconn(&source, &downloads);
        check_copy(&downloads.join("album"), files);
        fs::remove_dir_all(&downloads).unwrap();
        println!(
            "  round {}: tar | socat {:.2} s ({cpu_tar:.2} s CPU), peerconn {:.2} s ({cpu_ours:.2} s CPU)",
            round + 1,
            t_tar.as_secs_f64(),
            t_ours.as_secs_f64()
        );
        theirs.push((t_tar, cpu_tar));
        ours.push((t_ours, cpu_ours));
    }
    let median = |v: &mut Vec<(Duration, f64)>| {
        v.sort_by_key(|r| r.0);
        (v[v.len() / 2], v[0].0)
    };
    let ((tar_median, tar_cpu), tar_best) = median(&mut theirs);
    let ((our_median, our_cpu), our_best) = median(&mut ours);
    println!();
    println!(
        "PeerConn folder benchmark ({files} files of {each} bytes over loopback in {}, {rounds} rounds)",
        dir.display()
    );
    println!("                                   median     files/s    CPU-s      best");
    let row = |what: &str, m: Duration, cpu: f64, b: Duration| {
        let rate = files as f64 / m.as_secs_f64();
        println!("  {what:<32} {:>6.2} s  {rate:>8.0}   {cpu:>6.2}   {:>6.2} s", m.as_secs_f64(), b.as_secs_f64());
    };
    row("tar c | socat → socat | tar x", tar_median, tar_cpu, tar_best);
    row("peerconn (encrypted, verified)", our_median, our_cpu, our_best);
    println!(
        "  ratio peerconn / tar | socat (speed) {:>8.2}          best {:.2}",
        tar_median.as_secs_f64() / our_median.as_secs_f64(),
        tar_best.as_secs_f64() / our_best.as_secs_f64()
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// `files` files of `each` bytes of incompressible data, 100 to a folder.
fn make_folder(root: &Path, files: u64, each: u64) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; each as usize];
    for i in 0..files {
        let sub = root.join(format!("d{:03}", i % 100));
        fs::create_dir_all(&sub).unwrap();
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        fs::write(sub.join(format!("photo-{i:05}.jpg")), &buf).unwrap();
    }
}

fn check_copy(root: &Path, files: u64) {
    let mut n = 0;
    for sub in fs::read_dir(root).unwrap() {
        n += fs::read_dir(sub.unwrap().path()).unwrap().count() as u64;
    }
    assert_eq!(n, files, "{} holds {n} files", root.display());
}

/// CPU seconds of this process and of its waited-for children (Linux).
fn cpu() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime.
    (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0
}

fn tar_socat(source: &Path, target: &Path) -> (Duration, f64) {
    fs::create_dir_all(target).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let parent = source.parent().unwrap().display().to_string();
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let target = target.display().to_string();
    let before = cpu();
    let started = Instant::now();
    let receiver = format!(
        "socat -b 1048576 -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr - | tar x -C '{target}' && sync -f '{target}'"
    );
    let mut rx = Command::new("sh").arg("-c").arg(&receiver).stdout(Stdio::null()).spawn().unwrap();
    // The sender retries until the listener is up (a few milliseconds).
    let sender =
        format!("tar c -C '{parent}' '{name}' | socat -b 1048576 -u - TCP:127.0.0.1:{port},retry=1000,interval=0.002");
    let status = Command::new("sh").arg("-c").arg(&sender).status().unwrap();
    assert!(status.success(), "tar | socat failed");
    assert!(rx.wait().unwrap().success(), "socat | tar x failed");
    (started.elapsed(), cpu() - before)
}

fn peerconn(source: &Path, downloads: &Path) -> (Duration, f64) {
    let a = Engine::start().unwrap();
    let b = Engine::with_config(EngineConfig {
        downloads: downloads.to_path_buf(),
        accept_files_from_everyone: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let sa = a.listen("bench-a", "127.0.0.1:0".parse().unwrap(), ListenOptions::default()).unwrap();
    let addr = loop {
        if let Ok(Event::State { state: PeerState::Listening { local }, .. }) = a.events().recv() {
            break local;
        }
    };
    b.connect("bench-b", addr).unwrap();
    for engine in [&a, &b] {
        loop {
            if let Ok(Event::State { state: PeerState::Connected { .. }, .. }) = engine.events().recv() {
                break;
            }
        }
    }
    let before = cpu();
    let started = Instant::now();
    a.send_file(sa, source);
    loop {
        match a.events().recv() {
            Ok(Event::FileSent { .. }) => break,
            Ok(Event::FileFailed { reason, .. }) => panic!("the folder failed: {reason}"),
            Ok(_) => {}
            Err(_) => panic!("the engine stopped"),
        }
    }
    let took = started.elapsed();
    (took, cpu() - before)
}
