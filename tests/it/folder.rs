//! Folders sent whole: the tree arrives identical under one offer, never
//! merged into an existing folder, and a hostile sender's entries are
//! refused with nothing written outside the downloads folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use peerconn::net::frame::{Frame, TreeEntry};
use peerconn::net::{EngineConfig, Event, FailKind, FolderInfo, PeerId, TransferId};

use crate::support::{fast_config, noise, pair, Node, RawPeer, TempDir};

/// Every entry under `root` by its path: a file's bytes, or `None` for a
/// folder. Links are listed as such.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(format!("{rel} (link)"), None);
            } else if kind.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A folder with empty folders, deep nesting, unicode names, an empty file
/// and a few MiB of data.
fn photo_library(outbox: &Path) -> std::path::PathBuf {
    let root = outbox.join("photos");
    fs::create_dir_all(root.join("2024/summer")).unwrap();
    fs::write(root.join("2024/summer/beach.jpg"), noise(300_000, 1)).unwrap();
    fs::write(root.join("2024/summer/big.raw"), noise(5 * 1024 * 1024 + 3, 2)).unwrap();
    fs::create_dir_all(root.join("empty/also empty")).unwrap();
    let mut deep = root.join("deep");
    for i in 0..20 {
        deep = deep.join(format!("level {i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf.txt"), b"at the bottom").unwrap();
    fs::create_dir_all(root.join("ünïcödé ✓")).unwrap();
    fs::write(root.join("ünïcödé ✓/файл.txt"), "привет".as_bytes()).unwrap();
    fs::write(root.join("zero.bin"), b"").unwrap();
    root
}

fn offered(node: &mut Node, id: PeerId) -> (TransferId, String, u64, Option<FolderInfo>) {
    node.wait("a folder offer", |e| match e {
        Event::FileIncoming { id: i, transfer, name, size, folder, .. } if *i == id => {
            Some((*transfer, name.clone(), *size, *folder))
        }
        _ => None,
    })
}

fn received(node: &mut Node, transfer: TransferId) -> std::path::PathBuf {
    node.wait_within(Duration::from_secs(30), "the folder received", |e| match e {
        Event::FileReceived { transfer: t, path, .. } if *t == transfer => Some(path.clone()),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{reason}"),
        _ => None,
    })
}

fn sent(node: &mut Node, transfer: TransferId) {
    node.wait_within(Duration::from_secs(30), "the folder sent", |e| match e {
        Event::FileSent { transfer: t, .. } if *t == transfer => Some(()),
        Event::FileFailed { transfer: t, reason, .. } if *t == transfer => panic!("{reason}"),
        _ => None,
    })
}

#[test]
fn a_tree_with_empty_folders_deep_nesting_and_unicode_names_arrives_identical() {
    let (outbox, down) = (TempDir::new("folder-out"), TempDir::new("folder-down"));
    let root = photo_library(outbox.path());
    #[cfg(unix)]
    {
        // A link, in the tree and pointing out of it: skipped, never followed.
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("zero.bin", root.join("zero-link")).unwrap();
    }
    let mut a = Node::new();
    let mut b = Node::with_config(EngineConfig { downloads: down.path().into(), ..fast_config() });
    let (sa, sb) = pair(&mut a, &mut b);
    let t_out = a.engine.send_file(sa, &root);
    let (t_in, name, size, folder) = offered(&mut b, sb);
    assert_eq!(name, "photos");
    assert_eq!(size, 300_000 + 5 * 1024 * 1024 + 3 + 13 + 12);
    // Folders: 2024, summer, empty, also empty, 20 deep levels, the
    // unicode one, and "deep" itself.
    assert_eq!(folder, Some(FolderInfo { files: 5, folders: 26 }));
    b.engine.accept_file(t_in);
    let stored = received(&mut b, t_in);
    sent(&mut a, t_out);
    assert_eq!(stored, down.path().join("photos"));
    let mut want = tree(&root);
    want.retain(|k, _| !k.ends_with("(link)"));
    assert_eq!(tree(&stored), want);
    assert_eq!(down.names(), ["photos"], "nothing else is left in the downloads folder");
    #[cfg(unix)]
    {
        let said = a.wait("the links left out", |e| match e {
            Event::Error { reason, .. } if reason.contains("left out") => Some(reason.clone()),
            _ => None,
        });
        assert!(said.contains("etc-link") && said.contains("zero-link"), "{said}");
    }

    // The same folder again never merges into the first.
    fs::write(stored.join("mine.txt"), b"added here").unwrap();
    let t_out = a.engine.send_file(sa, &root);
    let (t_in, _, _, _) = offered(&mut b, sb);
    b.engine.accept_file(t_in);
    let again = received(&mut b, t_in);
    sent(&mut a, t_out);
    assert_eq!(again, down.path().join("photos (1)"));
    assert_eq!(tree(&again), want);
    assert_eq!(fs::read(stored.join("mine.txt")).unwrap(), b"added here");
}

#[test]
fn a_folder_reports_which_file_of_how_many_it_is_at() {
    let (outbox, down) = (TempDir::new("folder-count-out"), TempDir::new("folder-count-down"));
    let root = outbox.path().join("many");
    fs::create_dir_all(&root).unwrap();
    for i in 0..300 {
        fs::write(root.join(format!("f{i:03}.bin")), noise(40_000, i)).unwrap();
    }
    let mut a = Node::new();
    let mut b = Node::with_config(EngineConfig { downloads: down.path().into(), ..fast_config() });
    let (sa, sb) = pair(&mut a, &mut b);
    let t_out = a.engine.send_file(sa, &root);
    let (t_in, _, _, folder) = offered(&mut b, sb);
    assert_eq!(folder, Some(FolderInfo { files: 300, folders: 0 }));
    b.engine.accept_file(t_in);
    let events = b.events_until("received", |e| matches!(e, Event::FileReceived { transfer, .. } if *transfer == t_in));
    let counts: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::FileProgress { transfer, files, .. } if *transfer == t_in => *files,
            _ => None,
        })
        .collect();
    assert!(!counts.is_empty(), "progress says how many files are done");
    assert!(counts.iter().all(|&(done, of)| of == 300 && done <= 300), "{counts:?}");
    assert!(counts.windows(2).all(|w| w[0].0 <= w[1].0), "the count only goes up: {counts:?}");
    sent(&mut a, t_out);
    assert_eq!(fs::read_dir(down.path().join("many")).unwrap().count(), 300);
}

// ----- hostile senders ----------------------------------------------------------

/// A receiving engine whose downloads folder sits in a watched parent, and
/// a raw peer connected to it.
struct Victim {
    raw: RawPeer,
    node: Node,
    parent: TempDir,
    id: PeerId,
}

impl Victim {
    fn new() -> Victim {
        let parent = TempDir::new("folder-victim");
        fs::create_dir_all(parent.path().join("downloads")).unwrap();
        fs::write(parent.path().join("precious.txt"), b"do not touch").unwrap();
        let config = EngineConfig { downloads: parent.path().join("downloads"), ..fast_config() };
        let mut node = Node::with_config(config);
        let (id, addr) = node.listen("victim");
        let (raw, _) = RawPeer::hello(addr, "mallory");
        node.connected(id);
        Victim { raw, node, parent, id }
    }

    fn outside(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    fn offer(&mut self, transfer: u32, name: &str, entries: Vec<TreeEntry>) {
        let size = entries.iter().filter_map(|e| e.size).sum();
        let count = entries.len() as u32;
        self.raw.send(&Frame::OfferFolder { transfer, size, entries: count, name: name.into() });
        for frame in peerconn::net::frame::entries_frames(transfer, &entries) {
            self.raw.send(&frame);
        }
    }
}

fn file(path: &[&str], size: u64) -> TreeEntry {
    TreeEntry { path: path.iter().map(|s| s.to_string()).collect(), size: Some(size) }
}

fn folder(path: &[&str]) -> TreeEntry {
    TreeEntry { path: path.iter().map(|s| s.to_string()).collect(), size: None }
}

#[test]
fn hostile_folder_entries_are_declined_before_anyone_is_asked_and_nothing_is_written() {
    let mut v = Victim::new();
    let cases: Vec<(&str, Vec<TreeEntry>, &str)> = vec![
        ("dot dot", vec![file(&[".."], 1)], "no name left"),
        ("dot dot inside", vec![folder(&["a"]), file(&["a", ".."], 1)], "no name left"),
        ("absolute", vec![file(&["/etc/passwd"], 1)], "path separator"),
        ("windows drive", vec![file(&["C:\\Windows"], 1)], "path separator"),
        ("drive only", vec![file(&["C:evil"], 1)], "drive letter"),
        ("unc", vec![file(&["\\\\server\\share"], 1)], "path separator"),
        ("duplicate", vec![file(&["x"], 1), file(&["x"], 1)], "listed twice"),
        ("file then folder", vec![file(&["x"], 1), folder(&["x"])], "listed twice"),
        ("folder then file", vec![folder(&["x"]), file(&["x"], 1)], "listed twice"),
        ("child before parent", vec![file(&["a", "b"], 1)], "before the folder that holds it"),
        ("bidi", vec![file(&["evil\u{202e}txt.exe"], 1)], "text-direction"),
    ];
    for (i, (what, entries, says)) in cases.into_iter().enumerate() {
        let wire = i as u32 + 1;
        v.offer(wire, "innocent", entries);
        match v.raw.recv() {
            Some(Frame::Decline { transfer, reason }) => {
                assert_eq!(transfer, wire, "{what}");
                assert!(reason.contains(says), "{what}: {reason}");
            }
            other => panic!("{what}: expected a decline, got {other:?}"),
        }
        let (kind, reason) = v.node.wait(what, |e| match e {
            Event::FileFailed { kind, reason, .. } => Some((*kind, reason.clone())),
            Event::FileIncoming { .. } => panic!("{what} was shown to the person"),
            _ => None,
        });
        assert_eq!(kind, FailKind::Refused, "{what}: {reason}");
    }
    // A folder's own name is checked too.
    v.offer(50, "..", vec![file(&["a"], 1)]);
    assert!(matches!(v.raw.recv(), Some(Frame::Decline { transfer: 50, .. })));
    assert_eq!(v.outside(), ["downloads", "precious.txt"]);
    assert!(fs::read_dir(v.parent.path().join("downloads")).unwrap().next().is_none(), "nothing in downloads");
    // The peer is still there.
    v.raw.send(&Frame::Chat("still here".into()));
    assert_eq!(v.node.message(v.id), "still here");
}

#[test]
fn more_entries_than_offered_or_a_second_listing_at_once_loses_the_peer() {
    let mut v = Victim::new();
    v.raw.send(&Frame::OfferFolder { transfer: 1, size: 0, entries: 1, name: "f".into() });
    v.raw.send(&Frame::Entries { transfer: 1, entries: vec![folder(&["a"]), folder(&["b"])] });
    let (reason, _) = v.node.lost(v.id);
    assert!(reason.contains("more folder entries than the 1 it offered"), "{reason}");

    let mut v = Victim::new();
    v.raw.send(&Frame::OfferFolder { transfer: 1, size: 0, entries: 2, name: "f".into() });
    v.raw.send(&Frame::OfferFolder { transfer: 2, size: 0, entries: 2, name: "g".into() });
    let (reason, _) = v.node.lost(v.id);
    assert!(reason.contains("while another one's entries were still arriving"), "{reason}");
}

#[test]
fn a_damaged_file_in_a_folder_fails_it_by_name_and_leaves_nothing() {
    let mut v = Victim::new();
    let data = noise(70_000, 3);
    v.offer(1, "album", vec![folder(&["sub"]), file(&["sub", "one.bin"], 70_000), file(&["two.bin"], 0)]);
    let (t, name, _, folder_info) = offered(&mut v.node, v.id);
    assert_eq!((name.as_str(), folder_info), ("album", Some(FolderInfo { files: 2, folders: 1 })));
    v.node.engine.accept_file(t);
    assert_eq!(v.raw.recv(), Some(Frame::Accept { transfer: 1 }));
    v.raw.send(&Frame::Data { transfer: 1, bytes: data[..60_000].to_vec() });
    v.raw.send(&Frame::Data { transfer: 1, bytes: data[60_000..].to_vec() });
    v.raw.send(&Frame::FileDone { transfer: 1, index: 1, hash: [9; 32] });
    let reason = v.node.wait("the folder failed", |e| match e {
        Event::FileFailed { transfer, kind: FailKind::Damaged, reason, .. } if *transfer == t => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("sub/one.bin arrived damaged"), "{reason}");
    assert!(matches!(v.raw.recv(), Some(Frame::Cancel { transfer: 1, mine: false, .. })));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fs::read_dir(v.parent.path().join("downloads")).unwrap().next().is_some() {
        assert!(std::time::Instant::now() < deadline, "the half-built folder was left");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(v.outside(), ["downloads", "precious.txt"]);
}

#[test]
fn a_folder_whose_data_runs_past_a_file_without_its_end_is_damaged() {
    let mut v = Victim::new();
    v.offer(1, "pair", vec![file(&["a"], 10), file(&["b"], 10)]);
    let (t, _, _, _) = offered(&mut v.node, v.id);
    v.node.engine.accept_file(t);
    assert_eq!(v.raw.recv(), Some(Frame::Accept { transfer: 1 }));
    // Twenty bytes at once: the first file's end never came between.
    v.raw.send(&Frame::Data { transfer: 1, bytes: vec![1; 20] });
    v.raw.send(&Frame::FileDone { transfer: 1, index: 0, hash: *blake3::hash(&[1; 10]).as_bytes() });
    let kind = v.node.wait("the folder failed", |e| match e {
        Event::FileFailed { transfer, kind, .. } if *transfer == t => Some(*kind),
        _ => None,
    });
    assert_eq!(kind, FailKind::Damaged);
}

// ----- resuming a folder --------------------------------------------------------

/// The receiver's kept folder, once its writer let go of it.
fn kept_folder(down: &Path) -> std::path::PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> =
            fs::read_dir(down).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        if let [one] = names.as_slice() {
            let path = down.join(one);
            if one.starts_with(".peerconn-resume-") && path.is_dir() {
                std::thread::sleep(Duration::from_millis(200));
                return path;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{names:?} in the downloads folder");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `root` to `b` through a relay capped at 20 MB/s and cuts the
/// relay once the receiver has 40 % of it.
fn cut_folder(a: &mut Node, b: &mut Node, root: &Path) {
    use crate::support::Relay;
    let (listener, addr) = b.listen("receiver");
    let relay = Relay::new(addr, Some(20_000_000));
    let c = a.engine.connect("sender", relay.addr).unwrap();
    a.connected(c);
    b.connected(listener);
    a.engine.send_file(c, root);
    let (t, _, size, _) = offered(b, listener);
    b.wait_within(Duration::from_secs(30), "40 %", |e| match e {
        Event::FileProgress { transfer, bytes, .. } if *transfer == t && *bytes >= size * 2 / 5 => Some(()),
        _ => None,
    });
    relay.cut();
    b.wait_within(Duration::from_secs(10), "the cut", |e| match e {
        Event::FileFailed { transfer, kind: FailKind::ConnectionEnded, .. } if *transfer == t => Some(()),
        _ => None,
    });
}

/// Sends `root` again, directly; returns where it resumed, how much went
/// again, the bytes the relay carried and the stored folder.
fn send_again(a: &mut Node, b: &mut Node, root: &Path) -> ((u64, u64), u64, std::path::PathBuf) {
    use crate::support::Relay;
    let (listener, addr) = b.listen("receiver again");
    let relay = Relay::new(addr, None);
    let c = a.engine.connect("sender", relay.addr).unwrap();
    a.connected(c);
    b.connected(listener);
    let t_out = a.engine.send_file(c, root);
    let (t, _, _, _) = offered(b, listener);
    let at = b.wait("resumed", |e| match e {
        Event::FileResumed { transfer, offset, discarded, .. } if *transfer == t => Some((*offset, *discarded)),
        Event::FileProgress { transfer, .. } if *transfer == t => panic!("moved without resuming"),
        _ => None,
    });
    let sender_at = a.wait("resumed", |e| match e {
        Event::FileResumed { transfer, offset, discarded, .. } if *transfer == t_out => Some((*offset, *discarded)),
        _ => None,
    });
    assert_eq!(sender_at, at, "both ends say the same");
    let stored = received(b, t);
    sent(a, t_out);
    (at, relay.carried(), stored)
}

fn library_of(outbox: &Path, files: u64) -> std::path::PathBuf {
    let root = outbox.join("backup");
    for i in 0..files {
        let dir = root.join(format!("month {:02}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("part {i:02}.bin")), noise(1024 * 1024 + i as usize * 77, i)).unwrap();
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("zero.bin"), b"").unwrap();
    root
}

#[test]
fn a_folder_cut_halfway_resumes_where_the_receiver_proves_it_was() {
    let (outbox, down) = (TempDir::new("folder-cut-out"), TempDir::new("folder-cut-down"));
    let root = library_of(outbox.path(), 24);
    let config = EngineConfig { downloads: down.path().into(), accept_files_from_everyone: true, ..fast_config() };
    let (mut a, mut b) = (Node::new(), Node::with_config(config));
    cut_folder(&mut a, &mut b, &root);
    let kept = kept_folder(down.path());
    let ((offset, discarded), carried, stored) = send_again(&mut a, &mut b, &root);
    let total: u64 = (0..24).map(|i| 1024 * 1024 + i * 77).sum();
    assert!(offset >= total / 3 && offset < total, "resumed at {offset} of {total}");
    assert_eq!(discarded, 0);
    let rest = total - offset;
    assert!(carried <= rest + rest / 2000 + 256 * 1024, "{carried} bytes carried for the {rest} missing");
    assert_eq!(stored, down.path().join("backup"));
    assert_eq!(tree(&stored), tree(&root));
    assert!(!kept.exists(), "the kept folder became the folder");
    assert_eq!(down.names(), ["backup"]);
}

#[test]
fn a_kept_folder_with_a_changed_byte_keeps_only_what_precedes_it() {
    let (outbox, down) = (TempDir::new("folder-tamper-out"), TempDir::new("folder-tamper-down"));
    let root = library_of(outbox.path(), 24);
    let config = EngineConfig { downloads: down.path().into(), accept_files_from_everyone: true, ..fast_config() };
    let (mut a, mut b) = (Node::new(), Node::with_config(config));
    cut_folder(&mut a, &mut b, &root);
    let kept = kept_folder(down.path());
    // The first file in the listing ("month 00/part 00.bin") is whole;
    // one byte of it changes on the receiver's disk.
    let first = kept.join("month 00/part 00.bin");
    let mut bytes = fs::read(&first).unwrap();
    assert_eq!(bytes.len(), 1024 * 1024);
    bytes[1000] ^= 1;
    fs::write(&first, &bytes).unwrap();
    let ((offset, discarded), _, stored) = send_again(&mut a, &mut b, &root);
    assert_eq!(offset, 0, "the first block failed its proof");
    assert!(discarded > 0);
    assert_eq!(tree(&stored), tree(&root), "the changed byte was not kept");
}

// ----- what the review found ------------------------------------------------------

/// Regression: a second folder's offer went out while the first one's
/// listing was still being sent, and the receiver took it for a protocol
/// error (the connection ended).
#[test]
fn two_folders_sent_at_once_both_arrive_though_the_first_listing_is_long() {
    let (outbox, down) = (TempDir::new("two-folders-out"), TempDir::new("two-folders-down"));
    let big = outbox.path().join("big");
    fs::create_dir_all(&big).unwrap();
    // About 600 KB of listing: several pumps' worth.
    for i in 0..6000 {
        fs::write(big.join(format!("{i:05} a rather long name so the listing takes room.txt")), b"x").unwrap();
    }
    let small = outbox.path().join("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("one.txt"), b"one").unwrap();
    // With the tests' 1 s heartbeat: on a disk where each of the 6,000
    // files takes a millisecond to make durable, the receiver once ended
    // the connection here ("nothing received for 1 s") while it was busy
    // handing on input it had held back for its full writer (regression,
    // 2026-12-08).
    let config = EngineConfig { downloads: down.path().into(), accept_files_from_everyone: true, ..fast_config() };
    let (mut a, mut b) = (Node::new(), Node::with_config(config));
    let (sa, _) = pair(&mut a, &mut b);
    let first = a.engine.send_file(sa, &big);
    let second = a.engine.send_file(sa, &small);
    sent(&mut a, first);
    sent(&mut a, second);
    assert_eq!(fs::read_dir(down.path().join("big")).unwrap().count(), 6000);
    assert_eq!(fs::read(down.path().join("small/one.txt")).unwrap(), b"one");
}

#[test]
fn names_the_receiver_would_refuse_are_left_out_and_listed_and_too_deep_a_file_fails_clearly() {
    let (outbox, down) = (TempDir::new("refused-names-out"), TempDir::new("refused-names-down"));
    let root = outbox.path().join("icons");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("fine.txt"), b"fine").unwrap();
    #[cfg(unix)]
    fs::write(root.join("Icon\r"), b"a macOS custom icon").unwrap();
    #[cfg(unix)]
    {
        // Two names the same once made safe for Windows.
        fs::write(root.join("a?b"), b"first").unwrap();
        fs::write(root.join("a_b"), b"second").unwrap();
    }
    let config = EngineConfig { downloads: down.path().into(), accept_files_from_everyone: true, ..fast_config() };
    let (mut a, mut b) = (Node::new(), Node::with_config(config));
    let (sa, _) = pair(&mut a, &mut b);
    let t = a.engine.send_file(sa, &root);
    sent(&mut a, t);
    #[cfg(unix)]
    {
        let said = a.wait("the names left out", |e| match e {
            Event::Error { reason, .. } if reason.contains("left out") => Some(reason.clone()),
            _ => None,
        });
        assert!(said.contains("Icon\\u{d}") && said.contains("control"), "{said}");
        assert!(said.contains("a_b") && said.contains("made safe"), "{said}");
        let mut names: Vec<String> = fs::read_dir(down.path().join("icons"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a_b", "fine.txt"], "a?b is stored made safe, the second a_b left out");
        assert_eq!(fs::read(down.path().join("icons/a_b")).unwrap(), b"first");
    }
    // A file 33 levels down cannot be offered: the send fails saying so.
    let mut deep = outbox.path().join("deep");
    for i in 0..32 {
        deep = deep.join(format!("{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf.txt"), b"leaf").unwrap();
    let t = a.engine.send_file(sa, outbox.path().join("deep"));
    let reason = a.wait("the deep folder failed", |e| match e {
        Event::FileFailed { transfer, reason, .. } if *transfer == t => Some(reason.clone()),
        Event::FileSent { transfer, .. } if *transfer == t => panic!("a 33-deep file was sent"),
        _ => None,
    });
    assert!(reason.contains("more than 32 folders deep"), "{reason}");
}
