//! Every word the command line prints, in one place: each engine event as
//! a JSON object ([`json`]) and as a line of text ([`text`]), and the few
//! lines that are not events. The session decides *whether* to print;
//! this module decides *what*.

use std::io::{self, Write};

use serde_json::{json, Value};

use peerconn::files::human_size;
use peerconn::net::{printable, Event, PeerState, Trust};

/// Where output goes: JSON lines or readable text.
pub(super) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `event` in the chosen form (some events have only one form).
    pub fn event(&self, event: &Event, seen: &Seen) {
        let line = if self.json { json(event, seen).map(|v| escape_json(&v.to_string())) } else { text(event, seen) };
        if let Some(line) = line {
            self.line(&line);
        }
    }

    /// A line with both forms, for what is not an engine event.
    pub fn print(&self, value: Value, text: impl FnOnce() -> String) {
        self.line(&if self.json { escape_json(&value.to_string()) } else { text() });
    }

    /// A progress line that has no JSON form.
    pub fn text_only(&self, text: &str) {
        if !self.json {
            self.line(text);
        }
    }

    pub fn error(&self, reason: &str) {
        self.print(json!({"event": "error", "reason": reason}), || format!("error: {reason}"));
    }

    fn line(&self, line: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// JSON with the characters that deceive a reader written as `\u`
/// escapes, as text mode escapes them (C1 controls, text-direction marks,
/// invisible characters): the same strings to a program, and a terminal
/// showing the line is neither driven nor fooled. (They occur only inside
/// strings: JSON's own syntax is ASCII.)
pub(super) fn escape_json(line: &str) -> String {
    if !line.chars().any(peerconn::text::escaped_in_display) {
        return line.to_owned();
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if peerconn::text::escaped_in_display(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the session knows that an event does not say.
pub(super) struct Seen<'a> {
    /// The connected peer's name.
    pub peer_name: &'a str,
    /// The name of the transfer the event is about, when it is known.
    pub transfer: Option<&'a str>,
}

/// The event as one JSON object; `None` for events that have no JSON form.
pub(super) fn json(event: &Event, seen: &Seen) -> Option<Value> {
    Some(match event {
        Event::State { state: PeerState::Listening { local }, .. } => {
            json!({"event": "listening", "addr": local.to_string()})
        }
        Event::State { state: PeerState::Connected { peer_name, peer_addr, peer, .. }, .. } => json!({
            "event": "connected",
            "peer_name": peer_name,
            "peer_addr": peer_addr.to_string(),
            "fingerprint": peer.fingerprint,
            "safety_code": peer.safety_code,
            "trust": trust_word(peer.trust),
        }),
        Event::State { state: PeerState::Lost { reason, kind, .. }, .. } => {
            json!({"event": "lost", "kind": kind.as_str(), "reason": reason})
        }
        Event::Message { text, .. } => json!({"event": "message", "from": seen.peer_name, "text": text}),
        Event::Error { reason, .. } => json!({"event": "error", "reason": reason}),
        Event::KeyChanged { peer_name, address, old_fingerprint, new_fingerprint, .. } => json!({
            "event": "key_changed",
            "peer_name": peer_name,
            "address": address.to_string(),
            "old_fingerprint": old_fingerprint,
            "new_fingerprint": new_fingerprint,
        }),
        Event::FileIncoming { name, size, refused, accepted, folder, .. } => json!({
            "event": "file_offered",
            "name": name,
            "size": size,
            "refused": refused,
            "accepted": accepted,
            "folder": folder.map(|f| json!({"files": f.files, "folders": f.folders})),
        }),
        Event::FileProgress { bytes, total, files: Some((done, of)), .. } => json!({
            "event": "file_progress",
            "name": seen.transfer?,
            "bytes": bytes,
            "total": total,
            "files_done": done,
            "files": of,
        }),
        Event::FileProgress { bytes, total, .. } => {
            json!({"event": "file_progress", "name": seen.transfer?, "bytes": bytes, "total": total})
        }
        Event::FileResumed { name, offset, size, discarded, .. } => json!({
            "event": "file_resumed",
            "name": name,
            "offset": offset,
            "size": size,
            "discarded": discarded,
        }),
        Event::FileSent { name, size, .. } => json!({"event": "file_sent", "name": name, "size": size}),
        Event::FileReceived { name, path, size, blake3, .. } => json!({
            "event": "file_received",
            "name": name,
            "path": path.display().to_string(),
            "size": size,
            "blake3": blake3,
        }),
        Event::FileFailed { name, kind, reason, .. } => {
            json!({"event": "file_failed", "name": name, "kind": kind.as_str(), "reason": reason})
        }
        Event::FileWaiting { name, writing, .. } => json!({"event": "file_waiting", "name": name, "writing": writing}),
        Event::State { state: PeerState::Connecting { .. }, .. }
        | Event::FileOutgoing { .. }
        | Event::Trust { .. }
        | Event::Renamed { .. }
        | Event::Removed { .. }
        | Event::KnownPeers { .. } => return None,
        Event::Reconnecting { after, attempt, .. } => {
            json!({"event": "reconnecting", "after_ms": after.as_millis() as u64, "attempt": attempt})
        }
    })
}

/// The event as a line a person reads; `None` for events not printed.
pub(super) fn text(event: &Event, seen: &Seen) -> Option<String> {
    Some(match event {
        Event::State { state: PeerState::Listening { local }, .. } => {
            let hint = if local.ip().is_unspecified() {
                let host = peerconn::hostinfo::HostInfo::detect();
                format!(" (other computers can connect to {}:{})", host.primary(), local.port())
            } else {
                String::new()
            };
            format!("listening on {local}{hint}")
        }
        Event::State { state: PeerState::Connecting { remote }, .. } => format!("connecting to {remote}"),
        Event::State { state: PeerState::Connected { peer_name, peer_addr, peer, .. }, .. } => format!(
            "connected to {} at {peer_addr}, encrypted\n  peer key {} ({})\n  safety code {} (the peer sees the \
             same digits unless someone is in between)",
            printable(peer_name),
            peer.fingerprint,
            trust_word(peer.trust),
            peer.safety_code
        ),
        Event::State { state: PeerState::Lost { reason, .. }, .. } => format!("lost: {reason}"),
        Event::Message { text, .. } => format!("{}: {}", printable(seen.peer_name), printable(text)),
        Event::Error { reason, .. } => format!("error: {reason}"),
        Event::KeyChanged { peer_name, address, old_fingerprint, new_fingerprint, .. } => format!(
            "WARNING: \"{}\" at {address} presented a different key ({new_fingerprint}) from the one remembered \
             ({old_fingerprint}). Nothing was exchanged. If you have checked with them that the key really \
             changed, run `peerconn forget {old_fingerprint}` and connect again.",
            printable(peer_name)
        ),
        Event::FileOutgoing { name, size, folder, .. } => {
            format!("offering {} ({}{})", printable(name), folder_words(*folder), human_size(*size))
        }
        Event::FileIncoming { name, size, accepted, folder, .. } => {
            let accepting = if *accepted { ", accepting" } else { "" };
            format!("the peer offers {} ({}{}){accepting}", printable(name), folder_words(*folder), human_size(*size))
        }
        Event::FileProgress { bytes, total, bytes_per_sec, eta, .. } => {
            let left = eta.map(|d| format!(", {} s left", d.as_secs())).unwrap_or_default();
            // A transfer's first reading has no speed yet.
            let speed =
                if *bytes_per_sec == 0 { String::new() } else { format!(" ({}/s{left})", human_size(*bytes_per_sec)) };
            let name = printable(seen.transfer?);
            format!("{name}: {}% of {}{speed}", tenths(*bytes, *total) * 10, human_size(*total))
        }
        Event::FileResumed { name, offset: 0, discarded, .. } => format!(
            "{}: the {} from an earlier attempt did not match (the file changed, or the partial file is damaged); \
             starting again from zero",
            printable(name),
            human_size(*discarded)
        ),
        Event::FileResumed { name, offset, size, discarded, .. } => {
            let again = match discarded {
                0 => String::new(),
                _ => format!("; {} from before did not match and goes again", human_size(*discarded)),
            };
            let percent = offset.saturating_mul(100).checked_div(*size).unwrap_or(100);
            format!(
                "{}: resumed at {percent}% ({} already here, verified){again}",
                printable(name),
                human_size(*offset)
            )
        }
        Event::FileSent { name, size, .. } => {
            format!("sent {} ({}), verified by the peer", printable(name), human_size(*size))
        }
        Event::FileReceived { name, path, size, .. } => {
            format!("received {} ({}) into {}", printable(name), human_size(*size), path.display())
        }
        Event::FileFailed { name, reason, .. } => format!("file {} failed: {reason}", printable(name)),
        Event::FileWaiting { name, writing, .. } => {
            format!("{} waits: {writing} files from this peer are being received", printable(name))
        }
        Event::Trust { .. } | Event::Renamed { .. } | Event::Removed { .. } | Event::KnownPeers { .. } => return None,
        Event::Reconnecting { after, attempt, .. } => {
            format!("reconnecting in {:.0} s (attempt {attempt})", after.as_secs_f64().max(1.0))
        }
    })
}

/// "a folder of 2000 files in 12 folders, " or nothing for a file.
fn folder_words(folder: Option<peerconn::net::FolderInfo>) -> String {
    match folder {
        None => String::new(),
        Some(f) => format!("a folder of {} files in {} folders, ", f.files, f.folders),
    }
}

/// Tenths of a transfer done (text mode prints each tenth once).
pub(super) fn tenths(bytes: u64, total: u64) -> u64 {
    bytes.saturating_mul(10).checked_div(total).unwrap_or(10)
}

fn trust_word(trust: Trust) -> &'static str {
    match trust {
        Trust::New => "new, unverified",
        Trust::Known => "unverified",
        Trust::Verified => "verified",
    }
}

/// This installation's key, printed first.
pub(super) fn key(out: &Output, fingerprint: &str) {
    out.print(json!({"event": "key", "fingerprint": fingerprint}), || {
        format!("this installation's key: {fingerprint}")
    });
}

/// The pairing code a listener made up or was given.
pub(super) fn pairing_code(out: &Output, code: &str) {
    out.print(json!({"event": "pairing_code", "code": code}), || {
        format!("pairing code: {code} (the person connecting must type it)")
    });
}

/// The link to a listener: it pins this installation's key.
pub(super) fn link(out: &Output, url: &str) {
    out.print(json!({"event": "link", "url": url}), || {
        format!("link: {url}\n  (give it to the person connecting: `peerconn connect LINK` lets in only this key)")
    });
}

/// The router forwards `addr` to this listener.
pub(super) fn reachable(out: &Output, addr: std::net::SocketAddr, via: &str, url: &str) {
    out.print(json!({"event": "reachable", "addr": addr.to_string(), "via": via, "link": url}), || {
        if via == "ipv6" {
            format!(
                "reachable over IPv6 at {addr} (a global address: no router mapping needed, where firewalls allow \
                 the port)\n  link: {url}"
            )
        } else {
            format!("reachable from other networks at {addr} (the router maps it, by {via})\n  link: {url}")
        }
    });
}

/// Why other networks cannot reach this listener.
pub(super) fn unreachable(out: &Output, kind: &str, reason: &str) {
    out.print(json!({"event": "unreachable", "kind": kind, "reason": reason}), || {
        format!("not reachable from other networks: {reason}")
    });
}

/// The y/N question for an offer.
pub(super) fn ask(name: &str, size: u64) -> String {
    format!("accept {} ({})? [y/N]", printable(name), human_size(size))
}

pub(super) const DECLINED_WITHOUT_TERMINAL: &str =
    "declined: start with --accept-files to receive files without a terminal";

#[cfg(test)]
mod tests {
    use super::escape_json;

    #[test]
    fn json_escapes_what_text_mode_escapes_and_means_the_same() {
        let value = serde_json::json!({"text": "evil\u{202e}txt.exe \u{85} al\u{200b}ice \u{e0041}"});
        let line = escape_json(&value.to_string());
        assert!(line.is_ascii(), "{line}");
        assert!(line.contains("\\u202e") && line.contains("\\u0085") && line.contains("\\u200b"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value, "a program reads the same string");
    }
}
