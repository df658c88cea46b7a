//! "Nearby": listeners announced on the local network with DNS-SD over
//! multicast DNS (`_peerconn._tcp.local.`), and the list of those found.
//!
//! An announcement says who listens (the peersocket's name), where (the
//! addresses of this computer and the port) and with which key: the TXT
//! record carries the whole key hash a link pins (`fp`), whether a pairing
//! code is asked for (`code=1`; never the code) and the protocol version
//! (`v`). It is only a hint: an entry becomes a [`PeerLink`], so connecting
//! from it pins the announced key and a listener that presents another is
//! left before any frame, as with a link. Anyone on the network can
//! announce anything; nothing here is trusted beyond that.
//!
//! The multicast sockets belong to `mdns-sd`, a well-kept pure-Rust
//! responder that runs its own thread on `mio` (no async runtime). Its
//! calls here only put commands on that thread's queue (`try_send`), so
//! the reactor, which announces its listeners, never waits on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::net::{frame, KeyPin, PeerLink};

/// Our DNS-SD service type.
pub const SERVICE: &str = "_peerconn._tcp.local.";

/// Entries a browser keeps at most: a flood of announcements cannot grow
/// the list (or the window's model) without bound.
pub const MAX_PEERS: usize = 256;

/// What to check when nothing was found (the command line and the
/// window say it in these words).
pub const NOTHING_FOUND: &str = "No PeerConn listener answered on this network. Check that the other computer has a \
     peersocket listening (with announcing on), that both are on the same network (not a guest network), that its \
     firewall allows UDP port 5353 and the listening port, and that the Wi-Fi does not isolate its clients (some \
     routers call it AP or client isolation). You can still connect by address or by link.";

/// One listener to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub name: String,
    /// The address it is bound to (unspecified: every address of this
    /// computer, followed as they change).
    pub bound: IpAddr,
    pub port: u16,
    pub code_required: bool,
}

/// Announces the listeners of one engine.
pub struct Announcer {
    daemon: ServiceDaemon,
    host: String,
    pin: String,
    key_tag: String,
    /// The full DNS-SD name of each slot's announcement.
    announced: HashMap<u64, String>,
}

impl Announcer {
    /// Starts the responder thread. `key`: this installation's.
    pub fn start(key: &[u8; 32]) -> Result<Announcer, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start multicast DNS: {e}"))?;
        let pin = KeyPin::of(key);
        let key_tag = pin.to_string()[..8].to_owned();
        Ok(Announcer { daemon, host: local_host_name(), pin: pin.to_string(), key_tag, announced: HashMap::new() })
    }

    /// Announces `what` under `slot` (in place of what the slot announced).
    pub fn announce(&mut self, slot: u64, what: &Announcement) {
        self.withdraw(slot);
        if what.bound.is_loopback() {
            log::info!("not announcing \"{}\" on the network: it listens on loopback only", what.name);
            return;
        }
        // The instance name is what DNS-SD makes unique: ours carry the
        // key and the port, so two listeners never collide.
        let mut instance: String = what.name.chars().filter(|c| !c.is_control() && *c != '.').take(40).collect();
        instance = format!("{} [{}-{}]", instance.trim(), self.key_tag, what.port);
        let code = if what.code_required { "1" } else { "0" };
        let txt: [(&str, &str); 4] =
            [("v", &frame::VERSION.to_string()), ("name", &what.name), ("fp", &self.pin), ("code", code)];
        let made = if what.bound.is_unspecified() {
            ServiceInfo::new(SERVICE, &instance, &self.host, (), what.port, &txt[..]).map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(SERVICE, &instance, &self.host, what.bound, what.port, &txt[..])
        };
        let info = match made {
            Ok(info) => info,
            Err(e) => return log::warn!("cannot announce \"{}\": {e}", what.name),
        };
        let fullname = info.get_fullname().to_owned();
        match self.daemon.register(info) {
            Ok(()) => {
                log::info!("announcing \"{}\" on the local network as {fullname}", what.name);
                self.announced.insert(slot, fullname);
            }
            Err(e) => log::warn!("cannot announce \"{}\" on the local network: {e}", what.name),
        }
    }

    /// Stops announcing what `slot` announced (a goodbye goes out).
    pub fn withdraw(&mut self, slot: u64) {
        if let Some(fullname) = self.announced.remove(&slot) {
            if let Err(e) = self.daemon.unregister(&fullname) {
                log::warn!("cannot withdraw {fullname}: {e}");
            }
        }
    }

    /// Withdraws everything and stops the responder without waiting (its
    /// thread sends the goodbyes before it exits).
    pub fn stop_soon(mut self) {
        for fullname in std::mem::take(&mut self.announced).into_values() {
            let _ = self.daemon.unregister(&fullname);
        }
        let _ = self.daemon.shutdown();
    }

    /// Withdraws everything and stops the responder, waiting (briefly)
    /// for the goodbyes to go out (at exit, before the process ends).
    pub fn stop(mut self) {
        let waits: Vec<_> = std::mem::take(&mut self.announced)
            .into_values()
            .filter_map(|fullname| self.daemon.unregister(&fullname).ok())
            .collect();
        let until = Instant::now() + Duration::from_millis(500);
        for wait in waits {
            let _ = wait.recv_deadline(until);
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_deadline(until + Duration::from_millis(200));
        }
    }
}

/// A listener found on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearbyPeer {
    /// The DNS-SD instance (unique on the network).
    pub instance: String,
    /// The peersocket's name, as announced (checked like a hello's name).
    pub name: String,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub pin: KeyPin,
    pub code_required: bool,
}

impl NearbyPeer {
    /// The fingerprint people compare.
    pub fn fingerprint(&self) -> String {
        self.pin.fingerprint()
    }

    /// A link to it (its first address): connecting by it pins the key.
    pub fn link(&self) -> Option<PeerLink> {
        let host = *self.addrs.first()?;
        Some(PeerLink { host: host.to_string(), port: self.port, pin: self.pin.clone(), code: None })
    }
}

/// What changed in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NearbyChange {
    /// New, or announced again with other details.
    Found(NearbyPeer),
    /// It said goodbye (or its record expired).
    Gone { instance: String },
}

/// Browses for listeners.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    peers: HashMap<String, NearbyPeer>,
}

impl Browser {
    pub fn start() -> Result<Browser, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start multicast DNS: {e}"))?;
        let events = daemon.browse(SERVICE).map_err(|e| format!("cannot look for listeners: {e}"))?;
        Ok(Browser { daemon, events, peers: HashMap::new() })
    }

    /// What changed since the last call, without waiting.
    pub fn poll(&mut self) -> Vec<NearbyChange> {
        let mut changes = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            changes.extend(self.apply(event));
        }
        changes
    }

    /// The next change, waiting until `deadline` at most.
    pub fn next_before(&mut self, deadline: Instant) -> Option<NearbyChange> {
        loop {
            let event = self.events.recv_deadline(deadline).ok()?;
            if let Some(change) = self.apply(event) {
                return Some(change);
            }
        }
    }

    /// Everything found and still there, by name.
    pub fn peers(&self) -> Vec<NearbyPeer> {
        let mut peers: Vec<NearbyPeer> = self.peers.values().cloned().collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.instance.cmp(&b.instance)));
        peers
    }

    fn apply(&mut self, event: ServiceEvent) -> Option<NearbyChange> {
        match event {
            ServiceEvent::ServiceResolved(found) => {
                let peer = match read(&found) {
                    Ok(peer) => peer,
                    Err(why) => {
                        log::debug!("ignored the announcement {}: {why}", found.fullname);
                        return None;
                    }
                };
                if self.peers.get(&peer.instance) == Some(&peer) {
                    return None;
                }
                if !self.peers.contains_key(&peer.instance) && self.peers.len() >= MAX_PEERS {
                    log::warn!("more than {MAX_PEERS} listeners announced: ignoring {}", peer.instance);
                    return None;
                }
                self.peers.insert(peer.instance.clone(), peer.clone());
                Some(NearbyChange::Found(peer))
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                self.peers.remove(&fullname).map(|_| NearbyChange::Gone { instance: fullname })
            }
            _ => None,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// Reads an announcement; anything malformed or hostile is refused.
fn read(found: &mdns_sd::ResolvedService) -> Result<NearbyPeer, String> {
    let txt = &found.txt_properties;
    let name = txt.get_property_val_str("name").ok_or("no name")?;
    frame::check_name(name)?;
    let pin = KeyPin::parse(txt.get_property_val_str("fp").ok_or("no key")?).map_err(|e| e.to_string())?;
    if !pin.is_full() {
        return Err("a short key".into());
    }
    if found.port == 0 {
        return Err("port 0".into());
    }
    let mut addrs: Vec<IpAddr> = found
        .addresses
        .iter()
        .map(|a| a.to_ip_addr())
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        .collect();
    // What another computer can reach first: IPv4, then global IPv6;
    // link-local IPv6 (it needs a scope) and loopback (reachable only if
    // the announcement is our own) last.
    let link_local = |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    addrs.sort_by_key(|ip| (ip.is_loopback(), link_local(ip), !ip.is_ipv4(), *ip));
    addrs.dedup();
    addrs.truncate(8);
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(NearbyPeer {
        instance: found.fullname.clone(),
        name: name.to_owned(),
        addrs,
        port: found.port,
        pin,
        code_required: txt.get_property_val_str("code") == Some("1"),
    })
}

/// This computer's name as a `.local.` host name (letters, digits and
/// dashes only).
fn local_host_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut name: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(50).collect();
    if name.trim_matches('-').is_empty() {
        name = "peerconn".into();
    }
    format!("{}.local.", name.trim_matches('-'))
}
