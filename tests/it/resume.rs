//! Resuming a cut transfer: the receiver keeps its partial file, the same
//! peer key offering the same file again picks up where the receiver can
//! prove it was, and anything that does not match starts again, saying so.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerconn::net::secure::Identity;
use peerconn::net::{EngineConfig, Event, FailKind, PeerId, TransferId};

use crate::support::{fast_config, noise, Node, Relay, TempDir};

const MIB: u64 = 1024 * 1024;

/// A receiver that takes every file into `down` without asking.
fn receiver(down: &Path, identity: Identity) -> Node {
    Node::with_config(EngineConfig {
        downloads: down.to_path_buf(),
        identity,
        accept_files_from_everyone: true,
        ..fast_config()
    })
}

fn sender(identity: Identity) -> Node {
    Node::with_config(EngineConfig { identity, ..fast_config() })
}

/// `client` connects to `server`'s new listener through a relay of `rate`.
fn connect(server: &mut Node, client: &mut Node, rate: Option<u64>) -> (PeerId, PeerId, Relay) {
    connect_as("sender", server, client, rate)
}

fn connect_as(name: &str, server: &mut Node, client: &mut Node, rate: Option<u64>) -> (PeerId, PeerId, Relay) {
    let (listener, addr) = server.listen("receiver");
    let relay = Relay::new(addr, rate);
    let c = client.engine.connect(name, relay.addr).unwrap();
    client.connected(c);
    server.connected(listener);
    (listener, c, relay)
}

fn offered(node: &mut Node, id: PeerId) -> TransferId {
    node.wait("a file offer", |e| match e {
        Event::FileIncoming { id: i, transfer, .. } if *i == id => Some(*transfer),
        _ => None,
    })
}

/// Waits until `transfer` has moved at least `bytes`; returns how far.
fn progress_past(node: &mut Node, transfer: TransferId, bytes: u64) -> u64 {
    node.wait_within(Duration::from_secs(60), "progress", |e| match e {
        Event::FileProgress { transfer: t, bytes: b, .. } if *t == transfer && *b >= bytes => Some(*b),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{transfer} failed: {reason}"),
        _ => None,
    })
}

fn failed(node: &mut Node, transfer: TransferId) -> FailKind {
    node.wait_within(Duration::from_secs(30), "the transfer failed", |e| match e {
        Event::FileFailed { transfer: t, kind, .. } if *t == transfer => Some(*kind),
        _ => None,
    })
}

/// The `FileResumed` of `transfer`: (offset, discarded).
fn resumed(node: &mut Node, transfer: TransferId) -> (u64, u64) {
    node.wait_within(Duration::from_secs(30), "the transfer resumed", |e| match e {
        Event::FileResumed { transfer: t, offset, discarded, .. } if *t == transfer => Some((*offset, *discarded)),
        Event::FileProgress { transfer: t, .. } if *t == transfer => panic!("{transfer} moved without resuming"),
        _ => None,
    })
}

fn received(node: &mut Node, transfer: TransferId) -> PathBuf {
    node.wait_within(Duration::from_secs(60), "the file received", |e| match e {
        Event::FileReceived { transfer: t, path, .. } if *t == transfer => Some(path.clone()),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{transfer} failed: {reason}"),
        _ => None,
    })
}

fn sent(node: &mut Node, transfer: TransferId) {
    node.wait_within(Duration::from_secs(60), "the file sent", |e| match e {
        Event::FileSent { transfer: t, .. } if *t == transfer => Some(()),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{transfer} failed: {reason}"),
        _ => None,
    })
}

/// The one partial file in `down` once its writer has let go of it.
fn partial_file(down: &TempDir) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = down.names();
        let partial = match names.as_slice() {
            [one] if one.starts_with(".peerconn-resume-") && one.ends_with(".part") => Some(down.path().join(one)),
            _ => None,
        };
        // The writer holds its lock until it has written what it had.
        if let Some(path) = partial.filter(|p| fs::File::open(p).is_ok_and(|f| f.try_lock().is_ok())) {
            return path;
        }
        assert!(Instant::now() < deadline, "{} holds {names:?}, not one partial file", down.path().display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file part sent, then the network cut: the sender and receiver, the
/// file, and the partial file left behind.
struct Cut {
    a: Node,
    b: Node,
    receiver_key: Identity,
    down: TempDir,
    _outbox: TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    partial: PathBuf,
    /// What the receiver reported having before the cut.
    before: u64,
}

fn cut_halfway(size: usize) -> Cut {
    let (down, outbox) = (TempDir::new("resume-down"), TempDir::new("resume-out"));
    let (sender_key, receiver_key) = (Identity::generate(), Identity::generate());
    let bytes = noise(size, 21);
    let path = outbox.path().join("backup.zip");
    fs::write(&path, &bytes).unwrap();
    let mut b = receiver(down.path(), receiver_key.clone());
    let mut a = sender(sender_key.clone());
    // Slow enough to be cut in the middle.
    let (listener, ca, relay) = connect(&mut b, &mut a, Some(40_000_000));
    let t_out = a.engine.send_file(ca, &path);
    let t_in = offered(&mut b, listener);
    let before = progress_past(&mut b, t_in, size as u64 * 2 / 5);
    relay.cut();
    assert_eq!(failed(&mut b, t_in), FailKind::ConnectionEnded);
    assert_eq!(failed(&mut a, t_out), FailKind::ConnectionEnded);
    let partial = partial_file(&down);
    Cut { a, b, receiver_key, down, _outbox: outbox, path, bytes, partial, before }
}

#[test]
fn a_transfer_cut_by_the_network_resumes_where_the_receiver_proves_it_was() {
    let mut cut = cut_halfway(48 * MIB as usize);
    let size = cut.bytes.len() as u64;
    let have = fs::metadata(&cut.partial).unwrap().len();
    assert!(have < size, "the partial file holds {have} of {size} bytes");
    // What reached the writer was written out before the partial file was let go.
    assert!(have + MIB >= cut.before, "{have} bytes kept of {} received", cut.before);

    let (listener, ca, relay) = connect(&mut cut.b, &mut cut.a, None);
    let t_out = cut.a.engine.send_file(ca, &cut.path);
    let t_in = offered(&mut cut.b, listener);
    assert_eq!(resumed(&mut cut.b, t_in), (have, 0), "every byte it held was proven");
    assert_eq!(resumed(&mut cut.a, t_out), (have, 0));
    let stored = received(&mut cut.b, t_in);
    sent(&mut cut.a, t_out);
    assert_eq!(stored, cut.down.path().join("backup.zip"));
    assert_eq!(blake3::hash(&fs::read(&stored).unwrap()), blake3::hash(&cut.bytes));
    assert_eq!(cut.down.names(), ["backup.zip"], "no partial file is left");
    // Only the rest crossed the network again, with its framing and the
    // handshake: 16 + 9 bytes per 64 KiB record, and a few KiB.
    let rest = size - have;
    let carried = relay.carried();
    assert!(carried <= rest + rest / 2000 + 64 * 1024, "{carried} bytes carried for the {rest} that were missing");
}

#[test]
fn a_receiver_that_restarts_resumes_from_the_partial_file_it_left() {
    let mut cut = cut_halfway(32 * MIB as usize);
    let have = fs::metadata(&cut.partial).unwrap().len();
    // The receiving program ends and starts again with the same key and
    // downloads folder (its start-up sweep keeps the partial file).
    drop(cut.b);
    let mut b = receiver(cut.down.path(), cut.receiver_key.clone());
    let (listener, ca, _relay) = connect(&mut b, &mut cut.a, None);
    let t_out = cut.a.engine.send_file(ca, &cut.path);
    let t_in = offered(&mut b, listener);
    assert_eq!(resumed(&mut b, t_in), (have, 0));
    let stored = received(&mut b, t_in);
    sent(&mut cut.a, t_out);
    assert_eq!(blake3::hash(&fs::read(stored).unwrap()), blake3::hash(&cut.bytes));
}

#[test]
fn tampered_partial_data_is_found_and_only_the_blocks_before_it_are_kept() {
    let mut cut = cut_halfway(32 * MIB as usize);
    let have = fs::metadata(&cut.partial).unwrap().len();
    assert!(have > 2 * MIB, "{have}");
    // Someone changes one byte in the second MiB of the partial file.
    let mut data = fs::read(&cut.partial).unwrap();
    data[(MIB + MIB / 2) as usize] ^= 0x40;
    fs::write(&cut.partial, &data).unwrap();

    let (listener, ca, relay) = connect(&mut cut.b, &mut cut.a, None);
    let t_out = cut.a.engine.send_file(ca, &cut.path);
    let t_in = offered(&mut cut.b, listener);
    assert_eq!(resumed(&mut cut.b, t_in), (MIB, have - MIB), "the first block is proven, the rest goes again");
    assert_eq!(resumed(&mut cut.a, t_out), (MIB, have - MIB));
    let stored = received(&mut cut.b, t_in);
    sent(&mut cut.a, t_out);
    assert_eq!(blake3::hash(&fs::read(stored).unwrap()), blake3::hash(&cut.bytes), "the tampered byte was not kept");
    assert!(relay.carried() >= cut.bytes.len() as u64 - MIB);
}

#[test]
fn a_file_changed_since_the_first_attempt_starts_again_from_zero_and_says_so() {
    let mut cut = cut_halfway(16 * MIB as usize);
    let have = fs::metadata(&cut.partial).unwrap().len();
    // The sender's file changes (same name and size) before it is sent again.
    let mut changed = cut.bytes.clone();
    changed[10] ^= 1;
    fs::write(&cut.path, &changed).unwrap();

    let (listener, ca, _relay) = connect(&mut cut.b, &mut cut.a, None);
    let t_out = cut.a.engine.send_file(ca, &cut.path);
    let t_in = offered(&mut cut.b, listener);
    assert_eq!(resumed(&mut cut.b, t_in), (0, have), "nothing of the partial file matched");
    assert_eq!(resumed(&mut cut.a, t_out), (0, have));
    let stored = received(&mut cut.b, t_in);
    sent(&mut cut.a, t_out);
    assert_eq!(fs::read(stored).unwrap(), changed, "the file as it is now arrived");
}

#[test]
fn another_peer_key_offering_the_same_file_never_takes_up_the_partial_file() {
    let mut cut = cut_halfway(16 * MIB as usize);
    let partial_before = fs::read(&cut.partial).unwrap();
    let mut other = sender(Identity::generate());
    let (listener, c, _relay) = connect_as("another sender", &mut cut.b, &mut other, None);
    let t_out = other.engine.send_file(c, &cut.path);
    let t_in = offered(&mut cut.b, listener);
    let events = cut
        .b
        .events_until("the file received", |e| matches!(e, Event::FileReceived { transfer, .. } if *transfer == t_in));
    assert!(!events.iter().any(|e| matches!(e, Event::FileResumed { .. })), "{events:?}");
    sent(&mut other, t_out);
    assert_eq!(fs::read(cut.down.path().join("backup.zip")).unwrap(), cut.bytes);
    // The first sender's partial file is still there for it, untouched.
    assert_eq!(fs::read(&cut.partial).unwrap(), partial_before);
}

#[test]
fn a_transfer_cancelled_on_purpose_keeps_no_partial_file() {
    let (down, outbox) = (TempDir::new("resume-cancel"), TempDir::new("resume-cancel-out"));
    let path = outbox.path().join("big.bin");
    fs::write(&path, noise(32 * MIB as usize, 5)).unwrap();
    let mut b = receiver(down.path(), Identity::generate());
    let mut a = sender(Identity::generate());
    let (listener, ca, _relay) = connect(&mut b, &mut a, Some(40_000_000));
    let t_out = a.engine.send_file(ca, &path);
    let t_in = offered(&mut b, listener);
    progress_past(&mut b, t_in, 4 * MIB);
    b.engine.cancel_file(t_in);
    assert_eq!(failed(&mut a, t_out), FailKind::CancelledByPeer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !down.names().is_empty() {
        assert!(Instant::now() < deadline, "{:?} left after a cancel", down.names());
        std::thread::sleep(Duration::from_millis(20));
    }
}
