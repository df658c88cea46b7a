//! The window's state: every peersocket with its chat, mapped from engine
//! events to the Slint models in one place.
//!
//! A display name is never an identity: what the window shows about who is
//! connected (key fingerprint, safety code, verified or not, a changed key)
//! comes from the handshake the engine reports, and only the person's
//! clicks (Mark verified, Trust new key) change it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

use slint::{ComponentHandle, Model, SharedString, VecModel, Weak};

use crate::files::human_size;
use crate::net::{
    frame, printable, Engine, Event, KnownPeerInfo, ListenOptions, PeerId, PeerIdentity, PeerState, Status, TransferId,
    Trust,
};

use super::chatlog::{now, ChatLog, Seq, FILE, MINE, SYSTEM, THEIRS};
use super::settings::Settings;
use super::{AppWindow, ChatAdapter, ChatItem, HostAdapter, KnownPeerItem, PeerAdapter, PeerItem};

/// Events handled per timer tick, so a flood never freezes the window.
const EVENTS_PER_TICK: usize = 5000;
/// Settings shows a search box for the known peers past this many (keep in
/// step with `known-total > 4` in ui/views/dialogs.slint).
const SEARCH_KNOWN_FROM: usize = 4;

/// Chat rows kept per peersocket; older ones are dropped (with one line
/// saying so), so a flooding peer cannot grow memory without bound.
pub const CHAT_ROWS: usize = 5000;

const OFFERED: i32 = 0;
const RUNNING: i32 = 1;
const DONE: i32 = 2;
const FAILED: i32 = 3;

struct Peer {
    id: PeerId,
    server: bool,
    name: String,
    status: Status,
    /// Second line in the list.
    detail: String,
    /// Why the composer is disabled ("" when connected).
    blocked: String,
    /// Header subtitle.
    subtitle: String,
    /// The last connected peer's key fingerprint, for "always accept".
    peer_key: Option<String>,
    /// Who is connected now, as the handshake proved it (None when nobody is).
    identity: Option<PeerIdentity>,
    /// The code a listener asks for, or a client proves.
    pairing_code: Option<String>,
    /// A peer presented another key than before; shown until the person
    /// trusts the new key or dismisses the warning.
    key_change: Option<KeyChange>,
    /// What was typed and not sent yet.
    draft: String,
    unread: i32,
    chat: Rc<ChatLog>,
    /// Chat row of each transfer, and where a received file went.
    files: HashMap<TransferId, Seq>,
    received: HashMap<TransferId, PathBuf>,
}

struct KeyChange {
    peer_name: String,
    address: SocketAddr,
    old_fingerprint: String,
    new_fingerprint: String,
}

/// `PeerItem::trust` and `ChatAdapter::trust`.
const NO_PEER: i32 = 0;
const UNVERIFIED: i32 = 1;
const VERIFIED: i32 = 2;

pub struct Peersockets {
    engine: Engine,
    window: Weak<AppWindow>,
    settings: Settings,
    peers: Vec<Peer>,
    list: Rc<VecModel<PeerItem>>,
    selected: Option<PeerId>,
    empty_chat: Rc<VecModel<ChatItem>>,
    /// The peers whose keys the engine remembers, as it last reported them.
    known: Vec<KnownPeerInfo>,
    known_model: Rc<VecModel<KnownPeerItem>>,
    /// What Settings' list of known peers is narrowed to (lowercase).
    known_filter: String,
}

fn transfer_id(n: i32) -> TransferId {
    TransferId(n as u64)
}

impl Peersockets {
    pub fn new(engine: Engine, window: Weak<AppWindow>, settings: Settings) -> Peersockets {
        // The engine accepts these peers' files by itself.
        for fingerprint in &settings.always_accept {
            engine.accept_files_from(fingerprint, true);
        }
        Peersockets {
            engine,
            window,
            settings,
            peers: Vec::new(),
            list: Rc::new(VecModel::default()),
            selected: None,
            empty_chat: Rc::new(VecModel::default()),
            known: Vec::new(),
            known_model: Rc::new(VecModel::default()),
            known_filter: String::new(),
        }
    }

    pub fn known_model(&self) -> slint::ModelRc<KnownPeerItem> {
        self.known_model.clone().into()
    }

    pub fn peer_model(&self) -> slint::ModelRc<PeerItem> {
        self.list.clone().into()
    }

    fn index(&self, id: PeerId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id)
    }

    // ----- commands from the UI ---------------------------------------------

    /// This installation's key fingerprint.
    pub fn fingerprint(&self) -> &str {
        self.engine.fingerprint()
    }

    /// A server peersocket; with a pairing code, only a peer that knows it
    /// may connect (and is then verified).
    pub fn listen(&mut self, name: &str, bind: SocketAddr, code: Option<String>) -> Result<(), String> {
        let options = ListenOptions { pairing_code: code.clone(), ..ListenOptions::default() };
        let id = self.engine.listen(name, bind, options).map_err(|e| format!("Name: {e}."))?;
        self.add(id, true, name, format!("listening on {bind}…"), code);
        Ok(())
    }

    pub fn connect(&mut self, name: &str, remote: SocketAddr, code: Option<String>) -> Result<(), String> {
        let id = self.engine.connect_with_code(name, remote, code.as_deref()).map_err(|e| format!("{e}."))?;
        self.add(id, false, name, format!("connecting to {remote}…"), code);
        Ok(())
    }

    fn add(&mut self, id: PeerId, server: bool, name: &str, detail: String, pairing_code: Option<String>) {
        self.peers.push(Peer {
            id,
            server,
            name: name.to_owned(),
            status: Status::Waiting,
            blocked: detail.clone(),
            subtitle: detail.clone(),
            detail,
            peer_key: None,
            identity: None,
            pairing_code,
            key_change: None,
            draft: String::new(),
            unread: 0,
            chat: Rc::new(ChatLog::new(CHAT_ROWS)),
            files: HashMap::new(),
            received: HashMap::new(),
        });
        self.list.push(self.item(self.peers.len() - 1));
        self.select(id.0 as i32);
    }

    pub fn select(&mut self, id: i32) {
        let id = PeerId(id as u64);
        // Each conversation keeps its own unsent text.
        if let (Some(window), Some(old)) = (self.window.upgrade(), self.selected) {
            if old != id {
                let draft = window.global::<ChatAdapter>().get_draft().to_string();
                let new = self.index(id).map(|i| self.peers[i].draft.clone()).unwrap_or_default();
                if let Some(peer) = self.peer_mut(old) {
                    peer.draft = draft;
                }
                window.global::<ChatAdapter>().set_draft(new.into());
            }
        }
        if let Some(i) = self.index(id) {
            self.selected = Some(id);
            self.peers[i].unread = 0;
            self.list.set_row_data(i, self.item(i));
        }
        self.refresh_chat();
    }

    /// Moves the selection up or down the list.
    pub fn step(&mut self, by: i32) {
        if self.peers.is_empty() {
            return;
        }
        let at = self.selected.and_then(|id| self.index(id)).map_or(-1, |i| i as i64);
        let next = (at + by as i64).clamp(0, self.peers.len() as i64 - 1) as usize;
        self.select(self.peers[next].id.0 as i32);
    }

    pub fn rename(&mut self, id: i32, name: &str) -> Result<(), String> {
        let id = PeerId(id as u64);
        self.engine.rename(id, name).map_err(|e| format!("{e}."))?;
        if let Some(i) = self.index(id) {
            self.peers[i].name = name.to_owned();
            self.list.set_row_data(i, self.item(i));
        }
        self.refresh_chat();
        Ok(())
    }

    pub fn disconnect(&mut self, id: i32) {
        let id = PeerId(id as u64);
        self.engine.disconnect(id);
        if let Some(peer) = self.peer_mut(id) {
            if peer.status != Status::Lost {
                peer.blocked = "Disconnecting…".into();
            }
        }
        self.refresh_chat();
    }

    pub fn restart(&mut self, id: i32) {
        self.engine.restart(PeerId(id as u64));
    }

    pub fn remove(&mut self, id: i32) {
        self.engine.remove(PeerId(id as u64));
    }

    /// The person compared the safety code with the peer (or takes that
    /// back). The engine confirms with a `Trust` event.
    pub fn set_verified(&mut self, id: i32, verified: bool) {
        let id = PeerId(id as u64);
        if self.index(id).is_some_and(|i| self.peers[i].identity.is_some()) {
            self.engine.set_verified(id, verified);
        }
    }

    /// After a key change: the person accepts the peer's new key.
    pub fn trust_new_key(&mut self, id: i32) {
        let id = PeerId(id as u64);
        let Some(i) = self.index(id) else { return };
        let Some(change) = self.peers[i].key_change.take() else { return };
        self.engine.trust_new_key(id);
        let then = if self.peers[i].server { "They can connect again now." } else { "PeerConn reconnects." };
        self.system(
            id,
            &format!(
                "You trusted the new key {} for \"{}\". {then} Once connected, compare the safety code with them.",
                change.new_fingerprint,
                printable(&change.peer_name)
            ),
        );
        self.list.set_row_data(i, self.item(i));
        self.refresh_chat();
    }

    /// Hides a key change warning without trusting the new key.
    pub fn dismiss_key_warning(&mut self, id: i32) {
        let id = PeerId(id as u64);
        let Some(i) = self.index(id) else { return };
        if self.peers[i].key_change.take().is_some() {
            self.list.set_row_data(i, self.item(i));
            self.refresh_chat();
        }
    }

    /// Sends the composer's text; false keeps it in the composer.
    pub fn send_text(&mut self, text: &str) -> bool {
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return false;
        }
        let Some(id) = self.selected else { return false };
        match self.engine.send_text(id, text) {
            Ok(()) => {
                self.push_chat(id, ChatItem { kind: MINE, text: text.into(), time: now(), ..Default::default() });
                true
            }
            Err(e) => {
                self.system(id, &format!("Not sent: {e}."));
                false
            }
        }
    }

    pub fn send_path(&mut self, path: &str) {
        if let Some(id) = self.selected {
            self.send_path_to(id.0 as i32, path);
        }
    }

    pub fn send_path_to(&mut self, id: i32, path: &str) {
        if !path.is_empty() && self.index(PeerId(id as u64)).is_some() {
            self.engine.send_file(PeerId(id as u64), PathBuf::from(path));
        }
    }

    /// Opens the native file picker on a worker thread; the files chosen are
    /// sent from the UI thread afterwards.
    pub fn pick_files(&self) {
        let Some(id) = self.selected else { return };
        let window = self.window.clone();
        let spawned = std::thread::Builder::new().name("peerconn-picker".into()).spawn(move || {
            let picked = native_dialog::DialogBuilder::file().set_title("Send files").open_multiple_file().show();
            let _ = slint::invoke_from_event_loop(move || {
                let Some(window) = window.upgrade() else { return };
                match picked {
                    Ok(paths) => {
                        let chat = window.global::<ChatAdapter>();
                        for path in paths {
                            chat.invoke_send_path_to(id.0 as i32, path.display().to_string().into());
                        }
                    }
                    Err(e) => {
                        log::warn!("no file picker: {e}");
                        window.global::<ChatAdapter>().set_picker_missing(true);
                    }
                }
            });
        });
        if let Err(e) = spawned {
            log::error!("cannot open the file picker: {e}");
        }
    }

    pub fn pick_downloads(&self) {
        let window = self.window.clone();
        let start = self.settings.downloads.clone();
        let _ = std::thread::Builder::new().name("peerconn-picker".into()).spawn(move || {
            let picked = native_dialog::DialogBuilder::file()
                .set_title("Downloads folder")
                .set_location(&start)
                .open_single_dir()
                .show();
            let _ = slint::invoke_from_event_loop(move || match (window.upgrade(), picked) {
                (Some(window), Ok(Some(dir))) => {
                    window.global::<HostAdapter>().set_downloads_draft(dir.display().to_string().into());
                }
                (Some(window), Err(e)) => {
                    log::warn!("no folder picker: {e}");
                    window.global::<HostAdapter>().set_picker_problem(
                        "No folder picker was found (zenity or kdialog): type the folder's path.".into(),
                    );
                }
                _ => {}
            });
        });
    }

    pub fn save_settings(&mut self, name: &str, downloads: &str) -> Result<(), String> {
        let name = name.trim();
        frame::check_name(name).map_err(|why| format!("Display name: {why}."))?;
        let downloads = downloads.trim();
        if downloads.is_empty() {
            return Err("Downloads folder: choose a folder.".into());
        }
        self.settings.display_name = name.to_owned();
        self.settings.downloads = PathBuf::from(downloads);
        self.settings.save();
        self.engine.set_downloads(&self.settings.downloads);
        self.show_settings();
        Ok(())
    }

    pub fn show_settings(&self) {
        if let Some(window) = self.window.upgrade() {
            let host = window.global::<HostAdapter>();
            host.set_display_name(self.settings.display_name.clone().into());
            host.set_downloads(self.settings.downloads.display().to_string().into());
        }
        self.show_known();
    }

    /// Shows only the remembered peers whose name, key or address contains
    /// `filter` (any case; "" shows them all).
    pub fn filter_known(&mut self, filter: &str) {
        self.known_filter = filter.trim().to_lowercase();
        self.show_known();
    }

    /// Settings' list of remembered peers: newest first, names escaped.
    fn show_known(&self) {
        // The search box shows past SEARCH_KNOWN_FROM peers (dialogs.slint):
        // with fewer, a search typed earlier could not be cleared.
        let filter = if self.known.len() > SEARCH_KNOWN_FROM { &self.known_filter } else { "" };
        let matches = |k: &&KnownPeerInfo| known_matches(k, filter);
        if let Some(window) = self.window.upgrade() {
            window.global::<HostAdapter>().set_known_total(self.known.len().try_into().unwrap_or(i32::MAX));
        }
        let items: Vec<KnownPeerItem> = self
            .known
            .iter()
            .rev()
            .filter(matches)
            .map(|k| KnownPeerItem {
                name: printable(&k.name).into_owned().into(),
                detail: match &k.address {
                    Some(address) => format!("key {} · at {}", k.fingerprint, printable(address)),
                    None => format!("key {}", k.fingerprint),
                }
                .into(),
                fingerprint: k.fingerprint.clone().into(),
                verified: k.verified,
                always_accept: self.settings.always_accept.contains(&k.fingerprint),
            })
            .collect();
        self.known_model.set_vec(items);
    }

    /// Forgets a remembered key (and stops accepting its files without
    /// asking): its next connection is trusted on first use again.
    pub fn forget_key(&mut self, fingerprint: &str) {
        self.engine.forget_key(fingerprint);
        // A peer still connected with that key is no longer verified.
        for i in 0..self.peers.len() {
            let Some(identity) = self.peers[i].identity.as_mut() else { continue };
            if identity.fingerprint == fingerprint {
                identity.trust = Trust::New;
                let id = self.peers[i].id;
                self.list.set_row_data(i, self.item(i));
                self.system(
                    id,
                    &format!("You forgot the key {fingerprint}; its next connection is trusted on first use."),
                );
            }
        }
        if self.settings.always_accept.iter().any(|k| k == fingerprint) {
            self.settings.always_accept.retain(|k| k != fingerprint);
            self.engine.accept_files_from(fingerprint, false);
            self.settings.save();
            self.show_settings();
        }
    }

    /// One peer's files accepted without asking, or asked about again.
    pub fn set_always_accept(&mut self, fingerprint: &str, always: bool) {
        let has = self.settings.always_accept.iter().any(|k| k == fingerprint);
        if has == always {
            return;
        }
        if always {
            self.settings.always_accept.push(fingerprint.to_owned());
        } else {
            self.settings.always_accept.retain(|k| k != fingerprint);
        }
        self.engine.accept_files_from(fingerprint, always);
        self.settings.save();
        self.show_settings();
    }

    pub fn accept(&mut self, transfer: i32, always: bool) {
        let t = transfer_id(transfer);
        if always {
            let key = self.peers.iter().find(|p| p.files.contains_key(&t)).and_then(|p| p.peer_key.clone());
            if let Some(key) = key {
                if !self.settings.always_accept.contains(&key) {
                    self.engine.accept_files_from(&key, true);
                    self.settings.always_accept.push(key);
                    self.settings.save();
                    self.show_settings();
                }
            }
        }
        self.engine.accept_file(t);
        self.update_file(t, |item| {
            item.state = RUNNING;
            item.detail = "starting…".into();
        });
    }

    pub fn decline(&mut self, transfer: i32) {
        self.engine.decline_file(transfer_id(transfer));
    }

    pub fn cancel(&mut self, transfer: i32) {
        self.engine.cancel_file(transfer_id(transfer));
    }

    pub fn open_folder(&self, transfer: i32) {
        let t = transfer_id(transfer);
        let Some(path) = self.peers.iter().find_map(|p| p.received.get(&t)) else { return };
        let folder = path.parent().unwrap_or(path).to_path_buf();
        #[cfg(windows)]
        let result = {
            use std::os::windows::process::CommandExt;
            // Explorer wants the quotes around the path only, not the switch.
            std::process::Command::new("explorer").raw_arg(format!("/select,\"{}\"", path.display())).spawn()
        };
        #[cfg(not(windows))]
        let result = if cfg!(target_os = "macos") {
            std::process::Command::new("open").arg("-R").arg(path).spawn()
        } else {
            std::process::Command::new("xdg-open").arg(&folder).spawn()
        };
        match result {
            // Reaped on a thread of its own, so no zombie is left behind.
            Ok(mut child) => {
                let _ = std::thread::Builder::new().name("peerconn-open".into()).spawn(move || child.wait());
            }
            Err(e) => log::warn!("cannot open {}: {e}", folder.display()),
        }
    }

    /// Writes the selected conversation to a text file the person picks.
    pub fn save_chat(&self, id: i32) {
        let Some(peer) = self.peers.iter().find(|p| p.id.0 == id as u64) else { return };
        let mut text = format!("PeerConn conversation: {}\n\n", peer.name);
        for item in peer.chat.iter() {
            let who = match item.kind {
                MINE => "me".to_owned(),
                THEIRS => peer.peer_key.clone().unwrap_or_else(|| "peer".into()),
                FILE => "file".to_owned(),
                _ => "--".to_owned(),
            };
            // Continuation lines are indented, so a message cannot forge a line.
            let body = item.text.replace('\n', "\n    ");
            text.push_str(&format!("[{}] {who}: {body}\n", item.time));
        }
        let name =
            crate::files::names::safe_name(&format!("{} chat.txt", peer.name)).unwrap_or_else(|_| "chat.txt".into());
        let downloads = self.settings.downloads.clone();
        let window = self.window.clone();
        let _ = std::thread::Builder::new().name("peerconn-save".into()).spawn(move || {
            let picked = native_dialog::DialogBuilder::file()
                .set_title("Save chat")
                .set_filename(&name)
                .save_single_file()
                .show();
            let (path, how) = match picked {
                Ok(Some(path)) => (path, "Chat saved as"),
                Ok(None) => return,
                // No picker: the downloads folder, under a name not yet taken.
                Err(e) => {
                    log::warn!("no file picker to save the chat: {e}");
                    let (stem, ext) = crate::files::names::split_extension(&name);
                    let free = (0..1000)
                        .map(|n| if n == 0 { name.clone() } else { format!("{stem} ({n}){ext}") })
                        .map(|n| downloads.join(n))
                        .find(|p| !p.exists());
                    match free {
                        Some(path) => (path, "No file picker was found; the chat was saved as"),
                        None => return,
                    }
                }
            };
            let line = match std::fs::create_dir_all(path.parent().unwrap_or(&path))
                .and_then(|_| std::fs::write(&path, text))
            {
                Ok(()) => format!("{how} {}.", path.display()),
                Err(e) => format!("The chat could not be saved to {}: {e}.", path.display()),
            };
            log::info!("{line}");
            let _ = slint::invoke_from_event_loop(move || {
                if let Some(window) = window.upgrade() {
                    window.global::<ChatAdapter>().invoke_notice(id, line.into());
                }
            });
        });
    }

    /// A line from the window itself in a peersocket's chat.
    pub fn notice(&mut self, id: i32, text: &str) {
        self.system(PeerId(id as u64), text);
    }

    // ----- events from the engine ---------------------------------------------

    /// Called by the timer: applies what the engine reported.
    pub fn drain(&mut self) {
        let events: Vec<Event> = self.engine.events().try_iter().take(EVENTS_PER_TICK).collect();
        if events.is_empty() {
            return;
        }
        for event in events {
            self.apply(event);
        }
        self.refresh_chat();
    }

    fn apply(&mut self, event: Event) {
        let Event::KnownPeers { peers } = event else {
            return self.apply_to_peersocket(event);
        };
        self.known = peers;
        self.show_known();
    }

    fn apply_to_peersocket(&mut self, event: Event) {
        let Some(id) = event.id() else { return };
        let Some(i) = self.index(id) else { return };
        match event {
            Event::State { state, .. } => self.state(i, state),
            Event::Message { text, .. } => {
                let text = shown(&text);
                self.push_chat(id, ChatItem { kind: THEIRS, text: text.into(), time: now(), ..Default::default() });
                if self.selected != Some(id) {
                    self.peers[i].unread += 1;
                    self.list.set_row_data(i, self.item(i));
                }
            }
            Event::Error { reason, .. } => self.system(id, &reason),
            Event::KeyChanged { peer_name, address, old_fingerprint, new_fingerprint, .. } => {
                let again = if self.peers[i].server { "it connects again" } else { "PeerConn reconnects" };
                let text = format!(
                    "⚠ Key changed: \"{}\" at {address} presented the key {new_fingerprint}, not {old_fingerprint} \
                     as before. Nothing was exchanged. It may have reinstalled PeerConn, or someone may be in \
                     between. Ask them, by voice, for their key; if it is {new_fingerprint}, right-click this \
                     peersocket and choose Trust new key ({again}).",
                    printable(&peer_name)
                );
                self.system(id, &text);
                self.peers[i].key_change = Some(KeyChange { peer_name, address, old_fingerprint, new_fingerprint });
                self.list.set_row_data(i, self.item(i));
            }
            Event::Trust { trust, .. } => {
                let Some(identity) = self.peers[i].identity.as_mut() else { return };
                identity.trust = trust;
                let line = if trust.is_verified() {
                    format!("You marked the key {} verified.", identity.fingerprint)
                } else {
                    format!("The key {} is no longer marked verified.", identity.fingerprint)
                };
                self.list.set_row_data(i, self.item(i));
                self.system(id, &line);
            }
            Event::KnownPeers { .. } => {} // taken in `apply`
            Event::Renamed { name, .. } => {
                self.peers[i].name = name;
                self.list.set_row_data(i, self.item(i));
            }
            Event::Removed { .. } => {
                self.peers.remove(i);
                self.list.remove(i);
                if self.selected == Some(id) {
                    self.selected = None;
                }
            }
            Event::FileOutgoing { transfer, name, size, .. } => {
                self.add_file(i, transfer, &name, size, false);
            }
            Event::FileIncoming { transfer, name, size, refused, accepted, .. } => {
                self.add_file(i, transfer, &name, size, true);
                if let Some(reason) = &refused {
                    // Never shown with Accept, even for a moment.
                    self.update_file(transfer, |item| {
                        item.state = FAILED;
                        item.detail = reason.as_str().into();
                    });
                } else if accepted {
                    // The engine accepted it (files from this peer are
                    // accepted without asking): never shown with Accept.
                    self.update_file(transfer, |item| {
                        item.state = RUNNING;
                        item.detail = "starting…".into();
                    });
                }
                // A refused offer was already declined: the failure that
                // follows says why.
                if refused.is_some() || accepted {
                } else if self.selected != Some(id) {
                    self.peers[i].unread += 1;
                    self.list.set_row_data(i, self.item(i));
                }
            }
            Event::FileProgress { transfer, bytes, total, bytes_per_sec, eta, .. } => {
                let left = eta.map(|d| format!(" · {} left", duration(d.as_secs()))).unwrap_or_default();
                self.update_file(transfer, |item| {
                    item.state = RUNNING;
                    item.progress = if total == 0 { 1.0 } else { bytes as f32 / total as f32 };
                    // The first reading of a transfer has no speed yet.
                    item.detail = if bytes_per_sec == 0 {
                        "starting…".into()
                    } else {
                        format!("{}/s{left}", human_size(bytes_per_sec)).into()
                    };
                });
            }
            Event::FileSent { transfer, .. } => self.update_file(transfer, |item| {
                item.state = DONE;
                item.progress = 1.0;
                item.detail = "Sent and verified by the peer.".into();
            }),
            Event::FileReceived { transfer, path, .. } => {
                let shown = path.display().to_string();
                self.peers[i].received.insert(transfer, path);
                self.update_file(transfer, |item| {
                    item.state = DONE;
                    item.progress = 1.0;
                    item.detail = format!("Saved as {shown}").into();
                });
            }
            Event::FileFailed { transfer, name, reason, .. } => {
                if !self.peers[i].files.contains_key(&transfer) {
                    self.add_file(i, transfer, &name, 0, false);
                }
                self.update_file(transfer, |item| {
                    item.state = FAILED;
                    item.detail = reason.clone().into();
                });
            }
        }
    }

    fn state(&mut self, i: usize, state: PeerState) {
        let id = self.peers[i].id;
        let status = state.status();
        let (detail, line, blocked, subtitle) = match &state {
            PeerState::Listening { local } => {
                let reach = if local.ip().is_unspecified() {
                    let host = self.window.upgrade().map(|w| w.global::<HostAdapter>().get_local_address());
                    format!(" (peers connect to {}:{})", host.unwrap_or_default(), local.port())
                } else {
                    String::new()
                };
                match &self.peers[i].pairing_code {
                    Some(code) => (
                        format!("waiting on {local} · code {code}"),
                        format!(
                            "Listening on {local}{reach}. Only a peer that types the pairing code {code} can connect."
                        ),
                        format!(
                            "Waiting for a peer to connect to {local}{reach} with the pairing code {code}; read it to \
                             them by voice or in person."
                        ),
                        format!("listening on {local}{reach} · pairing code {code}"),
                    ),
                    None => (
                        format!("waiting on {local}"),
                        format!("Listening on {local}{reach}."),
                        format!("Waiting for a peer to connect to {local}{reach}…"),
                        format!("listening on {local}{reach}"),
                    ),
                }
            }
            PeerState::Connecting { remote } => {
                // A client tries again: a key change is reported afresh if
                // the key is still not the one remembered.
                self.peers[i].key_change = None;
                (
                    format!("connecting to {remote}"),
                    format!("Connecting to {remote}…"),
                    format!("Connecting to {remote}…"),
                    format!("connecting to {remote}"),
                )
            }
            PeerState::Connected { peer_name, peer_addr, peer, .. } => {
                let who = printable(peer_name).into_owned();
                self.peers[i].peer_key = Some(peer.fingerprint.clone());
                // A peer with a key we trust got through.
                self.peers[i].key_change = None;
                (
                    format!("{who} · {peer_addr}"),
                    format!(
                        "Connected to {who} at {peer_addr}, encrypted. Their key: {}. Safety code: {} (the same \
                         digits on both screens means nobody is in between).",
                        peer.fingerprint, peer.safety_code
                    ),
                    String::new(),
                    format!("connected to {who} at {peer_addr}"),
                )
            }
            // A client stopped because the key changed: the warning above
            // the chat says what happened and what to do, at length.
            PeerState::Lost { .. } if !self.peers[i].server && self.peers[i].key_change.is_some() => (
                "stopped: the peer's key changed".into(),
                "Connection stopped: the peer's key changed.".into(),
                "Not connected: the peer's key changed. Trust the new key only once they have confirmed it; \
                 otherwise remove this peersocket."
                    .into(),
                "stopped: the peer's key changed".into(),
            ),
            PeerState::Lost { reason, .. } => {
                let again = if self.peers[i].server { "Listen again" } else { "Reconnect" };
                let reason = reason.trim_end_matches('.');
                (
                    reason.to_owned(),
                    format!("Connection ended: {reason}."),
                    format!("Not connected: {reason}. Right-click the peersocket and choose {again}."),
                    format!("inactive: {reason}"),
                )
            }
        };
        let peer = &mut self.peers[i];
        peer.identity = match state {
            PeerState::Connected { peer, .. } => Some(peer),
            _ => None,
        };
        peer.status = status;
        peer.detail = detail;
        peer.blocked = blocked;
        peer.subtitle = subtitle;
        self.list.set_row_data(i, self.item(i));
        self.system(id, &line);
    }

    fn add_file(&mut self, i: usize, transfer: TransferId, name: &str, size: u64, incoming: bool) {
        let peer = &mut self.peers[i];
        // Forget transfers whose cards were dropped from the chat, so these
        // maps stay as bounded as the chat.
        let chat = peer.chat.clone();
        peer.files.retain(|_, seq| chat.holds(*seq));
        let files = &peer.files;
        peer.received.retain(|t, _| files.contains_key(t));
        let seq = peer.chat.push(ChatItem {
            kind: FILE,
            text: name.into(),
            time: now(),
            transfer: transfer.0 as i32,
            incoming,
            size: human_size(size).into(),
            progress: 0.0,
            detail: SharedString::default(),
            state: OFFERED,
        });
        peer.files.insert(transfer, seq);
    }

    fn update_file(&mut self, transfer: TransferId, change: impl FnOnce(&mut ChatItem)) {
        for peer in &self.peers {
            if let Some(&seq) = peer.files.get(&transfer) {
                peer.chat.update(seq, change);
                return;
            }
        }
    }

    fn push_chat(&mut self, id: PeerId, item: ChatItem) {
        if let Some(peer) = self.peer_mut(id) {
            peer.chat.push(item);
        }
    }

    fn system(&mut self, id: PeerId, text: &str) {
        self.push_chat(id, ChatItem { kind: SYSTEM, text: text.into(), time: now(), ..Default::default() });
    }

    fn item(&self, i: usize) -> PeerItem {
        let p = &self.peers[i];
        PeerItem {
            id: p.id.0 as i32,
            server: p.server,
            name: p.name.clone().into(),
            detail: p.detail.clone().into(),
            status: match p.status {
                Status::Waiting => 0,
                Status::Connected => 1,
                Status::Lost => 2,
            },
            unread: p.unread,
            trust: trust_level(p.identity.as_ref()),
            key_changed: p.key_change.is_some(),
        }
    }

    /// Points the chat pane at the selected peersocket.
    pub fn refresh_chat(&self) {
        let Some(window) = self.window.upgrade() else { return };
        let chat = window.global::<ChatAdapter>();
        let peers = window.global::<PeerAdapter>();
        match self.selected.and_then(|id| self.peers.iter().find(|p| p.id == id)) {
            Some(peer) => {
                peers.set_selected(peer.id.0 as i32);
                chat.set_title(peer.name.clone().into());
                chat.set_subtitle(peer.subtitle.clone().into());
                chat.set_status(self.item(self.index(peer.id).unwrap_or(0)).status);
                chat.set_input_blocked(peer.blocked.clone().into());
                let (key, code) = match &peer.identity {
                    Some(identity) => (identity.fingerprint.clone(), identity.safety_code.clone()),
                    None => (String::new(), String::new()),
                };
                chat.set_peer_key(key.into());
                chat.set_safety_code(code.into());
                chat.set_trust(trust_level(peer.identity.as_ref()));
                chat.set_trust_note(trust_note(peer).into());
                chat.set_key_warning(key_warning(peer).into());
                let current = chat.get_messages();
                let same = current.as_any().downcast_ref::<ChatLog>().is_some_and(|m| std::ptr::eq(m, &*peer.chat));
                if !same {
                    chat.set_messages(peer.chat.clone().into());
                }
            }
            None => {
                peers.set_selected(-1);
                chat.set_title("".into());
                chat.set_subtitle("".into());
                chat.set_peer_key("".into());
                chat.set_safety_code("".into());
                chat.set_trust(NO_PEER);
                chat.set_trust_note("".into());
                chat.set_key_warning("".into());
                chat.set_input_blocked("Select a peersocket on the left.".into());
                chat.set_messages(self.empty_chat.clone().into());
            }
        }
    }
}

fn trust_level(identity: Option<&PeerIdentity>) -> i32 {
    match identity {
        None => NO_PEER,
        Some(identity) if identity.trust.is_verified() => VERIFIED,
        Some(_) => UNVERIFIED,
    }
}

/// What the person should know, or do, about the connected peer's key.
fn trust_note(peer: &Peer) -> String {
    let Some(identity) = &peer.identity else { return String::new() };
    match identity.trust {
        Trust::Verified if peer.pairing_code.is_some() => {
            if peer.server {
                "Verified: they typed your pairing code.".into()
            } else {
                "Verified: the listener proved the same pairing code.".into()
            }
        }
        Trust::Verified => "You verified this key by comparing the safety code.".into(),
        Trust::New => "First time this key connects. Compare the safety code with them by voice; if it matches, \
                       mark it verified."
            .into(),
        Trust::Known => "Seen before, never verified. Compare the safety code with them by voice; if it matches, \
                         mark it verified."
            .into(),
    }
}

/// The key change warning's text ("" when there is none).
fn key_warning(peer: &Peer) -> String {
    let Some(change) = &peer.key_change else { return String::new() };
    let after = if peer.server { "They then connect again." } else { "PeerConn then reconnects." };
    format!(
        "\"{}\" at {} now has the key {}, not {} as before; nothing was exchanged. They may have reinstalled \
         PeerConn, or someone may be in between: ask them by voice for the key at the top of their window, and \
         trust it only if it matches. {after}",
        printable(&change.peer_name),
        change.address,
        change.new_fingerprint,
        change.old_fingerprint,
    )
}

/// A peer's message as the window shows it: lines and tabs stay, other
/// control characters and bidirectional overrides are shown escaped, so a
/// message cannot reorder what a person reads.
fn shown(text: &str) -> String {
    text.split('\n')
        .map(|line| line.split('\t').map(|p| printable(p).into_owned()).collect::<Vec<_>>().join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
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
mod tests {
    use super::*;

    #[test]
    fn known_peers_are_found_by_name_key_or_address_in_any_case() {
        let dad = KnownPeerInfo {
            name: "Dad's Laptop".into(),
            address: Some("192.168.1.44:50000".into()),
            fingerprint: "0182-0015-c0b4-fd3d-ef77".into(),
            verified: true,
        };
        let nas = KnownPeerInfo { address: None, name: "NAS".into(), fingerprint: "7589-f6e1".into(), verified: false };
        for filter in ["", "laptop", "dad's", "c0b4-fd3d", "192.168.1.4", ":50000"] {
            assert!(known_matches(&dad, filter), "{filter:?}");
        }
        for filter in ["zebra", "laptops", "192.168.1.45"] {
            assert!(!known_matches(&dad, filter), "{filter:?}");
        }
        // No address: only the name and key are searched.
        assert!(known_matches(&nas, "nas") && known_matches(&nas, "f6e1") && !known_matches(&nas, "192"));
    }
}
