//! The window's state without a window: every peersocket as the window
//! shows it (list rows, the selection, each chat with its file cards,
//! unread counts, drafts, key change warnings, trust), the remembered
//! peers and their filter, and the settings the person saved.
//!
//! It applies the engine's [`Event`]s and the person's actions, and writes
//! down what changed ([`Changes`]) for the adapters to show after each
//! batch. It is plain Rust: nothing here imports Slint, touches the window
//! or calls the engine, so it is tested by feeding it events (see
//! `state/tests.rs`). The controller (`controller.rs`) calls the engine and
//! tells this state the outcome; where the state decides something the
//! engine must hear (a key whose files are accepted without asking), its
//! method returns it.
//!
//! A display name is never an identity: what is shown about who is
//! connected (key fingerprint, safety code, verified or not, a changed key)
//! comes from the handshake the engine reports, and only the person's
//! clicks (Mark verified, Trust new key) change it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::nearby::{NearbyChange, NearbyPeer};
use crate::net::{
    frame, Event, KeyPin, KnownPeerInfo, PeerId, PeerIdentity, PeerLink, PeerState, Status, TransferId, Trust,
};

use super::chatlog::{ChatLog, ChatRow, FileCard, FileState, Kind, Seq};
use super::copy;
use super::settings::Settings;
use super::store::{SavedPeer, SavedRow, Store};

/// Settings shows a search box for the known peers past this many (keep in
/// step with `known-total > 4` in ui/views/dialogs.slint).
pub const SEARCH_KNOWN_FROM: usize = 4;

/// Chat rows kept per peersocket; older ones are dropped (with one line
/// saying so), so a flooding peer cannot grow memory without bound.
pub const CHAT_ROWS: usize = 5000;

/// One peersocket as the window shows it.
pub struct Peer {
    pub id: PeerId,
    /// Made by Listen (true) or Connect.
    pub server: bool,
    pub name: String,
    pub status: Status,
    /// Second line in the list.
    pub detail: String,
    /// Why the composer is disabled ("" when connected).
    pub blocked: String,
    /// Header subtitle.
    pub subtitle: String,
    /// Who is connected now, as the handshake proved it (None when nobody is).
    pub identity: Option<PeerIdentity>,
    /// A peer presented another key than before; shown until the person
    /// trusts the new key or dismisses the warning.
    pub key_change: Option<KeyChange>,
    pub unread: u32,
    pub chat: Rc<ChatLog>,
    /// The last connected peer's key fingerprint, for "always accept".
    peer_key: Option<String>,
    /// The code a listener asks for, or a client proves.
    pairing_code: Option<String>,
    /// Where a server peersocket listens, while it waits for a peer.
    listening: Option<SocketAddr>,
    /// Whether other networks reach it (when it asked the router).
    reach: Reach,
    /// What was typed and not sent yet (while another peer is selected).
    draft: String,
    /// Chat row of each transfer, and where a received file went.
    files: HashMap<TransferId, Seq>,
    received: HashMap<TransferId, PathBuf>,
    /// How it is kept on disk (see `store.rs`): its file's name, what it
    /// takes to make it again, and whether the file is up to date.
    store_key: String,
    /// Where it listens, or where it connects.
    address: SocketAddr,
    /// The key a pasted link pinned.
    pin: Option<String>,
    /// It asked the router to forward its port.
    reachable: bool,
    /// The chat's version last kept, and whether anything else changed.
    kept_version: Option<u64>,
    meta_changed: bool,
    /// When a client tries again (while it waits to reconnect), so its
    /// lines count down.
    retry_at: Option<std::time::Instant>,
}

/// A listener's router mapping, as the window shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Not asked for.
    Off,
    /// Asking the router.
    Asking,
    /// Other networks reach it at `external`.
    Mapped { external: SocketAddr, via: &'static str },
    /// Why not.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    pub peer_name: String,
    pub address: SocketAddr,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
}

impl Peer {
    /// How far the connected peer's key is trusted (None: nobody connected).
    pub fn trust(&self) -> Option<Trust> {
        self.identity.as_ref().map(|identity| identity.trust)
    }

    /// What the person should know, or do, about the connected key.
    pub fn trust_note(&self) -> &'static str {
        match &self.identity {
            Some(identity) => copy::trust_note(identity.trust, self.pairing_code.is_some(), self.server),
            None => "",
        }
    }

    /// Shows a state's lines in the list, the composer and the header;
    /// returns the one for the chat.
    fn show(&mut self, lines: copy::StateLines) -> String {
        self.detail = lines.detail;
        self.blocked = lines.blocked;
        self.subtitle = lines.subtitle;
        lines.line
    }

    /// What the link card says of other networks ("" when not asked).
    pub fn reach_note(&self) -> String {
        copy::reach_note(&self.reach)
    }

    /// The key change warning ("" when there is none).
    pub fn key_warning(&self) -> String {
        let Some(c) = &self.key_change else { return String::new() };
        copy::key_warning(&c.peer_name, c.address, &c.old_fingerprint, &c.new_fingerprint, self.server)
    }
}

/// A remembered peer as Settings lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownRow {
    /// Escaped.
    pub name: String,
    pub detail: String,
    pub fingerprint: String,
    pub verified: bool,
    pub always_accept: bool,
}

/// A listener announced on the local network, as Connect's Nearby list
/// shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearbyRow {
    /// Escaped.
    pub name: String,
    /// The address to connect to (the first one announced) and the port.
    pub address: String,
    pub port: u16,
    pub fingerprint: String,
    /// The key's whole pin, for Connect.
    pub pin: String,
    /// What this installation knows of the key (None: never seen).
    pub trust: Option<Trust>,
    pub code_required: bool,
}

/// Nearby rows shown at most (the rest are counted).
pub const NEARBY_ROWS: usize = 6;

/// A desktop notification the window asks for: something new arrived
/// while the window was not in front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub peer: PeerId,
    /// Who (the peersocket's name).
    pub title: String,
    /// What ("hello from the study", "offers holiday.zip (3.0 MB)"),
    /// escaped and cut short.
    pub body: String,
}

/// A change to the "accept files from this key without asking" list, for
/// the engine (which holds the policy) and the settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptFrom {
    pub fingerprint: String,
    pub accept: bool,
}

/// A row added to or removed from the peer list, by its index then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListChange {
    Added(usize),
    Removed(usize),
}

/// What changed since the adapters last looked, where looking at
/// everything would cost. The peer list's rows, the chat header and the
/// selected chat are small or keep their own record (the chat log's
/// moves), so after every batch the adapters show them as they are: the
/// peer list adapter compares each row and tells the view only of those
/// that differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Rows added to or removed from the peer list, in order.
    pub list: Vec<ListChange>,
    /// The remembered peers, or the filter on them.
    pub known: bool,
    /// The display name or the downloads folder.
    pub settings: bool,
    /// The listeners found on the local network.
    pub nearby: bool,
    /// Another peer was selected: its unsent text goes in the composer.
    pub draft: Option<String>,
}

pub struct State {
    peers: Vec<Peer>,
    selected: Option<PeerId>,
    settings: Settings,
    /// The peers whose keys the engine remembers, as it last reported them.
    known: Vec<KnownPeerInfo>,
    /// What Settings' list of known peers is narrowed to (lowercase).
    known_filter: String,
    /// This computer's address as the window shows it (the person may pick
    /// another), for "peers connect to …".
    host_address: String,
    /// This installation's public key, for the links of its listeners.
    own_key: [u8; 32],
    /// Listeners announced on the local network, as found.
    nearby: Vec<NearbyPeer>,
    /// No native file picker was found: the composer offers a path field.
    pub file_picker_missing: bool,
    /// No native folder picker was found: Settings says to type the path.
    pub folder_picker_missing: bool,
    /// Peersockets removed whose kept files are to be deleted.
    forgotten: Vec<String>,
    /// Numbers for restored file cards, counting down from the top so they
    /// never meet the engine's (which count up from 1).
    next_restored: u64,
    /// A problem that belongs to no peersocket (a kept history that could
    /// not be read), shown above the list until dismissed.
    banner: String,
    /// Whether the window is in front (the person sees what arrives).
    focused: bool,
    /// Notifications asked for since the controller last looked, one per
    /// peersocket.
    alerts: Vec<Alert>,
    changes: Changes,
}

impl State {
    pub fn new(settings: Settings) -> State {
        State {
            peers: Vec::new(),
            selected: None,
            settings,
            known: Vec::new(),
            known_filter: String::new(),
            host_address: String::new(),
            own_key: [0; 32],
            nearby: Vec::new(),
            file_picker_missing: false,
            folder_picker_missing: false,
            forgotten: Vec::new(),
            next_restored: u64::MAX,
            banner: String::new(),
            focused: true,
            alerts: Vec::new(),
            // At first everything is new to the window.
            changes: Changes { known: true, settings: true, ..Changes::default() },
        }
    }

    // ----- what the adapters read -------------------------------------------

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    pub fn selected(&self) -> Option<&Peer> {
        self.selected.and_then(|id| self.peer(id))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The window's title: "PeerConn", with the messages and offers not
    /// read yet in other conversations ("(3) PeerConn").
    pub fn window_title(&self) -> String {
        match self.unread() {
            0 => "PeerConn".into(),
            n => format!("({n}) PeerConn"),
        }
    }

    /// Messages and offers not read yet, in every conversation.
    pub fn unread(&self) -> u64 {
        self.peers.iter().map(|p| u64::from(p.unread)).sum()
    }

    /// How many keys are remembered in all.
    pub fn known_total(&self) -> usize {
        self.known.len()
    }

    /// Settings' list of remembered peers: newest first, names escaped,
    /// narrowed by the filter while the search box shows.
    pub fn known_rows(&self) -> Vec<KnownRow> {
        // With fewer peers there is no search box, so a search typed
        // earlier could not be cleared.
        let filter = if self.known.len() > SEARCH_KNOWN_FROM { self.known_filter.as_str() } else { "" };
        self.known
            .iter()
            .rev()
            .filter(|k| known_matches(k, filter))
            .map(|k| KnownRow {
                name: crate::net::printable(&k.name).into_owned(),
                detail: copy::known_detail(&k.fingerprint, k.address.as_deref()),
                fingerprint: k.fingerprint.clone(),
                verified: k.verified,
                always_accept: self.settings.always_accept.contains(&k.fingerprint),
            })
            .collect()
    }

    /// The link a listening peersocket gives out (None unless it waits
    /// for a peer): to the address the host bar shows when it listens on
    /// every interface, with its pairing code.
    pub fn link(&self, peer: &Peer) -> Option<String> {
        let local = peer.listening?;
        // Mapped on the router: the link that works from anywhere.
        if let Reach::Mapped { external, .. } = peer.reach {
            return Some(
                PeerLink::new(external.ip(), external.port(), &self.own_key, peer.pairing_code.as_deref()).to_string(),
            );
        }
        let host = if local.ip().is_unspecified() {
            self.host_address.trim().parse().unwrap_or(local.ip())
        } else {
            local.ip()
        };
        Some(PeerLink::new(host, local.port(), &self.own_key, peer.pairing_code.as_deref()).to_string())
    }

    /// Connect's Nearby list: other installations' listeners, by name,
    /// with what this installation knows of each key (at most
    /// [`NEARBY_ROWS`]; the second value counts the rest).
    pub fn nearby_rows(&self) -> (Vec<NearbyRow>, usize) {
        let own = KeyPin::of(&self.own_key);
        let mut rows: Vec<NearbyRow> = self
            .nearby
            .iter()
            .filter(|p| p.pin != own)
            .filter_map(|p| {
                let address = p.addrs.first()?.to_string();
                let fingerprint = p.fingerprint();
                let trust = self.known.iter().find(|k| k.fingerprint == fingerprint).map(|k| match k.verified {
                    true => Trust::Verified,
                    false => Trust::Known,
                });
                Some(NearbyRow {
                    name: crate::net::printable(&p.name).into_owned(),
                    address,
                    port: p.port,
                    fingerprint,
                    pin: p.pin.to_string(),
                    trust,
                    code_required: p.code_required,
                })
            })
            .collect();
        rows.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.address.cmp(&b.address)));
        let more = rows.len().saturating_sub(NEARBY_ROWS);
        rows.truncate(NEARBY_ROWS);
        (rows, more)
    }

    /// Where a received file went.
    pub fn received_file(&self, transfer: TransferId) -> Option<(PeerId, &Path)> {
        self.peers.iter().find_map(|p| p.received.get(&transfer).map(|path| (p.id, path.as_path())))
    }

    /// A conversation as Save chat writes it, and the file name offered.
    pub fn chat_file(&self, id: PeerId) -> Option<(String, String)> {
        let peer = self.peer(id)?;
        let who = peer.peer_key.as_deref().unwrap_or("peer");
        let name = crate::files::names::safe_name(&copy::chat_file_name(&peer.name))
            .unwrap_or_else(|_| copy::CHAT_FILE.into());
        Some((copy::chat_file(&peer.name, who, &peer.chat.rows()), name))
    }

    // ----- the person's actions ---------------------------------------------

    /// The engine made a server peersocket bound to `bind`; it is selected.
    pub fn listening(&mut self, id: PeerId, name: &str, bind: SocketAddr, code: Option<String>, draft: &str) {
        self.add(id, true, name, bind, code);
        self.select(id, draft);
    }

    /// The engine made a client peersocket; it is selected.
    pub fn connecting(&mut self, id: PeerId, name: &str, remote: SocketAddr, code: Option<String>, draft: &str) {
        self.add(id, false, name, remote, code);
        self.select(id, draft);
    }

    /// What else it takes to make a peersocket again after a restart: the
    /// key a link pinned, and whether it asked the router for its port.
    pub fn made_with(&mut self, id: PeerId, pin: Option<String>, reachable: bool) {
        if let Some(peer) = self.peer_mut(id) {
            peer.pin = pin;
            peer.reachable = reachable;
            peer.meta_changed = true;
        }
    }

    fn add(&mut self, id: PeerId, server: bool, name: &str, address: SocketAddr, code: Option<String>) {
        let detail = if server { copy::listening_soon(address) } else { copy::connecting_soon(address) };
        self.peers.push(Peer {
            id,
            server,
            name: name.to_owned(),
            status: Status::Waiting,
            blocked: detail.clone(),
            subtitle: detail.clone(),
            detail,
            identity: None,
            key_change: None,
            unread: 0,
            chat: Rc::new(ChatLog::new(CHAT_ROWS)),
            peer_key: None,
            pairing_code: code,
            listening: None,
            reach: Reach::Off,
            draft: String::new(),
            files: HashMap::new(),
            received: HashMap::new(),
            store_key: Store::new_key(),
            address,
            pin: None,
            reachable: false,
            kept_version: None,
            meta_changed: true,
            retry_at: None,
        });
        self.changes.list.push(ListChange::Added(self.peers.len() - 1));
    }

    /// A peersocket kept from an earlier run, made again by the engine as
    /// `id`: its conversation comes back (a transfer cut by the restart
    /// says so), under a line saying when it was kept. The first one
    /// restored is selected when nothing is.
    pub fn restore(&mut self, id: PeerId, saved: SavedPeer) {
        self.add(id, saved.server, &saved.name, saved.address, saved.code);
        let i = self.peers.len() - 1;
        for SavedRow { mut row, path } in saved.rows {
            if let Kind::File(card) = &mut row.kind {
                card.transfer = TransferId(self.next_restored);
                self.next_restored -= 1;
                if matches!(card.state, FileState::Offered | FileState::Running) {
                    card.state = FileState::Failed;
                    card.detail = copy::cut_by_restart(card.incoming);
                }
                if let (Some(path), true) = (path, card.incoming && card.state == FileState::Done) {
                    self.peers[i].received.insert(card.transfer, path);
                }
                let transfer = card.transfer;
                let seq = self.peers[i].chat.push(row);
                self.peers[i].files.insert(transfer, seq);
            } else {
                self.peers[i].chat.push(row);
            }
        }
        let peer = &mut self.peers[i];
        peer.store_key = saved.key;
        peer.pin = saved.pin;
        peer.reachable = saved.reachable;
        peer.peer_key = saved.peer_key;
        let line = copy::restored(&saved.saved_at, peer.peer_key.as_deref(), peer.server);
        self.system(i, line);
        if self.selected.is_none() {
            self.select(id, "");
        }
    }

    /// The peersockets whose kept file is out of date, as they are to be
    /// kept now (all of them with `all`); each counts as kept from now
    /// on. Without "keep history" their chats are left out.
    pub fn unsaved(&mut self, saved_at: &str, all: bool) -> Vec<SavedPeer> {
        let keep_rows = self.settings.keep_history;
        let mut out = Vec::new();
        for (order, peer) in self.peers.iter_mut().enumerate() {
            let version = peer.chat.version();
            if !all && !peer.meta_changed && peer.kept_version == Some(version) {
                continue;
            }
            peer.kept_version = Some(version);
            peer.meta_changed = false;
            let rows = match keep_rows {
                true => peer
                    .chat
                    .kept()
                    .into_iter()
                    .map(|row| {
                        let path = match &row.kind {
                            Kind::File(card) => peer.received.get(&card.transfer).cloned(),
                            _ => None,
                        };
                        SavedRow { row, path }
                    })
                    .collect(),
                false => Vec::new(),
            };
            out.push(SavedPeer {
                key: peer.store_key.clone(),
                order: order as u64,
                server: peer.server,
                name: peer.name.clone(),
                address: peer.address,
                code: peer.pairing_code.clone(),
                pin: peer.pin.clone(),
                reachable: peer.reachable,
                peer_key: peer.peer_key.clone(),
                saved_at: saved_at.to_owned(),
                rows,
            });
        }
        out
    }

    /// Every peersocket is written again on the next save.
    pub fn changed_all(&mut self) {
        for peer in &mut self.peers {
            peer.meta_changed = true;
        }
    }

    /// Counts down "reconnecting in 8 s" on the peersockets waiting to try
    /// again. True when a line changed.
    pub fn tick(&mut self, now: std::time::Instant) -> bool {
        let mut changed = false;
        for peer in &mut self.peers {
            let Some(at) = peer.retry_at else { continue };
            let lines = copy::reconnecting(at.saturating_duration_since(now));
            if lines.detail != peer.detail {
                peer.show(lines);
                changed = true;
            }
        }
        changed
    }

    /// The window came to the front or went behind others. In front, the
    /// conversation shown counts as read.
    pub fn set_focused(&mut self, focused: bool) {
        self.focused = focused;
        if let Some(i) = focused.then_some(self.selected).flatten().and_then(|id| self.index(id)) {
            self.peers[i].unread = 0;
        }
    }

    /// The notifications to show (none while the window is in front).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// Something arrived: while the window is behind others, a
    /// notification says so (the second one in a batch says how many).
    fn alert(&mut self, i: usize, body: String) {
        if self.focused {
            return;
        }
        let peer = &self.peers[i];
        let title = crate::net::printable(&peer.name).into_owned();
        match self.alerts.iter_mut().find(|a| a.peer == peer.id) {
            Some(alert) => alert.body = copy::alert_more(peer.unread.saturating_add(1)),
            None => self.alerts.push(Alert { peer: peer.id, title, body }),
        }
    }

    /// The kept files of peersockets removed since the last call.
    pub fn take_forgotten(&mut self) -> Vec<String> {
        std::mem::take(&mut self.forgotten)
    }

    /// Settings' Clear history: every conversation is emptied, on screen
    /// and (on the next save) on disk.
    pub fn clear_history(&mut self) {
        for i in 0..self.peers.len() {
            self.peers[i].chat.clear();
            self.peers[i].files.clear();
            self.peers[i].received.clear();
            self.peers[i].unread = 0;
            self.system(i, copy::HISTORY_CLEARED.into());
        }
    }

    /// Keeping conversations on disk turned on or off (saved).
    pub fn set_keep_history(&mut self, keep: bool) -> bool {
        let changed = self.switch(|s| &mut s.keep_history, keep);
        if changed {
            self.changed_all();
        }
        changed
    }

    /// Closing the window leaves PeerConn in the tray, or quits (saved).
    pub fn set_keep_in_tray(&mut self, keep: bool) -> bool {
        self.switch(|s| &mut s.keep_in_tray, keep)
    }

    /// Turns one of the settings' switches; true when that changed it.
    fn switch(&mut self, which: impl FnOnce(&mut Settings) -> &mut bool, on: bool) -> bool {
        let switch = which(&mut self.settings);
        if *switch == on {
            return false;
        }
        *switch = on;
        self.changes.settings = true;
        true
    }

    /// A problem that belongs to no peersocket, shown above the list.
    pub fn problem(&mut self, text: String) {
        if !self.banner.is_empty() {
            self.banner.push('\n');
        }
        self.banner.push_str(&text);
        self.changes.settings = true;
    }

    pub fn banner(&self) -> &str {
        &self.banner
    }

    pub fn dismiss_banner(&mut self) {
        self.banner.clear();
        self.changes.settings = true;
    }

    /// Selects a peersocket. `draft` is what the composer holds now: it
    /// stays with the peer it was typed for.
    pub fn select(&mut self, id: PeerId, draft: &str) {
        let Some(i) = self.index(id) else { return };
        if self.selected != Some(id) {
            if let Some(old) = self.selected.and_then(|old| self.index(old)) {
                self.peers[old].draft = draft.to_owned();
            }
            self.changes.draft = Some(std::mem::take(&mut self.peers[i].draft));
            self.selected = Some(id);
        }
        self.peers[i].unread = 0;
    }

    /// Moves the selection up (-1) or down (+1) the list.
    pub fn step(&mut self, by: i32, draft: &str) {
        if self.peers.is_empty() {
            return;
        }
        let at = self.selected.and_then(|id| self.index(id)).map_or(-1, |i| i as i64);
        let next = (at + i64::from(by)).clamp(0, self.peers.len() as i64 - 1) as usize;
        self.select(self.peers[next].id, draft);
    }

    /// The engine took the new name.
    pub fn renamed(&mut self, id: PeerId, name: &str) {
        if let Some(i) = self.index(id) {
            self.peers[i].name = name.to_owned();
            self.peers[i].meta_changed = true;
        }
    }

    /// Disconnect was asked for; the engine reports the end.
    pub fn disconnecting(&mut self, id: PeerId) {
        if let Some(peer) = self.peer_mut(id).filter(|p| p.status != Status::Lost) {
            peer.blocked = copy::DISCONNECTING.into();
        }
    }

    /// Whether there is a connected key to mark verified (or not).
    pub fn can_verify(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(|p| p.identity.is_some())
    }

    /// After a key change: the person accepts the peer's new key. True when
    /// there was a change to accept (the engine is then told).
    pub fn trust_new_key(&mut self, id: PeerId) -> bool {
        let Some(i) = self.index(id) else { return false };
        let Some(change) = self.peers[i].key_change.take() else { return false };
        let line = copy::trusted_new_key(&change.peer_name, &change.new_fingerprint, self.peers[i].server);
        self.system(i, line);
        true
    }

    /// Hides a key change warning without trusting the new key.
    pub fn dismiss_key_warning(&mut self, id: PeerId) {
        if let Some(i) = self.index(id) {
            self.peers[i].key_change = None;
        }
    }

    /// The composer's text as it is to be sent to the selected peer, or
    /// None (nothing selected, nothing but blank lines).
    pub fn outgoing(&self, text: &str) -> Option<(PeerId, String)> {
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return None;
        }
        Some((self.selected?, text.to_owned()))
    }

    /// The engine took a message.
    pub fn sent(&mut self, id: PeerId, text: &str) {
        if let Some(i) = self.index(id) {
            self.peers[i].chat.push(ChatRow::new(Kind::Mine, text));
        }
    }

    /// A line from the window itself in a peersocket's chat ("Not sent: …",
    /// a saved chat).
    pub fn notice(&mut self, id: PeerId, text: String) {
        if let Some(i) = self.index(id) {
            self.system(i, text);
        }
    }

    /// Accepts an offer; with `always`, this peer's files are accepted
    /// without asking from now on (returned, for the engine).
    pub fn accept(&mut self, transfer: TransferId, always: bool) -> Option<AcceptFrom> {
        let key = self.peers.iter().find(|p| p.files.contains_key(&transfer)).and_then(|p| p.peer_key.clone());
        self.update_file(transfer, |card| {
            card.state = FileState::Running;
            card.detail = copy::STARTING.into();
        });
        if !always {
            return None;
        }
        self.set_always_accept(&key?, true)
    }

    /// One key's files accepted without asking, or asked about again.
    /// Returns the change, if it is one.
    pub fn set_always_accept(&mut self, fingerprint: &str, always: bool) -> Option<AcceptFrom> {
        let has = self.settings.always_accept.iter().any(|k| k == fingerprint);
        if has == always {
            return None;
        }
        if always {
            self.settings.always_accept.push(fingerprint.to_owned());
        } else {
            self.settings.always_accept.retain(|k| k != fingerprint);
        }
        self.changes.known = true;
        Some(AcceptFrom { fingerprint: fingerprint.to_owned(), accept: always })
    }

    /// The engine forgets a key: a peer still connected with it is no
    /// longer verified, and its files are asked about again.
    pub fn forget_key(&mut self, fingerprint: &str) -> Option<AcceptFrom> {
        for i in 0..self.peers.len() {
            let Some(identity) = self.peers[i].identity.as_mut() else { continue };
            if identity.fingerprint == fingerprint {
                identity.trust = Trust::New;
                self.system(i, copy::forgot_key(fingerprint));
            }
        }
        self.set_always_accept(fingerprint, false)
    }

    /// Settings' Save: checks the form, then keeps it (the caller saves the
    /// file and tells the engine the downloads folder).
    pub fn change_settings(&mut self, name: &str, downloads: &str) -> Result<(), String> {
        let name = name.trim();
        frame::check_name(name).map_err(|why| copy::bad_display_name(&why))?;
        let downloads = downloads.trim();
        if downloads.is_empty() {
            return Err(copy::NO_DOWNLOADS.into());
        }
        self.settings.display_name = name.to_owned();
        self.settings.downloads = PathBuf::from(downloads);
        self.changes.settings = true;
        Ok(())
    }

    /// Shows only the remembered peers whose name, key or address contains
    /// `filter` (any case; "" shows them all).
    pub fn filter_known(&mut self, filter: &str) {
        self.known_filter = filter.trim().to_lowercase();
        self.changes.known = true;
    }

    /// Announcing on the local network turned on or off (saved).
    pub fn set_announce(&mut self, announce: bool) -> bool {
        self.switch(|s| &mut s.announce, announce)
    }

    /// A listener's router mapping: being asked for, granted, or refused.
    /// The chat says so once.
    pub fn reach(&mut self, id: PeerId, reach: Reach) {
        let Some(i) = self.index(id) else { return };
        if self.peers[i].reach == reach {
            return;
        }
        let line = copy::reach_line(&reach);
        self.peers[i].reach = reach;
        if let Some(line) = line {
            self.system(i, line);
        }
    }

    /// A listener appeared on the local network, changed, or left.
    pub fn nearby(&mut self, change: NearbyChange) {
        match change {
            NearbyChange::Found(peer) => match self.nearby.iter_mut().find(|p| p.instance == peer.instance) {
                Some(known) => *known = peer,
                None => self.nearby.push(peer),
            },
            NearbyChange::Gone { instance } => self.nearby.retain(|p| p.instance != instance),
        }
        self.changes.nearby = true;
    }

    /// The key this installation's links pin.
    pub fn set_own_key(&mut self, key: [u8; 32]) {
        self.own_key = key;
    }

    /// The address the window shows for this computer.
    pub fn set_host_address(&mut self, address: &str) {
        address.clone_into(&mut self.host_address);
    }

    // ----- events from the engine -------------------------------------------

    pub fn apply(&mut self, event: Event) {
        if let Event::KnownPeers { peers } = event {
            self.known = peers;
            self.changes.known = true;
            return;
        }
        let Some(i) = event.id().and_then(|id| self.index(id)) else { return };
        match event {
            Event::State { state, .. } => self.state(i, state),
            Event::Message { text, .. } => {
                let text = copy::message(&text);
                self.alert(i, copy::alert_message(&text));
                self.peers[i].chat.push(ChatRow::new(Kind::Theirs, text));
                self.count_unread(i);
            }
            Event::Error { reason, .. } => self.system(i, reason),
            Event::Reconnecting { after, .. } => {
                let lines = copy::reconnecting(after);
                let peer = &mut self.peers[i];
                peer.retry_at = Some(std::time::Instant::now() + after);
                peer.status = Status::Waiting;
                let line = peer.show(lines);
                self.system(i, line);
            }
            Event::KeyChanged { peer_name, address, old_fingerprint, new_fingerprint, .. } => {
                let server = self.peers[i].server;
                self.system(i, copy::key_changed_line(&peer_name, address, &old_fingerprint, &new_fingerprint, server));
                self.peers[i].key_change = Some(KeyChange { peer_name, address, old_fingerprint, new_fingerprint });
            }
            Event::Trust { trust, .. } => {
                let Some(identity) = self.peers[i].identity.as_mut() else { return };
                identity.trust = trust;
                let line = copy::marked(&identity.fingerprint, trust.is_verified());
                self.system(i, line);
            }
            Event::KnownPeers { .. } => {} // taken above
            Event::Renamed { name, .. } => {
                self.peers[i].name = name;
                self.peers[i].meta_changed = true;
            }
            Event::Removed { id } => {
                let peer = self.peers.remove(i);
                self.forgotten.push(peer.store_key);
                self.changes.list.push(ListChange::Removed(i));
                if self.selected == Some(id) {
                    self.selected = None;
                }
            }
            Event::FileOutgoing { transfer, name, size, folder, .. } => {
                self.add_file(i, transfer, &copy::offered_name(&name, folder), size, false);
                self.update_file(transfer, |card| card.folder = folder.is_some());
            }
            Event::FileIncoming { transfer, name, size, refused, accepted, folder, .. } => {
                self.add_file(i, transfer, &copy::offered_name(&name, folder), size, true);
                self.update_file(transfer, |card| card.folder = folder.is_some());
                if let Some(reason) = refused {
                    // Already declined: never shown with Accept, even for a
                    // moment; the failure that follows says why.
                    self.update_file(transfer, |card| {
                        card.state = FileState::Failed;
                        card.detail = reason;
                    });
                } else if accepted {
                    // The engine accepted it (files from this key are
                    // accepted without asking): never shown with Accept.
                    self.update_file(transfer, |card| {
                        card.state = FileState::Running;
                        card.detail = copy::STARTING.into();
                    });
                } else {
                    self.alert(i, copy::alert_offer(&copy::offered_name(&name, folder), size));
                    self.count_unread(i);
                }
            }
            Event::FileProgress { transfer, bytes, total, bytes_per_sec, eta, files, .. } => {
                self.update_file(transfer, |card| {
                    card.state = FileState::Running;
                    card.moving.get_or_insert((std::time::Instant::now(), 0));
                    card.progress = if total == 0 { 1.0 } else { bytes as f32 / total as f32 };
                    let mut speed = copy::speed(bytes_per_sec, eta.map(|d| d.as_secs()));
                    if let Some((done, of)) = files {
                        speed = format!("{} · {speed}", copy::file_of(done, of));
                    }
                    card.detail = match &card.resumed {
                        Some(note) => format!("{note} · {speed}"),
                        None => speed,
                    };
                });
            }
            Event::FileResumed { transfer, offset, size, discarded, .. } => {
                let note = copy::resumed(offset, size, discarded);
                self.update_file(transfer, |card| {
                    card.state = FileState::Running;
                    card.progress = if size == 0 { 1.0 } else { offset as f32 / size as f32 };
                    card.detail = note.clone();
                    card.resumed = Some(note);
                    card.moving = Some((std::time::Instant::now(), offset));
                });
            }
            Event::FileWaiting { transfer, writing, .. } => self.update_file(transfer, |card| {
                card.state = FileState::Running;
                card.detail = copy::waiting_for_writer(writing);
            }),
            Event::FileSent { transfer, size, .. } => self.update_file(transfer, |card| {
                card.state = FileState::Done;
                card.progress = 1.0;
                card.detail = format!("{}{}", copy::SENT_AND_VERIFIED, copy::took(size, card.moving));
            }),
            Event::FileReceived { transfer, path, size, .. } => {
                let detail = copy::saved_as(&path);
                self.peers[i].received.insert(transfer, path);
                self.update_file(transfer, |card| {
                    card.state = FileState::Done;
                    card.progress = 1.0;
                    card.detail = format!("{detail} · verified (BLAKE3){}", copy::took(size, card.moving));
                });
            }
            Event::FileFailed { transfer, name, reason, .. } => {
                if !self.peers[i].files.contains_key(&transfer) {
                    self.add_file(i, transfer, &name, 0, false);
                }
                self.update_file(transfer, |card| {
                    card.state = FileState::Failed;
                    card.detail = reason;
                });
            }
        }
    }

    fn state(&mut self, i: usize, state: PeerState) {
        let peer = &mut self.peers[i];
        peer.retry_at = None;
        let lines = match &state {
            PeerState::Listening { local } => {
                // Bound to "any port": kept with the one it got, so links
                // given out still work after a restart.
                if peer.address.port() == 0 {
                    peer.address.set_port(local.port());
                    peer.meta_changed = true;
                }
                copy::listening(*local, &copy::reach(*local, &self.host_address), peer.pairing_code.as_deref())
            }
            PeerState::Connecting { remote } => {
                // A client tries again: a key change is reported afresh if
                // the key is still not the one remembered.
                peer.key_change = None;
                copy::connecting(*remote)
            }
            PeerState::Connected { peer_name, peer_addr, peer: identity, .. } => {
                peer.peer_key = Some(identity.fingerprint.clone());
                peer.meta_changed = true;
                // A peer with a key we trust got through.
                peer.key_change = None;
                copy::connected(peer_name, *peer_addr, identity)
            }
            PeerState::Lost { .. } if !peer.server && peer.key_change.is_some() => copy::stopped_by_key_change(),
            PeerState::Lost { reason, .. } => copy::lost(reason, peer.server),
        };
        peer.status = state.status();
        peer.listening = match &state {
            PeerState::Listening { local } => Some(*local),
            _ => None,
        };
        peer.identity = match state {
            PeerState::Connected { peer, .. } => Some(peer),
            _ => None,
        };
        let line = peer.show(lines);
        self.system(i, line);
    }

    // ----- helpers ----------------------------------------------------------

    fn index(&self, id: PeerId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    /// Something new to read in a chat that is not the one shown.
    fn count_unread(&mut self, i: usize) {
        if self.selected != Some(self.peers[i].id) || !self.focused {
            self.peers[i].unread = self.peers[i].unread.saturating_add(1);
        }
    }

    fn system(&mut self, i: usize, text: String) {
        self.peers[i].chat.push(ChatRow::new(Kind::System, text));
    }

    fn add_file(&mut self, i: usize, transfer: TransferId, name: &str, size: u64, incoming: bool) {
        let peer = &mut self.peers[i];
        // Forget transfers whose cards were dropped from the chat, so these
        // maps stay as bounded as the chat.
        let chat = peer.chat.clone();
        peer.files.retain(|_, seq| chat.holds(*seq));
        let files = &peer.files;
        peer.received.retain(|t, _| files.contains_key(t));
        let card = FileCard {
            transfer,
            incoming,
            size,
            progress: 0.0,
            detail: String::new(),
            state: FileState::Offered,
            resumed: None,
            folder: false,
            moving: None,
        };
        let seq = peer.chat.push(ChatRow::new(Kind::File(card), name));
        peer.files.insert(transfer, seq);
    }

    fn update_file(&mut self, transfer: TransferId, change: impl FnOnce(&mut FileCard)) {
        let Some(peer) = self.peers.iter().find(|p| p.files.contains_key(&transfer)) else { return };
        peer.chat.update(peer.files[&transfer], |row| {
            if let Kind::File(card) = &mut row.kind {
                change(card);
            }
        });
    }
}

/// Whether a remembered peer's name, key or address contains `filter`
/// (already lowercase; "" matches every peer).
fn known_matches(peer: &KnownPeerInfo, filter: &str) -> bool {
    filter.is_empty()
        || [Some(&peer.name), Some(&peer.fingerprint), peer.address.as_ref()]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(filter))
}

#[cfg(test)]
mod tests;
