//! `PeerAdapter`: the list of peersockets on the left and the selection.

use std::rc::Rc;

use slint::{ComponentHandle, Model, VecModel, Weak};

use crate::net::{pairing, PeerId, Status, Trust};

use super::super::controller::Handle;
use super::super::copy;
use super::super::form;
use super::super::state::{Changes, ListChange, NearbyRow, Peer, State};
use super::super::ui::{AppWindow, KeyTrust, LinkFields, NearbyItem, PeerAdapter, PeerItem, PeerStatus};

pub struct PeersView {
    window: Weak<AppWindow>,
    list: Rc<VecModel<PeerItem>>,
    nearby: Rc<VecModel<NearbyItem>>,
}

impl PeersView {
    pub fn new(window: &AppWindow) -> PeersView {
        let list = Rc::new(VecModel::default());
        let global = window.global::<PeerAdapter>();
        global.set_peers(list.clone().into());
        global.set_selected(-1);
        let nearby = Rc::new(VecModel::default());
        global.set_nearby(nearby.clone().into());
        global.set_nearby_looking(false);
        PeersView { window: window.as_weak(), list, nearby }
    }

    /// Rows added or removed are told as such; then each row that differs
    /// from the state is replaced (the list is short).
    pub fn show(&self, state: &State, changes: &Changes) {
        for change in &changes.list {
            match *change {
                ListChange::Added(i) => self.list.insert(i.min(self.list.row_count()), PeerItem::default()),
                ListChange::Removed(i) if i < self.list.row_count() => {
                    self.list.remove(i);
                }
                ListChange::Removed(_) => {}
            }
        }
        debug_assert_eq!(self.list.row_count(), state.peers().len());
        for (i, peer) in state.peers().iter().enumerate() {
            let item = peer_item(peer);
            if self.list.row_data(i).as_ref() != Some(&item) {
                self.list.set_row_data(i, item);
            }
        }
        if let Some(window) = self.window.upgrade() {
            window.global::<PeerAdapter>().set_selected(state.selected().map_or(-1, |p| peer_number(p.id)));
            let title = state.window_title();
            if window.get_window_title().as_str() != title {
                window.set_window_title(title.into());
            }
            if changes.nearby || changes.known {
                let (rows, more) = state.nearby_rows();
                self.nearby.set_vec(rows.iter().map(nearby_item).collect::<Vec<_>>());
                window.global::<PeerAdapter>().set_nearby_more(more.try_into().unwrap_or(i32::MAX));
            }
        }
    }

    /// Whether the Nearby list is being filled.
    pub fn looking(&self, looking: bool) {
        if let Some(window) = self.window.upgrade() {
            window.global::<PeerAdapter>().set_nearby_looking(looking);
        }
    }
}

fn nearby_item(row: &NearbyRow) -> NearbyItem {
    NearbyItem {
        name: row.name.clone().into(),
        detail: copy::nearby_detail(row).into(),
        address: row.address.clone().into(),
        port: row.port.to_string().into(),
        pin: row.pin.clone().into(),
        fingerprint: row.fingerprint.clone().into(),
        verified: row.trust == Some(Trust::Verified),
    }
}

/// A peer's id as the views pass it around.
pub fn peer_number(id: PeerId) -> i32 {
    id.0 as i32
}

fn peer_id(number: i32) -> PeerId {
    PeerId(number as u64)
}

pub fn status(status: Status) -> PeerStatus {
    match status {
        Status::Waiting => PeerStatus::Waiting,
        Status::Connected => PeerStatus::Connected,
        Status::Lost => PeerStatus::Lost,
    }
}

pub fn trust(trust: Option<Trust>) -> KeyTrust {
    match trust {
        None => KeyTrust::Nobody,
        Some(Trust::Verified) => KeyTrust::Verified,
        Some(Trust::New | Trust::Known) => KeyTrust::Unverified,
    }
}

fn peer_item(peer: &Peer) -> PeerItem {
    PeerItem {
        id: peer_number(peer.id),
        server: peer.server,
        name: peer.name.clone().into(),
        detail: peer.detail.clone().into(),
        status: status(peer.status),
        unread: peer.unread.try_into().unwrap_or(i32::MAX),
        trust: trust(peer.trust()),
        key_changed: peer.key_change.is_some(),
    }
}

pub fn connect(window: &AppWindow, controller: &Handle) {
    let global = window.global::<PeerAdapter>();
    let c = controller.clone();
    global.on_listen(move |name, address, port, require_code, code, reachable| {
        c.with(|c| c.listen(&name, &address, &port, require_code, &code, reachable).err().unwrap_or_default()).into()
    });
    let c = controller.clone();
    global.on_connect(move |name, address, port, code, pin| {
        c.with(|c| c.connect(&name, &address, &port, &code, &pin).err().unwrap_or_default()).into()
    });
    global.on_read_link(|text| match form::read_link(&text) {
        None => LinkFields::default(),
        Some(Err(why)) => LinkFields { is_link: true, error: why.into(), ..LinkFields::default() },
        Some(Ok(link)) => LinkFields {
            is_link: true,
            error: "".into(),
            address: link.address.into(),
            port: link.port.into(),
            code: link.code.into(),
            pin: link.pin.into(),
            fingerprint: link.fingerprint.into(),
        },
    });
    global.on_suggest_port(|| form::free_port().map(|p| p.to_string()).unwrap_or_else(|| "50000".into()).into());
    global.on_new_pairing_code(|| pairing::new_code().into());
    let c = controller.clone();
    global.on_select(move |id| c.with(|c| c.select(peer_id(id))));
    let c = controller.clone();
    global.on_step(move |by| c.with(|c| c.step(by)));
    let c = controller.clone();
    global.on_rename(move |id, name| c.with(|c| c.rename(peer_id(id), name.trim()).err().unwrap_or_default()).into());
    let c = controller.clone();
    global.on_disconnect(move |id| c.with(|c| c.disconnect(peer_id(id))));
    let c = controller.clone();
    global.on_restart(move |id| c.with(|c| c.restart(peer_id(id))));
    let c = controller.clone();
    global.on_remove(move |id| c.with(|c| c.remove(peer_id(id))));
    let c = controller.clone();
    global.on_save_chat(move |id| c.with(|c| c.save_chat(peer_id(id))));
    let c = controller.clone();
    global.on_set_verified(move |id, verified| c.with(|c| c.set_verified(peer_id(id), verified)));
    let c = controller.clone();
    global.on_trust_new_key(move |id| c.with(|c| c.trust_new_key(peer_id(id))));
    let c = controller.clone();
    global.on_dismiss_key_warning(move |id| c.with(|c| c.dismiss_key_warning(peer_id(id))));
}
