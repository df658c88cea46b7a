//! Between the window and the engine: the window's callbacks arrive here
//! (through the adapters), become `Engine` calls, and the outcome goes to
//! the state; the timer's `drain` brings the engine's events and the
//! worker threads' reports to the state. After each, the adapters show
//! what changed.
//!
//! It owns the engine, so dropping the controller stops it. Nothing here
//! decides what the window shows (that is `state.rs`) or how it says it
//! (`copy.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use crossbeam_channel::Receiver;
use slint::ComponentHandle;

use crate::hostinfo::HostInfo;
use crate::net::{ConnectOptions, Engine, Event, ListenOptions, PeerId, PeerState, TransferId};

use super::adapters::chat::{self, ChatView};
use super::adapters::host::{self, HostView};
use super::adapters::peers::{self, PeersView};
use super::copy;
use super::form::{self, parse_code, parse_form};
use super::settings::Settings;
use super::shell::{Report, Shell};
use super::state::Reach;
use super::state::{AcceptFrom, State};
use super::store::{Loaded, Saver, Store};
use super::ui::AppWindow;
use crate::reach::LeaseEvent;

/// Events handled per timer tick, so a flood never freezes the window.
const EVENTS_PER_TICK: usize = 5000;

/// How often changed conversations are handed to the store at most.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Controller {
    engine: Engine,
    state: State,
    shell: Shell,
    reports: Receiver<Report>,
    host: HostView,
    peers: PeersView,
    chat: ChatView,
    /// Looks for listeners on the local network (Connect's Nearby list).
    nearby: Option<crate::nearby::Browser>,
    /// Listeners that asked to be reachable, and their router mappings
    /// (None until they listen).
    leases: HashMap<PeerId, Option<(crate::reach::Lease, Receiver<crate::reach::LeaseEvent>)>>,
    /// Keeps peersockets and chats on disk (None: nothing is kept).
    saver: Option<Saver>,
    last_kept: std::time::Instant,
    /// Shows desktop notifications (the app has one; tests do not).
    notifier: Option<super::notify::Notifier>,
    /// The icon in the system tray (the app has one; tests do not).
    tray: Option<slint::Weak<super::ui::Tray>>,
    /// The person was told once that closing left PeerConn in the tray.
    told_tray: bool,
    /// The desktop shows tray icons (None: not known yet).
    tray_hosted: Option<bool>,
    window: slint::Weak<AppWindow>,
}

/// What the window's callbacks and the timer hold: the controller only as
/// long as the `Gui` lives, so dropping the `Gui` really drops the engine.
#[derive(Clone)]
pub struct Handle(Weak<RefCell<Controller>>);

impl Handle {
    pub fn new(controller: &Rc<RefCell<Controller>>) -> Handle {
        Handle(Rc::downgrade(controller))
    }

    pub fn with<R: Default>(&self, f: impl FnOnce(&mut Controller) -> R) -> R {
        match self.0.upgrade() {
            Some(controller) => f(&mut controller.borrow_mut()),
            None => R::default(),
        }
    }
}

impl Controller {
    /// Connects the window's adapters to a new controller, the only strong
    /// reference to which is returned.
    /// With a `store`, the last run's peersockets come back (read on the
    /// store's thread, made again on a later tick) and changes are kept.
    pub fn start(
        engine: Engine,
        settings: Settings,
        window: &AppWindow,
        host: &HostInfo,
        store: Option<Store>,
    ) -> Rc<RefCell<Controller>> {
        // The engine holds the "accept files from this key" policy; it
        // hears the saved list now and every change later.
        for fingerprint in &settings.always_accept {
            engine.accept_files_from(fingerprint, true);
        }
        let (shell, reports) = Shell::new();
        let saver = store.and_then(|store| {
            let dir = store.dir().to_path_buf();
            let reporter = shell.reporter();
            let started = Saver::start(store, move |loaded| {
                let _ = reporter.send(Report::Restored(loaded));
            });
            started.map_err(|e| log::error!("conversations are not kept in {}: {e}", dir.display())).ok()
        });
        let controller = Controller {
            host: HostView::new(window, host, engine.fingerprint()),
            peers: PeersView::new(window),
            chat: ChatView::new(window),
            state: {
                let mut state = State::new(settings);
                state.set_own_key(*engine.public_key());
                state
            },
            engine,
            shell,
            reports,
            nearby: None,
            leases: HashMap::new(),
            saver,
            last_kept: std::time::Instant::now(),
            notifier: None,
            tray: None,
            told_tray: false,
            tray_hosted: None,
            window: window.as_weak(),
        };
        let controller = Rc::new(RefCell::new(controller));
        let handle = Handle::new(&controller);
        host::connect(window, &handle);
        peers::connect(window, &handle);
        chat::connect(window, &handle);
        controller.borrow_mut().show();
        controller
    }

    /// Called by the timer: what the workers reported and the engine did.
    pub fn drain(&mut self) {
        if self.last_kept.elapsed() >= KEEP_EVERY {
            self.keep();
        }
        let reports: Vec<Report> = self.reports.try_iter().collect();
        let events: Vec<Event> = self.engine.events().try_iter().take(EVENTS_PER_TICK).collect();
        let nearby = self.nearby.as_mut().map(|b| b.poll()).unwrap_or_default();
        let leased = self.lease_reports();
        let counted = self.state.tick(std::time::Instant::now());
        if reports.is_empty() && events.is_empty() && nearby.is_empty() && !leased && !counted {
            return;
        }
        for change in nearby {
            self.state.nearby(change);
        }
        for report in reports {
            self.report(report);
        }
        self.state.set_host_address(&self.host.local_address());
        for event in events {
            self.lease(&event);
            self.state.apply(event);
        }
        let alerts = self.state.take_alerts();
        if let Some(notifier) = &mut self.notifier {
            notifier.show(alerts);
        }
        self.show();
    }

    /// Desktop notifications for what arrives while the window is behind
    /// others (the app turns them on; tests do not).
    pub fn start_notifications(&mut self) {
        self.notifier = Some(super::notify::Notifier::start());
    }

    /// The window came to the front (true) or went behind others.
    pub fn focused(&mut self, focused: bool) {
        self.then_show(|c| c.state.set_focused(focused));
    }

    /// Files or folders dropped on the window: offered to the peer whose
    /// conversation is shown.
    pub fn dropped(&mut self, paths: Vec<std::path::PathBuf>) {
        self.chat.hovering(false);
        let Some(id) = self.state.selected().map(|p| p.id) else {
            log::info!("{} dropped with no peersocket selected", paths.len());
            self.then_show(|c| c.state.problem(copy::DROP_WHERE.into()));
            return;
        };
        for path in paths {
            log::info!("dropped {}", path.display());
            self.send_path_to(id, path);
        }
    }

    /// Ctrl+V in the composer: files copied in a file manager are offered
    /// to the conversation shown (true); anything else is pasted as text
    /// by the composer itself (false). The clipboard is read here, on the
    /// UI thread, as the composer's own paste does.
    pub fn paste_files(&mut self) -> bool {
        let files = arboard::Clipboard::new().and_then(|mut c| c.get().file_list());
        match files {
            Ok(paths) if !paths.is_empty() => {
                log::info!("{} pasted from the clipboard", paths.len());
                self.dropped(paths);
                true
            }
            _ => false,
        }
    }

    /// Files are dragged over the window (true), or no longer.
    pub fn hovering(&mut self, hovering: bool) {
        self.chat.hovering(hovering && self.state.selected().is_some());
    }

    /// A listener that asked to be reachable gets its mapping once it
    /// listens (on its own thread); a removed one gives it up.
    fn lease(&mut self, event: &Event) {
        match event {
            Event::State { id, state: PeerState::Listening { local } } => {
                if let Some(slot @ None) = self.leases.get_mut(id) {
                    *slot = Some(crate::reach::Lease::start(*local));
                    self.state.reach(*id, Reach::Asking);
                }
            }
            Event::Removed { id } => {
                if let Some(Some((lease, _))) = self.leases.remove(id) {
                    lease.stop_soon();
                }
            }
            _ => {}
        }
    }

    /// What the routers said.
    fn lease_reports(&mut self) -> bool {
        let mut any = false;
        for (id, lease) in &self.leases {
            if let Some((_, events)) = lease {
                for event in events.try_iter() {
                    let reach = match event {
                        LeaseEvent::Mapped(m) => Reach::Mapped { external: m.external, via: m.via.as_str() },
                        LeaseEvent::Failed(why) => Reach::Failed(why.to_string()),
                    };
                    self.state.reach(*id, reach);
                    any = true;
                }
            }
        }
        any
    }

    /// Hands the store what changed since it last looked.
    fn keep(&mut self) {
        self.last_kept = std::time::Instant::now();
        let Some(saver) = &self.saver else { return };
        for key in self.state.take_forgotten() {
            saver.delete(key);
        }
        for peer in self.state.unsaved(&saved_at(), false) {
            if saver.write(peer).is_err() {
                // The queue is full: everything is looked at again next time.
                self.state.changed_all();
                break;
            }
        }
    }

    /// Makes the last run's peersockets again: listeners listen, clients
    /// connect (and reconnect by themselves); their chats come back.
    fn restore(&mut self, loaded: Loaded) {
        for saved in loaded.peers {
            let made = if saved.server {
                let options = ListenOptions { pairing_code: saved.code.clone(), keep_listening: true };
                self.engine.listen(&saved.name, saved.address, options)
            } else {
                let pin = saved.pin.as_deref().and_then(|p| crate::net::KeyPin::parse(p).ok());
                let options = ConnectOptions { pairing_code: saved.code.clone(), pin, reconnect: true };
                self.engine.connect_with(&saved.name, saved.address, options)
            };
            match made {
                Ok(id) => {
                    if saved.server && saved.reachable {
                        self.leases.insert(id, None);
                    }
                    log::info!("restored {} ({} chat rows)", saved.name, saved.rows.len());
                    self.state.restore(id, saved);
                }
                Err(e) => self.state.problem(copy::not_restored(&saved.name, &e.to_string())),
            }
        }
        for aside in loaded.set_aside {
            self.state.problem(copy::set_aside(&aside.path, &aside.why));
        }
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Restored(loaded) => self.restore(loaded),
            Report::TrayHosted(hosted) => {
                self.tray_hosted = Some(hosted);
                self.host.show_tray_hosted(hosted);
                // Started in the tray where there is none: the window
                // opens after all, or PeerConn could not be reached.
                let window = self.window.upgrade().filter(|w| !hosted && !w.window().is_visible());
                if let Some(window) = window {
                    log::warn!("started hidden, but this desktop shows no tray icons: the window opens");
                    let _ = window.show();
                }
            }
            Report::FilesPicked { peer, paths } => {
                for path in paths {
                    self.send_path_to(peer, path);
                }
            }
            Report::NoFilePicker => self.state.file_picker_missing = true,
            Report::DownloadsPicked(dir) => self.host.show_downloads_draft(&dir),
            Report::NoFolderPicker => self.state.folder_picker_missing = true,
            Report::ChatSaved { peer, path, picked } => self.state.notice(peer, copy::chat_saved(&path, picked)),
            Report::ChatNotSaved { peer, path, why } => self.state.notice(peer, copy::chat_not_saved(&path, &why)),
            Report::FolderNotOpened { peer, folder, why } => {
                self.state.notice(peer, copy::folder_not_opened(&folder, &why));
            }
        }
    }

    /// The adapters show what changed.
    fn show(&mut self) {
        let changes = self.state.take_changes();
        self.host.show(&self.state, &changes);
        self.peers.show(&self.state, &changes);
        self.chat.show(&self.state, &changes);
        if let Some(tray) = self.tray.as_ref().and_then(|t| t.upgrade()) {
            let unread = i32::try_from(self.state.unread()).unwrap_or(i32::MAX);
            if tray.get_unread() != unread {
                tray.set_unread(unread);
            }
        }
    }

    /// The tray icon shows what waits unread.
    pub fn set_tray(&mut self, tray: slint::Weak<super::ui::Tray>) {
        self.tray = Some(tray);
        self.shell.check_tray();
        self.show();
    }

    /// The window's close button: true leaves PeerConn running in the
    /// tray (said once, in a notification), false quits.
    pub fn close_to_tray(&mut self) -> bool {
        if !self.state.settings().keep_in_tray || self.tray.is_none() || self.tray_hosted != Some(true) {
            return false;
        }
        if !self.told_tray {
            self.told_tray = true;
            if let Some(notifier) = &mut self.notifier {
                notifier.show(vec![super::state::Alert {
                    peer: PeerId(0),
                    title: "PeerConn".into(),
                    body: copy::STILL_IN_TRAY.into(),
                }]);
            }
        }
        log::info!("window closed; PeerConn keeps running in the tray");
        true
    }

    /// Closing the window leaves PeerConn in the tray (true) or quits.
    pub fn set_keep_in_tray(&mut self, keep: bool) {
        if self.then_show(|c| c.state.set_keep_in_tray(keep)) {
            self.state.settings().save();
        }
    }

    /// Runs an action on the state, then shows what changed.
    fn then_show<R>(&mut self, action: impl FnOnce(&mut Self) -> R) -> R {
        let result = action(self);
        self.show();
        result
    }

    // ----- peersockets ------------------------------------------------------

    /// A server peersocket; with a pairing code, only a peer that knows it
    /// may connect (and is then verified).
    /// A server peersocket; with a pairing code, only a peer that knows it
    /// may connect; `reachable`: the router is asked to forward its port.
    pub fn listen(
        &mut self,
        name: &str,
        address: &str,
        port: &str,
        require: bool,
        code: &str,
        reachable: bool,
    ) -> Result<(), String> {
        let bind = parse_form(name, address, port, true)?;
        let code = parse_code(code, require)?;
        let name = name.trim();
        // After its peer leaves it listens again (red only when it cannot).
        let options = ListenOptions { pairing_code: code.clone(), keep_listening: true };
        let id = self.engine.listen(name, bind, options).map_err(|e| copy::bad_name(&e.to_string()))?;
        let draft = self.chat.draft();
        self.then_show(|c| c.state.listening(id, name, bind, code, &draft));
        self.state.made_with(id, None, reachable);
        if reachable {
            self.leases.insert(id, None);
        }
        Ok(())
    }

    /// A client peersocket; with a pin (from a pasted link), only the key
    /// pinned gets through.
    pub fn connect(&mut self, name: &str, address: &str, port: &str, code: &str, pin: &str) -> Result<(), String> {
        // A link left whole in the address field (pasted with no edit
        // seen) is read here.
        let (address, port, code, pin) = match form::read_link(address) {
            Some(Ok(link)) => {
                let code = if code.trim().is_empty() { link.code } else { code.to_owned() };
                (link.address, link.port, code, link.pin)
            }
            Some(Err(why)) => return Err(why),
            None => (address.to_owned(), port.to_owned(), code.to_owned(), pin.to_owned()),
        };
        let remote = parse_form(name, &address, &port, false)?;
        let code = parse_code(&code, false)?;
        let pin = form::parse_pin(&pin)?;
        let pin_text = pin.as_ref().map(|p| p.to_string());
        let name = name.trim();
        // It reconnects by itself when the peer goes away or restarts.
        let options = ConnectOptions { pairing_code: code.clone(), pin, reconnect: true };
        let id = self.engine.connect_with(name, remote, options).map_err(|e| copy::refused(&e.to_string()))?;
        let draft = self.chat.draft();
        self.then_show(|c| c.state.connecting(id, name, remote, code, &draft));
        self.state.made_with(id, pin_text, false);
        Ok(())
    }

    pub fn select(&mut self, id: PeerId) {
        let draft = self.chat.draft();
        self.then_show(|c| c.state.select(id, &draft));
    }

    pub fn step(&mut self, by: i32) {
        let draft = self.chat.draft();
        self.then_show(|c| c.state.step(by, &draft));
    }

    pub fn rename(&mut self, id: PeerId, name: &str) -> Result<(), String> {
        self.engine.rename(id, name).map_err(|e| copy::refused(&e.to_string()))?;
        self.then_show(|c| c.state.renamed(id, name));
        Ok(())
    }

    pub fn disconnect(&mut self, id: PeerId) {
        self.engine.disconnect(id);
        self.then_show(|c| c.state.disconnecting(id));
    }

    pub fn restart(&mut self, id: PeerId) {
        self.engine.restart(id);
    }

    pub fn remove(&mut self, id: PeerId) {
        self.engine.remove(id);
    }

    // ----- keys -------------------------------------------------------------

    /// The person compared the safety code with the peer (or takes that
    /// back). The engine confirms with a `Trust` event.
    pub fn set_verified(&mut self, id: PeerId, verified: bool) {
        if self.state.can_verify(id) {
            self.engine.set_verified(id, verified);
        }
    }

    /// After a key change: the person accepts the peer's new key.
    pub fn trust_new_key(&mut self, id: PeerId) {
        if self.then_show(|c| c.state.trust_new_key(id)) {
            self.engine.trust_new_key(id);
        }
    }

    pub fn dismiss_key_warning(&mut self, id: PeerId) {
        self.then_show(|c| c.state.dismiss_key_warning(id));
    }

    /// Forgets a remembered key: its next connection is trusted on first
    /// use again, and its files are asked about again.
    pub fn forget_key(&mut self, fingerprint: &str) {
        self.engine.forget_key(fingerprint);
        let change = self.then_show(|c| c.state.forget_key(fingerprint));
        self.accept_files_from(change);
    }

    /// Announcing on the local network on or off: the engine hears it at
    /// once, and it is saved.
    pub fn set_announce(&mut self, announce: bool) {
        if self.then_show(|c| c.state.set_announce(announce)) {
            self.engine.set_announce(announce);
            self.state.settings().save();
        }
    }

    /// Starts looking for listeners on the local network (the app does;
    /// tests, which must not send multicast on the host's network, do not).
    pub fn start_nearby(&mut self) {
        match crate::nearby::Browser::start() {
            Ok(browser) => {
                self.nearby = Some(browser);
                self.peers.looking(true);
            }
            Err(e) => log::warn!("the Nearby list stays empty: {e}"),
        }
    }

    pub fn set_always_accept(&mut self, fingerprint: &str, always: bool) {
        let change = self.then_show(|c| c.state.set_always_accept(fingerprint, always));
        self.accept_files_from(change);
    }

    /// Tells the engine, and the settings file, of a change to the keys
    /// whose files are accepted without asking.
    fn accept_files_from(&mut self, change: Option<AcceptFrom>) {
        if let Some(AcceptFrom { fingerprint, accept }) = change {
            self.engine.accept_files_from(&fingerprint, accept);
            self.state.settings().save();
        }
    }

    // ----- chat and files ---------------------------------------------------

    /// Sends the composer's text; false keeps it in the composer.
    pub fn send_text(&mut self, text: &str) -> bool {
        let Some((id, text)) = self.state.outgoing(text) else { return false };
        let sent = self.engine.send_text(id, &text);
        self.then_show(|c| match sent {
            Ok(()) => {
                c.state.sent(id, &text);
                true
            }
            Err(e) => {
                c.state.notice(id, copy::not_sent(&e.to_string()));
                false
            }
        })
    }

    /// A path typed in the composer (when there is no file picker).
    pub fn send_path(&mut self, path: &str) {
        if let (Some(id), false) = (self.state.selected().map(|p| p.id), path.is_empty()) {
            self.send_path_to(id, path.into());
        }
    }

    fn send_path_to(&mut self, id: PeerId, path: std::path::PathBuf) {
        if self.state.peer(id).is_some() {
            self.engine.send_file(id, path);
        }
    }

    /// The native file picker, for the selected peer.
    pub fn pick_files(&mut self) {
        if let Some(peer) = self.state.selected() {
            self.shell.pick_files(peer.id);
        }
    }

    /// The native folder picker, for a folder to send to the selected peer.
    pub fn pick_folder(&mut self) {
        if let Some(peer) = self.state.selected() {
            self.shell.pick_folder(peer.id);
        }
    }

    pub fn accept(&mut self, transfer: TransferId, always: bool) {
        let change = self.then_show(|c| c.state.accept(transfer, always));
        self.accept_files_from(change);
        self.engine.accept_file(transfer);
    }

    pub fn decline(&mut self, transfer: TransferId) {
        self.engine.decline_file(transfer);
    }

    pub fn cancel(&mut self, transfer: TransferId) {
        self.engine.cancel_file(transfer);
    }

    pub fn open_folder(&mut self, transfer: TransferId) {
        if let Some((peer, file)) = self.state.received_file(transfer) {
            self.shell.open_folder(peer, file.to_path_buf());
        }
    }

    /// Writes a conversation to a text file the person picks.
    pub fn save_chat(&mut self, id: PeerId) {
        if let Some((text, name)) = self.state.chat_file(id) {
            self.shell.save_chat(id, name, text, self.state.settings().downloads.clone());
        }
    }

    // ----- settings ---------------------------------------------------------

    pub fn save_settings(&mut self, name: &str, downloads: &str) -> Result<(), String> {
        self.then_show(|c| c.state.change_settings(name, downloads))?;
        self.state.settings().save();
        self.engine.set_downloads(&self.state.settings().downloads);
        Ok(())
    }

    /// Keeping conversations on disk on or off (off: what was kept is
    /// emptied on the next save; the peersockets are still kept).
    pub fn set_keep_history(&mut self, keep: bool) {
        if self.then_show(|c| c.state.set_keep_history(keep)) {
            self.state.settings().save();
            self.keep();
        }
    }

    /// Empties every conversation, on screen and on disk.
    pub fn clear_history(&mut self) {
        self.then_show(|c| c.state.clear_history());
        self.keep();
    }

    pub fn dismiss_banner(&mut self) {
        self.then_show(|c| c.state.dismiss_banner());
    }

    pub fn pick_downloads(&mut self) {
        self.shell.pick_downloads(self.state.settings().downloads.clone());
    }

    pub fn filter_known(&mut self, filter: &str) {
        self.then_show(|c| c.state.filter_known(filter));
    }
}

impl Drop for Controller {
    /// The last changes are kept before the engine stops: the window is
    /// already closed, so waiting for the store here holds up no one.
    fn drop(&mut self) {
        if let Some(saver) = self.saver.take() {
            for key in self.state.take_forgotten() {
                saver.delete(key);
            }
            saver.finish(self.state.unsaved(&saved_at(), false));
        }
    }
}

/// When a kept file was written, as the restored chat says it.
fn saved_at() -> String {
    chrono::Local::now().format("%a %-d %b %H:%M").to_string()
}
