//! The desktop around the window: native file and folder pickers, opening
//! a folder in the file manager, writing a saved chat to disk.
//!
//! Each runs on a worker thread of its own (a picker waits on the person,
//! a write on the disk; the UI thread waits on neither) and reports back
//! as a [`Report`] on a channel that the controller's timer drains with the
//! engine's events. No result comes back through the UI: the window's
//! callbacks only start things.

use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};

use crate::net::PeerId;

use super::copy;

/// Reports waiting at most; a worker that finds the channel full waits
/// (only workers send, and only once each).
const REPORTS_QUEUED: usize = 64;

/// What a worker thread found.
#[derive(Debug, PartialEq)]
pub enum Report {
    /// What the store found of the last run's peersockets.
    Restored(super::store::Loaded),
    /// Whether the desktop shows tray icons.
    TrayHosted(bool),
    /// Files picked to send to `peer` (the picker may close after the
    /// person selected another peersocket).
    FilesPicked {
        peer: PeerId,
        paths: Vec<PathBuf>,
    },
    /// There is no native file picker: the composer offers a path field.
    NoFilePicker,
    DownloadsPicked(PathBuf),
    NoFolderPicker,
    /// `picked`: where the person chose; otherwise the downloads folder,
    /// for want of a picker.
    ChatSaved {
        peer: PeerId,
        path: PathBuf,
        picked: bool,
    },
    ChatNotSaved {
        peer: PeerId,
        path: PathBuf,
        why: String,
    },
    FolderNotOpened {
        peer: PeerId,
        folder: PathBuf,
        why: String,
    },
}

/// Starts the workers; each holds a sender.
pub struct Shell {
    reports: Sender<Report>,
}

impl Shell {
    /// The shell and the end its reports arrive at.
    pub fn new() -> (Shell, Receiver<Report>) {
        let (tx, rx) = crossbeam_channel::bounded(REPORTS_QUEUED);
        (Shell { reports: tx }, rx)
    }

    /// Where a worker of another module (the store) reports.
    pub fn reporter(&self) -> Sender<Report> {
        self.reports.clone()
    }

    /// The native file picker, for files to send to `peer`.
    pub fn pick_files(&self, peer: PeerId) {
        self.spawn("peerconn-picker", move || {
            match native_dialog::DialogBuilder::file().set_title(copy::PICK_FILES).open_multiple_file().show() {
                Ok(paths) => Some(Report::FilesPicked { peer, paths }),
                Err(e) => {
                    log::warn!("no file picker: {e}");
                    Some(Report::NoFilePicker)
                }
            }
        });
    }

    /// The native folder picker, for a folder to send to `peer`.
    pub fn pick_folder(&self, peer: PeerId) {
        self.spawn("peerconn-picker", move || {
            match native_dialog::DialogBuilder::file().set_title(copy::PICK_FOLDER).open_single_dir().show() {
                Ok(dir) => dir.map(|dir| Report::FilesPicked { peer, paths: vec![dir] }),
                Err(e) => {
                    log::warn!("no folder picker: {e}");
                    Some(Report::NoFilePicker)
                }
            }
        });
    }

    /// The native folder picker, starting at `start`.
    pub fn pick_downloads(&self, start: PathBuf) {
        self.spawn("peerconn-picker", move || {
            let picked = native_dialog::DialogBuilder::file()
                .set_title(copy::PICK_DOWNLOADS)
                .set_location(&start)
                .open_single_dir()
                .show();
            match picked {
                Ok(dir) => dir.map(Report::DownloadsPicked),
                Err(e) => {
                    log::warn!("no folder picker: {e}");
                    Some(Report::NoFolderPicker)
                }
            }
        });
    }

    /// Shows a received file in the file manager (its folder on Linux).
    pub fn open_folder(&self, peer: PeerId, file: PathBuf) {
        self.spawn("peerconn-open", move || {
            let folder = file.parent().unwrap_or(&file).to_path_buf();
            match open_command(&file, &folder).spawn().and_then(|mut child| child.wait()) {
                Ok(_) => None,
                Err(e) => {
                    log::warn!("cannot open {}: {e}", folder.display());
                    Some(Report::FolderNotOpened { peer, folder, why: e.to_string() })
                }
            }
        });
    }

    /// Asks where to save a conversation (offering `name`), then writes
    /// `text` there; without a picker, into `fallback` under a name not
    /// yet taken.
    pub fn save_chat(&self, peer: PeerId, name: String, text: String, fallback: PathBuf) {
        self.spawn("peerconn-save", move || {
            let picked = native_dialog::DialogBuilder::file()
                .set_title(copy::SAVE_CHAT)
                .set_filename(&name)
                .save_single_file()
                .show();
            let (path, picked) = match picked {
                Ok(Some(path)) => (path, true),
                Ok(None) => return None,
                Err(e) => {
                    log::warn!("no file picker to save the chat: {e}");
                    (free_name(&fallback, &name)?, false)
                }
            };
            let written =
                std::fs::create_dir_all(path.parent().unwrap_or(&path)).and_then(|_| std::fs::write(&path, text));
            Some(match written {
                Ok(()) => {
                    log::info!("chat saved as {}", path.display());
                    Report::ChatSaved { peer, path, picked }
                }
                Err(e) => {
                    log::warn!("cannot save the chat to {}: {e}", path.display());
                    Report::ChatNotSaved { peer, path, why: e.to_string() }
                }
            })
        });
    }

    /// Asks whether the desktop shows tray icons: on Linux and the BSDs
    /// only when a StatusNotifierWatcher owns its name on the session bus
    /// (a desktop without one would swallow the icon, and a window closed
    /// "to the tray" could not come back); Windows and macOS always do.
    pub fn check_tray(&self) {
        self.spawn("peerconn-tray", || Some(Report::TrayHosted(tray_hosted())));
    }

    fn spawn(&self, name: &str, work: impl FnOnce() -> Option<Report> + Send + 'static) {
        let reports = self.reports.clone();
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            if let Some(report) = work() {
                // The window may have closed meanwhile: nobody to tell.
                let _ = reports.send(report);
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start {name}: {e}");
        }
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
fn tray_hosted() -> bool {
    let check = || -> zbus::Result<bool> {
        let bus = zbus::blocking::Connection::session()?;
        let dbus = zbus::blocking::fdo::DBusProxy::new(&bus)?;
        Ok(dbus.name_has_owner("org.kde.StatusNotifierWatcher".try_into()?)?)
    };
    match check() {
        Ok(hosted) => hosted,
        Err(e) => {
            log::info!("no tray on this desktop: {e}");
            false
        }
    }
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn tray_hosted() -> bool {
    true
}

/// A name in `dir` not yet taken: `name`, then "name (1).ext" and so on.
fn free_name(dir: &Path, name: &str) -> Option<PathBuf> {
    let (stem, ext) = crate::files::names::split_extension(name);
    (0..1000)
        .map(|n| if n == 0 { name.to_owned() } else { format!("{stem} ({n}){ext}") })
        .map(|n| dir.join(n))
        .find(|p| !p.exists())
}

#[cfg(windows)]
fn open_command(file: &Path, _folder: &Path) -> std::process::Command {
    use std::os::windows::process::CommandExt;
    // Explorer wants the quotes around the path only, not the switch.
    let mut command = std::process::Command::new("explorer");
    command.raw_arg(format!("/select,\"{}\"", file.display()));
    command
}

#[cfg(not(windows))]
fn open_command(file: &Path, folder: &Path) -> std::process::Command {
    if cfg!(target_os = "macos") {
        let mut command = std::process::Command::new("open");
        command.arg("-R").arg(file);
        command
    } else {
        let mut command = std::process::Command::new("xdg-open");
        command.arg(folder);
        command
    }
}
