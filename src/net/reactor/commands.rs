//! What the person asked for, routed: each `Command` from the `Engine`
//! handle goes to the layer it is for (a peersocket's lifecycle, a
//! session, the transfers, the trust store), and the loop does the socket
//! work that follows (bind, connect, close).

use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::sockets::{bind_listener, listen_error};
use super::{Conn, Reactor, Socket, SHUTDOWN_GRACE};
use crate::files::FailKind;
use crate::net::peersocket::Peer;
use crate::net::session::{connect_error, ChatRefused, End, EndKind, Session};
use crate::net::transfer::Files;
use crate::net::{printable, secure, Command, Event, PeerId, PeerState, Role, TransferId, Trust};

impl Reactor {
    pub(super) fn drain_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if self.shutdown_deadline.is_some() {
                continue;
            }
            match command {
                Command::Listen { id, name, bind, options } => {
                    let with_code = if options.pairing_code.is_some() { " with a pairing code" } else { "" };
                    let peer = Peer::server(name, bind, options);
                    log::info!("{} listen on {bind}{with_code}", peer.label(id));
                    self.peers.insert(id, peer);
                    self.start_listening(id);
                }
                Command::Connect { id, name, remote, options } => {
                    let with_code = match (&options.pairing_code, &options.pin) {
                        (Some(_), Some(_)) => " by a link, with a pairing code",
                        (None, Some(_)) => " by a link",
                        (Some(_), None) => " with a pairing code",
                        (None, None) => "",
                    };
                    let peer = Peer::client(name, remote, options);
                    log::info!("{} connect to {remote}{with_code}", peer.label(id));
                    self.peers.insert(id, peer);
                    self.start_connecting(id);
                }
                Command::Send { id, text } => {
                    self.talked_with(id);
                    self.send_text(id, text)
                }
                Command::Disconnect { id } => self.disconnect(id),
                Command::Restart { id } => match self.peers.get_mut(id) {
                    None => self.error(id, "there is no such peersocket"),
                    Some(peer) if !peer.lost => self.error(id, "the peersocket is already active"),
                    Some(peer) if peer.role == Role::Server => self.start_listening(id),
                    Some(peer) => {
                        // Now, not at the end of a reconnect's wait.
                        (peer.retry_at, peer.attempts) = (None, 0);
                        self.start_connecting(id)
                    }
                },
                Command::SetAnnounce { announce } => self.set_announce(announce),
                Command::Rename { id, name } => match self.peers.rename(id, &name) {
                    false => self.error(id, "there is no such peersocket"),
                    true => {
                        // Announced under its new name, if it is listening.
                        if let Some(local) = self.peers.get(id).and_then(|p| p.listening_on()) {
                            self.announce(id, &PeerState::Listening { local });
                        }
                        self.emit(Event::Renamed { id, name })
                    }
                },
                Command::Remove { id } => self.remove(id),
                Command::TrustNewKey { id } => self.trust_new_key(id),
                Command::SetVerified { id, verified } => self.set_verified(id, verified),
                Command::ForgetKey { fingerprint } => {
                    if self.known.forget_fingerprint(&fingerprint) {
                        log::info!("forgot the peer key {fingerprint}");
                    }
                }
                Command::SendFile { id, transfer, path } => {
                    self.talked_with(id);
                    let token = self
                        .peers
                        .get(id)
                        .and_then(|p| p.conn)
                        .map(Token)
                        .filter(|t| matches!(self.sockets.get(t), Some(Socket::Stream(c)) if c.session.is_open()));
                    match token {
                        None => self.transfers.not_sent(id, transfer, &path),
                        Some(token) => {
                            log::info!("{} queued {} to send", self.label(id), path.display());
                            self.with_conn(token, |r, conn| {
                                r.transfers.send(&mut conn.files, token.0, transfer, path);
                            });
                        }
                    }
                }
                Command::AcceptFile { transfer } => {
                    if let Some(key) = self.transfers.route(transfer).and_then(|t| self.peer_key_of(Token(t))) {
                        self.known.talked(&key);
                    }
                    self.on_transfer(transfer, |r, conn, _, label| {
                        r.transfers.accept(&mut conn.files, conn.owner, label, transfer)
                    })
                }
                Command::DeclineFile { transfer } => {
                    self.stop_file(transfer, FailKind::DeclinedHere, "you declined the file")
                }
                Command::CancelFile { transfer } => {
                    self.stop_file(transfer, FailKind::CancelledHere, "you cancelled the transfer")
                }
                Command::AcceptFilesFrom { fingerprint, accept } => {
                    log::info!(
                        "files from {fingerprint} are {}",
                        if accept { "accepted without asking" } else { "asked about" }
                    );
                    match accept {
                        true => self.transfers.policy.keys.insert(fingerprint),
                        false => self.transfers.policy.keys.remove(&fingerprint),
                    };
                }
                Command::SetDownloads { dir } => {
                    log::info!("downloads folder set to {}", dir.display());
                    self.transfers.downloads = dir.clone();
                    self.config.downloads = dir;
                }
                Command::Shutdown => self.shutdown(),
            }
        }
    }

    fn start_listening(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        let addr = peer.addr;
        let label = peer.label(id);
        let bound = bind_listener(addr).and_then(|mut listener| {
            let local = listener.local_addr()?;
            let token = self.new_token();
            self.poll.registry().register(&mut listener, token, Interest::READABLE)?;
            Ok((listener, local, token))
        });
        match bound {
            Ok((listener, local, token)) => {
                log::info!("{label} listening on {local}");
                self.sockets.insert(token, Socket::Listener { owner: id, listener, retry_at: None });
                self.peers.listening(id, token.0, local);
                self.set_state(id, PeerState::Listening { local });
            }
            Err(e) => {
                let reason = listen_error(addr, &e);
                log::warn!("{label} {reason}");
                self.set_state(id, PeerState::lost(End::new(EndKind::LocalError, reason)));
            }
        }
    }

    pub(super) fn start_connecting(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        let remote = peer.addr;
        let label = peer.label(id);
        let (code, pin) = (peer.dial.pairing_code.clone(), peer.dial.pin.clone());
        let connecting = TcpStream::connect(remote).and_then(|mut stream| {
            let token = self.new_token();
            self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok((stream, token))
        });
        match connecting {
            Ok((stream, token)) => {
                let session = Session::client_pinned(
                    &self.config.identity,
                    self.session_config,
                    remote,
                    code,
                    pin,
                    Instant::now(),
                );
                let conn = Conn {
                    owner: id,
                    stream,
                    session,
                    files: Files::default(),
                    wants_write: true,
                    lingering: false,
                    held_back: false,
                };
                self.sockets.insert(token, Socket::Stream(Box::new(conn)));
                self.peers.attach(id, token.0);
                self.set_state(id, PeerState::Connecting { remote });
            }
            Err(e) => {
                let end = connect_error(remote, &e);
                log::warn!("{label} {}", end.reason);
                self.set_state(id, PeerState::lost(end));
            }
        }
    }

    fn send_text(&mut self, id: PeerId, text: String) {
        let Some(peer) = self.peers.get(id) else { return self.error(id, "there is no such peersocket") };
        let lost = peer.lost;
        let token = peer.conn.map(Token);
        let sent = match token.and_then(|t| self.sockets.get_mut(&t)) {
            Some(Socket::Stream(conn)) => conn.session.send_chat(&text, Instant::now()),
            _ => Err(ChatRefused::NotOpen),
        };
        match sent {
            Ok(()) => {
                if let Some(token) = token {
                    self.drive(token, false, true);
                }
            }
            Err(refused) => {
                let reason = match refused {
                    ChatRefused::Backlog(kib) => {
                        format!("message not sent: {kib} KiB are already waiting to go out to this peer")
                    }
                    ChatRefused::Closing => "message not sent: the connection is closing".to_owned(),
                    ChatRefused::NotOpen if lost => "message not sent: the peersocket is not connected".to_owned(),
                    ChatRefused::NotOpen => "message not sent: no peer is connected yet".to_owned(),
                };
                self.error(id, &reason);
            }
        }
    }

    fn disconnect(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(id) else {
            return self.error(id, "there is no such peersocket");
        };
        if peer.retry_at.is_some() {
            // Waiting to reconnect: it stops trying.
            if let Some(peer) = self.peers.get_mut(id) {
                peer.retry_at = None;
            }
            return self.set_state(id, PeerState::lost(End::new(EndKind::Closed, "you stopped reconnecting")));
        }
        if peer.lost {
            return self.error(id, "the peersocket is not active");
        }
        let label = peer.label(id);
        let token = peer.conn.map(Token).filter(|t| self.sockets.contains_key(t));
        match (token, self.peers.get(id).and_then(|p| p.conn)) {
            (Some(token), _) => {
                log::info!("{label} closing the connection");
                // The session says bye if the hellos are done, or ends at
                // once ("cancelled") if they are not.
                self.with_conn(token, |_, conn| {
                    let now = Instant::now();
                    conn.session.close("you closed the connection", "you cancelled the connection", "", now)
                });
            }
            (None, Some(_)) => {
                self.peers.detach_quietly(id);
                self.set_state(id, PeerState::lost(End::new(EndKind::Closed, "you cancelled the connection")));
            }
            (None, None) => {
                log::info!("{label} stopped listening");
                self.close_listener(id);
                self.set_state(id, PeerState::lost(End::new(EndKind::Closed, "you stopped listening")));
            }
        }
    }

    fn remove(&mut self, id: PeerId) {
        if self.peers.get(id).is_none() {
            return self.error(id, "there is no such peersocket");
        }
        self.close_listener(id);
        self.announce(id, &PeerState::lost(End::new(EndKind::Closed, "removed")));
        let Some(peer) = self.peers.remove(id) else {
            return;
        };
        log::info!("{} removed", peer.label(id));
        if let Some(token) = peer.conn.map(Token) {
            let (open, closing) = match self.sockets.get(&token) {
                Some(Socket::Stream(c)) => (c.session.is_open(), c.session.is_closing()),
                _ => (false, false),
            };
            if open {
                // The owner is gone, so nothing is reported when this ends.
                self.with_conn(token, |_, conn| conn.session.close("removed", "removed", "", Instant::now()));
            } else if !closing {
                self.sockets.remove(&token);
            }
        }
        self.emit(Event::Removed { id });
    }

    /// Announcing turned on (every listening server peersocket is
    /// announced now) or off (each is withdrawn; the responder stops).
    fn set_announce(&mut self, announce: bool) {
        self.config.announce = announce;
        match (announce, self.nearby.is_some()) {
            (true, false) => {
                self.nearby = crate::nearby::Announcer::start(self.config.identity.public())
                    .inspect_err(|e| log::warn!("listeners will not be announced on the local network: {e}"))
                    .ok();
                for id in self.peers.ids() {
                    if let Some(local) = self.peers.get(id).and_then(|p| p.listening_on()) {
                        self.announce(id, &PeerState::Listening { local });
                    }
                }
            }
            (false, true) => {
                if let Some(nearby) = self.nearby.take() {
                    nearby.stop_soon();
                }
            }
            _ => {}
        }
    }

    fn shutdown(&mut self) {
        log::info!("shutting down: saying bye to every peer");
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        let tokens: Vec<Token> = self.sockets.keys().copied().collect();
        for token in tokens {
            let has_peer = matches!(self.sockets.get(&token), Some(Socket::Stream(c)) if c.session.has_peer());
            if has_peer {
                self.with_conn(token, |_, conn| {
                    conn.session.leave("PeerConn closed", "PeerConn closed", "PeerConn is closing", Instant::now())
                });
            } else {
                self.sockets.remove(&token);
            }
        }
        // Nobody is listening for events any more.
        self.peers.clear();
    }

    /// Last resort when the poller itself fails.
    pub(super) fn fail_everything(&mut self, reason: &str) {
        for id in self.peers.ids() {
            self.set_state(id, PeerState::lost(End::new(EndKind::LocalError, reason)));
        }
    }

    pub(super) fn close_listener(&mut self, id: PeerId) {
        for token in self.peers.stop_listening(id) {
            self.sockets.remove(&Token(token));
        }
    }

    /// The person sends to this peer: its key is no stranger.
    fn talked_with(&mut self, id: PeerId) {
        if let Some(key) = self.peers.get(id).and_then(|p| p.conn).and_then(|t| self.peer_key_of(Token(t))) {
            self.known.talked(&key);
        }
    }

    fn peer_key_of(&self, token: Token) -> Option<[u8; 32]> {
        match self.sockets.get(&token) {
            Some(Socket::Stream(conn)) if conn.session.is_open() => conn.session.peer_key().map(|p| p.key),
            _ => None,
        }
    }

    fn trust_new_key(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(id) else { return self.error(id, "there is no such peersocket") };
        let Some(rejected) = peer.rejected.take() else {
            return self.error(id, "there is no changed key to trust on this peersocket");
        };
        let client = peer.role == Role::Client;
        let lost = peer.lost;
        let dialled = rejected.address.to_string();
        self.known.replace(&rejected.key, &rejected.name, client.then_some(dialled.as_str()));
        log::warn!(
            "{} the person trusted the new key {} for \"{}\"",
            self.label(id),
            secure::fingerprint(&rejected.key),
            printable(&rejected.name)
        );
        if client && lost {
            self.start_connecting(id);
        }
    }

    fn set_verified(&mut self, id: PeerId, verified: bool) {
        let token = self.peers.get(id).and_then(|p| p.conn).map(Token);
        let key = match token.and_then(|t| self.sockets.get(&t)) {
            Some(Socket::Stream(conn)) if conn.session.is_open() => conn.session.peer_key().map(|p| p.key),
            _ => None,
        };
        let Some(key) = key else { return self.error(id, "no peer is connected to verify") };
        if !self.known.contains(&key) {
            return self.error(
                id,
                "this peer's key is not remembered (it was forgotten, or 1000 keys are remembered already); \
                 connect again to remember it, then verify it",
            );
        }
        self.known.set_verified(&key, verified);
        log::info!(
            "{} key {} marked {}",
            self.label(id),
            secure::fingerprint(&key),
            if verified { "verified" } else { "unverified" }
        );
        let trust = if verified { Trust::Verified } else { Trust::Known };
        self.emit(Event::Trust { id, trust });
    }

    /// Runs `f` on the connection that carries `transfer`, if it still exists.
    fn on_transfer(&mut self, transfer: TransferId, f: impl FnOnce(&mut Reactor, &mut Conn, Token, &str)) {
        match self.transfers.route(transfer).map(Token) {
            Some(token) => {
                self.with_conn(token, |r, conn| {
                    let label = r.label(conn.owner);
                    f(r, conn, token, &label)
                });
            }
            None => log::debug!("no transfer {transfer} (it has already ended)"),
        }
    }

    fn stop_file(&mut self, transfer: TransferId, kind: FailKind, why: &str) {
        self.on_transfer(transfer, |r, conn, token, label| {
            let (mut c, session) = conn.split(token, label);
            if let Some(link) = session.open_link() {
                r.transfers.stop(&mut c, link, transfer, kind, why);
            }
        });
    }
}
