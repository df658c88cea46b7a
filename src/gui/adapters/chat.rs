//! `ChatAdapter`: the selected peersocket's header, key strip, warning,
//! conversation and composer.
//!
//! The conversation on screen is a Slint model over the selected peer's
//! plain [`ChatLog`]: rows are mapped to `ChatItem`s as the view asks for
//! them, and the log's moves are passed on as row notifications after
//! each batch, so neither a long chat nor a busy transfer rebuilds the
//! list.

use std::cell::RefCell;
use std::rc::Rc;

use slint::{ComponentHandle, Model, ModelNotify, ModelTracker, VecModel, Weak};

use crate::net::{PeerId, TransferId};

use super::super::chatlog::{ChatLog, ChatRow, FileState, Kind, Move};
use super::super::controller::Handle;
use super::super::copy;
use super::super::state::{Changes, State};
use super::super::ui::{self, AppWindow, ChatAdapter, ChatItem, ChatItemKind, KeyTrust};
use super::peers;

pub struct ChatView {
    window: Weak<AppWindow>,
    /// The conversation on screen, and whose it is.
    shown: RefCell<Option<(PeerId, Rc<ChatRows>)>>,
    empty: Rc<VecModel<ChatItem>>,
    /// The link shown, and its QR code (made once per link).
    qr: RefCell<Option<(String, slint::Image)>>,
}

impl ChatView {
    pub fn new(window: &AppWindow) -> ChatView {
        let empty = Rc::new(VecModel::default());
        window.global::<ChatAdapter>().set_messages(empty.clone().into());
        ChatView { window: window.as_weak(), shown: RefCell::new(None), empty, qr: RefCell::new(None) }
    }

    /// What the composer holds now.
    /// Files are dragged over the conversation: it says where they go.
    pub fn hovering(&self, hovering: bool) {
        if let Some(window) = self.window.upgrade() {
            window.global::<ChatAdapter>().set_drop_hover(hovering);
        }
    }

    pub fn draft(&self) -> String {
        self.window.upgrade().map(|w| w.global::<ChatAdapter>().get_draft().into()).unwrap_or_default()
    }

    pub fn show(&self, state: &State, changes: &Changes) {
        let Some(window) = self.window.upgrade() else { return };
        let chat = window.global::<ChatAdapter>();
        if let Some(draft) = &changes.draft {
            chat.set_draft(draft.as_str().into());
        }
        chat.set_picker_missing(state.file_picker_missing);
        let Some(peer) = state.selected() else {
            chat.set_title("".into());
            chat.set_subtitle("".into());
            chat.set_peer_key("".into());
            chat.set_safety_code("".into());
            chat.set_trust(KeyTrust::Nobody);
            chat.set_trust_note("".into());
            chat.set_key_warning("".into());
            chat.set_link("".into());
            chat.set_link_note("".into());
            chat.set_input_blocked(copy::SELECT_A_PEERSOCKET.into());
            if self.shown.take().is_some() {
                chat.set_messages(self.empty.clone().into());
            }
            return;
        };
        chat.set_title(peer.name.as_str().into());
        chat.set_subtitle(peer.subtitle.as_str().into());
        chat.set_status(peers::status(peer.status));
        chat.set_input_blocked(peer.blocked.as_str().into());
        let (key, code) = match &peer.identity {
            Some(identity) => (identity.fingerprint.as_str(), identity.safety_code.as_str()),
            None => ("", ""),
        };
        chat.set_peer_key(key.into());
        chat.set_safety_code(code.into());
        chat.set_trust(peers::trust(peer.trust()));
        chat.set_trust_note(peer.trust_note().into());
        chat.set_key_warning(peer.key_warning().into());
        self.show_link(&chat, state.link(peer));
        chat.set_link_note(peer.reach_note().into());

        let mut shown = self.shown.borrow_mut();
        match &*shown {
            Some((id, rows)) if *id == peer.id => rows.catch_up(),
            _ => {
                // Another conversation: what it did while hidden is in it.
                peer.chat.take_moves();
                let rows = Rc::new(ChatRows { log: peer.chat.clone(), notify: ModelNotify::default() });
                chat.set_messages(rows.clone().into());
                *shown = Some((peer.id, rows));
            }
        }
    }
}

impl ChatView {
    /// A listener's link and its QR code ("" when it has none to give).
    fn show_link(&self, chat: &ChatAdapter<'_>, link: Option<String>) {
        let link = link.unwrap_or_default();
        if chat.get_link().as_str() == link {
            return;
        }
        let mut qr = self.qr.borrow_mut();
        if !link.is_empty() && qr.as_ref().is_none_or(|(text, _)| *text != link) {
            *qr = super::qr::image(&link).map(|image| (link.clone(), image));
        }
        let image = qr.as_ref().filter(|(text, _)| *text == link).map(|(_, image)| image.clone());
        chat.set_link_qr(image.unwrap_or_default());
        chat.set_link(link.into());
    }
}

/// A peer's chat log as the view's model.
struct ChatRows {
    log: Rc<ChatLog>,
    notify: ModelNotify,
}

impl ChatRows {
    /// Tells the view how the log's rows moved since last time.
    fn catch_up(&self) {
        for how in self.log.take_moves() {
            match how {
                Move::Added(row) => self.notify.row_added(row, 1),
                Move::Removed(row) => self.notify.row_removed(row, 1),
                Move::Changed(row) => self.notify.row_changed(row),
                Move::Reset => self.notify.reset(),
            }
        }
    }
}

impl Model for ChatRows {
    type Data = ChatItem;

    fn row_count(&self) -> usize {
        self.log.len()
    }

    fn row_data(&self, row: usize) -> Option<ChatItem> {
        self.log.get(row).map(chat_item)
    }

    fn model_tracker(&self) -> &dyn ModelTracker {
        &self.notify
    }
}

/// A chat row as the view draws it.
fn chat_item(row: ChatRow) -> ChatItem {
    let mut item = ChatItem { text: row.text.into(), time: row.time.into(), ..Default::default() };
    item.kind = match row.kind {
        Kind::Mine => ChatItemKind::Mine,
        Kind::Theirs => ChatItemKind::Theirs,
        Kind::System => ChatItemKind::System,
        Kind::File(card) => {
            item.transfer = card.transfer.0 as i32;
            item.incoming = card.incoming;
            item.folder = card.folder;
            item.size = copy::size(card.size).into();
            item.progress = card.progress;
            item.detail = card.detail.into();
            item.state = match card.state {
                FileState::Offered => ui::FileState::Offered,
                FileState::Running => ui::FileState::Running,
                FileState::Done => ui::FileState::Done,
                FileState::Failed => ui::FileState::Failed,
            };
            ChatItemKind::File
        }
    };
    item
}

fn transfer_id(number: i32) -> TransferId {
    TransferId(number as u64)
}

pub fn connect(window: &AppWindow, controller: &Handle) {
    let global = window.global::<ChatAdapter>();
    let c = controller.clone();
    global.on_send(move |text| c.with(|c| c.send_text(&text)));
    let c = controller.clone();
    global.on_send_files(move || c.with(|c| c.pick_files()));
    let c = controller.clone();
    global.on_send_folder(move || c.with(|c| c.pick_folder()));
    let c = controller.clone();
    global.on_send_path(move |path| c.with(|c| c.send_path(path.trim())));
    let c = controller.clone();
    global.on_paste_files(move || c.with(|c| c.paste_files()));
    let c = controller.clone();
    global.on_accept(move |transfer, always| c.with(|c| c.accept(transfer_id(transfer), always)));
    let c = controller.clone();
    global.on_decline(move |transfer| c.with(|c| c.decline(transfer_id(transfer))));
    let c = controller.clone();
    global.on_cancel(move |transfer| c.with(|c| c.cancel(transfer_id(transfer))));
    let c = controller.clone();
    global.on_open_folder(move |transfer| c.with(|c| c.open_folder(transfer_id(transfer))));
}
