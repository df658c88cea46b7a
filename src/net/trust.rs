//! Known peers: trust on first use, and who has been verified.
//!
//! A peer *is* its static key; a display name is only what it calls
//! itself. So the store maps keys to what we saw with them: the name the
//! peer used and, for peers we connected to, the address we dialled. When a
//! new connection presents a key we know, that is the peer we knew. When it
//! presents an unknown key under a remembered name, or at a remembered
//! address, that is a *key change*: someone else using the name, a
//! reinstalled PeerConn, or a man in the middle. The connection is stopped
//! before any message or file moves, and only the person can accept the
//! new key, on purpose. A key nothing matches is new: it is remembered
//! (trust on first use) and shown as unverified until the person compares
//! the safety code or a pairing code proves it.
//!
//! The reactor owns the store and never waits on the disk: every change is
//! handed to a `peerconn-keys` thread that writes the file atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use super::secure::{fingerprint, hex, unhex};

/// How far a connected peer is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// First time this key was seen; it is remembered from now on.
    New,
    /// Seen before, never verified.
    Known,
    /// The person compared the safety code, or a pairing code proved it.
    Verified,
}

impl Trust {
    pub fn is_verified(self) -> bool {
        self == Trust::Verified
    }
}

/// Who is on the other end of a connection, as the handshake proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's static public key.
    pub key: [u8; 32],
    /// The key as people compare it (see `secure::fingerprint`).
    pub fingerprint: String,
    /// Twelve digits, equal on both screens unless someone is in between.
    pub safety_code: String,
    pub trust: Trust,
}

/// What the store remembers of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeer {
    pub key: [u8; 32],
    /// The display name the peer last used.
    pub name: String,
    /// `ip:port` we connected to it at, if we were the client.
    pub address: Option<String>,
    pub verified: bool,
    /// A message or a file went between us.
    pub talked: bool,
}

impl KnownPeer {
    /// Never verified, never dialled, never talked with: a stranger that
    /// only connected, the first to give way when the store is full.
    pub fn is_stranger(&self) -> bool {
        !self.verified && self.address.is_none() && !self.talked
    }
}

/// What a new connection's key means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Known {
        verified: bool,
    },
    New,
    /// Another key is remembered for this name or address.
    Changed {
        old: KnownPeer,
    },
}

/// A remembered peer, as [`crate::net::Event::KnownPeers`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeerInfo {
    /// The display name it last used (as the peer sent it: escape it to show it).
    pub name: String,
    /// `ip:port` we connected to it at, if we were the client.
    pub address: Option<String>,
    pub fingerprint: String,
    pub verified: bool,
}

/// Keys remembered at most. When the store is full, a new key takes the
/// place of the oldest stranger (never verified, dialled or talked with);
/// a key the person verified, connected to on purpose or talked with is
/// never pushed out, so a flood of fresh keys unpins only other strangers.
/// When every key is one of those, nothing new is remembered and the
/// owner is told.
pub const MAX_KNOWN: usize = 1000;

#[derive(Default)]
pub struct KnownPeers {
    peers: Vec<KnownPeer>,
    /// Counts changes, so the reactor knows when to report the list.
    generation: u64,
    saver: Option<(Sender<String>, JoinHandle<()>)>,
}

impl KnownPeers {
    /// A store that lives in memory only (tests, or no config directory).
    pub fn in_memory() -> KnownPeers {
        KnownPeers::default()
    }

    /// Reads `path` (a missing file is an empty store) and saves every
    /// change back to it from a worker thread.
    pub fn open(path: &Path) -> io::Result<KnownPeers> {
        let peers = match fs::read_to_string(path) {
            Ok(text) => parse(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is damaged; move it away to start over (peers become unverified)", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let target = path.to_path_buf();
        let thread = std::thread::Builder::new().name("peerconn-keys".into()).spawn(move || {
            while let Ok(mut text) = rx.recv() {
                // Only the newest snapshot matters.
                while let Ok(newer) = rx.try_recv() {
                    text = newer;
                }
                if let Err(e) = save(&target, &text) {
                    log::error!("cannot save known peers to {}: {e}", target.display());
                }
            }
        })?;
        Ok(KnownPeers { peers, generation: 0, saver: Some((tx, thread)) })
    }

    pub fn peers(&self) -> &[KnownPeer] {
        &self.peers
    }

    /// What `key`, arriving under `name` (and at `address`, when we dialled
    /// it), means.
    pub fn check(&self, key: &[u8; 32], name: &str, address: Option<&str>) -> Check {
        // A name or address remembered with another key is a change, even
        // when this key is known under some other name: a peer we know
        // must not take over someone else's name or address.
        let clashes = |p: &&KnownPeer| {
            &p.key != key && (p.name == name || (address.is_some() && p.address.as_deref() == address))
        };
        // The warning shows the key that matters: a verified one first.
        let clash = self.peers.iter().filter(clashes).find(|p| p.verified).or_else(|| self.peers.iter().find(clashes));
        // Names are not identities: a verified key is not locked out of a
        // name (or an address) that an unverified key used first.
        let ours_verified = self.peers.iter().any(|p| &p.key == key && p.verified);
        if let Some(old) = clash.filter(|old| old.verified || !ours_verified) {
            return Check::Changed { old: old.clone() };
        }
        match self.peers.iter().find(|p| &p.key == key) {
            Some(p) => Check::Known { verified: p.verified },
            None => Check::New,
        }
    }

    /// Remembers `key` with this name and address (new, or seen again).
    /// False when it could not be: the store is full of keys worth keeping.
    pub fn remember(&mut self, key: &[u8; 32], name: &str, address: Option<&str>) -> bool {
        match self.peers.iter_mut().find(|p| &p.key == key) {
            Some(p) => {
                if p.name == name && (address.is_none() || p.address.as_deref() == address) {
                    return true;
                }
                p.name = name.to_owned();
                if address.is_some() {
                    p.address = address.map(str::to_owned);
                }
            }
            None => {
                if self.peers.len() >= MAX_KNOWN {
                    let Some(i) = self.peers.iter().position(KnownPeer::is_stranger) else {
                        log::warn!(
                            "not remembering the key of \"{}\": {MAX_KNOWN} keys are remembered already, all \
                             verified, dialled or talked with (forget some in Settings or with `peerconn forget`)",
                            crate::net::printable(name)
                        );
                        return false;
                    };
                    let gone = self.peers.remove(i);
                    log::info!("forgot the stranger key {} to remember a new one", fingerprint(&gone.key));
                }
                self.peers.push(KnownPeer {
                    key: *key,
                    name: name.to_owned(),
                    address: address.map(str::to_owned),
                    verified: false,
                    talked: false,
                });
            }
        }
        self.changed();
        true
    }

    /// A message or a file went between us and `key`: it is no stranger.
    pub fn talked(&mut self, key: &[u8; 32]) {
        if let Some(p) = self.peers.iter_mut().find(|p| &p.key == key && !p.talked) {
            p.talked = true;
            self.changed();
        }
    }

    /// The person accepts `key` in place of whatever was remembered for
    /// its name and address.
    pub fn replace(&mut self, key: &[u8; 32], name: &str, address: Option<&str>) {
        self.peers
            .retain(|p| &p.key == key || !(p.name == name || (address.is_some() && p.address.as_deref() == address)));
        self.remember(key, name, address);
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.peers.iter().any(|p| &p.key == key)
    }

    pub fn set_verified(&mut self, key: &[u8; 32], verified: bool) {
        if let Some(p) = self.peers.iter_mut().find(|p| &p.key == key) {
            if p.verified != verified {
                p.verified = verified;
                self.changed();
            }
        }
    }

    /// Forgets the key with this fingerprint (names are not looked at: a
    /// peer may call itself anything); returns whether it was there.
    pub fn forget_fingerprint(&mut self, fingerprint_text: &str) -> bool {
        self.forget_where(|p| fingerprint(&p.key) == fingerprint_text) > 0
    }

    /// Forgets the keys whose fingerprint or name is `which`; returns how many.
    pub fn forget(&mut self, which: &str) -> usize {
        self.forget_where(|p| fingerprint(&p.key) == which || p.name == which)
    }

    fn forget_where(&mut self, gone: impl Fn(&KnownPeer) -> bool) -> usize {
        let before = self.peers.len();
        self.peers.retain(|p| !gone(p));
        let forgotten = before - self.peers.len();
        if forgotten > 0 {
            self.changed();
        }
        forgotten
    }

    /// Changes so far; it moves whenever the list does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The list as the window shows it.
    pub fn summary(&self) -> Vec<KnownPeerInfo> {
        self.peers
            .iter()
            .map(|p| KnownPeerInfo {
                name: p.name.clone(),
                address: p.address.clone(),
                fingerprint: fingerprint(&p.key),
                verified: p.verified,
            })
            .collect()
    }

    fn changed(&mut self) {
        self.generation += 1;
        if let Some((tx, _)) = &self.saver {
            let _ = tx.send(render(&self.peers));
        }
    }
}

impl Drop for KnownPeers {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.saver.take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn render(peers: &[KnownPeer]) -> String {
    let list: Vec<Value> = peers
        .iter()
        .map(|p| {
            json!({
                "key": hex(&p.key),
                "fingerprint": fingerprint(&p.key),
                "name": p.name,
                "address": p.address,
                "verified": p.verified,
                "talked": p.talked,
            })
        })
        .collect();
    let doc = json!({ "version": 1, "peers": list });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn parse(text: &str) -> Option<Vec<KnownPeer>> {
    let doc: Value = serde_json::from_str(text).ok()?;
    if doc.get("version")?.as_u64()? != 1 {
        return None;
    }
    let mut peers = Vec::new();
    for p in doc.get("peers")?.as_array()? {
        let key: [u8; 32] = unhex(p.get("key")?.as_str()?)?.try_into().ok()?;
        peers.push(KnownPeer {
            key,
            name: p.get("name")?.as_str()?.to_owned(),
            address: p.get("address").and_then(Value::as_str).map(str::to_owned),
            verified: p.get("verified").and_then(Value::as_bool).unwrap_or(false),
            talked: p.get("talked").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Some(peers)
}

fn save(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp: PathBuf = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_then_known_then_a_changed_key_is_caught_by_name_or_address() {
        let mut store = KnownPeers::in_memory();
        let (a, b) = ([1; 32], [2; 32]);
        assert_eq!(store.check(&a, "alice", Some("10.0.0.1:5000")), Check::New);
        store.remember(&a, "alice", Some("10.0.0.1:5000"));
        assert_eq!(store.check(&a, "alice", None), Check::Known { verified: false });
        assert!(matches!(store.check(&b, "alice", None), Check::Changed { .. }));
        assert!(matches!(store.check(&b, "mallory", Some("10.0.0.1:5000")), Check::Changed { .. }));
        assert_eq!(store.check(&b, "bob", Some("10.0.0.2:5000")), Check::New);
        store.replace(&b, "alice", None);
        assert_eq!(store.check(&b, "alice", None), Check::Known { verified: false });
        assert!(matches!(store.check(&a, "alice", None), Check::Changed { .. }), "the old key is forgotten");
        store.set_verified(&b, true);
        assert_eq!(store.check(&b, "alice", None), Check::Known { verified: true });
        // A known key may not take over another peer's name or address.
        store.remember(&[4; 32], "mallory", None);
        assert!(matches!(store.check(&[4; 32], "alice", None), Check::Changed { .. }));
        store.remember(&[3; 32], "carol", Some("10.0.0.3:1"));
        assert!(matches!(store.check(&[4; 32], "mallory", Some("10.0.0.3:1")), Check::Changed { .. }));
    }

    #[test]
    fn a_flood_of_new_keys_pushes_out_only_strangers_never_a_key_worth_keeping() {
        let key = |i: u64| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            key
        };
        let mut store = KnownPeers::in_memory();
        store.remember(&[1; 32], "alice", None);
        store.talked(&[1; 32]);
        store.remember(&[2; 32], "carol", None);
        store.set_verified(&[2; 32], true);
        store.remember(&[3; 32], "dave", Some("192.0.2.4:5000"));
        store.remember(&[4; 32], "eve", None); // only connected, once
        for i in 10..10 + 2 * MAX_KNOWN as u64 {
            assert!(store.remember(&key(i), &format!("flood {i}"), None));
        }
        assert_eq!(store.peers().len(), MAX_KNOWN);
        for (pinned, name) in [([1; 32], "alice"), ([2; 32], "carol"), ([3; 32], "dave")] {
            assert!(store.contains(&pinned), "{name} was pushed out");
            assert!(matches!(store.check(&[9; 32], name, None), Check::Changed { .. }), "{name} is still pinned");
        }
        assert!(!store.contains(&[4; 32]), "a stranger gives way");
        // Full of keys worth keeping: nothing new is remembered, and it says so.
        let mut full = KnownPeers::in_memory();
        for i in 0..MAX_KNOWN as u64 {
            full.remember(&key(i), &format!("friend {i}"), None);
            full.talked(&key(i));
        }
        assert!(!full.remember(&[9; 32], "bob", None), "not remembered while full");
        assert_eq!(full.check(&[9; 32], "bob", None), Check::New);
        assert_eq!(full.forget("friend 1"), 1);
        assert!(full.remember(&[9; 32], "bob", None));
        assert_eq!(full.check(&[9; 32], "bob", None), Check::Known { verified: false });
    }

    #[test]
    fn a_verified_key_is_not_locked_out_of_a_name_a_stranger_took_first() {
        let mut store = KnownPeers::in_memory();
        store.remember(&[1; 32], "carol", None);
        store.set_verified(&[1; 32], true);
        // A stranger arrives first under another name, then calls itself carol.
        store.remember(&[2; 32], "carol", None);
        assert_eq!(store.check(&[1; 32], "carol", None), Check::Known { verified: true }, "carol gets in");
        assert!(
            matches!(store.check(&[3; 32], "carol", None), Check::Changed { old } if old.verified),
            "an unknown key under carol's name is a change, shown against the verified key"
        );
        // Neither verified: the first to use the name keeps it.
        let mut store = KnownPeers::in_memory();
        store.remember(&[1; 32], "dan", None);
        store.remember(&[2; 32], "dan", None);
        assert!(matches!(store.check(&[2; 32], "dan", None), Check::Changed { .. }));
    }

    #[test]
    fn the_store_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("peerconn-known-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("known_peers.json");
        {
            let mut store = KnownPeers::open(&path).unwrap();
            store.remember(&[7; 32], "carol \u{202e}", Some("[::1]:9"));
            store.set_verified(&[7; 32], true);
        }
        let store = KnownPeers::open(&path).unwrap();
        assert_eq!(store.peers().len(), 1);
        assert_eq!(store.check(&[7; 32], "x", None), Check::Known { verified: true });
        fs::write(&path, "{").unwrap();
        assert!(KnownPeers::open(&path).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
