//! The window's behaviour, told through the state alone: engine events go
//! in, and what a person would see comes out. No window, no engine.

use std::time::Duration;

use super::*;
use crate::net::{EndKind, FailKind};

const DEN: PeerId = PeerId(1);
const STUDY: PeerId = PeerId(2);
const OFFER: TransferId = TransferId(7);

fn settings() -> Settings {
    Settings {
        display_name: "me".into(),
        downloads: PathBuf::from("/tmp/downloads"),
        always_accept: Vec::new(),
        announce: false,
        keep_history: true,
        keep_in_tray: false,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A state with one client peersocket, "Den", selected.
fn with_den() -> State {
    let mut state = State::new(settings());
    state.connecting(DEN, "Den", addr("192.168.1.20:50000"), None, "");
    state.take_changes();
    state
}

fn identity(fingerprint: &str, trust: Trust) -> PeerIdentity {
    PeerIdentity { key: [7; 32], fingerprint: fingerprint.into(), safety_code: "1234 5678 9012".into(), trust }
}

fn connected(id: PeerId, fingerprint: &str) -> Event {
    let state = PeerState::Connected {
        peer_name: "bob".into(),
        peer_addr: addr("192.168.1.20:50000"),
        local_addr: addr("192.168.1.7:41000"),
        peer: identity(fingerprint, Trust::New),
    };
    Event::State { id, state }
}

fn lost(id: PeerId, reason: &str) -> Event {
    Event::State { id, state: PeerState::Lost { reason: reason.into(), clean: false, kind: EndKind::TimedOut } }
}

fn offer(id: PeerId, refused: Option<&str>, accepted: bool) -> Event {
    let refused = refused.map(str::to_owned);
    Event::FileIncoming {
        id,
        transfer: OFFER,
        name: "holiday.zip".into(),
        size: 3_000_000,
        refused,
        accepted,
        folder: None,
    }
}

fn message(id: PeerId, text: &str) -> Event {
    Event::Message { id, text: text.into() }
}

fn peer(state: &State, id: PeerId) -> &Peer {
    state.peer(id).expect("the peersocket")
}

fn lines(state: &State, id: PeerId) -> Vec<String> {
    peer(state, id).chat.rows().into_iter().filter(|r| r.kind == Kind::System).map(|r| r.text).collect()
}

fn last_line(state: &State, id: PeerId) -> String {
    lines(state, id).pop().unwrap_or_default()
}

/// The card of the offer, as it is now.
fn card(state: &State, id: PeerId) -> FileCard {
    let rows = peer(state, id).chat.rows();
    rows.iter().find_map(|r| r.file().filter(|f| f.transfer == OFFER).cloned()).expect("a card for the offer")
}

#[test]
fn a_connect_then_a_loss_turns_the_peer_green_then_red_with_the_reason() {
    let mut state = with_den();
    assert_eq!(peer(&state, DEN).status, Status::Waiting);
    assert_eq!(peer(&state, DEN).detail, "connecting to 192.168.1.20:50000…");

    state.apply(connected(DEN, "0182-0015"));
    let den = peer(&state, DEN);
    assert_eq!(den.status, Status::Connected);
    assert_eq!(den.detail, "bob · 192.168.1.20:50000");
    assert_eq!(den.blocked, "", "the composer is enabled while connected");
    assert_eq!(den.trust(), Some(Trust::New));
    assert!(last_line(&state, DEN).contains("Safety code: 1234 5678 9012"), "{}", last_line(&state, DEN));

    state.apply(lost(DEN, "the peer stopped answering."));
    let den = peer(&state, DEN);
    assert_eq!(den.status, Status::Lost);
    assert_eq!(den.detail, "the peer stopped answering");
    assert_eq!(den.trust(), None, "nobody is connected, so no key is shown");
    assert_eq!(den.subtitle, "inactive: the peer stopped answering");
    assert!(den.blocked.contains("choose Reconnect"), "{}", den.blocked);
    assert_eq!(last_line(&state, DEN), "Connection ended: the peer stopped answering.");
}

#[test]
fn a_listener_on_every_address_says_where_peers_reach_it_and_asks_for_its_code() {
    let mut state = State::new(settings());
    state.listening(DEN, "Den", addr("0.0.0.0:50000"), Some("4821-0937".into()), "");
    state.set_host_address("192.168.1.7");
    state.apply(Event::State { id: DEN, state: PeerState::Listening { local: addr("0.0.0.0:50000") } });
    let den = peer(&state, DEN);
    assert_eq!(den.detail, "waiting on 0.0.0.0:50000 · code 4821-0937");
    assert_eq!(
        den.subtitle,
        "listening on 0.0.0.0:50000 (peers connect to 192.168.1.7:50000) · pairing code 4821-0937"
    );
    assert!(last_line(&state, DEN).contains("Only a peer that types the pairing code 4821-0937"));
    // A lost listener is started again with Listen again.
    state.apply(lost(DEN, "the peer closed the connection"));
    assert!(peer(&state, DEN).blocked.contains("choose Listen again"));
}

#[test]
fn an_offer_accepted_shows_its_progress_then_where_it_was_saved() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    state.apply(offer(DEN, None, false));
    let offered = card(&state, DEN);
    assert_eq!(offered.state, FileState::Offered, "the person is asked");
    assert!(offered.incoming);

    assert_eq!(state.accept(OFFER, false), None, "accepting once changes no policy");
    assert_eq!(card(&state, DEN).state, FileState::Running);
    assert_eq!(card(&state, DEN).detail, "starting…");

    let progress = |bytes, bytes_per_sec, eta| Event::FileProgress {
        id: DEN,
        transfer: OFFER,
        bytes,
        total: 3_000_000,
        bytes_per_sec,
        eta,
        files: None,
    };
    state.apply(progress(0, 0, None));
    assert_eq!(card(&state, DEN).detail, "starting…", "the first reading has no speed yet");
    state.apply(progress(1_500_000, 1_000_000, Some(Duration::from_secs(90))));
    let running = card(&state, DEN);
    assert_eq!(running.progress, 0.5);
    assert!(running.detail.ends_with("/s · 1 min 30 s left"), "{}", running.detail);

    let path = PathBuf::from("/tmp/downloads/holiday.zip");
    let received = Event::FileReceived {
        id: DEN,
        transfer: OFFER,
        name: "holiday.zip".into(),
        path: path.clone(),
        size: 3_000_000,
        blake3: "ab".into(),
    };
    state.apply(received);
    let done = card(&state, DEN);
    assert_eq!((done.state, done.progress), (FileState::Done, 1.0));
    assert_eq!(
        done.detail, "Saved as /tmp/downloads/holiday.zip · verified (BLAKE3) · 3.0 MB in under a second",
        "where, that it was checked, and how long it took"
    );
    assert_eq!(state.received_file(OFFER), Some((DEN, path.as_path())), "Open folder knows where it is");
}

#[test]
fn a_file_sent_ends_verified_by_the_peer_and_a_failed_one_says_why() {
    let mut state = with_den();
    state.apply(Event::FileOutgoing { id: DEN, transfer: OFFER, name: "notes.txt".into(), size: 10, folder: None });
    assert_eq!(card(&state, DEN).state, FileState::Offered);
    assert!(!card(&state, DEN).incoming, "waiting for the peer to accept");
    state.apply(Event::FileSent { id: DEN, transfer: OFFER, name: "notes.txt".into(), size: 10 });
    assert_eq!(card(&state, DEN).state, FileState::Done);
    assert_eq!(card(&state, DEN).detail, "Sent and verified by the peer", "no bytes were seen moving here");

    // A failure for a file never offered (it could not be opened) still
    // gets a card, with the reason.
    let failed = Event::FileFailed {
        id: DEN,
        transfer: TransferId(8),
        name: "gone.txt".into(),
        kind: FailKind::Source,
        reason: "cannot open gone.txt".into(),
    };
    state.apply(failed);
    let rows = peer(&state, DEN).chat.rows();
    let gone = rows.iter().find(|r| r.text == "gone.txt").and_then(ChatRow::file).expect("a card");
    assert_eq!((gone.state, gone.detail.as_str()), (FileState::Failed, "cannot open gone.txt"));
}

#[test]
fn an_offer_the_engine_accepted_by_itself_is_never_shown_with_accept() {
    let mut state = with_den();
    state.apply(offer(DEN, None, true));
    assert_eq!(card(&state, DEN).state, FileState::Running);
    assert_eq!(card(&state, DEN).detail, "starting…");
}

#[test]
fn a_refused_offer_is_never_shown_with_accept_and_says_why() {
    let mut state = with_den();
    let why = "declined: not enough free space in the downloads folder";
    state.apply(offer(DEN, Some(why), false));
    let refused = card(&state, DEN);
    assert_eq!((refused.state, refused.detail.as_str()), (FileState::Failed, why));
}

#[test]
fn always_accept_on_an_offer_saves_the_peers_key_and_tells_the_engine_once() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    state.apply(offer(DEN, None, false));
    let change = state.accept(OFFER, true);
    assert_eq!(change, Some(AcceptFrom { fingerprint: "0182-0015".into(), accept: true }));
    assert_eq!(state.settings().always_accept, ["0182-0015"]);
    // Ticking it again for the next offer is no change.
    assert_eq!(state.accept(OFFER, true), None);
    assert_eq!(state.set_always_accept("0182-0015", true), None);
    // Settings unticks it.
    let change = state.set_always_accept("0182-0015", false);
    assert_eq!(change, Some(AcceptFrom { fingerprint: "0182-0015".into(), accept: false }));
    assert!(state.settings().always_accept.is_empty());
}

#[test]
fn a_key_change_warns_until_trust_new_key_and_then_says_so() {
    let mut state = with_den();
    let changed = Event::KeyChanged {
        id: DEN,
        peer_name: "bob".into(),
        address: addr("192.168.1.20:50000"),
        old_fingerprint: "0182-0015".into(),
        new_fingerprint: "7589-f6e1".into(),
    };
    state.apply(changed);
    state.apply(lost(DEN, "the peer's key changed"));
    let den = peer(&state, DEN);
    assert!(den.key_change.is_some());
    assert_eq!(den.detail, "stopped: the peer's key changed");
    assert!(den.key_warning().contains("now has the key 7589-f6e1, not 0182-0015"), "{}", den.key_warning());
    assert!(lines(&state, DEN).iter().any(|l| l.starts_with("⚠ Key changed: \"bob\"")));

    assert!(state.trust_new_key(DEN), "the engine is told");
    assert!(peer(&state, DEN).key_change.is_none());
    assert_eq!(peer(&state, DEN).key_warning(), "");
    assert!(last_line(&state, DEN).starts_with("You trusted the new key 7589-f6e1 for \"bob\". PeerConn reconnects."));
    assert!(!state.trust_new_key(DEN), "nothing left to trust");
}

#[test]
fn dismissing_a_key_warning_hides_it_without_trusting_the_key() {
    let mut state = with_den();
    let changed = Event::KeyChanged {
        id: DEN,
        peer_name: "bob".into(),
        address: addr("192.168.1.20:50000"),
        old_fingerprint: "0182-0015".into(),
        new_fingerprint: "7589-f6e1".into(),
    };
    state.apply(changed);
    state.dismiss_key_warning(DEN);
    assert!(peer(&state, DEN).key_change.is_none());
    assert!(!state.trust_new_key(DEN), "a dismissed change is not trusted later by accident");
}

#[test]
fn marking_verified_is_shown_once_the_engine_confirms_it() {
    let mut state = with_den();
    assert!(!state.can_verify(DEN), "nobody connected: nothing to verify");
    state.apply(connected(DEN, "0182-0015"));
    assert!(state.can_verify(DEN));
    assert!(peer(&state, DEN).trust_note().starts_with("First time this key connects."));
    state.apply(Event::Trust { id: DEN, trust: Trust::Verified });
    assert_eq!(peer(&state, DEN).trust(), Some(Trust::Verified));
    assert_eq!(peer(&state, DEN).trust_note(), "You verified this key by comparing the safety code.");
    assert_eq!(last_line(&state, DEN), "You marked the key 0182-0015 verified.");
}

#[test]
fn messages_to_an_unselected_peer_count_as_unread_until_it_is_selected() {
    let mut state = with_den();
    state.connecting(STUDY, "Study", addr("10.0.0.9:50000"), None, "");
    assert_eq!(state.selected().map(|p| p.id), Some(STUDY), "a new peersocket is selected");
    state.apply(message(DEN, "one"));
    state.apply(message(DEN, "two"));
    state.apply(offer(DEN, None, false));
    state.apply(message(STUDY, "seen"));
    assert_eq!(peer(&state, DEN).unread, 3, "messages and offers to answer count");
    assert_eq!(peer(&state, STUDY).unread, 0, "the chat on screen has nothing unread");

    state.select(DEN, "");
    assert_eq!(peer(&state, DEN).unread, 0);
    // Offers nobody needs to answer are not unread.
    state.select(STUDY, "");
    state.apply(Event::FileIncoming {
        id: DEN,
        transfer: TransferId(9),
        name: "a".into(),
        size: 1,
        refused: Some("declined".into()),
        accepted: false,
        folder: None,
    });
    state.apply(Event::FileIncoming {
        id: DEN,
        transfer: TransferId(10),
        name: "b".into(),
        size: 1,
        refused: None,
        accepted: true,
        folder: None,
    });
    assert_eq!(peer(&state, DEN).unread, 0);
}

#[test]
fn each_peer_keeps_its_own_draft() {
    let mut state = with_den();
    state.connecting(STUDY, "Study", addr("10.0.0.9:50000"), None, "half a thought for the den");
    // The composer is emptied for the new peersocket.
    assert_eq!(state.take_changes().draft.as_deref(), Some(""));
    state.select(DEN, "for the study");
    assert_eq!(state.take_changes().draft.as_deref(), Some("half a thought for the den"));
    state.step(1, "the den again");
    assert_eq!(state.selected().map(|p| p.id), Some(STUDY));
    assert_eq!(state.take_changes().draft.as_deref(), Some("for the study"));
    // Selecting the peer already selected leaves the composer alone.
    state.select(STUDY, "still typing");
    assert_eq!(state.take_changes().draft, None);
}

#[test]
fn the_arrow_keys_move_the_selection_within_the_list() {
    let mut state = with_den();
    state.connecting(STUDY, "Study", addr("10.0.0.9:50000"), None, "");
    state.step(1, "");
    assert_eq!(state.selected().map(|p| p.id), Some(STUDY), "the last stays selected");
    state.step(-1, "");
    state.step(-1, "");
    assert_eq!(state.selected().map(|p| p.id), Some(DEN), "the first stays selected");
}

#[test]
fn a_message_is_sent_as_typed_less_its_trailing_newlines() {
    let state = with_den();
    assert_eq!(state.outgoing("hi\nthere\n\r\n"), Some((DEN, "hi\nthere".into())));
    assert_eq!(state.outgoing(" \n"), None, "blank lines are not sent");
    assert_eq!(State::new(settings()).outgoing("hi"), None, "nobody selected");
}

#[test]
fn a_removed_peer_leaves_the_list_and_the_selection() {
    let mut state = with_den();
    state.connecting(STUDY, "Study", addr("10.0.0.9:50000"), None, "");
    assert_eq!(state.take_changes().list, [ListChange::Added(1)]);
    state.apply(Event::Removed { id: STUDY });
    assert_eq!(state.take_changes().list, [ListChange::Removed(1)]);
    assert!(state.selected().is_none());
    assert_eq!(state.peers().len(), 1);
    // Events for a peersocket that is gone change nothing.
    state.apply(message(STUDY, "late"));
    assert_eq!(state.peers().len(), 1);
}

#[test]
fn forgetting_a_key_unverifies_a_connected_peer_and_stops_accepting_its_files() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    state.apply(Event::Trust { id: DEN, trust: Trust::Verified });
    state.set_always_accept("0182-0015", true);
    let change = state.forget_key("0182-0015");
    assert_eq!(change, Some(AcceptFrom { fingerprint: "0182-0015".into(), accept: false }));
    assert_eq!(peer(&state, DEN).trust(), Some(Trust::New));
    assert!(last_line(&state, DEN).starts_with("You forgot the key 0182-0015"));
}

fn known(name: &str, fingerprint: &str, address: Option<&str>) -> KnownPeerInfo {
    KnownPeerInfo {
        name: name.into(),
        address: address.map(str::to_owned),
        fingerprint: fingerprint.into(),
        verified: false,
    }
}

#[test]
fn known_peers_are_found_by_name_key_or_address_in_any_case() {
    let dad = KnownPeerInfo {
        name: "Dad's Laptop".into(),
        address: Some("192.168.1.44:50000".into()),
        fingerprint: "0182-0015-c0b4-fd3d-ef77".into(),
        verified: true,
    };
    let nas = known("NAS", "7589-f6e1", None);
    for filter in ["", "laptop", "dad's", "c0b4-fd3d", "192.168.1.4", ":50000"] {
        assert!(known_matches(&dad, filter), "{filter:?}");
    }
    for filter in ["zebra", "laptops", "192.168.1.45"] {
        assert!(!known_matches(&dad, filter), "{filter:?}");
    }
    // No address: only the name and key are searched.
    assert!(known_matches(&nas, "nas") && known_matches(&nas, "f6e1") && !known_matches(&nas, "192"));
}

#[test]
fn known_peers_are_listed_newest_first_and_filtered_only_while_the_search_box_shows() {
    let mut state = State::new(settings());
    let few: Vec<KnownPeerInfo> =
        (0..SEARCH_KNOWN_FROM).map(|n| known(&format!("peer {n}"), &format!("{n}"), None)).collect();
    state.apply(Event::KnownPeers { peers: few.clone() });
    state.filter_known("Peer 2");
    assert!(state.take_changes().known);
    assert_eq!(state.known_rows().len(), SEARCH_KNOWN_FROM, "no search box, so no filter");
    assert_eq!(state.known_rows()[0].name, format!("peer {}", SEARCH_KNOWN_FROM - 1), "newest first");

    let mut more = few;
    more.push(known("bob\u{202e}", "b568", Some("192.168.1.7:50000")));
    state.apply(Event::KnownPeers { peers: more });
    let rows = state.known_rows();
    assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["peer 2"]);
    state.filter_known("");
    let bob = &state.known_rows()[0];
    assert!(!bob.name.contains('\u{202e}'), "names are escaped");
    assert_eq!(bob.detail, "key b568 · at 192.168.1.7:50000");
    assert_eq!(state.known_total(), SEARCH_KNOWN_FROM + 1);
}

#[test]
fn settings_are_kept_only_when_the_form_is_right() {
    let mut state = State::new(settings());
    state.take_changes();
    assert!(state.change_settings("", "/tmp").unwrap_err().starts_with("Display name:"));
    assert_eq!(state.change_settings("me", "  ").unwrap_err(), "Downloads folder: choose a folder.");
    assert!(!state.take_changes().settings);
    state.change_settings(" den ", " /srv/in ").unwrap();
    assert_eq!(state.settings().display_name, "den");
    assert_eq!(state.settings().downloads, PathBuf::from("/srv/in"));
    assert!(state.take_changes().settings);
}

#[test]
fn a_peers_message_is_shown_escaped_and_saved_with_their_key() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    state.apply(message(DEN, "evil\u{202e}txt.exe\nsecond line"));
    state.sent(DEN, "mine");
    let rows = peer(&state, DEN).chat.rows();
    let theirs = rows.iter().find(|r| r.kind == Kind::Theirs).unwrap();
    assert!(!theirs.text.contains('\u{202e}') && theirs.text.contains('\n'), "{:?}", theirs.text);
    let (text, name) = state.chat_file(DEN).unwrap();
    assert_eq!(name, "Den chat.txt");
    assert!(text.contains("] 0182-0015: evil"), "{text}");
    assert!(text.contains("\n    second line\n"), "{text}");
    assert!(text.contains("] me: mine\n"), "{text}");
}

#[test]
fn a_resumed_file_says_where_it_picked_up_beside_its_speed() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    state.apply(offer(DEN, None, true));
    let resumed = |offset, discarded| Event::FileResumed {
        id: DEN,
        transfer: OFFER,
        name: "holiday.zip".into(),
        offset,
        size: 3_000_000,
        discarded,
    };
    state.apply(resumed(1_830_000, 0));
    let card_now = card(&state, DEN);
    assert_eq!((card_now.state, card_now.progress), (FileState::Running, 0.61));
    assert_eq!(card_now.detail, "resumed at 61 %");
    state.apply(Event::FileProgress {
        id: DEN,
        transfer: OFFER,
        bytes: 2_000_000,
        total: 3_000_000,
        bytes_per_sec: 1_000_000,
        eta: Some(Duration::from_secs(1)),
        files: None,
    });
    assert_eq!(card(&state, DEN).detail, "resumed at 61 % · 1.0 MB/s · 1 s left");
    // A partial file that did not match starts again and says so.
    state.apply(resumed(0, 1_830_000));
    assert_eq!(card(&state, DEN).detail, "started again: what arrived before did not match");
}

#[test]
fn a_folder_card_says_what_it_holds_and_which_file_is_moving() {
    let mut state = with_den();
    state.apply(connected(DEN, "0182-0015"));
    let folder = Some(peerconn_folder(2000, 12));
    state.apply(Event::FileIncoming {
        id: DEN,
        transfer: OFFER,
        name: "photos".into(),
        size: 3_000_000,
        refused: None,
        accepted: true,
        folder,
    });
    let rows = peer(&state, DEN).chat.rows();
    let row = rows.iter().find(|r| r.file().is_some_and(|f| f.transfer == OFFER)).unwrap();
    assert_eq!(row.text, "photos/ (folder, 2,000 files)");
    state.apply(Event::FileProgress {
        id: DEN,
        transfer: OFFER,
        bytes: 1_000_000,
        total: 3_000_000,
        bytes_per_sec: 1_000_000,
        eta: Some(Duration::from_secs(2)),
        files: Some((811, 2000)),
    });
    assert_eq!(card(&state, DEN).detail, "file 812 of 2,000 · 1.0 MB/s · 2 s left");
}

fn peerconn_folder(files: u64, folders: u64) -> crate::net::FolderInfo {
    crate::net::FolderInfo { files, folders }
}

#[test]
fn a_listening_peersocket_gives_a_link_to_the_shown_address_with_its_code_until_a_peer_connects() {
    let mut state = State::new(settings());
    let key = [9; 32];
    state.set_own_key(key);
    state.set_host_address("192.168.1.7");
    state.listening(DEN, "Den", addr("0.0.0.0:0"), Some("4821-0937".into()), "");
    assert_eq!(state.link(state.peer(DEN).unwrap()), None, "no port yet");
    state.apply(Event::State { id: DEN, state: PeerState::Listening { local: addr("0.0.0.0:50000") } });
    let link = state.link(state.peer(DEN).unwrap()).expect("a link while listening");
    let read = PeerLink::parse(&link).unwrap();
    assert_eq!(read.socket_addr(), Some(addr("192.168.1.7:50000")), "{link}");
    assert_eq!(read.code.as_deref(), Some("4821-0937"));
    assert!(read.pin.matches(&key));
    // The person picks another of this computer's addresses in the host bar.
    state.set_host_address("10.0.0.5");
    let link = state.link(state.peer(DEN).unwrap()).unwrap();
    assert!(link.starts_with("peerconn://10.0.0.5:50000?code="), "{link}");
    state.apply(connected(DEN, "b568-4456-5d3a-30a1-48fb"));
    assert_eq!(state.link(state.peer(DEN).unwrap()), None, "taken: no link to give");

    // Bound to one address, the link names that address.
    state.listening(STUDY, "Study", addr("127.0.0.1:0"), None, "");
    state.apply(Event::State { id: STUDY, state: PeerState::Listening { local: addr("127.0.0.1:41000") } });
    let link = state.link(state.peer(STUDY).unwrap()).unwrap();
    assert!(link.starts_with("peerconn://127.0.0.1:41000#"), "{link}");
}

fn nearby_peer(instance: &str, name: &str, key: &[u8; 32], addr: &str) -> crate::nearby::NearbyPeer {
    crate::nearby::NearbyPeer {
        instance: instance.into(),
        name: name.into(),
        addrs: vec![addr.parse().unwrap()],
        port: 50000,
        pin: crate::net::KeyPin::of(key),
        code_required: false,
    }
}

#[test]
fn nearby_lists_other_installations_by_name_with_what_is_known_of_each_key() {
    use crate::nearby::NearbyChange;
    let mut state = State::new(settings());
    state.set_own_key([1; 32]);
    let (bob_key, carol_key) = ([2; 32], [3; 32]);
    let bob_fp = crate::net::secure::fingerprint(&bob_key);
    state.apply(Event::KnownPeers {
        peers: vec![KnownPeerInfo { name: "bob".into(), address: None, fingerprint: bob_fp.clone(), verified: true }],
    });
    state.take_changes();
    state.nearby(NearbyChange::Found(nearby_peer("c", "carol\u{202e}", &carol_key, "192.168.1.9")));
    state.nearby(NearbyChange::Found(nearby_peer("b", "bob", &bob_key, "192.168.1.7")));
    state.nearby(NearbyChange::Found(nearby_peer("me", "my own listener", &[1; 32], "192.168.1.2")));
    assert!(state.take_changes().nearby);
    let (rows, more) = state.nearby_rows();
    assert_eq!(more, 0);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["bob", "carol\\u{202e}"], "by name, escaped, this installation's own left out");
    assert_eq!(
        (rows[0].trust, rows[0].address.as_str(), rows[0].fingerprint.as_str()),
        (Some(Trust::Verified), "192.168.1.7", bob_fp.as_str())
    );
    assert_eq!(rows[1].trust, None, "a key never seen");
    assert!(crate::net::KeyPin::parse(&rows[1].pin).unwrap().matches(&carol_key));

    // Announced again from another address; then gone.
    state.nearby(NearbyChange::Found(nearby_peer("b", "bob", &bob_key, "10.0.0.7")));
    assert_eq!(state.nearby_rows().0[0].address, "10.0.0.7");
    state.nearby(NearbyChange::Gone { instance: "b".into() });
    assert_eq!(state.nearby_rows().0.len(), 1);

    // A crowded network: the list stays short and says how many more.
    for i in 0..10u8 {
        state.nearby(NearbyChange::Found(nearby_peer(
            &format!("x{i}"),
            &format!("peer {i}"),
            &[10 + i; 32],
            "10.0.0.1",
        )));
    }
    let (rows, more) = state.nearby_rows();
    assert_eq!((rows.len(), more), (NEARBY_ROWS, 11 - NEARBY_ROWS));
}

#[test]
fn a_listener_the_router_maps_gives_its_outside_link_and_the_chat_says_so_once() {
    let mut state = State::new(settings());
    state.set_own_key([9; 32]);
    state.set_host_address("192.168.1.7");
    state.listening(DEN, "Den", addr("0.0.0.0:0"), None, "");
    state.apply(Event::State { id: DEN, state: PeerState::Listening { local: addr("0.0.0.0:50000") } });
    state.reach(DEN, Reach::Asking);
    assert!(state.peer(DEN).unwrap().reach_note().starts_with("Asking the router"));
    let mapped = Reach::Mapped { external: addr("203.0.113.9:50000"), via: "pcp" };
    state.reach(DEN, mapped.clone());
    state.reach(DEN, mapped);
    let link = state.link(state.peer(DEN).unwrap()).unwrap();
    assert!(link.starts_with("peerconn://203.0.113.9:50000#"), "{link}");
    let peer = state.peer(DEN).unwrap();
    assert_eq!(
        peer.reach_note(),
        "Reachable from other networks at 203.0.113.9:50000 (the router forwards it, by pcp)."
    );
    let said = peer.chat.rows().iter().filter(|r| r.text.contains("Reachable from other networks")).count();
    assert_eq!(said, 1, "said once");

    state.listening(STUDY, "Study", addr("0.0.0.0:0"), None, "");
    state.apply(Event::State { id: STUDY, state: PeerState::Listening { local: addr("0.0.0.0:41000") } });
    state.reach(STUDY, Reach::Failed("no router answered".into()));
    let peer = state.peer(STUDY).unwrap();
    assert_eq!(peer.reach_note(), "Not reachable from other networks: no router answered.");
    assert!(state.link(peer).unwrap().starts_with("peerconn://192.168.1.7:41000#"), "the local link still");
}

#[test]
fn a_finished_card_says_how_much_moved_in_how_long_and_how_fast() {
    let now = std::time::Instant::now();
    let ago = |secs| now.checked_sub(Duration::from_secs(secs)).unwrap();
    assert_eq!(copy::took(4_200_000_000, Some((ago(38), 0))), " · 4.2 GB in 38 s, 111 MB/s");
    // A resume counts only what moved this time.
    assert_eq!(copy::took(4_200_000_000, Some((ago(20), 2_200_000_000))), " · 2.0 GB in 20 s, 100 MB/s");
    assert_eq!(copy::took(10, None), "");
}

#[test]
fn a_client_waiting_to_reconnect_is_yellow_and_says_when_it_tries_again() {
    let mut state = with_den();
    state.apply(connected(DEN, "b568-4456-5d3a-30a1-48fb"));
    state.apply(lost(DEN, "the peer's PeerConn closed"));
    assert_eq!(state.peer(DEN).unwrap().status, Status::Lost);
    state.apply(Event::Reconnecting { id: DEN, after: Duration::from_millis(7600), attempt: 4 });
    let peer = state.peer(DEN).unwrap();
    assert_eq!(peer.status, Status::Waiting, "yellow while it waits to try again");
    assert_eq!(peer.detail, "reconnecting in 8 s");
    assert!(peer.blocked.contains("Disconnect stops it"), "{}", peer.blocked);
    assert!(peer.chat.rows().iter().any(|r| r.text == "Trying again in 8 s (Disconnect stops it)."));
    // It counts down on the clock the timer passes in, one line each second.
    let now = std::time::Instant::now();
    assert!(state.tick(now + Duration::from_secs(5)));
    assert_eq!(state.peer(DEN).unwrap().detail, "reconnecting in 3 s");
    assert_eq!(state.peer(DEN).unwrap().subtitle, "reconnecting in 3 s");
    assert!(!state.tick(now + Duration::from_millis(5050)), "the same second is not shown again");
    // Trying again ends the count.
    state.apply(Event::State { id: DEN, state: PeerState::Connecting { remote: addr("192.168.1.20:50000") } });
    assert!(!state.tick(now + Duration::from_secs(6)));
    assert!(state.peer(DEN).unwrap().detail.starts_with("connecting to"), "{}", state.peer(DEN).unwrap().detail);
}

#[test]
fn the_window_title_counts_what_waits_unread_in_other_conversations() {
    let mut state = with_den();
    state.connecting(STUDY, "Study", addr("192.168.1.30:50000"), None, "");
    assert_eq!(state.window_title(), "PeerConn");
    state.apply(Event::Message { id: DEN, text: "one".into() });
    state.apply(Event::Message { id: DEN, text: "two".into() });
    state.apply(Event::Message { id: STUDY, text: "seen".into() });
    assert_eq!(state.window_title(), "(2) PeerConn", "the selected conversation's messages are read");
    state.select(DEN, "");
    assert_eq!(state.window_title(), "PeerConn");
}

// ----- kept across restarts ---------------------------------------------------

#[test]
fn a_restart_brings_back_each_peersocket_with_its_chat_and_a_cut_transfer_says_so() {
    let mut before = with_den();
    before.made_with(DEN, Some("ab".repeat(32)), false);
    before.apply(connected(DEN, "3f2a-9b1c-0d4e-77a1-c0de"));
    before.apply(message(DEN, "morning"));
    before.sent(DEN, "hi");
    before.apply(offer(DEN, None, false));
    before.listening(STUDY, "Study", addr("0.0.0.0:0"), Some("4821-0937".into()), "");
    before.apply(Event::State { id: STUDY, state: PeerState::Listening { local: addr("0.0.0.0:41234") } });
    let kept = before.unsaved("Sun 6 Dec 14:02", false);
    assert_eq!(kept.len(), 2);
    // Nothing changed since: nothing to keep again.
    assert!(before.unsaved("Sun 6 Dec 14:03", false).is_empty());
    let (den, study) = (&kept[0], &kept[1]);
    assert_eq!((den.name.as_str(), den.server, den.order), ("Den", false, 0));
    assert_eq!(den.peer_key.as_deref(), Some("3f2a-9b1c-0d4e-77a1-c0de"));
    assert_eq!(den.pin, Some("ab".repeat(32)));
    // A listener on "any port" is kept with the port it got.
    assert_eq!(study.address, addr("0.0.0.0:41234"));
    assert_eq!(study.code.as_deref(), Some("4821-0937"));

    let mut after = State::new(settings());
    after.restore(PeerId(10), den.clone());
    after.restore(PeerId(11), study.clone());
    // The first restored is selected; both rows are back in order.
    assert_eq!(after.selected().map(|p| p.id), Some(PeerId(10)));
    assert_eq!(after.peers().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Den", "Study"]);
    let rows = peer(&after, PeerId(10)).chat.rows();
    assert!(rows.iter().any(|r| r.kind == Kind::Theirs && r.text == "morning"));
    assert!(rows.iter().any(|r| r.kind == Kind::Mine && r.text == "hi"));
    let card = rows.iter().find_map(|r| r.file()).expect("the file card");
    assert_eq!(card.state, FileState::Failed, "an offer cut by the restart offers no Accept");
    assert!(card.detail.contains("PeerConn closed first"), "{}", card.detail);
    assert_ne!(card.transfer, OFFER, "restored cards never take an engine's number");
    assert!(last_line(&after, PeerId(10)).starts_with("PeerConn restarted"), "{}", last_line(&after, PeerId(10)));
    assert_eq!(peer(&after, PeerId(10)).unread, 0);
    // Kept again under the same file, so a restart does not duplicate it.
    let again = after.unsaved("Mon 7 Dec 09:00", false);
    assert_eq!(again.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), [den.key.clone(), study.key.clone()]);
}

#[test]
fn remove_forgets_the_kept_file_and_clear_history_empties_every_chat() {
    let mut state = with_den();
    state.apply(message(DEN, "secret plans"));
    state.listening(STUDY, "Study", addr("127.0.0.1:50000"), None, "");
    let keys: Vec<String> = state.unsaved("now", false).into_iter().map(|p| p.key).collect();
    state.apply(Event::Removed { id: STUDY });
    assert_eq!(state.take_forgotten(), [keys[1].clone()]);
    assert!(state.take_forgotten().is_empty());

    state.clear_history();
    let rows = peer(&state, DEN).chat.rows();
    assert_eq!(rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), [copy::HISTORY_CLEARED]);
    let kept = state.unsaved("now", false);
    assert!(kept[0].rows.iter().all(|r| r.row.text != "secret plans"));

    // History off: the peersocket is still kept, its chat is not.
    state.apply(message(DEN, "more"));
    assert!(state.set_keep_history(false));
    let kept = state.unsaved("now", false);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].rows.is_empty());
}

// ----- notifications ----------------------------------------------------------

#[test]
fn a_notification_is_asked_for_while_the_window_is_behind_others_and_not_while_in_front() {
    let mut state = with_den();
    state.apply(message(DEN, "seen on screen"));
    assert_eq!(state.take_alerts(), []);
    assert_eq!(peer(&state, DEN).unread, 0);

    state.set_focused(false);
    state.apply(message(DEN, "are you there?\n\u{202e}evil"));
    let alerts = state.take_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].peer, DEN);
    assert_eq!(alerts[0].title, "Den");
    assert!(alerts[0].body.starts_with("are you there? "), "{}", alerts[0].body);
    assert!(!alerts[0].body.contains('\u{202e}'), "a bidi override reached the desktop: {:?}", alerts[0].body);
    // The conversation shown counts as unread while nobody looks, and in
    // the title; coming to the front reads it.
    assert_eq!(peer(&state, DEN).unread, 1);
    assert_eq!(state.window_title(), "(1) PeerConn");

    // A burst gives one notification that counts, and an offer says what.
    state.apply(message(DEN, "hello?"));
    state.apply(offer(DEN, None, false));
    let alerts = state.take_alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].body, "3 new messages and offers");
    state.apply(Event::FileIncoming {
        id: DEN,
        transfer: TransferId(8),
        name: "notes.txt".into(),
        size: 1200,
        refused: None,
        accepted: false,
        folder: None,
    });
    assert_eq!(state.take_alerts()[0].body, "offers notes.txt (1.2 KB)");

    state.set_focused(true);
    assert_eq!(peer(&state, DEN).unread, 0);
    assert_eq!(state.window_title(), "PeerConn");
    state.apply(message(DEN, "back"));
    assert_eq!(state.take_alerts(), []);
}

#[test]
fn an_accepted_file_that_waits_for_a_writer_says_so_on_its_card() {
    let mut state = with_den();
    state.apply(offer(DEN, None, false));
    state.accept(OFFER, false);
    state.apply(Event::FileWaiting { id: DEN, transfer: OFFER, name: "holiday.zip".into(), writing: 16 });
    let rows = peer(&state, DEN).chat.rows();
    let card = rows.iter().find_map(|r| r.file()).unwrap();
    assert_eq!(card.state, FileState::Running, "accepted: no Accept button again");
    assert!(card.detail.contains("16 files from this peer are being received"), "{}", card.detail);
}
