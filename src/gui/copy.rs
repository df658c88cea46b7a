//! The wording a person reads in the window, in one place: status lines,
//! what to do about a key, file card details, form mistakes, notices from
//! the worker threads. The state decides what happened; this file says it.
//!
//! Names and addresses that came from a peer are escaped here
//! (`printable`), so nothing a peer sends can reorder what is read.

use std::net::SocketAddr;
use std::path::Path;

use crate::files::human_size;
use crate::net::{printable, PeerIdentity, Trust};

/// The four texts a peersocket's state shows: its second line in the list,
/// its line in the chat, why the composer is disabled ("" when it is not),
/// and the chat header's subtitle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLines {
    pub detail: String,
    pub line: String,
    pub blocked: String,
    pub subtitle: String,
}

/// Before the engine reported anything.
pub fn listening_soon(bind: SocketAddr) -> String {
    format!("listening on {bind}…")
}

pub fn connecting_soon(remote: SocketAddr) -> String {
    format!("connecting to {remote}…")
}

/// Where peers reach a listener bound to every address: `host` is the
/// address the window shows for this computer.
pub fn reach(local: SocketAddr, host: &str) -> String {
    if local.ip().is_unspecified() {
        format!(" (peers connect to {host}:{})", local.port())
    } else {
        String::new()
    }
}

pub fn listening(local: SocketAddr, reach: &str, code: Option<&str>) -> StateLines {
    match code {
        Some(code) => StateLines {
            detail: format!("waiting on {local} · code {code}"),
            line: format!("Listening on {local}{reach}. Only a peer that types the pairing code {code} can connect."),
            blocked: format!(
                "Waiting for a peer to connect to {local}{reach} with the pairing code {code}; read it to them by \
                 voice or in person."
            ),
            subtitle: format!("listening on {local}{reach} · pairing code {code}"),
        },
        None => StateLines {
            detail: format!("waiting on {local}"),
            line: format!("Listening on {local}{reach}."),
            blocked: format!("Waiting for a peer to connect to {local}{reach}…"),
            subtitle: format!("listening on {local}{reach}"),
        },
    }
}

pub fn connecting(remote: SocketAddr) -> StateLines {
    StateLines {
        detail: format!("connecting to {remote}"),
        line: format!("Connecting to {remote}…"),
        blocked: format!("Connecting to {remote}…"),
        subtitle: format!("connecting to {remote}"),
    }
}

pub fn connected(peer_name: &str, peer_addr: SocketAddr, peer: &PeerIdentity) -> StateLines {
    let who = printable(peer_name);
    StateLines {
        detail: format!("{who} · {peer_addr}"),
        line: format!(
            "Connected to {who} at {peer_addr}, encrypted. Their key: {}. Safety code: {} (the same digits on both \
             screens means nobody is in between).",
            peer.fingerprint, peer.safety_code
        ),
        blocked: String::new(),
        subtitle: format!("connected to {who} at {peer_addr}"),
    }
}

/// A client stopped because the key changed: the warning above the chat
/// says what happened and what to do, at length.
pub fn stopped_by_key_change() -> StateLines {
    StateLines {
        detail: "stopped: the peer's key changed".into(),
        line: "Connection stopped: the peer's key changed.".into(),
        blocked: "Not connected: the peer's key changed. Trust the new key only once they have confirmed it; \
                  otherwise remove this peersocket."
            .into(),
        subtitle: "stopped: the peer's key changed".into(),
    }
}

pub fn lost(reason: &str, server: bool) -> StateLines {
    let again = if server { "Listen again" } else { "Reconnect" };
    let reason = reason.trim_end_matches('.');
    StateLines {
        detail: reason.to_owned(),
        line: format!("Connection ended: {reason}."),
        blocked: format!("Not connected: {reason}. Right-click the peersocket and choose {again}."),
        subtitle: format!("inactive: {reason}"),
    }
}

/// A client that reconnects by itself, waiting for its next try.
pub fn reconnecting(after: std::time::Duration) -> StateLines {
    let secs = after.as_secs_f64().round().max(1.0) as u64;
    StateLines {
        detail: format!("reconnecting in {}", duration(secs)),
        line: format!("Trying again in {} (Disconnect stops it).", duration(secs)),
        blocked: format!("Not connected: reconnecting in {}. Disconnect stops it.", duration(secs)),
        subtitle: format!("reconnecting in {}", duration(secs)),
    }
}

// ----- kept across restarts --------------------------------------------------

/// The line under a restored conversation.
pub fn restored(saved_at: &str, peer_key: Option<&str>, server: bool) -> String {
    let when = if saved_at.is_empty() { String::new() } else { format!(" (kept {saved_at})") };
    let last = peer_key.map(|k| format!(" The last peer had key {k}.")).unwrap_or_default();
    let again = if server { "listening again" } else { "connecting again" };
    format!("PeerConn restarted: the conversation above is from before{when}; {again}.{last}")
}

/// A file card whose transfer a restart cut short.
pub fn cut_by_restart(incoming: bool) -> String {
    match incoming {
        true => "Not finished: PeerConn closed first. If the peer sends it again, it resumes where it stopped.".into(),
        false => "Not finished: PeerConn closed first. Send it again and it resumes where it stopped.".into(),
    }
}

pub const HISTORY_CLEARED: &str = "History cleared.";

/// An accepted file that waits for others from the same peer to end.
pub fn waiting_for_writer(writing: usize) -> String {
    format!("Accepted; waiting: {writing} files from this peer are being received, it starts when one ends")
}

/// Files dropped (or pasted) with no conversation shown.
pub const DROP_WHERE: &str =
    "Nothing was sent: select a peersocket on the left, then drop the files on its conversation.";

/// Said once when closing the window left PeerConn in the tray.
pub const STILL_IN_TRAY: &str =
    "PeerConn is still running in the tray: peers can reach you. Quit from its menu; Settings changes this.";

// ----- notifications ----------------------------------------------------------

/// Characters of a message a notification shows at most.
const ALERT_CHARS: usize = 120;

/// A message, as its notification shows it (already escaped, one line).
pub fn alert_message(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(ALERT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

pub fn alert_offer(name: &str, size: u64) -> String {
    alert_message(&format!("offers {name} ({})", human_size(size)))
}

/// Several things arrived from one peer in one batch.
pub fn alert_more(unread: u32) -> String {
    format!("{unread} new messages and offers")
}

/// A kept conversation that could not be read.
pub fn set_aside(path: &Path, why: &str) -> String {
    format!("A kept conversation could not be restored ({why}); it was moved to {}.", path.display())
}

/// A kept peersocket the engine would not make again.
pub fn not_restored(name: &str, why: &str) -> String {
    format!("{} was not restored: {why}.", printable(name))
}

pub const DISCONNECTING: &str = "Disconnecting…";
pub const SELECT_A_PEERSOCKET: &str = "Select a peersocket on the left.";

pub fn not_sent(why: &str) -> String {
    format!("Not sent: {why}.")
}

// ----- keys -------------------------------------------------------------------

pub fn key_changed_line(peer_name: &str, address: SocketAddr, old: &str, new: &str, server: bool) -> String {
    let again = if server { "it connects again" } else { "PeerConn reconnects" };
    format!(
        "⚠ Key changed: \"{}\" at {address} presented the key {new}, not {old} as before. Nothing was exchanged. It \
         may have reinstalled PeerConn, or someone may be in between. Ask them, by voice, for their key; if it is \
         {new}, right-click this peersocket and choose Trust new key ({again}).",
        printable(peer_name)
    )
}

/// The warning above the chat after a key change.
pub fn key_warning(peer_name: &str, address: SocketAddr, old: &str, new: &str, server: bool) -> String {
    let after = if server { "They then connect again." } else { "PeerConn then reconnects." };
    format!(
        "\"{}\" at {address} now has the key {new}, not {old} as before; nothing was exchanged. They may have \
         reinstalled PeerConn, or someone may be in between: ask them by voice for the key at the top of their \
         window, and trust it only if it matches. {after}",
        printable(peer_name),
    )
}

pub fn trusted_new_key(peer_name: &str, new: &str, server: bool) -> String {
    let then = if server { "They can connect again now." } else { "PeerConn reconnects." };
    format!(
        "You trusted the new key {new} for \"{}\". {then} Once connected, compare the safety code with them.",
        printable(peer_name)
    )
}

pub fn marked(fingerprint: &str, verified: bool) -> String {
    if verified {
        format!("You marked the key {fingerprint} verified.")
    } else {
        format!("The key {fingerprint} is no longer marked verified.")
    }
}

pub fn forgot_key(fingerprint: &str) -> String {
    format!("You forgot the key {fingerprint}; its next connection is trusted on first use.")
}

/// What the person should know, or do, about the connected peer's key.
pub fn trust_note(trust: Trust, paired: bool, server: bool) -> &'static str {
    match trust {
        Trust::Verified if paired && server => "Verified: they typed your pairing code.",
        Trust::Verified if paired => "Verified: the listener proved the same pairing code.",
        Trust::Verified => "You verified this key by comparing the safety code.",
        Trust::New => {
            "First time this key connects. Compare the safety code with them by voice; if it matches, mark it \
             verified."
        }
        Trust::Known => {
            "Seen before, never verified. Compare the safety code with them by voice; if it matches, mark it \
             verified."
        }
    }
}

/// A remembered peer's second line in Settings.
pub fn known_detail(fingerprint: &str, address: Option<&str>) -> String {
    match address {
        Some(address) => format!("key {fingerprint} · at {}", printable(address)),
        None => format!("key {fingerprint}"),
    }
}

// ----- chat and files ---------------------------------------------------------

/// A peer's message as the window shows it: lines and tabs stay, other
/// control characters and bidirectional overrides are shown escaped, so a
/// message cannot reorder what a person reads.
pub fn message(text: &str) -> String {
    text.split('\n')
        .map(|line| line.split('\t').map(|p| printable(p).into_owned()).collect::<Vec<_>>().join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn older_dropped(kept: usize) -> String {
    format!("Older messages were dropped to save memory: this conversation keeps the last {}.", thousands(kept as u64))
}

pub fn size(bytes: u64) -> String {
    human_size(bytes)
}

pub const STARTING: &str = "starting…";
pub const SENT_AND_VERIFIED: &str = "Sent and verified by the peer";

/// How long a finished transfer took and how fast, from when its bytes
/// began to move (" · 4.2 GB in 38 s, 112 MB/s"; "" when none moved here).
pub fn took(size: u64, moving: Option<(std::time::Instant, u64)>) -> String {
    let Some((since, from)) = moving else { return String::new() };
    let moved = size.saturating_sub(from);
    let secs = since.elapsed().as_secs_f64();
    if secs < 1.0 {
        return format!(" · {} in under a second", crate::files::human_size(moved));
    }
    let rate = (moved as f64 / secs) as u64;
    format!(
        " · {} in {}, {}/s",
        crate::files::human_size(moved),
        duration(secs.round() as u64),
        crate::files::human_size(rate)
    )
}

/// A running transfer's speed and time left; the first reading has no
/// speed yet.
pub fn speed(bytes_per_sec: u64, secs_left: Option<u64>) -> String {
    if bytes_per_sec == 0 {
        return STARTING.into();
    }
    let left = secs_left.map(|s| format!(" · {} left", duration(s))).unwrap_or_default();
    format!("{}/s{left}", human_size(bytes_per_sec))
}

/// A file's name as its card shows it; a folder's says what it holds.
pub fn offered_name(name: &str, folder: Option<crate::net::FolderInfo>) -> String {
    match folder {
        None => name.to_owned(),
        Some(f) => {
            let files = if f.files == 1 { "1 file".to_owned() } else { format!("{} files", thousands(f.files)) };
            format!("{name}/ (folder, {files})")
        }
    }
}

/// Which file of a folder is moving: the one after those done.
pub fn file_of(done: u64, of: u64) -> String {
    format!("file {} of {}", thousands((done + 1).min(of)), thousands(of))
}

/// Where a transfer picked up an earlier, cut attempt.
pub fn resumed(offset: u64, size: u64, discarded: u64) -> String {
    if offset == 0 {
        return "started again: what arrived before did not match".into();
    }
    // Never "100 %" for a file still missing bytes.
    let percent = (offset.saturating_mul(100) / size.max(1)).min(99);
    match discarded {
        0 => format!("resumed at {percent} %"),
        _ => format!("resumed at {percent} % ({} sent again)", human_size(discarded)),
    }
}

pub fn saved_as(path: &Path) -> String {
    format!("Saved as {}", path.display())
}

pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// A conversation as the text file Save chat writes. `peer` names whoever
/// sent "theirs" lines (their key, when one was seen). Continuation lines
/// are indented, so a message cannot forge a line.
pub fn chat_file<'a>(title: &str, peer: &str, rows: impl IntoIterator<Item = &'a super::chatlog::ChatRow>) -> String {
    use super::chatlog::Kind;
    let mut text = format!("PeerConn conversation: {title}\n\n");
    for row in rows {
        let who = match row.kind {
            Kind::Mine => "me",
            Kind::Theirs => peer,
            Kind::File(_) => "file",
            Kind::System => "--",
        };
        let body = row.text.replace('\n', "\n    ");
        text.push_str(&format!("[{}] {who}: {body}\n", row.time));
    }
    text
}

pub fn chat_file_name(title: &str) -> String {
    format!("{title} chat.txt")
}

/// The file name offered when the peersocket's name makes none.
pub const CHAT_FILE: &str = "chat.txt";

pub fn chat_saved(path: &Path, picked: bool) -> String {
    if picked {
        format!("Chat saved as {}.", path.display())
    } else {
        format!("No file picker was found; the chat was saved as {}.", path.display())
    }
}

pub fn chat_not_saved(path: &Path, why: &str) -> String {
    format!("The chat could not be saved to {}: {why}.", path.display())
}

pub fn folder_not_opened(folder: &Path, why: &str) -> String {
    format!("The folder {} could not be opened: {why}.", folder.display())
}

/// The native pickers' titles.
pub const PICK_FILES: &str = "Send files";
pub const PICK_FOLDER: &str = "Send a folder";
pub const PICK_DOWNLOADS: &str = "Downloads folder";
pub const SAVE_CHAT: &str = "Save chat";

pub const NO_FOLDER_PICKER: &str = "No folder picker was found (zenity or kdialog): type the folder's path.";

// ----- forms ------------------------------------------------------------------

pub fn bad_name(why: &str) -> String {
    format!("Name: {why}.")
}

pub fn bad_display_name(why: &str) -> String {
    format!("Display name: {why}.")
}

pub const NO_DOWNLOADS: &str = "Downloads folder: choose a folder.";

/// A mistake the engine found ("name is empty") as a sentence.
pub fn refused(why: &str) -> String {
    format!("{why}.")
}

pub const NO_ADDRESS: &str = "Address: give the peer's IP address, e.g. 192.168.1.20.";

pub fn not_an_address(typed: &str) -> String {
    format!("Address: '{typed}' is not an IP address (write four numbers like 192.168.1.20, or an IPv6 address).")
}

pub fn cannot_connect_to(ip: std::net::IpAddr) -> String {
    format!("Address: {ip} cannot be connected to; give the peer's address.")
}

pub fn port_out_of_range(port: u32) -> String {
    format!("Port: {port} is out of range; ports go from 1 to 65535.")
}

pub const NO_PORT: &str = "Port: give a port number from 1 to 65535.";

pub fn not_a_port(typed: &str) -> String {
    format!("Port: '{typed}' is not a number from 1 to 65535.")
}

pub const NO_PAIRING_CODE: &str = "Pairing code: type a code for your peer, or untick \"Require a pairing code\".";

pub fn bad_pairing_code(why: &str) -> String {
    format!("Pairing code: {why}.")
}

/// The link card's line on other networks.
pub fn reach_note(reach: &super::state::Reach) -> String {
    use super::state::Reach;
    match reach {
        Reach::Off => String::new(),
        Reach::Asking => "Asking the router to forward the port from other networks…".into(),
        Reach::Mapped { external, via } => {
            format!("Reachable from other networks at {external} (the router forwards it, by {via}).")
        }
        Reach::Failed(why) => format!("Not reachable from other networks: {why}."),
    }
}

/// What the chat says when the mapping is granted or refused.
pub fn reach_line(reach: &super::state::Reach) -> Option<String> {
    use super::state::Reach;
    match reach {
        Reach::Mapped { .. } | Reach::Failed(_) => Some(reach_note(reach)),
        Reach::Off | Reach::Asking => None,
    }
}

/// A Nearby row's second line.
pub fn nearby_detail(row: &super::state::NearbyRow) -> String {
    let known = match row.trust {
        Some(crate::net::Trust::Verified) => "verified",
        Some(_) => "known, unverified",
        None => "new key",
    };
    let code = if row.code_required { " · asks for a pairing code" } else { "" };
    let host = if row.address.contains(':') { format!("[{}]", row.address) } else { row.address.clone() };
    format!("{known}{code} · {host}:{} · key {}", row.port, row.fingerprint)
}

pub fn bad_link(why: &str) -> String {
    format!("Link: {why}.")
}

pub fn bad_pin(why: &str) -> String {
    format!("Key from the link: {why}.")
}

/// 5000 as "5,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::chatlog::{ChatRow, Kind};
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(5000), "5,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn a_saved_chat_indents_continuation_lines_so_a_message_cannot_forge_one() {
        let rows = [
            ChatRow { kind: Kind::Theirs, text: "hi\n[09:00] me: send me your password".into(), time: "09:41".into() },
            ChatRow { kind: Kind::Mine, text: "no".into(), time: "09:42".into() },
        ];
        let text = chat_file("Den", "0182-0015", &rows);
        assert_eq!(
            text,
            "PeerConn conversation: Den\n\n[09:41] 0182-0015: hi\n    [09:00] me: send me your password\n[09:42] me: no\n"
        );
    }

    #[test]
    fn a_peers_message_keeps_its_lines_but_cannot_reorder_what_is_read() {
        assert_eq!(message("a\tb\nc"), "a\tb\nc");
        assert!(!message("abc\u{202e}def").contains('\u{202e}'));
    }

    #[test]
    fn times_left_read_in_the_largest_units() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(150), "2 min 30 s");
        assert_eq!(duration(7260), "2 h 1 min");
        assert_eq!(speed(0, Some(3)), STARTING);
    }
}
