//! The session state machine under arbitrary frame sequences: one engine,
//! 64 connections, each a real handshake followed by whatever proptest
//! makes up (every frame type with odd fields, raw frame bytes, raw socket
//! bytes, files offered and sent, correctly or not).
//!
//! The deep version of this is the `session` fuzz target (docs/FUZZING.md);
//! this one runs with `cargo test` in seconds. After every connection the
//! engine must close its side soon after we close ours, and its records
//! and frames must stay valid; after all of them, nothing may have been
//! written beside the downloads folder, no partial file may be left in it,
//! and the same engine must still connect to normal peers (as a server and
//! as a client) and chat with them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use peerconn::files::names::is_temp_name;
use peerconn::net::frame::{self, Frame};
use peerconn::net::secure::Identity;
use peerconn::net::{EngineConfig, Event, ListenOptions, PeerId, PeerState};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::protocol::any_bye_code;
use crate::support::{fast_config, Node, RawPeer, TempDir};

/// One thing the hostile peer does.
#[derive(Clone, Debug)]
enum Step {
    Send(Frame),
    /// Bytes sealed as if they were frames.
    Plain(Vec<u8>),
    /// Bytes written to the socket outside the encryption.
    Wire(Vec<u8>),
    /// Data for the rest of an offered file (when it is small).
    DataRest(u32),
    /// DONE with the right BLAKE3 hash of what was sent for that transfer.
    DoneRight(u32),
    /// Read the engine's answers for a moment (and let its owner accept
    /// offers).
    Await,
    /// A whole file the way a sender would send it: offer, wait for the
    /// answer, data (all or part), done (with the right hash or not), wait.
    File {
        transfer: u32,
        size: u64,
        name: String,
        complete: bool,
        right_hash: bool,
    },
}

/// Transfer numbers that meet often, and any.
fn wire() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4, 1 => any::<u32>()]
}

/// Text of up to `max` chars, odd ones included. Never empty: an empty
/// field goes through `Step::Plain` instead.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z ]{1,12}",
        1 => vec(any::<char>(), 1..=max).prop_map(|c| c.into_iter().collect()),
        1 => prop::sample::select(vec!["\u{202e}txt.exe".to_owned(), "tab\there".to_owned(), " ".to_owned()]),
    ]
}

/// Peer names: never "client" or "server", which the normal peers at the
/// end use (a name seen with another key would be a key change).
fn peer_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "fz-[a-z]{0,6}",
        1 => text(70),
    ]
}

fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,8}\\.(txt|bin)",
        2 => prop::sample::select(vec![
            "../escape.txt", "..", ".", "a/b", "a\\b", "/etc/passwd", "C:evil", "CON", "nul.txt",
            ".peerconn-0123456789abcdef.part", "report. . ", "x\u{202e}gpj.exe", "what?<>|*\".txt",
        ])
        .prop_map(str::to_owned),
        1 => text(300),
    ]
}

fn any_frame() -> impl Strategy<Value = Frame> {
    let hello = (prop_oneof![4 => Just(frame::VERSION), 1 => any::<u16>()], any::<bool>(), peer_name())
        .prop_map(|(version, pairing, name)| Frame::Hello { version, pairing, name });
    prop_oneof![
        1 => hello,
        4 => text(100).prop_map(Frame::Chat),
        1 => any::<u64>().prop_map(Frame::Ping),
        1 => any::<u64>().prop_map(Frame::Pong),
        1 => (any_bye_code(), "[a-z ]{0,20}").prop_map(|(code, reason)| Frame::Bye { code, reason }),
        1 => vec(any::<u8>(), 1..=64).prop_map(Frame::Pair),
        1 => any::<[u8; 32]>().prop_map(Frame::Confirm),
        3 => (wire(), prop_oneof![3 => 0u64..3000, 1 => any::<u64>()], file_name())
            .prop_map(|(transfer, size, name)| Frame::Offer { transfer, size, name }),
        1 => wire().prop_map(|transfer| Frame::Accept { transfer }),
        1 => (wire(), "[a-z ]{0,20}").prop_map(|(transfer, reason)| Frame::Decline { transfer, reason }),
        2 => (wire(), vec(any::<u8>(), 1..2000)).prop_map(|(transfer, bytes)| Frame::Data { transfer, bytes }),
        1 => (wire(), any::<[u8; 32]>()).prop_map(|(transfer, hash)| Frame::Done { transfer, hash }),
        2 => (wire(), any::<bool>(), "[a-z ]{0,20}")
            .prop_map(|(transfer, mine, reason)| Frame::Cancel { transfer, mine, reason }),
        1 => wire().prop_map(|transfer| Frame::Received { transfer }),
        1 => (wire(), any::<u64>()).prop_map(|(transfer, granted)| Frame::Window { transfer, granted }),
        1 => (wire(), prop_oneof![0u64..3000, any::<u64>()]).prop_map(|(transfer, have)| Frame::Resume { transfer, have }),
        1 => (wire(), vec(any::<[u8; 32]>(), 0..4)).prop_map(|(transfer, hashes)| Frame::Proof { transfer, hashes }),
        1 => (wire(), prop_oneof![0u64..3000, any::<u64>()])
            .prop_map(|(transfer, offset)| Frame::AcceptFrom { transfer, offset }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let file = (wire(), 0u64..3000, file_name(), prop::bool::weighted(0.8), prop::bool::weighted(0.8)).prop_map(
        |(transfer, size, name, complete, right_hash)| Step::File { transfer, size, name, complete, right_hash },
    );
    prop_oneof![
        8 => any_frame().prop_map(Step::Send),
        5 => file,
        // A frame with any type byte and a right length, or any bytes.
        1 => (any::<u8>(), vec(any::<u8>(), 0..40)).prop_map(|(kind, payload)| {
            let mut bytes = (payload.len() as u32 + 1).to_be_bytes().to_vec();
            bytes.push(kind);
            bytes.extend_from_slice(&payload);
            Step::Plain(bytes)
        }),
        1 => vec(any::<u8>(), 0..40).prop_map(Step::Plain),
        1 => vec(any::<u8>(), 1..40).prop_map(Step::Wire),
        1 => wire().prop_map(Step::DataRest),
        1 => wire().prop_map(Step::DoneRight),
        2 => Just(Step::Await),
    ]
}

/// A sequence that usually starts with a proper hello, so most cases reach
/// the open connection and its file handling.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    (prop::bool::weighted(0.85), peer_name(), vec(step(), 0..16)).prop_map(|(hello_first, name, mut steps)| {
        if hello_first {
            steps.insert(0, Step::Send(Frame::Hello { version: frame::VERSION, pairing: false, name }));
            steps.insert(1, Step::Await);
        }
        steps
    })
}

// ----- playing one case -----------------------------------------------------------

/// Seals and sends; false once the engine has closed the connection.
fn send(peer: &mut RawPeer, plain: &[u8]) -> bool {
    let mut wire = Vec::new();
    peer.link.seal(plain, &mut wire).expect("our channel seals");
    peer.stream.write_all(&wire).is_ok()
}

/// What we sent for each transfer number we offered: size, bytes sent, hash.
type Sent = HashMap<u32, (u64, u64, blake3::Hasher)>;

fn data(peer: &mut RawPeer, sent: &mut Sent, transfer: u32, bytes: &[u8]) -> bool {
    if let Some((_, so_far, hasher)) = sent.get_mut(&transfer) {
        *so_far += bytes.len() as u64;
        hasher.update(bytes);
    }
    send(peer, &Frame::Data { transfer, bytes: bytes.to_vec() }.to_bytes())
}

/// The engine's owner: accepts every offer.
fn accept_offers(node: &mut Node) {
    for event in node.take_events() {
        if let Event::FileIncoming { transfer, .. } = event {
            node.engine.accept_file(transfer);
        }
    }
}

/// Reads the engine's frames (checking that every record decrypts and every
/// frame decodes) while its owner accepts offers, until `pick` takes one,
/// for at most 100 ms and 300 ms a case. `None`: the engine closed the
/// connection (or said bye); `Some(None)`: nothing picked in time.
fn answer(
    node: &mut Node,
    peer: &mut RawPeer,
    waited: &mut Duration,
    mut pick: impl FnMut(&Frame) -> bool,
) -> Option<Option<Frame>> {
    let started = Instant::now();
    let until = started + Duration::from_millis(100).min(Duration::from_millis(300).saturating_sub(*waited));
    let mut got = Some(None);
    while Instant::now() < until {
        accept_offers(node);
        peer.stream.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        match peer.recv_any() {
            Some(Frame::Bye { .. }) => {
                got = None;
                break;
            }
            Some(frame) if pick(&frame) => {
                got = Some(Some(frame));
                break;
            }
            // Another frame, a pause, or the end (told apart by a failing write later).
            _ => {}
        }
    }
    *waited += started.elapsed();
    got
}

fn play(node: &mut Node, addr: SocketAddr, identity: &Identity, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut peer = RawPeer::connect_as(addr, identity.clone());
    let mut sent = Sent::new();
    let mut waited = Duration::ZERO;
    for step in steps {
        let open = match step {
            Step::Send(frame) => {
                if let Frame::Offer { transfer, size, .. } = frame {
                    sent.insert(*transfer, (*size, 0, blake3::Hasher::new()));
                }
                if let Frame::Data { transfer, bytes } = frame {
                    data(&mut peer, &mut sent, *transfer, bytes)
                } else {
                    send(&mut peer, &frame.to_bytes())
                }
            }
            Step::Plain(bytes) => send(&mut peer, bytes),
            Step::Wire(bytes) => peer.stream.write_all(bytes).is_ok(),
            Step::DataRest(transfer) => match sent.get(transfer) {
                Some((size, so_far, _)) if *size > *so_far && size - so_far <= 64 * 1024 => {
                    let bytes: Vec<u8> = (0..size - so_far).map(|i| (i % 251) as u8).collect();
                    bytes.chunks(frame::MAX_DATA).all(|piece| data(&mut peer, &mut sent, *transfer, piece))
                }
                _ => true,
            },
            Step::DoneRight(transfer) => {
                let hash = sent.get(transfer).map(|(_, _, h)| *h.finalize().as_bytes()).unwrap_or([0; 32]);
                send(&mut peer, &Frame::Done { transfer: *transfer, hash }.to_bytes())
            }
            Step::Await => answer(node, &mut peer, &mut waited, |_| false).is_some(),
            Step::File { transfer, size, name, complete, right_hash } => {
                let transfer = *transfer;
                sent.insert(transfer, (*size, 0, blake3::Hasher::new()));
                let offer = Frame::Offer { transfer, size: *size, name: name.clone() };
                let accepted = send(&mut peer, &offer.to_bytes())
                    && matches!(
                        answer(
                            node,
                            &mut peer,
                            &mut waited,
                            |f| matches!(f, Frame::Accept { transfer: t } | Frame::Decline { transfer: t, .. } if *t == transfer),
                        ),
                        Some(Some(Frame::Accept { .. }))
                    );
                if accepted {
                    let len = if *complete { *size } else { size / 2 };
                    let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                    let mut alive = bytes.chunks(frame::MAX_DATA).all(|p| data(&mut peer, &mut sent, transfer, p));
                    let hash = match (right_hash, sent.get(&transfer)) {
                        (true, Some((_, _, h))) => *h.finalize().as_bytes(),
                        _ => [0xee; 32],
                    };
                    alive = alive && send(&mut peer, &Frame::Done { transfer, hash }.to_bytes());
                    alive
                        && answer(node, &mut peer, &mut waited, |f| {
                            matches!(f, Frame::Received { transfer: t } | Frame::Cancel { transfer: t, .. } if *t == transfer)
                        })
                        .is_some()
                } else {
                    true
                }
            }
        };
        accept_offers(node);
        if !open {
            break;
        }
    }
    // We close our side; the engine must close its side soon after.
    let _ = peer.stream.shutdown(Shutdown::Write);
    peer.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    while peer.recv_any().is_some() {}
    prop_assert!(
        started.elapsed() < Duration::from_secs(5),
        "the engine kept the connection open after we closed ours"
    );
    accept_offers(node);
    Ok(())
}

/// Names in `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn arbitrary_frame_sequences_never_break_the_engine_or_write_outside_downloads() {
    let parent = TempDir::new("session-props");
    let downloads = parent.path().join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    let before = listing(parent.path());
    let config = EngineConfig { downloads: downloads.clone(), ..fast_config() };
    let node = RefCell::new(Node::with_config(config));
    let options = ListenOptions { keep_listening: true, pairing_code: None };
    let (_, addr) = node.borrow_mut().listen_on("target", "127.0.0.1:0".parse().unwrap(), options);
    let identity = Identity::generate();

    let mut runner = TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    runner
        .run(&steps(), |steps| play(&mut node.borrow_mut(), addr, &identity, &steps))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut node = node.into_inner();
    // Nothing beside the downloads folder, and nothing but plain files in it.
    assert_eq!(listing(parent.path()), before, "something was written beside the downloads folder");
    for entry in fs::read_dir(&downloads).unwrap() {
        let entry = entry.unwrap();
        assert!(entry.file_type().unwrap().is_file(), "{:?} in the downloads folder", entry.file_name());
    }
    // Every connection is closed, so no temporary file may stay behind but
    // the partial files kept to resume transfers that were cut.
    let deadline = Instant::now() + Duration::from_secs(5);
    while listing(&downloads).iter().any(|n| is_temp_name(n) && !n.starts_with(".peerconn-resume-")) {
        assert!(Instant::now() < deadline, "partial files left behind: {:?}", listing(&downloads));
        std::thread::sleep(Duration::from_millis(20));
    }

    // The same engine still works with a normal peer: on the listener the
    // hostile peers used, on a new listener, and as a client.
    let mut normal = Node::new();
    let c = normal.engine.connect("client", addr).expect("valid connect");
    normal.connected(c);
    let s = node.wait("the normal client on the fuzzed listener", |e| match e {
        Event::State { id, state: PeerState::Connected { peer_name, .. } } if peer_name == "client" => Some(*id),
        _ => None,
    });
    chat_both_ways(&mut node, s, &mut normal, c);

    let (s, new_addr) = node.listen("second");
    let c = normal.engine.connect("client", new_addr).expect("valid connect");
    normal.connected(c);
    node.connected(s);
    chat_both_ways(&mut node, s, &mut normal, c);

    let (s, normal_addr) = normal.listen("server");
    let c = node.engine.connect("target", normal_addr).expect("valid connect");
    node.connected(c);
    normal.connected(s);
    chat_both_ways(&mut node, c, &mut normal, s);
    assert_eq!(listing(parent.path()), before, "something was written beside the downloads folder");
}

fn chat_both_ways(a: &mut Node, on_a: PeerId, b: &mut Node, on_b: PeerId) {
    a.engine.send_text(on_a, "still there?").unwrap();
    assert_eq!(b.message(on_b), "still there?");
    b.engine.send_text(on_b, "yes").unwrap();
    assert_eq!(a.message(on_a), "yes");
}
