//! `HostAdapter`: who this computer is, the settings, and the remembered
//! peers in Settings.

use std::path::Path;
use std::rc::Rc;

use slint::{ComponentHandle, SharedString, VecModel, Weak};

use crate::hostinfo::HostInfo;

use super::super::controller::Handle;
use super::super::copy;
use super::super::state::{Changes, KnownRow, State};
use super::super::ui::{AppWindow, HostAdapter, KnownPeerItem};

pub struct HostView {
    window: Weak<AppWindow>,
    known: Rc<VecModel<KnownPeerItem>>,
}

impl HostView {
    /// Shows what does not change while the window is open.
    pub fn new(window: &AppWindow, host: &HostInfo, fingerprint: &str) -> HostView {
        let global = window.global::<HostAdapter>();
        global.set_host_name(host.host_name.clone().into());
        global.set_local_address(host.primary().to_string().into());
        let addresses: Vec<SharedString> = host.addresses.iter().map(|a| a.to_string().into()).collect();
        global.set_addresses(Rc::new(VecModel::from(addresses)).into());
        global.set_fingerprint(fingerprint.into());
        let known = Rc::new(VecModel::default());
        global.set_known_peers(known.clone().into());
        HostView { window: window.as_weak(), known }
    }

    pub fn show(&self, state: &State, changes: &Changes) {
        let Some(window) = self.window.upgrade() else { return };
        let global = window.global::<HostAdapter>();
        if changes.settings {
            let settings = state.settings();
            global.set_display_name(settings.display_name.clone().into());
            global.set_downloads(settings.downloads.display().to_string().into());
            global.set_announce(settings.announce);
            global.set_keep_history(settings.keep_history);
            global.set_keep_in_tray(settings.keep_in_tray);
            global.set_banner(state.banner().into());
        }
        if changes.known {
            global.set_known_total(state.known_total().try_into().unwrap_or(i32::MAX));
            self.known.set_vec(state.known_rows().into_iter().map(known_item).collect::<Vec<_>>());
        }
        if state.folder_picker_missing {
            global.set_picker_problem(copy::NO_FOLDER_PICKER.into());
        }
    }

    /// The address the person chose to show for this computer.
    pub fn local_address(&self) -> String {
        self.window.upgrade().map(|w| w.global::<HostAdapter>().get_local_address().into()).unwrap_or_default()
    }

    /// Whether Settings can offer to keep PeerConn in the tray.
    pub fn show_tray_hosted(&self, hosted: bool) {
        if let Some(window) = self.window.upgrade() {
            window.global::<HostAdapter>().set_tray_hosted(hosted);
        }
    }

    /// Browse… found a folder: it goes in the field being edited.
    pub fn show_downloads_draft(&self, dir: &Path) {
        if let Some(window) = self.window.upgrade() {
            window.global::<HostAdapter>().set_downloads_draft(dir.display().to_string().into());
        }
    }
}

fn known_item(row: KnownRow) -> KnownPeerItem {
    KnownPeerItem {
        name: row.name.into(),
        detail: row.detail.into(),
        fingerprint: row.fingerprint.into(),
        verified: row.verified,
        always_accept: row.always_accept,
    }
}

pub fn connect(window: &AppWindow, controller: &Handle) {
    let global = window.global::<HostAdapter>();
    let c = controller.clone();
    global.on_save_settings(move |name, downloads| {
        c.with(|c| c.save_settings(&name, &downloads).err().unwrap_or_default()).into()
    });
    let c = controller.clone();
    global.on_pick_downloads(move || c.with(|c| c.pick_downloads()));
    let c = controller.clone();
    global.on_filter_known(move |filter| c.with(|c| c.filter_known(&filter)));
    let c = controller.clone();
    global.on_forget_key(move |fingerprint| c.with(|c| c.forget_key(&fingerprint)));
    let c = controller.clone();
    global.on_set_always_accept(move |fingerprint, always| c.with(|c| c.set_always_accept(&fingerprint, always)));
    let c = controller.clone();
    global.on_set_announce(move |announce| c.with(|c| c.set_announce(announce)));
    let c = controller.clone();
    global.on_set_keep_history(move |keep| c.with(|c| c.set_keep_history(keep)));
    let c = controller.clone();
    global.on_clear_history(move || c.with(|c| c.clear_history()));
    let c = controller.clone();
    global.on_set_keep_in_tray(move |keep| c.with(|c| c.set_keep_in_tray(keep)));
    let c = controller.clone();
    global.on_dismiss_banner(move || c.with(|c| c.dismiss_banner()));
}
