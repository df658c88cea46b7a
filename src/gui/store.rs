//! Peersockets and their conversations, kept across restarts: one file per
//! peersocket, `peersockets/<key>.json` in the data directory, holding what
//! it takes to make it again (name, role, address, options, the key last
//! seen) and its chat (the newest rows, at most [`TEXT_KEPT`] bytes of
//! text).
//!
//! Why one file each: a busy conversation is rewritten without touching
//! the others, Remove deletes exactly its file, and one damaged file costs
//! one conversation, never the rest.
//!
//! Every write is atomic (a temporary file, flushed, renamed over the old
//! one: see [`write_private`]), so a crash while saving leaves the previous
//! history whole. A file that cannot be read as ours (damaged, too large,
//! another program's, a newer PeerConn's) is renamed aside with a reason
//! and reported, never fatal and never overwritten.
//!
//! Nothing secret is kept in clear: a pairing code is sealed
//! (ChaCha20-Poly1305) under a key derived from this installation's
//! private key, which on Linux and Windows lives in the config directory,
//! not beside these files: a copied data directory gives away chats, never
//! codes (macOS keeps both in one folder).
//!
//! Reading and writing happen on the `peerconn-store` thread ([`Saver`]),
//! never on the UI thread; the controller hands it snapshots.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde_json::{json, Value};

use super::chatlog::{ChatRow, FileCard, FileState, Kind};
use crate::net::secure::{hex, unhex, write_private};
use crate::net::TransferId;

/// What the first line of every file says it is.
pub const FORMAT: &str = "peerconn peersocket";
/// The layout written; a higher number is a newer PeerConn's file.
pub const VERSION: u64 = 1;
/// Bytes of chat text kept per peersocket at most (the newest rows): a
/// peer that floods the chat cannot grow the file without bound.
pub const TEXT_KEPT: usize = 4 << 20;
/// A larger file is not read at all (it cannot be one we wrote).
pub const FILE_MAX: u64 = 32 << 20;
/// Peersockets restored at most; the rest stay on disk, reported.
pub const PEERS_MAX: usize = 256;
/// Snapshots waiting for the writer at most (the controller tries again
/// on its next tick when the queue is full).
const JOBS_QUEUED: usize = 64;
/// What the pairing codes' key is derived for.
pub const SEAL_CONTEXT: &str = "PeerConn 2026-12 pairing codes kept on disk";

/// One peersocket as it is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedPeer {
    /// The file's name (16 hex digits, random, for the peersocket's life).
    pub key: String,
    /// Its place in the list.
    pub order: u64,
    pub server: bool,
    pub name: String,
    /// Where a server listens, or where a client connects.
    pub address: SocketAddr,
    /// Sealed on disk.
    pub code: Option<String>,
    /// The key a link pinned (its whole pin).
    pub pin: Option<String>,
    /// The router was asked to forward its port.
    pub reachable: bool,
    /// The fingerprint of the key last connected.
    pub peer_key: Option<String>,
    /// When it was written, as people read it ("Sun 6 Dec 14:02").
    pub saved_at: String,
    pub rows: Vec<SavedRow>,
}

/// A chat row, and where a received file went.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedRow {
    pub row: ChatRow,
    pub path: Option<PathBuf>,
}

/// A file that could not be read, and where it was moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub path: PathBuf,
    pub why: String,
}

/// What a start found on disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// In list order.
    pub peers: Vec<SavedPeer>,
    pub set_aside: Vec<SetAside>,
}

/// The folder of peersocket files and the key that seals their codes.
pub struct Store {
    dir: PathBuf,
    seal: LessSafeKey,
}

impl Store {
    /// `secret` is derived from the installation's key with
    /// [`SEAL_CONTEXT`].
    pub fn new(dir: PathBuf, secret: [u8; 32]) -> Store {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &secret).expect("a 32-byte key fits ChaCha20-Poly1305");
        Store { dir, seal: LessSafeKey::new(key) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new random file key.
    pub fn new_key() -> String {
        let mut bytes = [0u8; 8];
        fill_random(&mut bytes);
        hex(&bytes)
    }

    /// Reads every peersocket file; what cannot be read is set aside.
    pub fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return loaded,
            Err(e) => {
                log::error!("cannot read {}: {e}", self.dir.display());
                loaded.set_aside.push(SetAside { path: self.dir.clone(), why: e.to_string() });
                return loaded;
            }
        };
        let mut paths: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
        paths.sort();
        for path in paths {
            match self.read(&path) {
                Ok(peer) => loaded.peers.push(peer),
                Err(why) => loaded.set_aside.push(set_aside(&path, why)),
            }
        }
        loaded.peers.sort_by_key(|p| p.order);
        if loaded.peers.len() > PEERS_MAX {
            for extra in loaded.peers.drain(PEERS_MAX..) {
                let path = self.path(&extra.key);
                log::warn!("not restored (more than {PEERS_MAX} peersockets): {}", path.display());
                loaded.set_aside.push(SetAside { path, why: format!("more than {PEERS_MAX} peersockets were kept") });
            }
        }
        loaded
    }

    fn read(&self, path: &Path) -> Result<SavedPeer, String> {
        let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if size > FILE_MAX {
            return Err(format!("it is larger than {} MiB", FILE_MAX >> 20));
        }
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Eof => "it ends mid-way: it is not valid JSON (cut short?)".to_owned(),
            _ => format!("it is not valid JSON (damaged at line {}, column {})", e.line(), e.column()),
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        self.parse(&value, stem)
    }

    /// Writes one peersocket's file (replacing the old one whole).
    pub fn write(&self, peer: &SavedPeer) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let text = self.to_value(peer).to_string();
        write_private(&self.path(&peer.key), text.as_bytes())
    }

    /// Deletes one peersocket's file (Remove).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn to_value(&self, peer: &SavedPeer) -> Value {
        let rows: Vec<Value> = peer.rows[newest_kept(&peer.rows)..].iter().map(row_value).collect();
        json!({
            "format": FORMAT,
            "version": VERSION,
            "key": peer.key,
            "order": peer.order,
            "role": if peer.server { "server" } else { "client" },
            "name": peer.name,
            "address": peer.address.to_string(),
            "code": peer.code.as_deref().map(|code| self.seal_code(code, &peer.key)),
            "pin": peer.pin,
            "reachable": peer.reachable,
            "peer_key": peer.peer_key,
            "saved_at": peer.saved_at,
            "rows": rows,
        })
    }

    fn parse(&self, v: &Value, stem: &str) -> Result<SavedPeer, String> {
        if v["format"].as_str() != Some(FORMAT) {
            return Err("it is not a PeerConn peersocket file".into());
        }
        match v["version"].as_u64() {
            Some(VERSION) => {}
            Some(n) if n > VERSION => return Err(format!("a newer PeerConn wrote it (layout {n})")),
            _ => return Err("it has no layout number this PeerConn reads".into()),
        }
        let key = v["key"].as_str().unwrap_or_default();
        if key != stem || key.len() != 16 || unhex(key).is_none() {
            return Err("its name does not match what it holds".into());
        }
        let name = v["name"].as_str().ok_or("it has no name")?;
        crate::net::frame::check_name(name).map_err(|why| format!("its name is not usable: {why}"))?;
        let server = match v["role"].as_str() {
            Some("server") => true,
            Some("client") => false,
            _ => return Err("it says neither server nor client".into()),
        };
        let address: SocketAddr =
            v["address"].as_str().and_then(|a| a.parse().ok()).ok_or("it has no usable address")?;
        let code = match v["code"].as_str() {
            Some(sealed) => Some(
                self.open_code(sealed, key)
                    .ok_or("its pairing code cannot be opened with this installation's key (was the key replaced?)")?,
            ),
            None => None,
        };
        let pin = v["pin"].as_str().map(str::to_owned);
        if let Some(pin) = &pin {
            crate::net::KeyPin::parse(pin).map_err(|e| format!("its pinned key is not usable: {e}"))?;
        }
        let mut rows: Vec<SavedRow> = match v["rows"].as_array() {
            Some(rows) => rows.iter().filter_map(saved_row).collect(),
            None => return Err("it has no chat rows".into()),
        };
        // The same bound as when writing, for a file edited by hand.
        rows.drain(..newest_kept(&rows));
        Ok(SavedPeer {
            key: key.to_owned(),
            order: v["order"].as_u64().unwrap_or(u64::MAX),
            server,
            name: name.to_owned(),
            address,
            code,
            pin,
            reachable: v["reachable"].as_bool().unwrap_or(false),
            peer_key: v["peer_key"].as_str().map(str::to_owned),
            saved_at: v["saved_at"].as_str().unwrap_or_default().to_owned(),
            rows,
        })
    }

    /// nonce ‖ ciphertext ‖ tag, in hex; the file's key is the associated
    /// data, so a code cannot be moved into another peersocket's file.
    fn seal_code(&self, code: &str, key: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut data = code.as_bytes().to_vec();
        let sealed = self.seal.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key.as_bytes()),
            &mut data,
        );
        // Sealing fails only for inputs of gigabytes; a code is 64 bytes.
        if sealed.is_err() {
            return String::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        hex(&out)
    }

    fn open_code(&self, sealed: &str, key: &str) -> Option<String> {
        let bytes = unhex(sealed)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self.seal.open_in_place(nonce, Aad::from(key.as_bytes()), &mut data).ok()?;
        let code = String::from_utf8(plain.to_vec()).ok()?;
        crate::net::pairing::check_code(&code).ok()?;
        Some(code)
    }
}

/// Where the newest rows whose text fits in [`TEXT_KEPT`] begin.
fn newest_kept(rows: &[SavedRow]) -> usize {
    let mut budget = TEXT_KEPT;
    let kept = rows
        .iter()
        .rev()
        .take_while(|r| match budget.checked_sub(r.row.text.len() + row_extra(&r.row)) {
            Some(left) => {
                budget = left;
                true
            }
            None => false,
        })
        .count();
    rows.len() - kept
}

/// What a row costs beyond its text (a file card's detail and path).
fn row_extra(row: &ChatRow) -> usize {
    match &row.kind {
        Kind::File(card) => card.detail.len() + 64,
        _ => 16,
    }
}

fn fill_random(bytes: &mut [u8]) {
    use ring::rand::SecureRandom;
    // The system's random source fails only when there is none, and then
    // nothing here could be sealed anyway.
    ring::rand::SystemRandom::new().fill(bytes).expect("the operating system gave no random bytes");
}

/// Moves an unreadable file out of the way (`x.json.unreadable-<secs>`),
/// so it is neither read again nor overwritten, and the person can look.
fn set_aside(path: &Path, why: String) -> SetAside {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = path.with_extension(format!("json.unreadable-{secs}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            log::warn!("set aside {} as {}: {why}", path.display(), aside.display());
            SetAside { path: aside, why }
        }
        Err(e) => {
            log::error!("cannot set aside {} ({why}): {e}", path.display());
            SetAside { path: path.to_path_buf(), why }
        }
    }
}

fn state_name(state: FileState) -> &'static str {
    match state {
        FileState::Offered => "offered",
        FileState::Running => "running",
        FileState::Done => "done",
        FileState::Failed => "failed",
    }
}

fn row_value(saved: &SavedRow) -> Value {
    let row = &saved.row;
    let kind = match &row.kind {
        Kind::Mine => "mine",
        Kind::Theirs => "theirs",
        Kind::System => "system",
        Kind::File(_) => "file",
    };
    let mut v = json!({ "kind": kind, "text": row.text, "time": row.time });
    if let Kind::File(card) = &row.kind {
        v["incoming"] = json!(card.incoming);
        v["size"] = json!(card.size);
        v["progress"] = json!(card.progress);
        v["detail"] = json!(card.detail);
        v["state"] = json!(state_name(card.state));
        v["folder"] = json!(card.folder);
        if let Some(path) = &saved.path {
            v["path"] = json!(path.display().to_string());
        }
    }
    v
}

/// A row as written; None for one this PeerConn does not know (skipped).
fn saved_row(v: &Value) -> Option<SavedRow> {
    let text = v["text"].as_str()?.to_owned();
    let time: String = v["time"].as_str().unwrap_or_default().chars().take(16).collect();
    let kind = match v["kind"].as_str()? {
        "mine" => Kind::Mine,
        "theirs" => Kind::Theirs,
        "system" => Kind::System,
        "file" => Kind::File(FileCard {
            // The window gives restored cards numbers of their own.
            transfer: TransferId(0),
            incoming: v["incoming"].as_bool().unwrap_or(false),
            size: v["size"].as_u64().unwrap_or(0),
            progress: (v["progress"].as_f64().unwrap_or(0.0) as f32).clamp(0.0, 1.0),
            detail: v["detail"].as_str().unwrap_or_default().to_owned(),
            state: match v["state"].as_str()? {
                "offered" => FileState::Offered,
                "running" => FileState::Running,
                "done" => FileState::Done,
                _ => FileState::Failed,
            },
            resumed: None,
            folder: v["folder"].as_bool().unwrap_or(false),
            moving: None,
        }),
        _ => return None,
    };
    let path = v["path"].as_str().map(PathBuf::from);
    Some(SavedRow { row: ChatRow { kind, text, time }, path })
}

// ----- the writer thread ----------------------------------------------------

enum Job {
    Write(Box<SavedPeer>),
    Delete(String),
    Quit,
}

/// The `peerconn-store` thread: reads the files once at start (handing
/// what it found to `restored`), then writes the snapshots it is given,
/// newest per peersocket first. Dropping it writes what is queued and
/// joins the thread.
pub struct Saver {
    jobs: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    pub fn start(store: Store, restored: impl FnOnce(Loaded) + Send + 'static) -> io::Result<Saver> {
        let (jobs, queue) = crossbeam_channel::bounded(JOBS_QUEUED);
        let thread = std::thread::Builder::new().name("peerconn-store".into()).spawn(move || {
            restored(store.load());
            run(&store, &queue);
        })?;
        Ok(Saver { jobs, thread: Some(thread) })
    }

    /// Queues a snapshot; gives it back when the queue is full.
    pub fn write(&self, peer: SavedPeer) -> Result<(), Box<SavedPeer>> {
        match self.jobs.try_send(Job::Write(Box::new(peer))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Write(peer)) | TrySendError::Disconnected(Job::Write(peer))) => Err(peer),
            Err(_) => Ok(()),
        }
    }

    /// Deletes a removed peersocket's file (after any write queued for it).
    pub fn delete(&self, key: String) {
        // A delete must not be lost: it waits for room.
        let _ = self.jobs.send(Job::Delete(key));
    }

    /// Writes these last snapshots, then stops and joins the thread.
    pub fn finish(mut self, last: Vec<SavedPeer>) {
        for peer in last {
            let _ = self.jobs.send(Job::Write(Box::new(peer)));
        }
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.jobs.send(Job::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(store: &Store, queue: &Receiver<Job>) {
    loop {
        let Ok(first) = queue.recv() else { return };
        // Take what else is queued: only the newest snapshot of each
        // peersocket is written, in the order they came.
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let quit = batch.iter().any(|job| matches!(job, Job::Quit));
        let mut newest: HashMap<String, usize> = HashMap::new();
        for (i, job) in batch.iter().enumerate() {
            match job {
                Job::Write(peer) => {
                    newest.insert(peer.key.clone(), i);
                }
                Job::Delete(key) => {
                    newest.remove(key);
                }
                Job::Quit => {}
            }
        }
        for (i, job) in batch.into_iter().enumerate() {
            match job {
                Job::Write(peer) if newest.get(&peer.key) == Some(&i) => {
                    if let Err(e) = store.write(&peer) {
                        log::error!("cannot keep the conversation of {}: {e}", peer.name);
                    }
                }
                Job::Delete(key) => {
                    if let Err(e) = store.delete(&key) {
                        log::error!("cannot delete a removed peersocket's history: {e}");
                    }
                }
                _ => {}
            }
        }
        if quit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("peerconn-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn store(dir: &Path) -> Store {
        Store::new(dir.to_path_buf(), [7; 32])
    }

    fn peer(rows: Vec<SavedRow>) -> SavedPeer {
        SavedPeer {
            key: Store::new_key(),
            order: 0,
            server: true,
            name: "Den".into(),
            address: "127.0.0.1:50000".parse().unwrap(),
            code: Some("4821-0937".into()),
            pin: None,
            reachable: true,
            peer_key: Some("3f2a-9b1c-0d4e-77a1-c0de".into()),
            saved_at: "Sun 6 Dec 14:02".into(),
            rows,
        }
    }

    fn text(kind: Kind, text: &str) -> SavedRow {
        SavedRow { row: ChatRow { kind, text: text.into(), time: "09:41".into() }, path: None }
    }

    fn card(state: FileState) -> SavedRow {
        let card = FileCard {
            transfer: TransferId(0),
            incoming: true,
            size: 4_200_000_000,
            progress: 1.0,
            detail: "Saved as backup.zip · verified (BLAKE3)".into(),
            state,
            resumed: None,
            folder: false,
            moving: None,
        };
        SavedRow {
            row: ChatRow { kind: Kind::File(card), text: "backup.zip".into(), time: "09:42".into() },
            path: Some(PathBuf::from("/home/me/Downloads/backup.zip")),
        }
    }

    #[test]
    fn a_peersocket_and_its_chat_come_back_as_written_with_the_code_sealed() {
        let dir = dir("round");
        let s = store(&dir);
        let saved = peer(vec![
            text(Kind::Theirs, "hello"),
            text(Kind::Mine, "hi\nthere"),
            text(Kind::System, "connected"),
            card(FileState::Done),
        ]);
        s.write(&saved).unwrap();
        let on_disk = std::fs::read_to_string(dir.join(format!("{}.json", saved.key))).unwrap();
        assert!(!on_disk.contains("4821"), "the pairing code is in clear: {on_disk}");
        let loaded = s.load();
        assert_eq!(loaded.set_aside, []);
        assert_eq!(loaded.peers, std::slice::from_ref(&saved));
        // Another installation's key cannot open the code: the file is set
        // aside, not restored without its code.
        let other = Store::new(dir.clone(), [8; 32]).load();
        assert!(other.peers.is_empty());
        assert!(other.set_aside[0].why.contains("pairing code"), "{:?}", other.set_aside);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_set_aside_with_a_reason_and_the_others_load() {
        let dir = dir("damaged");
        let s = store(&dir);
        let good = peer(vec![text(Kind::Theirs, "still here")]);
        s.write(&good).unwrap();
        std::fs::write(dir.join("00000000000000aa.json"), b"{\"format\": \"peerconn peersocket\", \"vers").unwrap();
        std::fs::write(dir.join("00000000000000bb.json"), br#"{"format": "something else"}"#).unwrap();
        let newer = json!({"format": FORMAT, "version": 9, "key": "00000000000000cc"});
        std::fs::write(dir.join("00000000000000cc.json"), newer.to_string()).unwrap();
        let loaded = s.load();
        assert_eq!(loaded.peers, [good]);
        let reasons: Vec<&str> = loaded.set_aside.iter().map(|a| a.why.as_str()).collect();
        assert_eq!(loaded.set_aside.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("not valid JSON"), "{reasons:?}");
        assert!(reasons[1].contains("not a PeerConn peersocket file"), "{reasons:?}");
        assert!(reasons[2].contains("newer PeerConn"), "{reasons:?}");
        // Moved aside, kept for the person, and not read again.
        for aside in &loaded.set_aside {
            assert!(aside.path.exists(), "{}", aside.path.display());
            assert!(aside.path.to_string_lossy().contains(".json.unreadable-"));
        }
        let again = s.load();
        assert_eq!(again.set_aside, []);
        assert_eq!(again.peers.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_cut_short_leaves_the_previous_history_whole() {
        let dir = dir("atomic");
        let s = store(&dir);
        let mut saved = peer(vec![text(Kind::Theirs, "first")]);
        s.write(&saved).unwrap();
        // A crash mid-write leaves only a partial temporary file.
        let path = dir.join(format!("{}.json", saved.key));
        std::fs::write(path.with_extension("tmp"), b"{\"format\": \"peerconn pe").unwrap();
        let loaded = s.load();
        assert_eq!(loaded.peers[0].rows, saved.rows);
        assert_eq!(loaded.set_aside, []);
        // The next write goes through and replaces it whole.
        saved.rows.push(text(Kind::Mine, "second"));
        s.write(&saved).unwrap();
        assert_eq!(s.load().peers[0].rows.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flooded_chat_keeps_only_its_newest_text_and_remove_deletes_the_file() {
        let dir = dir("bounded");
        let s = store(&dir);
        let line = "x".repeat(60_000);
        let rows: Vec<SavedRow> =
            (0..200).map(|_| text(Kind::Theirs, &line)).chain([text(Kind::Mine, "last")]).collect();
        let saved = peer(rows);
        s.write(&saved).unwrap();
        let size = std::fs::metadata(dir.join(format!("{}.json", saved.key))).unwrap().len();
        assert!(size <= TEXT_KEPT as u64 + 64 * 1024, "{size} bytes");
        let back = &s.load().peers[0];
        assert!(back.rows.len() < 201 && back.rows.len() > 50, "{} rows", back.rows.len());
        assert_eq!(back.rows.last().unwrap().row.text, "last");
        s.delete(&saved.key).unwrap();
        assert!(s.load().peers.is_empty());
        s.delete(&saved.key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_saver_reports_what_it_found_and_writes_the_newest_snapshot() {
        let dir = dir("saver");
        let s = store(&dir);
        let old = peer(vec![text(Kind::Theirs, "before")]);
        s.write(&old).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let saver = Saver::start(store(&dir), move |loaded| tx.send(loaded).unwrap()).unwrap();
        let loaded = rx.recv().unwrap();
        assert_eq!(loaded.peers, std::slice::from_ref(&old));
        let mut newer = old.clone();
        newer.rows.push(text(Kind::Mine, "after"));
        saver.write(newer.clone()).unwrap();
        let gone = peer(vec![]);
        saver.write(gone.clone()).unwrap();
        saver.delete(gone.key.clone());
        saver.finish(vec![]);
        assert_eq!(s.load().peers, [newer]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
