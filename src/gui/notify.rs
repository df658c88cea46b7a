//! Desktop notifications, on the `peerconn-notify` thread: showing one
//! talks to the desktop (D-Bus on Linux and the BSDs, the notification
//! centre on macOS, a toast on Windows) and may wait on it, which the UI
//! thread never does.
//!
//! What to notify about is the state's decision ([`Alert`]); this only
//! shows them, at most one per peersocket every [`QUIET`], so a chatty
//! peer does not bury the desktop. A desktop without a notification
//! service costs one line in the log.

use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::state::Alert;
use crate::net::PeerId;

/// Notifications waiting at most; more are dropped (the unread count in
/// the title and the list still says it).
const QUEUED: usize = 16;
/// One notification per peersocket this often at most.
pub const QUIET: Duration = Duration::from_secs(5);

pub struct Notifier {
    alerts: Option<Sender<Alert>>,
    thread: Option<JoinHandle<()>>,
    last: HashMap<PeerId, Instant>,
}

impl Notifier {
    pub fn start() -> Notifier {
        let (tx, rx) = crossbeam_channel::bounded::<Alert>(QUEUED);
        let thread = std::thread::Builder::new().name("peerconn-notify".into()).spawn(move || {
            let mut warned = false;
            for alert in rx {
                if let Err(e) = show(&alert) {
                    if !warned {
                        log::warn!("cannot show a desktop notification: {e}");
                        warned = true;
                    }
                }
            }
        });
        match thread {
            Ok(thread) => Notifier { alerts: Some(tx), thread: Some(thread), last: HashMap::new() },
            Err(e) => {
                log::warn!("no desktop notifications: {e}");
                Notifier { alerts: None, thread: None, last: HashMap::new() }
            }
        }
    }

    /// Shows what the state asked for, unless that peersocket had one
    /// less than [`QUIET`] ago.
    pub fn show(&mut self, alerts: Vec<Alert>) {
        let Some(tx) = &self.alerts else { return };
        let now = Instant::now();
        for alert in alerts {
            if self.last.get(&alert.peer).is_some_and(|at| now.duration_since(*at) < QUIET) {
                continue;
            }
            self.last.insert(alert.peer, now);
            log::debug!("notification for {}", alert.title);
            let _ = tx.try_send(alert);
        }
        self.last.retain(|_, at| now.duration_since(*at) < QUIET);
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.alerts = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn show(alert: &Alert) -> Result<(), String> {
    let mut n = notify_rust::Notification::new();
    n.appname("PeerConn").summary(&alert.title).body(&alert.body);
    #[cfg(all(unix, not(target_os = "macos")))]
    n.icon("mail-message-new").hint(notify_rust::Hint::Category("im.received".into()));
    n.show().map(|_| ()).map_err(|e| e.to_string())
}
