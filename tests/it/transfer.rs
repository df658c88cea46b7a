//! File transfer between two engines: integrity at every edge size, many
//! files, both directions at once, decline, cancel from each side, a peer
//! that dies, a file that shrinks while it is sent, a full disk, names that
//! are taken, free space, and leftovers from a crash.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerconn::net::frame::{self, Frame};
use peerconn::net::{EngineConfig, Event, FailKind, Faults, PeerId, PeerState, TransferId};

use crate::support::{fast_config, noise, pair, Node, RawPeer, TempDir};

/// Sender and receiver engines, connected, with their folders.
struct Link {
    a: Node,
    b: Node,
    /// a's peersocket (the server) and b's (the client).
    sa: PeerId,
    sb: PeerId,
    /// Files to send live here.
    outbox: TempDir,
    /// a's and b's downloads.
    down_a: TempDir,
    down_b: TempDir,
}

impl Link {
    fn new() -> Link {
        Link::with_b_config(|c| c)
    }

    fn with_b_config(tweak: impl FnOnce(EngineConfig) -> EngineConfig) -> Link {
        let (outbox, down_a, down_b) = (TempDir::new("outbox"), TempDir::new("down-a"), TempDir::new("down-b"));
        let mut a = Node::receiving_into(down_a.path());
        let mut b = Node::with_config(tweak(EngineConfig { downloads: down_b.path().to_path_buf(), ..fast_config() }));
        let (sa, sb) = pair(&mut a, &mut b);
        Link { a, b, sa, sb, outbox, down_a, down_b }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.outbox.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }
}

fn incoming(node: &mut Node, id: PeerId) -> (TransferId, String, u64) {
    node.wait("a file offer", |e| match e {
        Event::FileIncoming { id: i, transfer, name, size, .. } if *i == id => Some((*transfer, name.clone(), *size)),
        _ => None,
    })
}

fn received(node: &mut Node, transfer: TransferId) -> (PathBuf, u64, String) {
    node.wait_within(Duration::from_secs(60), &format!("{transfer} received"), |e| match e {
        Event::FileReceived { transfer: t, path, size, blake3, .. } if *t == transfer => {
            Some((path.clone(), *size, blake3.clone()))
        }
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{transfer} failed: {reason}"),
        _ => None,
    })
}

fn sent(node: &mut Node, transfer: TransferId) -> u64 {
    node.wait_within(Duration::from_secs(60), &format!("{transfer} sent"), |e| match e {
        Event::FileSent { transfer: t, size, .. } if *t == transfer => Some(*size),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{transfer} failed: {reason}"),
        _ => None,
    })
}

fn failed(node: &mut Node, transfer: TransferId) -> String {
    failure(node, transfer).1
}

/// How `transfer` failed: its kind and its reason.
fn failure(node: &mut Node, transfer: TransferId) -> (FailKind, String) {
    node.wait_within(Duration::from_secs(30), &format!("{transfer} failed"), |e| match e {
        Event::FileFailed { transfer: t, kind, reason, .. } if *t == transfer => Some((*kind, reason.clone())),
        Event::FileSent { transfer: t, .. } | Event::FileReceived { transfer: t, .. } if *t == transfer => {
            panic!("{transfer} succeeded but should have failed")
        }
        _ => None,
    })
}

fn first_progress(node: &mut Node, transfer: TransferId) -> u64 {
    node.wait("progress", |e| match e {
        Event::FileProgress { transfer: t, bytes, .. } if *t == transfer && *bytes > 0 => Some(*bytes),
        _ => None,
    })
}

/// Waits until `dir` holds exactly `names` (temporary files are removed by
/// writer threads, a moment after the failure is reported).
fn settles_to(dir: &TempDir, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = dir.names();
        if now == names {
            return;
        }
        assert!(Instant::now() < deadline, "{} holds {now:?}, expected {names:?}", dir.path().display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_one(link: &mut Link, name: &str, bytes: &[u8]) -> PathBuf {
    let path = link.file(name, bytes);
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, offered, size) = incoming(&mut link.b, link.sb);
    assert_eq!((offered.as_str(), size), (name, bytes.len() as u64));
    link.b.engine.accept_file(t_in);
    let (stored, size, hash) = received(&mut link.b, t_in);
    assert_eq!(sent(&mut link.a, t_out), bytes.len() as u64);
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(hash, blake3::hash(bytes).to_hex().to_string());
    assert_eq!(fs::read(&stored).unwrap(), bytes, "{name} differs on disk");
    stored
}

#[test]
fn files_of_every_edge_size_arrive_intact() {
    let mut link = Link::new();
    for (i, len) in [0usize, 1, 65_535, 65_536, 65_537, 256 * 1024 + 1].into_iter().enumerate() {
        let name = format!("edge-{len}.bin");
        let stored = send_one(&mut link, &name, &noise(len, i as u64));
        assert_eq!(stored, link.down_b.path().join(&name));
    }
}

#[test]
fn a_200_mib_file_arrives_intact_with_progress_at_most_ten_times_a_second() {
    let mut link = Link::new();
    let bytes = noise(200 * 1024 * 1024, 7);
    let path = link.file("big.zip", &bytes);
    let started = Instant::now();
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, _, _) = incoming(&mut link.b, link.sb);
    link.b.engine.accept_file(t_in);
    let (stored, _, hash) = received(&mut link.b, t_in);
    sent(&mut link.a, t_out);
    let took = started.elapsed();
    assert_eq!(hash, blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(blake3::hash(&fs::read(&stored).unwrap()), blake3::hash(&bytes));
    let progress: Vec<u64> = link
        .b
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::FileProgress { transfer, bytes, total, .. } if transfer == t_in => {
                assert_eq!(total, 200 * 1024 * 1024);
                Some(bytes)
            }
            _ => None,
        })
        .collect();
    let limit = (took.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(progress.len() <= limit, "{} progress events in {took:?}", progress.len());
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "progress goes forward");
    assert_eq!(progress.last(), Some(&(200 * 1024 * 1024)), "progress reaches 100 %");
}

#[test]
fn a_thousand_small_files_in_one_send() {
    let mut link = Link::new();
    let mut outgoing = Vec::new();
    for i in 0..1000 {
        let path = link.file(&format!("small-{i:04}.txt"), format!("file number {i}\n").as_bytes());
        outgoing.push(link.a.engine.send_file(link.sa, &path));
    }
    let mut done = 0;
    while done < 1000 {
        let (t_in, name, _) = incoming(&mut link.b, link.sb);
        link.b.engine.accept_file(t_in);
        let (path, _, _) = received(&mut link.b, t_in);
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), name);
        done += 1;
    }
    for t in outgoing {
        sent(&mut link.a, t);
    }
    let names = link.down_b.names();
    assert_eq!(names.len(), 1000);
    assert_eq!(fs::read_to_string(link.down_b.path().join("small-0999.txt")).unwrap(), "file number 999\n");
}

#[test]
fn transfers_in_both_directions_at_once_with_chat_between() {
    let mut link = Link::new();
    let to_b = noise(24 * 1024 * 1024, 1);
    let to_a = noise(24 * 1024 * 1024, 2);
    let path_ab = link.file("a-to-b.bin", &to_b);
    let path_ba = link.file("b-to-a.bin", &to_a);
    let t_ab = link.a.engine.send_file(link.sa, &path_ab);
    let t_ba = link.b.engine.send_file(link.sb, &path_ba);
    let (in_b, _, _) = incoming(&mut link.b, link.sb);
    let (in_a, _, _) = incoming(&mut link.a, link.sa);
    link.b.engine.accept_file(in_b);
    link.a.engine.accept_file(in_a);
    first_progress(&mut link.b, in_b);
    for i in 0..5 {
        link.a.engine.send_text(link.sa, &format!("a says {i}")).unwrap();
        link.b.engine.send_text(link.sb, &format!("b says {i}")).unwrap();
    }
    for i in 0..5 {
        assert_eq!(link.b.message(link.sb), format!("a says {i}"));
        assert_eq!(link.a.message(link.sa), format!("b says {i}"));
    }
    let (pb, _, _) = received(&mut link.b, in_b);
    let (pa, _, _) = received(&mut link.a, in_a);
    sent(&mut link.a, t_ab);
    sent(&mut link.b, t_ba);
    assert_eq!(blake3::hash(&fs::read(pb).unwrap()), blake3::hash(&to_b));
    assert_eq!(pa.parent(), Some(link.down_a.path()));
    assert_eq!(blake3::hash(&fs::read(pa).unwrap()), blake3::hash(&to_a));
}

/// Waits for the offer of `id` and says whether the engine accepted it by itself.
fn offer_accepted(node: &mut Node, id: PeerId) -> (TransferId, bool) {
    node.wait("a file offer", |e| match e {
        Event::FileIncoming { id: i, transfer, accepted, .. } if *i == id => Some((*transfer, *accepted)),
        _ => None,
    })
}

#[test]
fn files_from_a_key_accepted_without_asking_arrive_with_no_answer_and_others_are_asked() {
    let mut link = Link::new();
    let bytes = b"from a trusted key";
    // b accepts a's files without asking: the engine holds that policy.
    link.b.engine.accept_files_from(link.a.engine.fingerprint(), true);
    let path = link.file("trusted.txt", bytes);
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, accepted) = offer_accepted(&mut link.b, link.sb);
    assert!(accepted, "accepted by the engine, with no accept_file call");
    let (stored, _, _) = received(&mut link.b, t_in);
    assert_eq!(fs::read(&stored).unwrap(), bytes);
    assert_eq!(sent(&mut link.a, t_out), bytes.len() as u64);
    // Taken back: the next offer waits for the person again.
    link.b.engine.accept_files_from(link.a.engine.fingerprint(), false);
    let path = link.file("asked.txt", b"ask me");
    link.a.engine.send_file(link.sa, &path);
    let (t_in, accepted) = offer_accepted(&mut link.b, link.sb);
    assert!(!accepted);
    link.b.engine.decline_file(t_in);
    assert_eq!(failure(&mut link.b, t_in).0, FailKind::DeclinedHere);
}

#[test]
fn an_engine_that_accepts_from_everyone_still_refuses_what_cannot_fit() {
    let mut link = Link::with_b_config(|c| EngineConfig { accept_files_from_everyone: true, ..c });
    let path = link.file("anyone.txt", b"welcome");
    link.a.engine.send_file(link.sa, &path);
    let (t_in, accepted) = offer_accepted(&mut link.b, link.sb);
    assert!(accepted);
    received(&mut link.b, t_in);
    let down = TempDir::new("everyone");
    let mut node = Node::with_config(EngineConfig {
        downloads: down.path().into(),
        accept_files_from_everyone: true,
        ..fast_config()
    });
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "liar");
    node.connected(id);
    raw.send(&Frame::Offer { transfer: 1, size: u64::MAX / 4, name: "huge.bin".into() });
    let (refused, accepted) = node.wait("the offer", |e| match e {
        Event::FileIncoming { id: i, refused, accepted, .. } if *i == id => Some((refused.clone(), *accepted)),
        _ => None,
    });
    assert!(refused.is_some() && !accepted, "{refused:?} {accepted}");
    assert!(matches!(raw.recv(), Some(Frame::Decline { transfer: 1, .. })));
}

#[test]
fn declined_file_is_reported_to_the_sender_and_nothing_is_written() {
    let mut link = Link::new();
    let path = link.file("unwanted.exe", b"no thanks");
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, _, _) = incoming(&mut link.b, link.sb);
    link.b.engine.decline_file(t_in);
    assert_eq!(failure(&mut link.b, t_in), (FailKind::DeclinedHere, "you declined the file".into()));
    assert_eq!(failure(&mut link.a, t_out), (FailKind::DeclinedByPeer, "the peer declined the file (declined)".into()));
    settles_to(&link.down_b, &[]);
    link.a.engine.send_text(link.sa, "ok, fine").unwrap();
    assert_eq!(link.b.message(link.sb), "ok, fine");
}

fn start_big(link: &mut Link) -> (TransferId, TransferId) {
    let path = link.file("big.iso", &noise(300 * 1024 * 1024, 3));
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, _, _) = incoming(&mut link.b, link.sb);
    link.b.engine.accept_file(t_in);
    first_progress(&mut link.b, t_in);
    (t_out, t_in)
}

#[test]
fn sender_cancels_mid_transfer_and_the_partial_file_is_removed() {
    let mut link = Link::new();
    let (t_out, t_in) = start_big(&mut link);
    link.a.engine.cancel_file(t_out);
    assert_eq!(failure(&mut link.a, t_out), (FailKind::CancelledHere, "you cancelled the transfer".into()));
    let (kind, reason) = failure(&mut link.b, t_in);
    assert_eq!(
        (kind, reason.as_str()),
        (FailKind::CancelledByPeer, "the peer stopped the transfer: the sender cancelled")
    );
    settles_to(&link.down_b, &[]);
    link.b.engine.send_text(link.sb, "still talking").unwrap();
    assert_eq!(link.a.message(link.sa), "still talking");
    // And the next file goes through.
    send_one(&mut link, "after.txt", b"after the cancel");
}

#[test]
fn receiver_cancels_mid_transfer_and_the_partial_file_is_removed() {
    let mut link = Link::new();
    let (t_out, t_in) = start_big(&mut link);
    link.b.engine.cancel_file(t_in);
    assert_eq!(failure(&mut link.b, t_in), (FailKind::CancelledHere, "you cancelled the transfer".into()));
    let (kind, reason) = failure(&mut link.a, t_out);
    assert_eq!(
        (kind, reason.as_str()),
        (FailKind::CancelledByPeer, "the peer stopped the transfer: the receiver cancelled")
    );
    settles_to(&link.down_b, &[]);
    link.a.engine.send_text(link.sa, "understood").unwrap();
    assert_eq!(link.b.message(link.sb), "understood");
    send_one(&mut link, "after.txt", b"after the cancel");
}

#[test]
fn peer_gone_mid_transfer_fails_the_transfer_and_keeps_only_a_partial_file_to_resume() {
    let mut link = Link::new();
    let (_t_out, t_in) = start_big(&mut link);
    let Link { a, mut b, sb, down_b, .. } = link;
    drop(a);
    let (kind, reason) = failure(&mut b, t_in);
    assert_eq!(kind, FailKind::ConnectionEnded);
    assert!(reason.starts_with("the connection ended"), "{reason}");
    b.lost(sb);
    holds_only_a_partial_file(&down_b);
}

/// Nothing under the file's name: only our hidden partial file, which the
/// same sender can resume (tests/it/resume.rs).
fn holds_only_a_partial_file(dir: &TempDir) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = dir.names();
        if let [one] = names.as_slice() {
            assert!(one.starts_with(".peerconn-resume-") && one.ends_with(".part"), "{one}");
            return;
        }
        assert!(names.is_empty() && Instant::now() < deadline, "{names:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_peer_that_says_bye_mid_transfer_fails_the_transfer_before_the_peersocket_is_lost() {
    let down = TempDir::new("bye-mid");
    let mut node = Node::receiving_into(down.path());
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "leaver");
    node.connected(id);
    raw.send(&Frame::Offer { transfer: 1, size: 1_000_000, name: "half.bin".into() });
    let (t_in, _, _) = incoming(&mut node, id);
    node.engine.accept_file(t_in);
    assert!(matches!(raw.recv(), Some(Frame::Accept { transfer: 1 })));
    raw.send(&Frame::Data { transfer: 1, bytes: vec![7; 1000] });
    raw.send(&Frame::Bye { code: frame::ByeCode::Normal, reason: String::new() });
    let events = node.events_until("lost", |e| matches!(e, Event::State { state: PeerState::Lost { .. }, .. }));
    let failed = events.iter().position(|e| matches!(e, Event::FileFailed { transfer, .. } if *transfer == t_in));
    let failed = failed.unwrap_or_else(|| panic!("the transfer failed before the loss: {events:?}"));
    match &events[failed] {
        Event::FileFailed { kind, reason, .. } => {
            assert_eq!(*kind, FailKind::ConnectionEnded);
            assert_eq!(reason, "the connection ended: the peer closed the connection");
        }
        _ => unreachable!(),
    }
    holds_only_a_partial_file(&down);
}

#[test]
fn a_file_cancelled_while_its_writer_is_still_behind_gets_a_final_word() {
    let down = TempDir::new("cancel-verifying");
    let faults = Faults { write_delay: Some(Duration::from_millis(150)), ..Faults::default() };
    let mut node = Node::with_config(EngineConfig { downloads: down.path().into(), faults, ..fast_config() });
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "sender");
    node.connected(id);
    let bytes = noise(1024 * 1024, 9);
    raw.send(&Frame::Offer { transfer: 1, size: bytes.len() as u64, name: "slow.bin".into() });
    let (t_in, _, _) = incoming(&mut node, id);
    node.engine.accept_file(t_in);
    assert!(matches!(raw.recv(), Some(Frame::Accept { transfer: 1 })));
    // Everything, the end and the cancel at once: the writer is still
    // working through the data when the cancel comes.
    for chunk in bytes.chunks(frame::MAX_DATA) {
        raw.send(&Frame::Data { transfer: 1, bytes: chunk.to_vec() });
    }
    raw.send(&Frame::Done { transfer: 1, hash: *blake3::hash(&bytes).as_bytes() });
    raw.send(&Frame::Cancel { transfer: 1, mine: true, reason: "changed my mind".into() });
    let (kind, reason) = failure(&mut node, t_in);
    assert_eq!(kind, FailKind::CancelledByPeer);
    assert_eq!(reason, "the peer stopped the transfer: changed my mind");
    settles_to(&down, &[]);
    // The connection goes on and the next file is offered normally.
    raw.send(&Frame::Offer { transfer: 2, size: 10, name: "next.txt".into() });
    let (_, name, _) = incoming(&mut node, id);
    assert_eq!(name, "next.txt");
}

#[test]
fn a_file_that_shrinks_while_sent_fails_on_both_sides() {
    let mut link = Link::new();
    let path = link.file("growing.log", &noise(300 * 1024 * 1024, 4));
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, _, _) = incoming(&mut link.b, link.sb);
    link.b.engine.accept_file(t_in);
    first_progress(&mut link.b, t_in);
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1024 * 1024).unwrap();
    let (kind, reason) = failure(&mut link.a, t_out);
    assert_eq!(kind, FailKind::Source);
    assert!(reason.contains("shrank") || reason.contains("changed"), "{reason}");
    let (kind, reason) = failure(&mut link.b, t_in);
    assert_eq!(kind, FailKind::CancelledByPeer);
    // What the sender's reader said (it may name the sender's paths) stays there.
    assert_eq!(reason, "the peer stopped the transfer: the sender could not read the file");
    settles_to(&link.down_b, &[]);
}

#[test]
fn a_full_disk_fails_the_transfer_removes_the_partial_file_and_keeps_the_connection() {
    let mut link = Link::with_b_config(|c| EngineConfig {
        faults: Faults { fail_writes_after: Some(3 * 1024 * 1024), ..Faults::default() },
        ..c
    });
    let path = link.file("too-big.bin", &noise(16 * 1024 * 1024, 5));
    let t_out = link.a.engine.send_file(link.sa, &path);
    let (t_in, _, _) = incoming(&mut link.b, link.sb);
    link.b.engine.accept_file(t_in);
    let (kind, reason) = failure(&mut link.b, t_in);
    assert_eq!(kind, FailKind::NoSpace);
    assert!(reason.contains("no space left"), "{reason}");
    // The sender hears the kind of failure, never the receiver's error text
    // with its paths.
    let (kind, reason) = failure(&mut link.a, t_out);
    assert_eq!(kind, FailKind::CancelledByPeer);
    assert_eq!(reason, "the peer stopped the transfer: not enough free space in the downloads folder");
    settles_to(&link.down_b, &[]);
    link.a.engine.send_text(link.sa, "disk full?").unwrap();
    assert_eq!(link.b.message(link.sb), "disk full?");
    send_one(&mut link, "fits.txt", b"a small one fits");
}

#[test]
fn an_existing_file_is_never_replaced() {
    let mut link = Link::new();
    fs::write(link.down_b.path().join("notes.txt"), b"mine, keep me").unwrap();
    let first = send_one(&mut link, "notes.txt", b"first copy");
    let second = send_one(&mut link, "notes.txt", b"second copy");
    assert_eq!(first.file_name().unwrap(), "notes (1).txt");
    assert_eq!(second.file_name().unwrap(), "notes (2).txt");
    assert_eq!(fs::read(link.down_b.path().join("notes.txt")).unwrap(), b"mine, keep me");
}

#[cfg(unix)]
#[test]
fn a_symlink_under_the_final_name_is_not_followed() {
    let mut link = Link::new();
    let outside = TempDir::new("outside");
    let target = outside.path().join("victim.txt");
    fs::write(&target, b"untouched").unwrap();
    std::os::unix::fs::symlink(&target, link.down_b.path().join("report.txt")).unwrap();
    let stored = send_one(&mut link, "report.txt", b"delivered");
    assert_eq!(stored.file_name().unwrap(), "report (1).txt");
    assert_eq!(fs::read(&target).unwrap(), b"untouched");
    assert_eq!(outside.names(), vec!["victim.txt"]);
}

#[test]
fn an_offer_larger_than_the_free_space_is_declined_before_any_data_moves() {
    let down = TempDir::new("space");
    let mut node = Node::receiving_into(down.path());
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "liar");
    node.connected(id);
    raw.send(&Frame::Offer { transfer: 9, size: u64::MAX / 4, name: "huge.bin".into() });
    // The person is not asked: the offer arrives already refused, and fails.
    let (t_in, refused) = node.wait("the refused offer", |e| match e {
        Event::FileIncoming { id: i, transfer, size, refused, .. } if *i == id => {
            assert_eq!(*size, u64::MAX / 4);
            Some((*transfer, refused.clone()))
        }
        _ => None,
    });
    let refused = refused.expect("refused at once");
    assert!(refused.contains("not enough free space in the downloads folder"), "{refused}");
    let reason = failed(&mut node, t_in);
    assert_eq!(reason, refused);
    match raw.recv() {
        // What the peer hears names no local path.
        Some(Frame::Decline { transfer: 9, reason }) => {
            assert!(reason.contains("not enough free space"), "{reason}");
            assert!(!reason.contains(&*down.path().to_string_lossy()), "{reason}");
        }
        other => panic!("expected a decline, got {other:?}"),
    }
    settles_to(&down, &[]);
}

/// A real 64 MiB file system (tmpfs), mounted for one test and gone after
/// it; `None` where mounting is not allowed (not root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(tag: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("peerconn-small-{tag}-{}", std::process::id()));
        fs::create_dir_all(&dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = fs::remove_dir(&dir);
            eprintln!("skipped: cannot mount a 64 MiB tmpfs here (the test needs root, as on CI)");
            return None;
        }
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

const MIB: u64 = 1024 * 1024;

#[test]
fn an_offer_that_fits_only_without_the_files_still_arriving_is_refused() {
    let Some(disk) = SmallDisk::mount("sum") else { return };
    let mut node = Node::receiving_into(&disk.0);
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "sender");
    node.connected(id);
    raw.send(&Frame::Offer { transfer: 1, size: 40 * MIB, name: "first.zip".into() });
    let (t1, _, _) = incoming(&mut node, id);
    node.engine.accept_file(t1);
    assert!(matches!(raw.recv(), Some(Frame::Accept { transfer: 1 })));
    // 40 MiB are promised to the first file, none of it written yet: the
    // second 40 MiB cannot fit beside it on 64 MiB.
    raw.send(&Frame::Offer { transfer: 2, size: 40 * MIB, name: "second.zip".into() });
    let refused = node.wait("the second offer", |e| match e {
        Event::FileIncoming { name, refused, .. } if name == "second.zip" => Some(refused.clone()),
        _ => None,
    });
    let refused = refused.expect("refused before anyone is asked");
    assert!(refused.contains("files still arriving"), "{refused}");
    assert!(matches!(raw.recv(), Some(Frame::Decline { transfer: 2, .. })));
    // A small one still fits beside it.
    raw.send(&Frame::Offer { transfer: 3, size: MIB, name: "small.txt".into() });
    let small = node.wait("the small offer", |e| match e {
        Event::FileIncoming { name, refused, .. } if name == "small.txt" => Some(refused.is_none()),
        _ => None,
    });
    assert!(small, "a file that fits beside the promised one is offered to the person");
}

#[test]
fn accepting_two_offers_that_do_not_fit_together_fails_the_second_before_it_writes() {
    let Some(disk) = SmallDisk::mount("both") else { return };
    let mut node = Node::receiving_into(&disk.0);
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "sender");
    node.connected(id);
    // Both are offered (and each fits alone) before either is accepted.
    raw.send(&Frame::Offer { transfer: 1, size: 40 * MIB, name: "first.zip".into() });
    raw.send(&Frame::Offer { transfer: 2, size: 40 * MIB, name: "second.zip".into() });
    let (t1, _, _) = incoming(&mut node, id);
    let (t2, _, _) = incoming(&mut node, id);
    node.engine.accept_file(t1);
    assert!(matches!(raw.recv(), Some(Frame::Accept { transfer: 1 })));
    node.engine.accept_file(t2);
    let (kind, reason) = failure(&mut node, t2);
    assert_eq!(kind, FailKind::NoSpace);
    assert!(reason.contains("files still arriving"), "{reason}");
    match raw.recv() {
        Some(Frame::Decline { transfer: 2, reason }) => {
            assert_eq!(reason, "not enough free space in the downloads folder");
        }
        other => panic!("expected the second to be declined, got {other:?}"),
    }
}

#[test]
fn an_offer_is_shown_even_when_the_free_space_cannot_be_measured_in_time() {
    let down = TempDir::new("slowcheck");
    let faults = Faults { space_check_delay: Some(Duration::from_secs(30)), ..Faults::default() };
    // The raw peer answers no pings: timers long enough for the wait.
    let config = EngineConfig {
        downloads: down.path().to_path_buf(),
        faults,
        heartbeat_timeout: Duration::from_secs(20),
        ..fast_config()
    };
    let mut node = Node::with_config(config);
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "patient");
    node.connected(id);
    let asked = Instant::now();
    raw.send(&Frame::Offer { transfer: 1, size: 5, name: "hello.txt".into() });
    let (t_in, refused) = node.wait_within(Duration::from_secs(10), "the offer", |e| match e {
        Event::FileIncoming { id: i, transfer, refused, .. } if *i == id => Some((*transfer, refused.clone())),
        _ => None,
    });
    let waited = asked.elapsed();
    assert!(refused.is_none());
    assert!(waited < Duration::from_secs(5), "the offer was hidden for {waited:?}");
    // It can be accepted and received as usual.
    node.engine.accept_file(t_in);
    match raw.recv() {
        Some(Frame::Accept { transfer: 1 }) => {}
        other => panic!("expected the accept, got {other:?}"),
    }
    raw.send(&Frame::Data { transfer: 1, bytes: b"hello".to_vec() });
    raw.send(&Frame::Done { transfer: 1, hash: *blake3::hash(b"hello").as_bytes() });
    let (path, size, _) = received(&mut node, t_in);
    assert_eq!((size, fs::read(&path).unwrap()), (5, b"hello".to_vec()));
}

#[test]
fn an_offer_withdrawn_before_it_was_shown_leaves_no_trace() {
    let down = TempDir::new("withdrawn");
    let mut node = Node::receiving_into(down.path());
    let (id, addr) = node.listen("receiver");
    let (mut raw, _) = RawPeer::hello(addr, "fickle");
    node.connected(id);
    // Offer and cancel in one record: the cancel is read before the offer
    // has been measured against the free space, so nobody was asked.
    let mut bytes = Frame::Offer { transfer: 1, size: 10, name: "gone.txt".into() }.to_bytes();
    bytes.extend(Frame::Cancel { transfer: 1, mine: true, reason: "changed my mind".into() }.to_bytes());
    raw.send_bytes(&bytes);
    raw.send(&Frame::Offer { transfer: 2, size: 3, name: "kept.txt".into() });
    let (t_in, name, _) = incoming(&mut node, id);
    assert_eq!(name, "kept.txt");
    node.assert_quiet(id, Duration::from_millis(300));
    let about_gone: Vec<Event> = node
        .take_events()
        .into_iter()
        .filter(
            |e| matches!(e, Event::FileIncoming { name, .. } | Event::FileFailed { name, .. } if name == "gone.txt"),
        )
        .collect();
    assert!(about_gone.is_empty(), "{about_gone:?}");
    // The connection and the other offer are unharmed.
    node.engine.accept_file(t_in);
    match raw.recv() {
        Some(Frame::Accept { transfer: 2 }) => {}
        other => panic!("expected the accept, got {other:?}"),
    }
}

#[test]
fn leftover_temporary_files_are_removed_at_start_and_others_are_kept() {
    let down = TempDir::new("leftovers");
    let leftover = down.path().join(".peerconn-0123456789abcdef.part");
    fs::write(&leftover, b"half a file from a crash").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options().write(true).open(&leftover).unwrap().set_modified(an_hour_ago).unwrap();
    // A temporary file written just now may be another PeerConn's, mid-transfer.
    fs::write(down.path().join(".peerconn-fedcba9876543210.part"), b"in use").unwrap();
    fs::write(down.path().join("keep.txt"), b"not ours to touch").unwrap();
    fs::write(down.path().join(".peerconn-lookalike"), b"no .part suffix").unwrap();
    let _node = Node::receiving_into(down.path());
    settles_to(&down, &[".peerconn-fedcba9876543210.part", ".peerconn-lookalike", "keep.txt"]);
}

#[test]
fn sending_a_missing_file_fails_with_a_clear_reason() {
    let mut link = Link::new();
    let missing = link.a.engine.send_file(link.sa, link.outbox.path().join("nope.txt"));
    let (kind, reason) = failure(&mut link.a, missing);
    assert!(kind == FailKind::Source && reason.contains("cannot open"), "{kind:?} {reason}");
    // The connection is unaffected.
    send_one(&mut link, "fine.txt", b"fine");
}

#[test]
fn sending_without_a_peer_fails_at_once() {
    let mut node = Node::new();
    let (id, _) = node.listen("alone");
    let t = node.engine.send_file(id, Path::new("whatever.txt"));
    assert_eq!(failure(&mut node, t), (FailKind::NotConnected, "not sent: no peer is connected".into()));
}

#[test]
fn a_small_file_sent_after_a_big_one_does_not_wait_for_it() {
    // A receiver that lets the big file have all the window it wants: it
    // is never held back, so only shared turns let the small one through.
    let outbox = TempDir::new("turns-out");
    let mut node = Node::new();
    let (id, addr) = node.listen("sender");
    let (mut raw, _) = RawPeer::hello(addr, "receiver");
    node.connected(id);
    let big = outbox.path().join("big.iso");
    fs::write(&big, noise(24 * 1024 * 1024, 12)).unwrap();
    let small = outbox.path().join("small.txt");
    fs::write(&small, noise(256 * 1024, 13)).unwrap();
    node.engine.send_file(id, &big);
    let Some(Frame::Offer { transfer: t_big, .. }) = raw.recv() else { panic!("expected the big offer") };
    node.engine.send_file(id, &small);
    let Some(Frame::Offer { transfer: t_small, .. }) = raw.recv() else { panic!("expected the small offer") };
    raw.send(&Frame::Accept { transfer: t_big });
    raw.send(&Frame::Window { transfer: t_big, granted: u64::MAX });
    raw.send(&Frame::Accept { transfer: t_small });
    let mut big_bytes = 0u64;
    loop {
        match raw.recv() {
            Some(Frame::Data { transfer, bytes }) if transfer == t_big => big_bytes += bytes.len() as u64,
            Some(Frame::Data { .. }) | Some(Frame::Ping(_)) | Some(Frame::Pong(_)) => {}
            Some(Frame::Done { transfer, .. }) if transfer == t_small => break,
            Some(Frame::Done { transfer, .. }) if transfer == t_big => {
                panic!("the big file ended before the small one did")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(big_bytes < 8 * 1024 * 1024, "{big_bytes} bytes of the big file went before the small one ended");
}
