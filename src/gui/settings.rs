//! The window's settings, kept in `settings.json` in the platform's config
//! directory (`PEERCONN_CONFIG_DIR` overrides it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Settings {
    /// The name new peersockets start with.
    pub display_name: String,
    pub downloads: PathBuf,
    /// Key fingerprints whose files are accepted without asking (the engine
    /// holds the policy; it is told this list at start and every change).
    pub always_accept: Vec<String>,
    /// Announce listening peersockets on the local network (Nearby).
    pub announce: bool,
    /// Keep each peersocket's conversation on disk, to restore it at the
    /// next start (the peersockets themselves are kept either way).
    pub keep_history: bool,
    /// Closing the window leaves PeerConn running in the system tray
    /// (off: closing quits).
    pub keep_in_tray: bool,
}

pub use crate::logging::config_dir;

fn path() -> PathBuf {
    config_dir().join("settings.json")
}

impl Settings {
    fn defaults() -> Settings {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let mut name: String = host.chars().filter(|c| !c.is_control()).collect();
        while name.len() > crate::net::frame::MAX_NAME {
            name.pop();
        }
        Settings {
            display_name: if name.trim().is_empty() { "me".into() } else { name },
            downloads: crate::net::default_downloads(),
            always_accept: Vec::new(),
            announce: true,
            keep_history: true,
            keep_in_tray: false,
        }
    }

    /// Reads the settings; a missing or damaged file gives the defaults (a
    /// damaged one is logged and left for the person to look at).
    pub fn load() -> Settings {
        let mut settings = Settings::defaults();
        let path = path();
        let Ok(text) = std::fs::read_to_string(&path) else { return settings };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("ignoring {}: {e}", path.display());
                return settings;
            }
        };
        if let Some(name) = value["display_name"].as_str() {
            if crate::net::frame::check_name(name).is_ok() {
                settings.display_name = name.to_owned();
            }
        }
        if let Some(dir) = value["downloads"].as_str().filter(|d| !d.is_empty()) {
            settings.downloads = PathBuf::from(dir);
        }
        if let Some(announce) = value["announce"].as_bool() {
            settings.announce = announce;
        }
        if let Some(keep) = value["keep_in_tray"].as_bool() {
            settings.keep_in_tray = keep;
        }
        if let Some(keep) = value["keep_history"].as_bool() {
            settings.keep_history = keep;
        }
        if let Some(list) = value["always_accept"].as_array() {
            settings.always_accept = list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        }
        settings
    }

    /// Writes the settings on a worker thread (never on the UI thread):
    /// to a temporary file first, then renamed over the old one.
    pub fn save(&self) {
        let text = json!({
            "display_name": self.display_name,
            "downloads": self.downloads.display().to_string(),
            "always_accept": self.always_accept,
            "announce": self.announce,
            "keep_history": self.keep_history,
            "keep_in_tray": self.keep_in_tray,
        })
        .to_string();
        // Saves may overlap; each has a number, and an older one that comes
        // second is skipped, so the newest settings always win.
        static NEWEST: AtomicU64 = AtomicU64::new(0);
        static WRITING: Mutex<u64> = Mutex::new(0);
        let number = NEWEST.fetch_add(1, Ordering::SeqCst) + 1;
        let spawned = std::thread::Builder::new().name("peerconn-settings".into()).spawn(move || {
            let mut written = WRITING.lock().unwrap_or_else(|e| e.into_inner());
            if *written > number {
                return;
            }
            *written = number;
            let path = path();
            let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
            let result = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&tmp, text))
                .and_then(|_| std::fs::rename(&tmp, &path));
            match result {
                Ok(()) => log::info!("settings saved to {}", path.display()),
                Err(e) => log::error!("cannot save the settings to {}: {e}", path.display()),
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot save the settings: {e}");
        }
    }
}
