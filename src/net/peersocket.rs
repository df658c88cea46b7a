//! The peersockets: what each one is, which connections belong to it, and
//! its lifecycle rules.
//!
//! A peersocket is what the person made with Listen or Connect. A server
//! peersocket has a listener, the connections it accepted that have not
//! finished their hello, and at most one admitted peer: it is busy while
//! it has one.
//!
//! Connections still in their hello are bounded so that a flood of cheap
//! ones cannot keep a real peer out (see [`Peersockets::make_room`]): one
//! source address holds at most [`PENDING_PER_SOURCE`] of them and a
//! newcomer from it displaces only its own oldest; when the listener holds
//! `max_pending_hellos`, the one to go comes from the source holding the
//! most, and a connection that has sent nothing yet goes before one whose
//! handshake is under way. A client peersocket has its one connection. Both remember the last
//! key refused as changed, for Trust new key, and a server its wrong-code
//! back-off.
//!
//! This module holds that bookkeeping and nothing else: it knows
//! connections only by the reactor's number for them, owns no socket, and
//! never calls back into the reactor. The reactor asks (`make_room`,
//! `admit`, `detach`…) and does the socket work the answer implies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::session::PairingGuard;
use super::{printable, ConnectOptions, ListenOptions, PeerId, Role};

/// The reactor's number for a socket.
pub(crate) type SocketKey = usize;

/// Connections in their hello one source address may hold per listener.
pub(crate) const PENDING_PER_SOURCE: usize = 8;

/// Where a connection comes from, for the per-source bound: the IPv4
/// address, or the IPv6 /64 (one machine commonly holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u128::from(u32::from(v4))),
                None => Source((u128::from(v6) >> 64) << 64 | 1 << 32),
            },
        }
    }
}

/// A connection still in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub conn: SocketKey,
    pub source: Source,
}

/// One peersocket.
pub(crate) struct Peer {
    pub role: Role,
    pub name: String,
    /// Server: the address to bind (the real one once bound, so a restart
    /// gets the same port). Client: the remote address.
    pub addr: SocketAddr,
    pub options: ListenOptions,
    pub listener: Option<SocketKey>,
    /// The connection that is the peer: a client's from the start, a
    /// server's once its hello is done.
    pub conn: Option<SocketKey>,
    /// Server: accepted connections that have not completed the hello,
    /// oldest first.
    pub pending: Vec<Pending>,
    pub lost: bool,
    /// Client: the pairing code to prove to the listener, and the key it
    /// must present.
    pub dial: ConnectOptions,
    /// Server: wrong pairing codes so far, and when the next try is allowed.
    pub guard: PairingGuard,
    /// The last key refused as changed, for `TrustNewKey`.
    pub rejected: Option<Rejected>,
    /// Client that reconnects by itself: when it tries again, and how many
    /// attempts failed in a row.
    pub retry_at: Option<std::time::Instant>,
    pub attempts: u32,
}

/// The wait before reconnect attempt `attempt` (1 is the first): 1, 2, 4
/// … 60 s, each spread by ±20 % (`jitter` in 0..1) so that many clients
/// of one listener that went away do not all come back at once.
pub fn reconnect_delay(attempt: u32, jitter: f64) -> std::time::Duration {
    let base = 2f64.powi(attempt.saturating_sub(1).min(6) as i32).min(60.0);
    std::time::Duration::from_secs_f64(base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

/// A key that did not match the one remembered.
pub(crate) struct Rejected {
    pub key: [u8; 32],
    pub name: String,
    /// What we dialled (clients) or where it came from (servers).
    pub address: SocketAddr,
}

impl Peer {
    pub fn server(name: String, bind: SocketAddr, options: ListenOptions) -> Peer {
        Peer::new(Role::Server, name, bind, options, ConnectOptions::default())
    }

    pub fn client(name: String, remote: SocketAddr, dial: ConnectOptions) -> Peer {
        Peer::new(Role::Client, name, remote, ListenOptions::default(), dial)
    }

    fn new(role: Role, name: String, addr: SocketAddr, options: ListenOptions, dial: ConnectOptions) -> Peer {
        Peer {
            role,
            name,
            addr,
            options,
            listener: None,
            conn: None,
            pending: Vec::new(),
            lost: true,
            dial,
            guard: PairingGuard::default(),
            rejected: None,
            retry_at: None,
            attempts: 0,
        }
    }

    /// How the log names it.
    pub fn label(&self, id: PeerId) -> String {
        format!("[{} {id}]", printable(&self.name))
    }

    /// Where a server peersocket waits for a peer (None once it has one,
    /// or when it does not listen).
    pub fn listening_on(&self) -> Option<SocketAddr> {
        (self.role == Role::Server && self.listener.is_some() && self.conn.is_none() && !self.lost).then_some(self.addr)
    }
}

/// What [`Peersockets::detach`] found a connection to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Detached {
    /// Not (or no longer) a connection of this peersocket's.
    NotOurs,
    /// A server's connection that never finished its hello: dropped
    /// without telling the person.
    Pending,
    /// The peer: the peersocket is lost, and a server listens on at
    /// `local` again when `relisten` (otherwise its listener goes).
    Peer { relisten: bool, local: SocketAddr },
}

/// Every peersocket of the engine.
#[derive(Default)]
pub(crate) struct Peersockets {
    peers: HashMap<PeerId, Peer>,
}

impl Peersockets {
    pub fn insert(&mut self, id: PeerId, peer: Peer) {
        self.peers.insert(id, peer);
    }

    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(&id)
    }

    pub fn remove(&mut self, id: PeerId) -> Option<Peer> {
        self.peers.remove(&id)
    }

    /// When the next client reconnects by itself.
    pub fn next_retry(&self) -> Option<std::time::Instant> {
        self.peers.values().filter_map(|p| p.retry_at).min()
    }

    /// Clients whose wait to reconnect is over (their waits are cleared).
    pub fn due_retries(&mut self, now: std::time::Instant) -> Vec<PeerId> {
        let mut due = Vec::new();
        for (id, peer) in self.peers.iter_mut() {
            if peer.retry_at.is_some_and(|at| at <= now) {
                peer.retry_at = None;
                due.push(*id);
            }
        }
        due.sort();
        due
    }

    pub fn ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    pub fn clear(&mut self) {
        self.peers.clear();
    }

    pub fn label(&self, id: PeerId) -> String {
        self.peers.get(&id).map(|p| p.label(id)).unwrap_or_else(|| format!("[{id}]"))
    }

    /// False when there is no such peersocket.
    pub fn rename(&mut self, id: PeerId, name: &str) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else { return false };
        log::info!("{} renamed to \"{}\"", peer.label(id), printable(name));
        peer.name = name.to_owned();
        true
    }

    pub fn set_lost(&mut self, id: PeerId, lost: bool) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.lost = lost;
        }
    }

    /// A server is bound: `local` is kept so a restart gets the same port.
    pub fn listening(&mut self, id: PeerId, listener: SocketKey, local: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.listener = Some(listener);
            peer.addr = local;
        }
    }

    /// A client's connection attempt.
    pub fn attach(&mut self, id: PeerId, conn: SocketKey) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.conn = Some(conn);
        }
    }

    /// A client's attempt was cancelled before its hello.
    pub fn detach_quietly(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.conn = None;
        }
    }

    /// The listener and the connections still in their hello, which go
    /// when a server stops listening.
    pub fn stop_listening(&mut self, id: PeerId) -> Vec<SocketKey> {
        let Some(peer) = self.peers.get_mut(&id) else { return Vec::new() };
        let listener = peer.listener.take();
        listener.into_iter().chain(std::mem::take(&mut peer.pending).into_iter().map(|p| p.conn)).collect()
    }

    /// Before a server takes another connection from `source`: the one
    /// that must go to make room for it, if any (see the module doc).
    /// `idle` says whether a connection has sent nothing yet.
    pub fn make_room(
        &mut self,
        id: PeerId,
        source: Source,
        max: usize,
        idle: impl Fn(SocketKey) -> bool,
    ) -> Option<SocketKey> {
        let peer = self.peers.get_mut(&id)?;
        let from = |s: Source| peer.pending.iter().filter(|p| p.source == s).count();
        let group = if from(source) >= PENDING_PER_SOURCE {
            source
        } else if peer.pending.len() >= max.max(1) {
            // The source holding the most pays; the oldest of it on ties.
            let mut counts: HashMap<Source, usize> = HashMap::new();
            for p in &peer.pending {
                *counts.entry(p.source).or_default() += 1;
            }
            let most = counts.values().copied().max().unwrap_or(0);
            peer.pending.iter().find(|p| counts[&p.source] == most)?.source
        } else {
            return None;
        };
        let in_group = |p: &&Pending| p.source == group;
        let victim = peer
            .pending
            .iter()
            .filter(in_group)
            .find(|p| idle(p.conn))
            .or_else(|| peer.pending.iter().find(in_group))?
            .conn;
        peer.pending.retain(|p| p.conn != victim);
        Some(victim)
    }

    pub fn add_pending(&mut self, id: PeerId, conn: SocketKey, source: Source) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.pending.push(Pending { conn, source });
        }
    }

    /// A connection finished its hello: it is the peer now.
    pub fn admit(&mut self, id: PeerId, conn: SocketKey) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.pending.retain(|p| p.conn != conn);
            peer.conn = Some(conn);
        }
    }

    /// A key was refused as changed: remembered for Trust new key.
    pub fn rejected(&mut self, id: PeerId, key: [u8; 32], name: &str, address: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.rejected = Some(Rejected { key, name: name.to_owned(), address });
        }
    }

    /// Connection `conn` of `id` ended.
    pub fn detach(&mut self, id: PeerId, conn: SocketKey) -> Detached {
        let Some(peer) = self.peers.get_mut(&id) else { return Detached::NotOurs };
        if let Some(i) = peer.pending.iter().position(|p| p.conn == conn) {
            peer.pending.remove(i); // keeps the rest oldest first
            return Detached::Pending;
        }
        if peer.conn != Some(conn) {
            return Detached::NotOurs;
        }
        peer.conn = None;
        let relisten = peer.role == Role::Server && peer.options.keep_listening && peer.listener.is_some();
        Detached::Peer { relisten, local: peer.addr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_from_one_second_to_a_minute_spread_by_a_fifth() {
        let secs = |attempt, jitter| reconnect_delay(attempt, jitter).as_secs_f64();
        let middle: Vec<f64> = (1..=9).map(|a| secs(a, 0.5)).collect();
        assert_eq!(middle, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]);
        assert_eq!((secs(4, 0.0), secs(4, 1.0)), (6.4, 9.6), "±20 %");
        assert_eq!(secs(u32::MAX, 2.0), 72.0, "no overflow; jitter clamped");
        assert_eq!(secs(0, 0.5), 1.0);
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    /// The reactor's retry timer on a clock the test moves: each client is
    /// due once its wait is over, once, and the next wake-up is the
    /// earliest wait left.
    #[test]
    fn reconnect_waits_come_due_in_order_on_a_virtual_clock() {
        let mut peers = Peersockets::default();
        let t0 = std::time::Instant::now();
        for (n, wait) in [(1, 1.0), (2, 2.0), (3, 2.0)] {
            let dial = ConnectOptions { reconnect: true, ..ConnectOptions::default() };
            let mut peer = Peer::client(format!("c{n}"), addr(), dial);
            peer.retry_at = Some(t0 + std::time::Duration::from_secs_f64(wait));
            peers.insert(PeerId(n), peer);
        }
        let at = |secs: f64| t0 + std::time::Duration::from_secs_f64(secs);
        assert_eq!(peers.next_retry(), Some(at(1.0)));
        assert!(peers.due_retries(at(0.999)).is_empty());
        assert_eq!(peers.due_retries(at(1.0)), [PeerId(1)]);
        assert!(peers.due_retries(at(1.5)).is_empty(), "a wait that came due is not due again");
        assert_eq!(peers.next_retry(), Some(at(2.0)));
        assert_eq!(peers.due_retries(at(60.0)), [PeerId(2), PeerId(3)]);
        assert_eq!(peers.next_retry(), None, "nothing left to wake up for");
    }

    fn source(n: u8) -> Source {
        Source::of(IpAddr::from([192, 0, 2, n]))
    }

    fn pending(peers: &Peersockets, id: PeerId) -> Vec<SocketKey> {
        peers.get(id).unwrap().pending.iter().map(|p| p.conn).collect()
    }

    fn server(peers: &mut Peersockets) -> PeerId {
        let id = PeerId(1);
        peers.insert(id, Peer::server("s".into(), addr(), ListenOptions::default()));
        id
    }

    #[test]
    fn a_full_server_drops_its_oldest_pending_connection_for_a_newcomer() {
        let mut peers = Peersockets::default();
        let id = server(&mut peers);
        for conn in 0..3 {
            assert_eq!(peers.make_room(id, source(conn as u8), 3, |_| true), None);
            peers.add_pending(id, conn, source(conn as u8));
        }
        assert_eq!(peers.make_room(id, source(9), 3, |_| true), Some(0));
        peers.add_pending(id, 3, source(9));
        assert_eq!(pending(&peers, id), vec![1, 2, 3]);
    }

    #[test]
    fn a_flood_from_one_address_displaces_only_itself() {
        let mut peers = Peersockets::default();
        let id = server(&mut peers);
        peers.add_pending(id, 100, source(7)); // the real peer
        for conn in 1000..2000 {
            if let Some(gone) = peers.make_room(id, source(66), 64, |_| true) {
                assert_ne!(gone, 100, "the real peer was dropped for a flooder");
            }
            peers.add_pending(id, conn, source(66));
        }
        let held = pending(&peers, id);
        assert_eq!(held.len(), 1 + PENDING_PER_SOURCE);
        assert_eq!(held[0], 100);
    }

    #[test]
    fn when_full_the_biggest_source_pays_and_a_silent_connection_goes_before_a_talking_one() {
        let mut peers = Peersockets::default();
        let id = server(&mut peers);
        // Two sources with 3 each and one with 2; conn 10 and 11 have spoken.
        for (conn, src) in [(10, 1), (11, 1), (12, 1), (20, 2), (21, 2), (22, 2), (30, 3), (31, 3)] {
            peers.add_pending(id, conn, source(src));
        }
        let talking = |c: SocketKey| c == 10 || c == 11;
        assert_eq!(peers.make_room(id, source(4), 8, |c| !talking(c)), Some(12), "source 1 has the most; 12 is silent");
        peers.add_pending(id, 40, source(4));
        assert_eq!(peers.make_room(id, source(4), 8, |c| !talking(c)), Some(20));
    }

    #[test]
    fn only_the_admitted_connection_is_the_peer_and_a_pending_one_ends_quietly() {
        let mut peers = Peersockets::default();
        let id = PeerId(1);
        let options = ListenOptions { keep_listening: true, pairing_code: None };
        peers.insert(id, Peer::server("s".into(), addr(), options));
        peers.listening(id, 100, addr());
        peers.add_pending(id, 1, source(1));
        peers.add_pending(id, 2, source(1));
        peers.admit(id, 1);
        assert_eq!(peers.detach(id, 2), Detached::Pending);
        assert_eq!(peers.detach(id, 7), Detached::NotOurs);
        assert_eq!(peers.detach(id, 1), Detached::Peer { relisten: true, local: addr() });
        assert_eq!(peers.detach(id, 1), Detached::NotOurs, "a connection is detached once");
    }

    #[test]
    fn a_server_that_does_not_keep_listening_gives_up_its_listener_with_its_peer() {
        let mut peers = Peersockets::default();
        let id = server(&mut peers);
        peers.listening(id, 100, addr());
        peers.add_pending(id, 1, source(1));
        peers.add_pending(id, 2, source(1));
        peers.admit(id, 1);
        assert_eq!(peers.detach(id, 1), Detached::Peer { relisten: false, local: addr() });
        assert_eq!(peers.stop_listening(id), vec![100, 2]);
        assert!(peers.stop_listening(id).is_empty());
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_a_mapped_ipv4_is_its_ipv4() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped), source(7));
    }
}
