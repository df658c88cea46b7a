//! The reactor: one thread, one `mio::Poll`, every listener and stream.
//!
//! Written in the shape of audioipc's `ipccore`: poll, handle socket events,
//! then drain commands, then run the timers. A socket that fails or a peer
//! that misbehaves closes its own connection and nothing else; the loop only
//! ends on `Shutdown` (or if the OS poller itself fails).
//!
//! Timers need no thread of their own: every connection knows its next
//! deadline (connect, hello, heartbeat, linger) and the poll timeout is the
//! earliest of them, so an idle engine sleeps in `poll` until something is
//! really due.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::event::Event as MioEvent;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, SockRef, TcpKeepalive, Type};

use super::frame::{self, ByeCode, Frame};
use super::pairing::Pairing;
use super::secure::{self, Channel, SecureError};
use super::transfer::{Files, InState, Incoming, Meter, OutState, Outgoing, MAX_ACTIVE_OUT, MAX_PENDING_OFFERS};
use super::trust::{Check, KnownPeer, KnownPeers, PeerIdentity, Trust};
use super::{printable, Command, EngineConfig, Event, ListenOptions, PeerId, PeerState, Role};
use crate::files::{self, Block, DiskEvent, Notify, TransferId, WriteMsg};

/// Outside the range of socket tokens, which count up from 0.
const WAKE_TOKEN: Token = Token(usize::MAX);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes read from one stream before others get their turn.
const READ_BUDGET: usize = 1024 * 1024;
/// How long shutdown waits for byes to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Backlog of a listening socket.
const LISTEN_BACKLOG: i32 = 128;
/// File data is added to a connection's output only while less than this
/// is waiting, so chat and control frames never queue behind more.
const HIGH_WATER: usize = 256 * 1024;
/// File bytes one connection may write before others get their turn.
const PUMP_BUDGET: usize = 4 * 1024 * 1024;
/// How long an offer may wait for its free-space check before the person is
/// asked anyway.
const SPACE_CHECK_PATIENCE: Duration = Duration::from_secs(2);

pub(crate) struct Reactor {
    poll: Poll,
    config: EngineConfig,
    known: KnownPeers,
    /// The known-peers generation last reported in a `KnownPeers` event.
    known_reported: Option<u64>,
    commands: Receiver<Command>,
    events: Sender<Event>,
    peers: HashMap<PeerId, Peer>,
    sockets: HashMap<Token, Socket>,
    next_token: usize,
    scratch: Vec<u8>,
    /// Streams that used up their read budget and may hold more input.
    read_again: Vec<Token>,
    /// Connections that used up their write budget with file data to send.
    write_again: Vec<Token>,
    /// Set once `Shutdown` arrives: the loop ends when the last connection
    /// has closed or at this instant.
    shutdown_deadline: Option<Instant>,
    /// How disk workers report back.
    notify: Notify,
    /// Started at the first offer.
    space_checker: Option<files::SpaceChecker>,
    /// It could not be started: do not try (and log) at every offer.
    space_checker_failed: bool,
    disk_events: Receiver<DiskEvent>,
    /// Shared with the handle, which numbers outgoing transfers.
    next_transfer: Arc<std::sync::atomic::AtomicU64>,
    /// The connection each live transfer is on.
    transfers: HashMap<TransferId, Token>,
    /// Received files whose connection ended while they were being verified:
    /// they are still reported when stored.
    orphans: HashMap<TransferId, (PeerId, String)>,
    /// Writer threads, joined at exit so no temporary file outlives us.
    writers: Vec<std::thread::JoinHandle<()>>,
}

/// One peersocket as the reactor sees it.
struct Peer {
    role: Role,
    name: String,
    /// Server: the address to bind (the real one once bound, so a restart
    /// gets the same port). Client: the remote address.
    addr: SocketAddr,
    options: ListenOptions,
    listener: Option<Token>,
    /// The connection that is the peer: a client's from the start, a
    /// server's once its hello is done.
    conn: Option<Token>,
    /// Server: accepted connections that have not completed the hello.
    pending: Vec<Token>,
    lost: bool,
    /// Client: the pairing code to prove to the listener.
    pairing_code: Option<String>,
    /// Server: wrong pairing codes so far, and when the next try is allowed.
    wrong_codes: u32,
    pairing_blocked_until: Option<Instant>,
    /// The last key refused as changed, for `TrustNewKey`.
    rejected: Option<Rejected>,
}

/// A key that did not match the one remembered.
struct Rejected {
    key: [u8; 32],
    name: String,
    /// What we dialled (clients) or where it came from (servers).
    address: SocketAddr,
}

impl Peer {
    fn label(&self, id: PeerId) -> String {
        format!("[{} {id}]", printable(&self.name))
    }
}

enum Socket {
    Listener { owner: PeerId, listener: TcpListener },
    Stream(Conn),
}

/// One TCP stream and its protocol state.
struct Conn {
    owner: PeerId,
    stream: TcpStream,
    remote: SocketAddr,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// `WRITABLE` interest is registered.
    wants_write: bool,
    last_rx: Instant,
    last_tx: Instant,
    ping_seq: u64,
    /// What to report to the owner when the connection finally closes.
    ending: Option<End>,
    files: Files,
    /// The Noise channel: `out` holds its records, `inbuf` its plaintext.
    link: Channel,
    /// Frames are encoded here, then sealed into `out`.
    plain: Vec<u8>,
    /// Sealing failed (the message counter ran out): the connection ends.
    broken: Option<SecureError>,
    /// Since when part of a record or frame has waited for the rest.
    partial_since: Option<Instant>,
    /// The peer's hello name, held while pairing.
    peer_name: String,
    pairing: Option<Pairing>,
    /// Chat messages the peer may still send now (a token bucket).
    chat_allowance: f64,
    chat_checked: Instant,
}

enum Phase {
    /// Client: the non-blocking connect is in progress.
    Connecting {
        deadline: Instant,
    },
    /// The handshake, then waiting for the peer's hello.
    Hello {
        deadline: Instant,
    },
    /// Both hellos asked for a pairing code; proving it.
    Pairing {
        deadline: Instant,
    },
    Open,
    /// We said what we had to say (usually a bye); flushing, then waiting
    /// for the peer to close its side.
    Closing {
        deadline: Instant,
        shut: bool,
    },
}

/// How a connection ended, as the owner's `Lost` state will say it.
#[derive(Clone, Debug)]
struct End {
    reason: String,
    clean: bool,
}

impl End {
    fn clean(reason: impl Into<String>) -> End {
        End { reason: reason.into(), clean: true }
    }
    fn failed(reason: impl Into<String>) -> End {
        End { reason: reason.into(), clean: false }
    }
}

/// A request to close a connection, returned by the frame handlers.
struct Close {
    end: End,
    /// Say this to the peer first, then close gracefully.
    bye: Option<(ByeCode, String)>,
}

impl From<End> for Close {
    fn from(end: End) -> Close {
        Close { end, bye: None }
    }
}

impl Conn {
    fn new(
        owner: PeerId,
        stream: TcpStream,
        remote: SocketAddr,
        phase: Phase,
        (link, first): (Channel, Vec<u8>),
    ) -> Conn {
        let now = Instant::now();
        Conn {
            owner,
            stream,
            remote,
            phase,
            inbuf: Vec::new(),
            out: first,
            out_pos: 0,
            wants_write: false,
            last_rx: now,
            last_tx: now,
            ping_seq: 0,
            ending: None,
            files: Files::default(),
            link,
            plain: Vec::new(),
            broken: None,
            partial_since: None,
            peer_name: String::new(),
            pairing: None,
            chat_allowance: f64::MAX,
            chat_checked: now,
        }
    }

    fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn queue(&mut self, frame: &Frame) {
        self.plain.clear();
        frame.encode(&mut self.plain);
        self.seal_plain();
        self.last_tx = Instant::now();
    }

    /// Encrypts what is in `plain` onto the output.
    fn seal_plain(&mut self) {
        if let Err(e) = self.link.seal(&self.plain, &mut self.out) {
            self.broken.get_or_insert(e);
        }
    }

    /// Writes until the output is empty or the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > READ_CHUNK && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// When something is next due on this connection.
    fn deadline(&self, config: &EngineConfig) -> Instant {
        match self.phase {
            Phase::Connecting { deadline } | Phase::Closing { deadline, .. } => deadline,
            Phase::Hello { deadline } | Phase::Pairing { deadline } => {
                self.partial_since.map_or(deadline, |since| deadline.min(since + config.frame_timeout))
            }
            Phase::Open => {
                let due = (self.last_rx + config.heartbeat_timeout).min(self.last_tx + config.heartbeat_interval);
                let checks = self.files.incoming.values().filter(|t| t.state == InState::Checking);
                let due = checks.fold(due, |due, t| due.min(t.offered + SPACE_CHECK_PATIENCE));
                self.partial_since.map_or(due, |since| due.min(since + config.frame_timeout))
            }
        }
    }
}

impl Reactor {
    pub(crate) fn new(
        config: EngineConfig,
        known: KnownPeers,
        commands: Receiver<Command>,
        events: Sender<Event>,
        next_transfer: Arc<std::sync::atomic::AtomicU64>,
    ) -> io::Result<(Reactor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE_TOKEN)?);
        let (disk_tx, disk_events) = crossbeam_channel::unbounded();
        let reactor = Reactor {
            poll,
            config,
            known,
            known_reported: None,
            commands,
            events,
            peers: HashMap::new(),
            sockets: HashMap::new(),
            next_token: 0,
            scratch: vec![0; READ_CHUNK],
            read_again: Vec::new(),
            write_again: Vec::new(),
            shutdown_deadline: None,
            notify: Notify { events: disk_tx, waker: waker.clone() },
            disk_events,
            next_transfer,
            transfers: HashMap::new(),
            orphans: HashMap::new(),
            space_checker: None,
            space_checker_failed: false,
            writers: Vec::new(),
        };
        Ok((reactor, waker))
    }

    pub(crate) fn run(mut self) {
        log::debug!("reactor started");
        let mut events = Events::with_capacity(1024);
        self.report_known();
        loop {
            if let Some(deadline) = self.shutdown_deadline {
                if self.sockets.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = if self.read_again.is_empty() && self.write_again.is_empty() {
                self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("the network poller failed, closing every connection: {e}");
                self.fail_everything(&format!("internal network error: {e}"));
                break;
            }
            for event in events.iter() {
                match event.token() {
                    WAKE_TOKEN => {}
                    token => self.socket_ready(token, event),
                }
            }
            for token in std::mem::take(&mut self.read_again) {
                self.drive(token, true, false);
            }
            self.drain_disk();
            for token in std::mem::take(&mut self.write_again) {
                self.drive(token, false, true);
            }
            self.drain_commands();
            self.run_timers(Instant::now());
            self.report_known();
        }
        let open = self.sockets.len();
        self.sockets.clear();
        for writer in self.writers.drain(..) {
            let _ = writer.join();
        }
        log::debug!("reactor stopped ({open} sockets still open were closed)");
    }

    /// Sends the known-peers list when it changed since it was last sent.
    fn report_known(&mut self) {
        if self.known_reported != Some(self.known.generation()) {
            self.known_reported = Some(self.known.generation());
            let _ = self.events.send(Event::KnownPeers { peers: self.known.summary() });
        }
    }

    // ----- commands ---------------------------------------------------------

    fn drain_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if self.shutdown_deadline.is_some() {
                continue;
            }
            match command {
                Command::Listen { id, name, bind, options } => {
                    let peer = Peer {
                        role: Role::Server,
                        name,
                        addr: bind,
                        options,
                        listener: None,
                        conn: None,
                        pending: Vec::new(),
                        lost: true,
                        pairing_code: None,
                        wrong_codes: 0,
                        pairing_blocked_until: None,
                        rejected: None,
                    };
                    let with_code = if peer.options.pairing_code.is_some() { " with a pairing code" } else { "" };
                    log::info!("{} listen on {bind}{with_code}", peer.label(id));
                    self.peers.insert(id, peer);
                    self.start_listening(id);
                }
                Command::Connect { id, name, remote, pairing_code } => {
                    let peer = Peer {
                        role: Role::Client,
                        name,
                        addr: remote,
                        options: ListenOptions::default(),
                        listener: None,
                        conn: None,
                        pending: Vec::new(),
                        lost: true,
                        pairing_code,
                        wrong_codes: 0,
                        pairing_blocked_until: None,
                        rejected: None,
                    };
                    let with_code = if peer.pairing_code.is_some() { " with a pairing code" } else { "" };
                    log::info!("{} connect to {remote}{with_code}", peer.label(id));
                    self.peers.insert(id, peer);
                    self.start_connecting(id);
                }
                Command::Send { id, text } => self.send_text(id, text),
                Command::Disconnect { id } => self.disconnect(id),
                Command::Restart { id } => match self.peers.get(&id) {
                    None => self.error(id, "there is no such peersocket"),
                    Some(peer) if !peer.lost => self.error(id, "the peersocket is already active"),
                    Some(peer) if peer.role == Role::Server => self.start_listening(id),
                    Some(_) => self.start_connecting(id),
                },
                Command::Rename { id, name } => match self.peers.get_mut(&id) {
                    None => self.error(id, "there is no such peersocket"),
                    Some(peer) => {
                        log::info!("{} renamed to \"{}\"", peer.label(id), printable(&name));
                        peer.name = name.clone();
                        self.emit(Event::Renamed { id, name });
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
                Command::SendFile { id, transfer, path } => self.send_file(id, transfer, path),
                Command::AcceptFile { transfer } => self.on_transfer(transfer, |r, conn| r.accept_file(conn, transfer)),
                Command::DeclineFile { transfer } => {
                    self.on_transfer(transfer, |r, conn| r.stop_file(conn, transfer, "you declined the file"))
                }
                Command::CancelFile { transfer } => {
                    self.on_transfer(transfer, |r, conn| r.stop_file(conn, transfer, "you cancelled the transfer"))
                }
                Command::SetDownloads { dir } => {
                    log::info!("downloads folder set to {}", dir.display());
                    self.config.downloads = dir;
                }
                Command::Shutdown => self.shutdown(),
            }
        }
    }

    fn start_listening(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(&id) else {
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
                self.sockets.insert(token, Socket::Listener { owner: id, listener });
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.listener = Some(token);
                    peer.addr = local;
                }
                self.set_state(id, PeerState::Listening { local });
            }
            Err(e) => {
                let reason = listen_error(addr, &e);
                log::warn!("{label} {reason}");
                self.set_state(id, PeerState::Lost { reason, clean: false });
            }
        }
    }

    fn start_connecting(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let remote = peer.addr;
        let label = peer.label(id);
        let connecting = TcpStream::connect(remote).and_then(|mut stream| {
            let token = self.new_token();
            self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok((stream, token))
        });
        match connecting {
            Ok((stream, token)) => {
                let deadline = Instant::now() + self.config.connect_timeout;
                let mut link = Channel::initiator(&self.config.identity);
                link.0.set_nonce_limit(self.config.nonce_limit);
                let mut conn = Conn::new(id, stream, remote, Phase::Connecting { deadline }, link);
                conn.wants_write = true;
                self.sockets.insert(token, Socket::Stream(conn));
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.conn = Some(token);
                }
                self.set_state(id, PeerState::Connecting { remote });
            }
            Err(e) => {
                let reason = connect_error(remote, &e);
                log::warn!("{label} {reason}");
                self.set_state(id, PeerState::Lost { reason, clean: false });
            }
        }
    }

    fn send_text(&mut self, id: PeerId, text: String) {
        let limit = self.config.max_output_bytes;
        let problem = match self.peers.get(&id) {
            None => Some("there is no such peersocket".to_owned()),
            Some(peer) => match peer.conn.and_then(|t| self.sockets.get_mut(&t)) {
                Some(Socket::Stream(conn)) if matches!(conn.phase, Phase::Open) => {
                    if conn.pending_output() + text.len() > limit {
                        Some(format!(
                            "message not sent: {} KiB are already waiting to go out to this peer",
                            conn.pending_output() / 1024
                        ))
                    } else {
                        conn.queue(&Frame::Chat(text));
                        None
                    }
                }
                Some(Socket::Stream(conn)) if matches!(conn.phase, Phase::Closing { .. }) => {
                    Some("message not sent: the connection is closing".to_owned())
                }
                _ if peer.lost => Some("message not sent: the peersocket is not connected".to_owned()),
                _ => Some("message not sent: no peer is connected yet".to_owned()),
            },
        };
        match problem {
            Some(reason) => self.error(id, &reason),
            None => {
                if let Some(token) = self.peers.get(&id).and_then(|p| p.conn) {
                    self.drive(token, false, true);
                }
            }
        }
    }

    fn disconnect(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(&id) else {
            return self.error(id, "there is no such peersocket");
        };
        if peer.lost {
            return self.error(id, "the peersocket is not active");
        }
        let label = peer.label(id);
        let conn_token = peer.conn;
        let open = conn_token.and_then(|t| match self.sockets.get(&t) {
            Some(Socket::Stream(c)) => Some(matches!(c.phase, Phase::Open | Phase::Closing { .. })),
            _ => None,
        });
        match (conn_token, open) {
            (Some(token), Some(true)) => {
                log::info!("{label} closing the connection");
                self.with_conn(token, |_, _| {
                    Err(Close {
                        end: End::clean("you closed the connection"),
                        bye: Some((ByeCode::Normal, String::new())),
                    })
                });
            }
            (Some(token), _) => {
                // Still connecting or in the hello: nothing to say goodbye to.
                self.sockets.remove(&token);
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.conn = None;
                }
                log::info!("{label} connection attempt cancelled");
                self.set_state(id, PeerState::Lost { reason: "you cancelled the connection".into(), clean: true });
            }
            (None, _) => {
                log::info!("{label} stopped listening");
                self.close_listener(id);
                self.set_state(id, PeerState::Lost { reason: "you stopped listening".into(), clean: true });
            }
        }
    }

    fn remove(&mut self, id: PeerId) {
        if !self.peers.contains_key(&id) {
            return self.error(id, "there is no such peersocket");
        }
        self.close_listener(id);
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        log::info!("{} removed", peer.label(id));
        if let Some(token) = peer.conn {
            let open = matches!(self.sockets.get(&token), Some(Socket::Stream(c)) if matches!(c.phase, Phase::Open));
            if open {
                // The owner is gone, so nothing is reported when this ends.
                self.with_conn(token, |_, _| {
                    Err(Close { end: End::clean("removed"), bye: Some((ByeCode::Normal, String::new())) })
                });
            } else if !matches!(self.sockets.get(&token), Some(Socket::Stream(c)) if matches!(c.phase, Phase::Closing { .. }))
            {
                self.sockets.remove(&token);
            }
        }
        self.emit(Event::Removed { id });
    }

    fn shutdown(&mut self) {
        log::info!("shutting down: saying bye to every peer");
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        let tokens: Vec<Token> = self.sockets.keys().copied().collect();
        for token in tokens {
            let open = match self.sockets.get(&token) {
                Some(Socket::Stream(conn)) => {
                    matches!(conn.phase, Phase::Open | Phase::Closing { .. })
                }
                _ => false,
            };
            if open {
                self.with_conn(token, |_, _| {
                    Err(Close {
                        end: End::clean("PeerConn closed"),
                        bye: Some((ByeCode::Normal, "PeerConn is closing".into())),
                    })
                });
            } else {
                self.sockets.remove(&token);
            }
        }
        // Nobody is listening for events any more.
        self.peers.clear();
    }

    /// Last resort when the poller itself fails.
    fn fail_everything(&mut self, reason: &str) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.set_state(id, PeerState::Lost { reason: reason.to_owned(), clean: false });
        }
    }

    fn close_listener(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let listener = peer.listener.take();
        let pending = std::mem::take(&mut peer.pending);
        for token in listener.into_iter().chain(pending) {
            self.sockets.remove(&token);
        }
    }

    // ----- socket events ----------------------------------------------------

    fn socket_ready(&mut self, token: Token, event: &MioEvent) {
        match self.sockets.get(&token) {
            None => log::trace!("event for a socket already closed ({token:?})"),
            Some(Socket::Listener { owner, .. }) => {
                let owner = *owner;
                self.accept(token, owner);
            }
            Some(Socket::Stream(_)) => {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.drive(token, readable, writable);
            }
        }
    }

    fn accept(&mut self, token: Token, owner: PeerId) {
        loop {
            let accepted = match self.sockets.get(&token) {
                Some(Socket::Listener { listener, .. }) => listener.accept(),
                _ => return,
            };
            let (mut stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors. The connection stays in
                    // the backlog; we try again on the next readiness.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let Some(peer) = self.peers.get(&owner) else {
                return;
            };
            let label = peer.label(owner);
            if peer.pending.len() >= self.config.max_pending_hellos {
                // Drop the oldest silent connection rather than the newcomer,
                // so a flood of idle sockets cannot keep a real peer out.
                if let Some(peer) = self.peers.get_mut(&owner) {
                    let oldest = peer.pending.remove(0);
                    if let Some(Socket::Stream(old)) = self.sockets.remove(&oldest) {
                        log::warn!("{label} dropped {}: too many connections still in their hello", old.remote);
                    }
                }
            }
            tune_stream(&stream);
            let conn_token = self.new_token();
            if let Err(e) = self.poll.registry().register(&mut stream, conn_token, Interest::READABLE) {
                log::warn!("{label} cannot watch the connection from {remote}: {e}");
                continue;
            }
            log::info!("{label} incoming connection from {remote}");
            let deadline = Instant::now() + self.config.hello_timeout;
            let mut link = Channel::responder(&self.config.identity);
            link.0.set_nonce_limit(self.config.nonce_limit);
            let conn = Conn::new(owner, stream, remote, Phase::Hello { deadline }, link);
            self.sockets.insert(conn_token, Socket::Stream(conn));
            if let Some(peer) = self.peers.get_mut(&owner) {
                peer.pending.push(conn_token);
            }
            // Our preamble goes out at once, so even a peer that is not
            // PeerConn sees what it reached.
            self.with_conn(conn_token, |_, _| Ok(()));
        }
    }

    /// Does all the I/O a stream is ready for, then brings its `WRITABLE`
    /// interest in line with its pending output.
    fn drive(&mut self, token: Token, readable: bool, writable: bool) {
        self.with_conn(token, |reactor, conn| {
            if let Phase::Connecting { .. } = conn.phase {
                if !(readable || writable) {
                    return Ok(());
                }
                return reactor.finish_connect(token, conn);
            }
            if readable {
                reactor.read(token, conn)?;
            }
            Ok(())
        });
    }

    /// Takes the connection out of the table, runs `f` on it, and puts it
    /// back; or closes it when `f` asks. The closure gets the whole reactor,
    /// so frame handlers can report events and touch the owner.
    fn with_conn(&mut self, token: Token, f: impl FnOnce(&mut Reactor, &mut Conn) -> Result<(), Close>) {
        let Some(Socket::Stream(mut conn)) = self.sockets.remove(&token) else {
            return;
        };
        let mut result = f(self, &mut conn);
        if result.is_ok() {
            result = self.flush_and_watch(token, &mut conn);
        }
        match result {
            Ok(()) => {
                self.sockets.insert(token, Socket::Stream(conn));
            }
            Err(close) => self.close(token, conn, close),
        }
    }

    fn flush_and_watch(&mut self, token: Token, conn: &mut Conn) -> Result<(), Close> {
        if let Phase::Connecting { .. } = conn.phase {
            return Ok(());
        }
        if let Some(e) = conn.broken.take() {
            return Err(End::failed(format!("the connection with {} ended: {e}", conn.remote)).into());
        }
        let mut budget = PUMP_BUDGET;
        loop {
            let added = if let Phase::Open = conn.phase { self.pump(conn) } else { 0 };
            if let Err(e) = conn.flush() {
                return Err(io_end(conn, &e).into());
            }
            if added == 0 || conn.pending_output() > 0 {
                break;
            }
            budget = budget.saturating_sub(added);
            if budget == 0 {
                self.write_again.push(token);
                break;
            }
        }
        if conn.pending_output() > self.config.max_output_bytes.saturating_add(HIGH_WATER) {
            // Replies (pongs, declines) pile up only if the peer never reads.
            let waiting = conn.pending_output() / 1024;
            return Err(End::failed(format!("the peer stopped reading ({waiting} KiB were waiting for it)")).into());
        }
        if let Phase::Closing { shut: shut @ false, .. } = &mut conn.phase {
            if conn.out_pos == conn.out.len() {
                // All we had to say is out: tell the peer we are done
                // writing, and wait for it to close its side.
                let _ = conn.stream.shutdown(Shutdown::Write);
                *shut = true;
            }
        }
        let want_write = conn.pending_output() > 0;
        if want_write != conn.wants_write {
            let interest = if want_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if let Err(e) = self.poll.registry().reregister(&mut conn.stream, token, interest) {
                return Err(End::failed(format!("cannot watch the connection: {e}")).into());
            }
            conn.wants_write = want_write;
        }
        Ok(())
    }

    fn finish_connect(&mut self, token: Token, conn: &mut Conn) -> Result<(), Close> {
        // The recipe from mio's docs: writable (or an error), then
        // `take_error`, then `peer_addr` to be sure the connect completed.
        match conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(End::failed(connect_error(conn.remote, &e)).into()),
        }
        match conn.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(End::failed(connect_error(conn.remote, &e)).into()),
        }
        tune_stream(&conn.stream);
        log::info!("{} TCP connected to {}, starting the handshake", self.label(conn.owner), conn.remote);
        conn.phase = Phase::Hello { deadline: Instant::now() + self.config.hello_timeout };
        let _ = token;
        Ok(())
    }

    fn read(&mut self, token: Token, conn: &mut Conn) -> Result<(), Close> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.read_with(token, conn, &mut scratch);
        self.scratch = scratch;
        result
    }

    fn read_with(&mut self, token: Token, conn: &mut Conn, scratch: &mut [u8]) -> Result<(), Close> {
        let mut budget = READ_BUDGET;
        loop {
            self.decode_input(token, conn)?;
            if conn.files.paused() {
                // A writer is full; its Drained event resumes reading.
                return Ok(());
            }
            if budget == 0 {
                self.read_again.push(token);
                return Ok(());
            }
            let n = match conn.stream.read(scratch) {
                Ok(0) => return Err(self.eof(conn)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_end(conn, &e).into()),
            };
            budget = budget.saturating_sub(n);
            conn.last_rx = Instant::now();
            if let Phase::Closing { .. } = conn.phase {
                continue; // we are leaving; what the peer still sends is dropped
            }
            let was_established = conn.link.is_established();
            if let Err(e) = conn.link.receive(&scratch[..n], &mut conn.out, &mut conn.inbuf) {
                // Records that arrived intact before the damaged one are the
                // peer's own words: handle them, then end.
                if conn.link.is_established() {
                    self.decode_input(token, conn)?;
                }
                return Err(self.secure_error(conn, e));
            }
            if !was_established && conn.link.is_established() {
                self.established(conn);
            }
        }
    }

    /// Handles every complete frame in the input buffer, unless reading is
    /// paused for a full writer.
    fn decode_input(&mut self, token: Token, conn: &mut Conn) -> Result<(), Close> {
        // Out of `conn` while frames are handled, so file data can be passed
        // on as slices of it.
        let inbuf = std::mem::take(&mut conn.inbuf);
        let mut used = 0;
        let result = loop {
            if !matches!(conn.phase, Phase::Hello { .. } | Phase::Pairing { .. } | Phase::Open) || conn.files.paused() {
                break Ok(());
            }
            if let (Phase::Open, Some((wire, bytes, len))) = (&conn.phase, frame::decode_data(&inbuf[used..])) {
                used += len;
                if let Err(close) = self.file_data(conn, wire, bytes) {
                    break Err(close);
                }
                continue;
            }
            match frame::decode(&inbuf[used..]) {
                Ok(Some((frame, len))) => {
                    used += len;
                    log::trace!("{} received a {} from {}", self.label(conn.owner), frame.kind_name(), conn.remote);
                    if let Err(close) = self.on_frame(token, conn, frame) {
                        break Err(close);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.protocol_error(conn, &e.to_string())),
            }
        };
        conn.inbuf = inbuf;
        conn.inbuf.drain(..used);
        // A peer that sends half a message and stalls (slowloris) is cut off
        // after `frame_timeout`, however it keeps the heartbeat alive.
        let partial = conn.link.has_partial() || (!conn.inbuf.is_empty() && !conn.files.paused());
        conn.partial_since = if partial { conn.partial_since.or(Some(Instant::now())) } else { None };
        result
    }

    /// The handshake finished: the client says hello first.
    fn established(&mut self, conn: &mut Conn) {
        let fingerprint = conn.link.peer().map(|p| p.fingerprint()).unwrap_or_default();
        log::info!("{} encrypted channel with {}, peer key {fingerprint}", self.label(conn.owner), conn.remote);
        let Some(peer) = self.peers.get(&conn.owner) else { return };
        if peer.role == Role::Client {
            let hello =
                Frame::Hello { version: frame::VERSION, pairing: peer.pairing_code.is_some(), name: peer.name.clone() };
            conn.queue(&hello);
        }
    }

    fn secure_error(&self, conn: &Conn, e: SecureError) -> Close {
        log::warn!("{} {}: {e}", self.label(conn.owner), conn.remote);
        if conn.link.is_established() {
            Close {
                end: End::failed(format!("the connection with {} ended: {e}", conn.remote)),
                bye: Some((ByeCode::ProtocolError, e.to_string())),
            }
        } else {
            End::failed(format!("no secure connection with {}: {e}", conn.remote)).into()
        }
    }

    fn eof(&mut self, conn: &mut Conn) -> Close {
        match conn.phase {
            Phase::Closing { .. } => conn.ending.take().unwrap_or_else(|| End::clean("closed")).into(),
            _ if !conn.inbuf.is_empty() || conn.link.has_partial() => {
                End::failed("the peer closed the connection in the middle of a message").into()
            }
            Phase::Hello { .. } if !conn.link.is_established() => {
                End::failed(format!("{} closed the connection during the handshake", conn.remote)).into()
            }
            Phase::Hello { .. } | Phase::Pairing { .. } if self.is_pending(conn) => {
                End::failed("closed before its hello").into()
            }
            Phase::Pairing { .. } => {
                End::failed(format!("{} closed the connection during pairing", conn.remote)).into()
            }
            Phase::Hello { .. } => {
                End::failed(format!("{} closed the connection before the hello", conn.remote)).into()
            }
            _ => End::failed("the peer closed the connection without saying goodbye").into(),
        }
    }

    fn is_pending(&self, conn: &Conn) -> bool {
        self.peers.get(&conn.owner).is_some_and(|p| {
            p.role == Role::Server && matches!(conn.phase, Phase::Hello { .. } | Phase::Pairing { .. })
        })
    }

    fn protocol_error(&self, conn: &Conn, what: &str) -> Close {
        log::warn!("{} protocol error from {}: {what}", self.label(conn.owner), conn.remote);
        Close {
            end: End::failed(format!("protocol error from {}: {what}", conn.remote)),
            bye: Some((ByeCode::ProtocolError, what.to_owned())),
        }
    }

    fn on_frame(&mut self, token: Token, conn: &mut Conn, frame: Frame) -> Result<(), Close> {
        let server = self.peers.get(&conn.owner).is_some_and(|p| p.role == Role::Server);
        match (&conn.phase, frame) {
            (Phase::Hello { .. }, Frame::Hello { version, pairing, name }) => {
                if version != frame::VERSION {
                    let what = format!(
                        "the peer speaks protocol version {version}; this PeerConn speaks version {}",
                        frame::VERSION
                    );
                    return Err(Close { end: End::failed(what.clone()), bye: Some((ByeCode::Unsupported, what)) });
                }
                if server {
                    self.hello_from_client(token, conn, name, pairing)
                } else {
                    self.hello_from_server(conn, name, pairing)
                }
            }
            (Phase::Hello { .. }, Frame::Bye { code, reason }) => Err(self.bye(conn, code, &reason).into()),
            (Phase::Hello { .. }, other) => {
                Err(self.protocol_error(conn, &format!("sent a {} before the hello", other.kind_name())))
            }
            (Phase::Pairing { .. }, Frame::Pair(msg)) => self.pair_message(conn, &msg),
            (Phase::Pairing { .. }, Frame::Confirm(mac)) => self.pair_confirm(token, conn, &mac),
            (Phase::Pairing { .. }, Frame::Bye { code, reason }) => Err(self.bye(conn, code, &reason).into()),
            (Phase::Pairing { .. }, other) => {
                Err(self.protocol_error(conn, &format!("sent a {} during pairing", other.kind_name())))
            }
            (Phase::Open, Frame::Pair(_) | Frame::Confirm(_)) => {
                Err(self.protocol_error(conn, "sent a pairing message after pairing"))
            }
            (Phase::Open, Frame::Chat(text)) => {
                self.chat_allowed(conn)?;
                self.emit(Event::Message { id: conn.owner, text });
                Ok(())
            }
            (Phase::Open, Frame::Ping(n)) => {
                conn.queue(&Frame::Pong(n));
                Ok(())
            }
            (Phase::Open, Frame::Pong(_)) => Ok(()),
            (Phase::Open, Frame::Bye { code, reason }) => Err(self.bye(conn, code, &reason).into()),
            (Phase::Open, Frame::Hello { .. }) => Err(self.protocol_error(conn, "sent a second hello")),
            (Phase::Open, file_frame) => self.on_file_frame(token, conn, file_frame),
            // Frames are only decoded in the hello and open phases.
            (Phase::Connecting { .. } | Phase::Closing { .. }, _) => Ok(()),
        }
    }

    fn hello_from_client(
        &mut self,
        token: Token,
        conn: &mut Conn,
        peer_name: String,
        pairing: bool,
    ) -> Result<(), Close> {
        let owner = conn.owner;
        let Some(peer) = self.peers.get_mut(&owner) else {
            return Err(End::clean("peersocket removed").into());
        };
        if peer.conn.is_some() {
            log::info!(
                "{} refused \"{}\" at {}: busy with another peer",
                peer.label(owner),
                printable(&peer_name),
                conn.remote
            );
            peer.pending.retain(|t| *t != token);
            return Err(Close {
                end: End::failed("busy"),
                bye: Some((ByeCode::Busy, "this peersocket is busy with another peer".into())),
            });
        }
        let code = peer.options.pairing_code.clone();
        let our_name = peer.name.clone();
        let key = conn.link.peer().map(|p| p.key).unwrap_or_default();
        let check = self.known.check(&key, &peer_name, None);
        if let Check::Changed { old } = check {
            return Err(self.key_changed(conn, &peer_name, &old, key));
        }
        match (code, pairing) {
            (Some(_), false) => {
                log::info!(
                    "{} refused \"{}\" at {}: no pairing code",
                    self.label(owner),
                    printable(&peer_name),
                    conn.remote
                );
                Err(Close {
                    end: End::failed("no pairing code"),
                    bye: Some((
                        ByeCode::Pairing,
                        "this listener asks for a pairing code: connect again with the code its owner gives you".into(),
                    )),
                })
            }
            (Some(code), true) => {
                let Some(peer) = self.peers.get(&owner) else { return Err(End::clean("peersocket removed").into()) };
                if peer.wrong_codes >= self.config.max_wrong_codes {
                    return Err(Close {
                        end: End::failed("pairing refused: the code no longer works"),
                        bye: Some((
                            ByeCode::Pairing,
                            "too many wrong pairing codes were tried here; ask for a new code".into(),
                        )),
                    });
                }
                if let Some(until) = peer.pairing_blocked_until.filter(|u| *u > Instant::now()) {
                    let wait = until.saturating_duration_since(Instant::now()).as_secs() + 1;
                    return Err(Close {
                        end: End::failed("pairing refused: waiting after a wrong code"),
                        bye: Some((ByeCode::Pairing, format!("a wrong pairing code was tried: try again in {wait} s"))),
                    });
                }
                let hash = conn.link.peer().map(|p| p.handshake_hash.clone()).unwrap_or_default();
                let (state, msg) = Pairing::start(&code, true, &hash);
                conn.queue(&Frame::Hello { version: frame::VERSION, pairing: true, name: our_name });
                conn.queue(&Frame::Pair(msg));
                conn.pairing = Some(state);
                conn.peer_name = peer_name;
                let deadline = match conn.phase {
                    Phase::Hello { deadline } => deadline,
                    _ => Instant::now() + self.config.hello_timeout,
                };
                conn.phase = Phase::Pairing { deadline };
                Ok(())
            }
            (None, _) => {
                if let Some(peer) = self.peers.get_mut(&owner) {
                    peer.pending.retain(|t| *t != token);
                    peer.conn = Some(token);
                }
                conn.queue(&Frame::Hello { version: frame::VERSION, pairing: false, name: our_name });
                conn.phase = Phase::Open;
                let trust = self.trust_after(check, &key, &peer_name, None);
                self.connected(conn, peer_name, trust);
                Ok(())
            }
        }
    }

    fn hello_from_server(&mut self, conn: &mut Conn, peer_name: String, pairing: bool) -> Result<(), Close> {
        let Some(peer) = self.peers.get(&conn.owner) else { return Err(End::clean("peersocket removed").into()) };
        let code = peer.pairing_code.clone();
        let dialled = peer.addr.to_string();
        let key = conn.link.peer().map(|p| p.key).unwrap_or_default();
        let check = self.known.check(&key, &peer_name, Some(&dialled));
        if let Check::Changed { old } = check {
            return Err(self.key_changed(conn, &peer_name, &old, key));
        }
        match (code, pairing) {
            (None, true) => Err(Close {
                end: End::failed(format!(
                    "the listener at {} asks for a pairing code: connect again and type the code its owner gives you",
                    conn.remote
                )),
                bye: Some((ByeCode::Pairing, "no pairing code was given".into())),
            }),
            (Some(_), false) => Err(Close {
                end: End::failed(format!(
                    "you gave a pairing code, but the listener at {} did not ask for one, so nothing was checked and \
                     it may not be who you think (its owner should listen with a pairing code)",
                    conn.remote
                )),
                bye: Some((ByeCode::Pairing, "the connecting side expected to prove a pairing code".into())),
            }),
            (Some(code), true) => {
                let hash = conn.link.peer().map(|p| p.handshake_hash.clone()).unwrap_or_default();
                let (state, msg) = Pairing::start(&code, false, &hash);
                conn.queue(&Frame::Pair(msg));
                conn.pairing = Some(state);
                conn.peer_name = peer_name;
                let deadline = match conn.phase {
                    Phase::Hello { deadline } => deadline,
                    _ => Instant::now() + self.config.hello_timeout,
                };
                conn.phase = Phase::Pairing { deadline };
                Ok(())
            }
            (None, false) => {
                conn.phase = Phase::Open;
                let trust = self.trust_after(check, &key, &peer_name, Some(&dialled));
                self.connected(conn, peer_name, trust);
                Ok(())
            }
        }
    }

    /// Remembers the key of a peer just accepted; says how far it is trusted.
    fn trust_after(&mut self, check: Check, key: &[u8; 32], name: &str, dialled: Option<&str>) -> Trust {
        self.known.remember(key, name, dialled);
        match check {
            Check::Known { verified: true } => Trust::Verified,
            Check::Known { verified: false } => Trust::Known,
            Check::New | Check::Changed { .. } => Trust::New,
        }
    }

    /// The peer's key is not the one remembered: stop before anything moves.
    fn key_changed(&mut self, conn: &Conn, peer_name: &str, old: &KnownPeer, key: [u8; 32]) -> Close {
        let owner = conn.owner;
        let (old_fingerprint, new_fingerprint) = (secure::fingerprint(&old.key), secure::fingerprint(&key));
        let address = match self.peers.get(&owner) {
            Some(p) if p.role == Role::Client => p.addr,
            _ => conn.remote,
        };
        if let Some(peer) = self.peers.get_mut(&owner) {
            peer.rejected = Some(Rejected { key, name: peer_name.to_owned(), address });
        }
        let name = printable(peer_name).into_owned();
        let reason = format!(
            "stopped: \"{name}\" at {} presented the key {new_fingerprint}, not the key {old_fingerprint} you had \
             before. It may have reinstalled PeerConn, or someone may be in between. Compare the safety code with \
             them by voice; if it matches, choose Trust new key.",
            conn.remote
        );
        log::warn!("{} {reason}", self.label(owner));
        self.emit(Event::KeyChanged {
            id: owner,
            peer_name: peer_name.to_owned(),
            address,
            old_fingerprint,
            new_fingerprint,
        });
        Close {
            end: End::failed(reason),
            bye: Some((
                ByeCode::Untrusted,
                "your key is not the one remembered for you here; the other person must choose to trust it".into(),
            )),
        }
    }

    /// The peer's SPAKE2 message.
    fn pair_message(&mut self, conn: &mut Conn, msg: &[u8]) -> Result<(), Close> {
        let Some(pairing) = conn.pairing.as_mut() else {
            return Err(self.protocol_error(conn, "sent a pairing message out of turn"));
        };
        if let Err(what) = pairing.receive(msg) {
            return Err(self.protocol_error(conn, &what));
        }
        let server = self.peers.get(&conn.owner).is_some_and(|p| p.role == Role::Server);
        if !server {
            if let Some(mac) = conn.pairing.as_ref().and_then(Pairing::confirmation) {
                conn.queue(&Frame::Confirm(mac));
            }
        }
        Ok(())
    }

    /// The peer's proof that it holds the same code on this connection.
    fn pair_confirm(&mut self, token: Token, conn: &mut Conn, mac: &[u8; 32]) -> Result<(), Close> {
        let owner = conn.owner;
        let Some(pairing) = conn.pairing.take() else {
            return Err(self.protocol_error(conn, "sent a pairing confirmation out of turn"));
        };
        let right = pairing.check(mac);
        let Some(peer) = self.peers.get_mut(&owner) else { return Err(End::clean("peersocket removed").into()) };
        let key = conn.link.peer().map(|p| p.key).unwrap_or_default();
        let peer_name = std::mem::take(&mut conn.peer_name);
        if peer.role == Role::Client {
            if !right {
                return Err(Close {
                    end: End::failed(format!(
                        "the listener at {} could not prove the same pairing code: someone may be in between",
                        conn.remote
                    )),
                    bye: Some((ByeCode::Pairing, "your pairing confirmation did not match".into())),
                });
            }
            let dialled = peer.addr.to_string();
            conn.phase = Phase::Open;
            self.known.remember(&key, &peer_name, Some(&dialled));
            self.known.set_verified(&key, true);
            self.connected(conn, peer_name, Trust::Verified);
            return Ok(());
        }
        if !right {
            peer.wrong_codes += 1;
            let n = peer.wrong_codes;
            let wait = Duration::from_secs(1u64 << (n - 1).min(8));
            peer.pairing_blocked_until = Some(Instant::now() + wait);
            let max = self.config.max_wrong_codes;
            let said = if n >= max {
                format!(
                    "{n} wrong pairing codes were tried (the last from {}): the code no longer works; stop and \
                     listen again with a new code",
                    conn.remote
                )
            } else {
                format!(
                    "{} tried a wrong pairing code ({n} of {max}; the next try must wait {} s)",
                    conn.remote,
                    wait.as_secs()
                )
            };
            self.error(owner, &said);
            return Err(Close {
                end: End::failed("wrong pairing code"),
                bye: Some((ByeCode::Pairing, "wrong pairing code".into())),
            });
        }
        if peer.conn.is_some() {
            peer.pending.retain(|t| *t != token);
            return Err(Close {
                end: End::failed("busy"),
                bye: Some((ByeCode::Busy, "this peersocket is busy with another peer".into())),
            });
        }
        peer.pending.retain(|t| *t != token);
        peer.conn = Some(token);
        peer.wrong_codes = 0;
        peer.pairing_blocked_until = None;
        if let Some(mac) = pairing.confirmation() {
            conn.queue(&Frame::Confirm(mac));
        }
        conn.phase = Phase::Open;
        self.known.remember(&key, &peer_name, None);
        self.known.set_verified(&key, true);
        self.connected(conn, peer_name, Trust::Verified);
        Ok(())
    }

    /// Refills and spends the peer's chat allowance.
    fn chat_allowed(&self, conn: &mut Conn) -> Result<(), Close> {
        let now = Instant::now();
        let (burst, rate) = (f64::from(self.config.chat_burst), f64::from(self.config.chat_per_sec));
        let refill = now.saturating_duration_since(conn.chat_checked).as_secs_f64() * rate;
        conn.chat_allowance = (conn.chat_allowance.min(burst) + refill).min(burst);
        conn.chat_checked = now;
        if conn.chat_allowance < 1.0 {
            let what = format!("sent more than {} chat messages a second", self.config.chat_per_sec);
            log::warn!("{} {} {what}", self.label(conn.owner), conn.remote);
            return Err(Close {
                end: End::failed(format!("the peer {what}; disconnected to keep PeerConn responsive")),
                bye: Some((ByeCode::Limit, format!("you {what}"))),
            });
        }
        conn.chat_allowance -= 1.0;
        Ok(())
    }

    fn connected(&mut self, conn: &Conn, peer_name: String, trust: Trust) {
        let local_addr = conn.stream.local_addr().unwrap_or(conn.remote);
        let (key, handshake) = conn.link.peer().map(|p| (p.key, p.safety_code())).unwrap_or_default();
        let peer = PeerIdentity { key, fingerprint: secure::fingerprint(&key), safety_code: handshake, trust };
        log::info!(
            "{} connected to \"{}\" at {} (local {local_addr}), key {} ({trust:?}), safety code {}",
            self.label(conn.owner),
            printable(&peer_name),
            conn.remote,
            peer.fingerprint,
            peer.safety_code
        );
        self.set_state(conn.owner, PeerState::Connected { peer_name, peer_addr: conn.remote, local_addr, peer });
    }

    fn trust_new_key(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else { return self.error(id, "there is no such peersocket") };
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
        let token = self.peers.get(&id).and_then(|p| p.conn);
        let key = match token.and_then(|t| self.sockets.get(&t)) {
            Some(Socket::Stream(conn)) if matches!(conn.phase, Phase::Open) => conn.link.peer().map(|p| p.key),
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
        self.emit(Event::Trust { id, trust: if verified { Trust::Verified } else { Trust::Known } });
    }

    /// The `End` for a bye the peer sent.
    fn bye(&self, conn: &Conn, code: ByeCode, reason: &str) -> End {
        let said = if reason.is_empty() { String::new() } else { format!(" (\"{}\")", printable(reason)) };
        match code {
            ByeCode::Normal => End::clean(format!("the peer closed the connection{said}")),
            ByeCode::Busy => End::failed(format!("the peersocket at {} is busy with another peer", conn.remote)),
            ByeCode::ProtocolError => End::failed(format!("the peer reported a protocol error{said}")),
            ByeCode::Unsupported => End::failed(format!("the peer refused our protocol version{said}")),
            ByeCode::Untrusted => End::failed(format!("the peer refused our key{said}")),
            ByeCode::Pairing => End::failed(format!("the peer refused the pairing{said}")),
            ByeCode::Limit => End::failed(format!("the peer ended the connection: we went over a limit{said}")),
        }
    }

    // ----- closing ----------------------------------------------------------

    /// Closes `conn` now, or starts a graceful close when there is a bye to
    /// say. What the owner hears depends on whether the connection was its
    /// peer (a pending connection on a server ends silently).
    fn close(&mut self, token: Token, mut conn: Conn, close: Close) {
        let Close { end, bye } = close;
        if !conn.files.is_empty() {
            self.end_transfers(&mut conn, &end.reason);
        }
        if let Some((code, text)) = bye.filter(|_| conn.link.is_established() && conn.broken.is_none()) {
            if !matches!(conn.phase, Phase::Closing { .. }) {
                conn.queue(&Frame::Bye { code, reason: text });
                conn.phase = Phase::Closing { deadline: Instant::now() + self.config.close_linger, shut: false };
                let user_close = code == ByeCode::Normal;
                if user_close {
                    // Reported when the bye has gone out and the peer closed.
                    conn.ending = Some(end);
                } else {
                    // A failure is reported at once; the socket lingers only
                    // to deliver the bye.
                    self.detach(token, &conn, end);
                }
                if self.flush_and_watch(token, &mut conn).is_ok() {
                    self.sockets.insert(token, Socket::Stream(conn));
                    return;
                }
                let _ = self.poll.registry().deregister(&mut conn.stream);
                if let Some(end) = conn.ending.take() {
                    self.detach(token, &conn, end);
                }
                return;
            }
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.detach(token, &conn, end);
    }

    /// Tells the owner that `token` is no longer its connection.
    fn detach(&mut self, token: Token, conn: &Conn, end: End) {
        let owner = conn.owner;
        let Some(peer) = self.peers.get_mut(&owner) else {
            return;
        };
        let label = peer.label(owner);
        if let Some(i) = peer.pending.iter().position(|t| *t == token) {
            peer.pending.swap_remove(i);
            log::info!("{label} dropped the connection from {}: {}", conn.remote, end.reason);
            return;
        }
        if peer.conn != Some(token) {
            return;
        }
        peer.conn = None;
        if end.clean {
            log::info!("{label} connection with {} ended: {}", conn.remote, end.reason);
        } else {
            log::warn!("{label} connection with {} lost: {}", conn.remote, end.reason);
        }
        let relisten = peer.role == Role::Server && peer.options.keep_listening && peer.listener.is_some();
        let local = peer.addr;
        if peer.role == Role::Server && !relisten {
            self.close_listener(owner);
        }
        self.set_state(owner, PeerState::Lost { reason: end.reason, clean: end.clean });
        if relisten {
            self.set_state(owner, PeerState::Listening { local });
        }
    }

    // ----- timers -----------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.sockets.values().filter_map(|s| match s {
            Socket::Stream(conn) => Some(conn.deadline(&self.config)),
            Socket::Listener { .. } => None,
        });
        conns.chain(self.shutdown_deadline).min()
    }

    fn run_timers(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .sockets
            .iter()
            .filter_map(|(token, s)| match s {
                Socket::Stream(conn) if conn.deadline(&self.config) <= now => Some(*token),
                _ => None,
            })
            .collect();
        for token in due {
            self.with_conn(token, |reactor, conn| reactor.timer(conn, now));
        }
    }

    fn timer(&mut self, conn: &mut Conn, now: Instant) -> Result<(), Close> {
        // A free-space check that hangs (a stuck network share) must not
        // hide offers: past its patience the person is asked anyway, and
        // the writer checks again before it creates anything.
        let overdue: Vec<TransferId> = conn
            .files
            .incoming
            .values()
            .filter(|t| t.state == InState::Checking && now >= t.offered + SPACE_CHECK_PATIENCE)
            .map(|t| t.key)
            .collect();
        for key in overdue {
            log::warn!("{} the free space could not be measured in time; asking anyway", self.label(conn.owner));
            self.space_checked(conn, key, None);
        }
        if conn.files.paused() {
            // Reading is paused for a full writer: the silence is ours.
            conn.last_rx = now;
        }
        let config = &self.config;
        match conn.phase {
            Phase::Connecting { deadline } if now >= deadline => Err(End::failed(format!(
                "no answer from {} within {} s",
                conn.remote,
                config.connect_timeout.as_secs_f32()
            ))
            .into()),
            _ if conn.partial_since.is_some_and(|since| now >= since + config.frame_timeout) => {
                Err(End::failed(format!(
                    "{} sent part of a message and nothing more for {} s",
                    conn.remote,
                    config.frame_timeout.as_secs_f32()
                ))
                .into())
            }
            Phase::Hello { deadline } if now >= deadline => Err(End::failed(format!(
                "{} did not complete the {} within {} s (is it a PeerConn?)",
                conn.remote,
                if conn.link.is_established() { "hello" } else { "encrypted handshake" },
                config.hello_timeout.as_secs_f32()
            ))
            .into()),
            Phase::Pairing { deadline } if now >= deadline => Err(End::failed(format!(
                "{} did not complete the pairing within {} s",
                conn.remote,
                config.hello_timeout.as_secs_f32()
            ))
            .into()),
            Phase::Closing { deadline, .. } if now >= deadline => {
                let mut end = conn.ending.take().unwrap_or_else(|| End::clean("closed"));
                if conn.pending_output() > 0 {
                    end = End::failed(format!("{} (the peer did not take our last messages)", end.reason));
                }
                Err(end.into())
            }
            Phase::Open if now >= conn.last_rx + config.heartbeat_timeout => Err(End::failed(format!(
                "the peer stopped answering (nothing received for {} s)",
                config.heartbeat_timeout.as_secs_f32()
            ))
            .into()),
            Phase::Open if now >= conn.last_tx + config.heartbeat_interval => {
                conn.ping_seq += 1;
                conn.queue(&Frame::Ping(conn.ping_seq));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ----- helpers ----------------------------------------------------------

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn label(&self, id: PeerId) -> String {
        self.peers.get(&id).map(|p| p.label(id)).unwrap_or_else(|| format!("[{id}]"))
    }

    fn set_state(&mut self, id: PeerId, state: PeerState) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.lost = matches!(state, PeerState::Lost { .. });
        }
        self.emit(Event::State { id, state });
    }

    fn error(&mut self, id: PeerId, reason: &str) {
        log::warn!("{} {reason}", self.label(id));
        self.emit(Event::Error { id, reason: reason.to_owned() });
    }

    fn emit(&self, event: Event) {
        // The receiver is gone only while the engine is being dropped.
        let _ = self.events.send(event);
    }
}

// ----- file transfer --------------------------------------------------------

impl Reactor {
    fn new_transfer_id(&self) -> TransferId {
        TransferId(self.next_transfer.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    fn transfer_failed(&mut self, id: PeerId, transfer: TransferId, name: &str, reason: String) {
        self.transfers.remove(&transfer);
        log::warn!("{} transfer of \"{}\" failed: {reason}", self.label(id), printable(name));
        self.emit(Event::FileFailed { id, transfer, name: name.to_owned(), reason });
    }

    /// Runs `f` on the connection that carries `transfer`, if it still exists.
    fn on_transfer(&mut self, transfer: TransferId, f: impl FnOnce(&mut Reactor, &mut Conn) -> Result<(), Close>) {
        match self.transfers.get(&transfer) {
            Some(&token) => self.with_conn(token, f),
            None => log::debug!("no transfer {transfer} (it has already ended)"),
        }
    }

    fn send_file(&mut self, id: PeerId, transfer: TransferId, path: std::path::PathBuf) {
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        let token = self
            .peers
            .get(&id)
            .and_then(|p| p.conn)
            .filter(|t| matches!(self.sockets.get(t), Some(Socket::Stream(c)) if matches!(c.phase, Phase::Open)));
        let Some(token) = token else {
            self.emit(Event::FileFailed { id, transfer, name, reason: "not sent: no peer is connected".into() });
            return;
        };
        log::info!("{} queued {} to send", self.label(id), path.display());
        self.transfers.insert(transfer, token);
        self.with_conn(token, |reactor, conn| {
            conn.files.outgoing.push(Outgoing {
                key: transfer,
                wire: 0,
                name,
                size: 0,
                state: OutState::Queued(path),
                reader: None,
                current: None,
                sent: 0,
                granted: 0,
                meter: Meter::new(),
            });
            reactor.start_queued(conn);
            Ok(())
        });
    }

    /// Opens queued files while fewer than [`MAX_ACTIVE_OUT`] are active.
    fn start_queued(&mut self, conn: &mut Conn) {
        let mut active = conn.files.active_out();
        for t in conn.files.outgoing.iter_mut() {
            if active >= MAX_ACTIVE_OUT {
                break;
            }
            if !matches!(t.state, OutState::Queued(_)) {
                continue;
            }
            if let OutState::Queued(path) = std::mem::replace(&mut t.state, OutState::Opening) {
                t.reader = Some(files::spawn_reader(t.key, path, self.notify.clone()));
                active += 1;
            }
        }
    }

    fn accept_file(&mut self, conn: &mut Conn, transfer: TransferId) -> Result<(), Close> {
        let Some(wire) = conn.files.in_by_key(transfer) else { return Ok(()) };
        let Some(t) = conn.files.incoming.get_mut(&wire) else { return Ok(()) };
        if t.state != InState::Offered {
            return Ok(());
        }
        log::info!("{} accepted \"{}\"", self.label(conn.owner), printable(&t.name));
        self.writers.retain(|w| !w.is_finished());
        let (writer, thread) = files::spawn_writer(
            transfer,
            self.config.downloads.clone(),
            t.name.clone(),
            t.size,
            self.config.faults.clone(),
            self.notify.clone(),
        );
        self.writers.extend(thread);
        t.writer = Some(writer);
        t.state = InState::Preparing;
        Ok(())
    }

    /// Declines or cancels a transfer in either direction and tells the peer.
    fn stop_file(&mut self, conn: &mut Conn, transfer: TransferId, why: &str) -> Result<(), Close> {
        if let Some(i) = conn.files.out_by_key(transfer) {
            let t = conn.files.outgoing.remove(i);
            if !matches!(t.state, OutState::Queued(_) | OutState::Opening) {
                conn.queue(&Frame::Cancel { transfer: t.wire, mine: true, reason: "the sender cancelled".into() });
            }
            self.transfer_failed(conn.owner, transfer, &t.name, why.to_owned());
            self.start_queued(conn);
        } else if let Some(wire) = conn.files.in_by_key(transfer) {
            let Some(t) = conn.files.forget_incoming(wire) else { return Ok(()) };
            if t.state == InState::Verifying {
                // The writer may be naming the file this instant: it reports
                // what really happened, as an orphan.
                self.abort_verifying(conn.owner, t);
                conn.queue(&Frame::Cancel { transfer: wire, mine: false, reason: "the receiver cancelled".into() });
                return Ok(());
            }
            if matches!(t.state, InState::Checking | InState::Offered) {
                conn.queue(&Frame::Decline { transfer: wire, reason: "declined".into() });
            } else {
                conn.queue(&Frame::Cancel { transfer: wire, mine: false, reason: "the receiver cancelled".into() });
            }
            self.transfer_failed(conn.owner, transfer, &t.name, why.to_owned());
        }
        Ok(())
    }

    /// Moves file data from readers into the connection's output while
    /// little is waiting there. Returns the bytes added.
    fn pump(&mut self, conn: &mut Conn) -> usize {
        let mut added = 0;
        while conn.pending_output() < HIGH_WATER {
            let Some(i) = conn.files.outgoing.iter().position(Outgoing::can_send) else { break };
            let t = &mut conn.files.outgoing[i];
            if t.current.is_none() {
                let Some(reader) = t.reader.as_ref() else { break };
                let block = match reader.blocks.try_recv() {
                    Ok(block) => block,
                    Err(TryRecvError::Empty) => {
                        // Ask for a Readable, then look once more in case the
                        // block arrived in between.
                        reader.waiting.store(true, std::sync::atomic::Ordering::Release);
                        match reader.blocks.try_recv() {
                            Ok(block) => block,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => Block::Failed("the file reader stopped".into()),
                        }
                    }
                    Err(TryRecvError::Disconnected) => Block::Failed("the file reader stopped".into()),
                };
                match block {
                    Block::Data(bytes) => t.current = Some((bytes, 0)),
                    Block::End(hash) => {
                        t.state = OutState::Finishing;
                        t.reader = None;
                        let wire = t.wire;
                        conn.queue(&Frame::Done { transfer: wire, hash });
                        continue;
                    }
                    Block::Failed(reason) => {
                        let t = conn.files.outgoing.remove(i);
                        conn.queue(&Frame::Cancel { transfer: t.wire, mine: true, reason: reason.clone() });
                        self.transfer_failed(conn.owner, t.key, &t.name, reason);
                        self.start_queued(conn);
                        continue;
                    }
                }
            }
            let Some((bytes, pos)) = t.current.as_mut() else { break };
            let allowed = (t.granted - t.sent).min(frame::MAX_DATA as u64) as usize;
            let n = (bytes.len() - *pos).min(allowed);
            // Sealed straight from the read block: header and data are
            // never copied together first.
            let header = frame::data_header(t.wire, n);
            if let Err(e) = conn.link.seal_parts(&[&header, &bytes[*pos..*pos + n]], &mut conn.out) {
                conn.broken.get_or_insert(e);
                break;
            }
            *pos += n;
            if *pos == bytes.len() {
                if let (Some((buf, _)), Some(reader)) = (t.current.take(), t.reader.as_ref()) {
                    reader.recycle(buf);
                }
            }
            t.sent += n as u64;
            added += n;
            if let Some(r) = t.meter.add(n as u64, t.sent, t.size) {
                let _ = self.events.send(Event::FileProgress {
                    id: conn.owner,
                    transfer: t.key,
                    bytes: t.sent,
                    total: t.size,
                    bytes_per_sec: r.bytes_per_sec,
                    eta: r.eta,
                });
            }
        }
        if added > 0 {
            conn.last_tx = Instant::now();
        }
        added
    }

    fn on_file_frame(&mut self, token: Token, conn: &mut Conn, frame: Frame) -> Result<(), Close> {
        let owner = conn.owner;
        match frame {
            Frame::Offer { transfer: wire, size, name } => {
                if conn.files.incoming.contains_key(&wire) || conn.files.was_cancelled_in(wire) {
                    return Err(self.protocol_error(conn, &format!("offered transfer number {wire} twice")));
                }
                let key = self.new_transfer_id();
                // Every incoming transfer counts, accepted ones included: each
                // may hold a window of data and a writer thread.
                let waiting = conn.files.incoming.len();
                let safe = files::names::safe_name(&name).map_err(|e| e.to_string());
                let refusal = match &safe {
                    Err(why) => Some(format!("refused \"{}\": {why}", printable(&name))),
                    Ok(_) if waiting >= MAX_PENDING_OFFERS => Some(format!(
                        "declined: {MAX_PENDING_OFFERS} offers from this peer are already waiting or under way"
                    )),
                    Ok(_) => None,
                };
                if let Some(reason) = refusal {
                    conn.queue(&Frame::Decline { transfer: wire, reason: reason.clone() });
                    conn.files.forget_incoming(wire);
                    self.transfer_failed(owner, key, &printable(&name), reason);
                    return Ok(());
                }
                let name = safe.unwrap_or_default();
                log::info!("{} offered \"{}\" ({} bytes)", self.label(owner), printable(&name), size);
                conn.files.incoming.insert(
                    wire,
                    Incoming {
                        key,
                        name: name.clone(),
                        size,
                        state: InState::Checking,
                        writer: None,
                        pending: Vec::new(),
                        stalled: Default::default(),
                        received: 0,
                        granted: 0,
                        meter: Meter::new(),
                        offered: Instant::now(),
                    },
                );
                self.transfers.insert(key, token);
                // The person is asked once the file is known to fit.
                if self.space_checker.is_none() && !self.space_checker_failed {
                    self.space_checker = files::SpaceChecker::spawn(self.notify.clone(), &self.config.faults)
                        .inspect_err(|e| log::warn!("cannot start the free-space checker: {e}"))
                        .ok();
                    self.space_checker_failed = self.space_checker.is_none();
                }
                let asked =
                    self.space_checker.as_ref().is_some_and(|c| c.check(key, self.config.downloads.clone(), size));
                if !asked {
                    // The writer checks again before it creates anything.
                    self.space_checked(conn, key, None);
                }
            }
            Frame::Accept { transfer: wire } => {
                if let Some(i) = conn.files.out_by_wire(wire) {
                    let t = &mut conn.files.outgoing[i];
                    if t.state == OutState::Offered {
                        t.state = OutState::Sending;
                        t.granted = frame::WINDOW;
                        if let Some(reader) = t.reader.as_mut() {
                            reader.start();
                        }
                    }
                }
            }
            Frame::Decline { transfer: wire, reason } => {
                if let Some(i) = conn.files.out_by_wire(wire) {
                    let t = conn.files.outgoing.remove(i);
                    let said = if reason.is_empty() { String::new() } else { format!(" ({})", printable(&reason)) };
                    self.transfer_failed(owner, t.key, &t.name, format!("the peer declined the file{said}"));
                    self.start_queued(conn);
                }
            }
            Frame::Data { transfer: wire, bytes } => self.file_data(conn, wire, &bytes)?,
            Frame::Done { transfer: wire, hash } => {
                let Some(t) = conn.files.incoming.get_mut(&wire) else {
                    if conn.files.was_cancelled_in(wire) {
                        return Ok(());
                    }
                    return Err(self.protocol_error(conn, "ended a file it never offered"));
                };
                if t.state != InState::Receiving {
                    return Err(self.protocol_error(conn, "ended a file that was not being received"));
                }
                if t.received != t.size {
                    let what = format!("ended the file after {} of {} bytes", t.received, t.size);
                    return Err(self.protocol_error(conn, &what));
                }
                let last = std::mem::take(&mut t.pending);
                if !last.is_empty() {
                    t.deliver(Some(WriteMsg::Data(last)));
                }
                t.deliver(Some(WriteMsg::Done(hash)));
                t.state = InState::Verifying;
            }
            Frame::Cancel { transfer: wire, mine: true, reason } => {
                if let Some(t) = conn.files.forget_incoming(wire) {
                    if t.state == InState::Verifying {
                        self.abort_verifying(owner, t);
                        return Ok(());
                    }
                    if t.state == InState::Checking {
                        // Withdrawn before the person ever saw it.
                        self.transfers.remove(&t.key);
                        log::info!("{} withdrew its offer of \"{}\"", self.label(owner), printable(&t.name));
                        return Ok(());
                    }
                    let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(&reason)) };
                    self.transfer_failed(owner, t.key, &t.name, format!("the peer stopped the transfer{said}"));
                }
            }
            Frame::Cancel { transfer: wire, mine: false, reason } => {
                if let Some(i) = conn.files.out_by_wire(wire) {
                    let t = conn.files.outgoing.remove(i);
                    let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(&reason)) };
                    self.transfer_failed(owner, t.key, &t.name, format!("the peer stopped the transfer{said}"));
                    self.start_queued(conn);
                }
            }
            Frame::Window { transfer: wire, granted } => {
                if let Some(i) = conn.files.out_by_wire(wire) {
                    let t = &mut conn.files.outgoing[i];
                    t.granted = t.granted.max(granted);
                }
            }
            Frame::Received { transfer: wire } => {
                if let Some(i) = conn.files.out_by_wire(wire) {
                    if conn.files.outgoing[i].state == OutState::Finishing {
                        let t = conn.files.outgoing.remove(i);
                        self.transfers.remove(&t.key);
                        log::info!(
                            "{} sent \"{}\" ({} bytes), verified by the peer",
                            self.label(owner),
                            printable(&t.name),
                            t.size
                        );
                        self.emit(Event::FileSent { id: owner, transfer: t.key, name: t.name, size: t.size });
                        self.start_queued(conn);
                    }
                }
            }
            Frame::Hello { .. }
            | Frame::Pair(_)
            | Frame::Confirm(_)
            | Frame::Chat(_)
            | Frame::Ping(_)
            | Frame::Pong(_)
            | Frame::Bye { .. } => {}
        }
        Ok(())
    }

    /// File data for an incoming transfer: checked against the offer and
    /// the window, gathered into blocks for the writer.
    fn file_data(&mut self, conn: &mut Conn, wire: u32, bytes: &[u8]) -> Result<(), Close> {
        let owner = conn.owner;
        let Some(t) = conn.files.incoming.get_mut(&wire) else {
            if conn.files.was_cancelled_in(wire) {
                return Ok(()); // in flight when we stopped it
            }
            return Err(self.protocol_error(conn, "sent data for a file it never offered"));
        };
        if t.state != InState::Receiving {
            let what = match t.state {
                InState::Checking | InState::Offered | InState::Preparing => {
                    "sent file data before the file was accepted"
                }
                _ => "sent file data after the end of the file",
            };
            return Err(self.protocol_error(conn, what));
        }
        t.received += bytes.len() as u64;
        if t.received > t.size {
            return Err(self.protocol_error(conn, "sent more file data than the size it offered"));
        }
        if t.received > t.granted {
            return Err(self.protocol_error(conn, "sent more file data than its window allows"));
        }
        if t.pending.capacity() == 0 {
            t.pending = t.writer.as_ref().map(|w| w.buffer()).unwrap_or_default();
        }
        t.pending.extend_from_slice(&bytes);
        if t.pending.len() >= files::BLOCK {
            let block = std::mem::take(&mut t.pending);
            t.deliver(Some(WriteMsg::Data(block)));
        }
        if let Some(r) = t.meter.add(bytes.len() as u64, t.received, t.size) {
            let event = Event::FileProgress {
                id: owner,
                transfer: t.key,
                bytes: t.received,
                total: t.size,
                bytes_per_sec: r.bytes_per_sec,
                eta: r.eta,
            };
            self.emit(event);
        }
        Ok(())
    }

    fn drain_disk(&mut self) {
        while let Ok(event) = self.disk_events.try_recv() {
            let key = event.key();
            if let Some(&token) = self.transfers.get(&key) {
                self.with_conn(token, |reactor, conn| reactor.disk_event(token, conn, event));
            } else if let Some((id, name)) = self.orphans.remove(&key) {
                match event {
                    DiskEvent::Stored { path, size, hash, .. } => {
                        self.emit(Event::FileReceived { id, transfer: key, name, path, size, blake3: hash })
                    }
                    DiskEvent::WriteFailed { reason, .. } => {
                        self.emit(Event::FileFailed { id, transfer: key, name, reason })
                    }
                    _ => {
                        self.orphans.insert(key, (id, name));
                    }
                }
            }
        }
    }

    fn disk_event(&mut self, token: Token, conn: &mut Conn, event: DiskEvent) -> Result<(), Close> {
        let owner = conn.owner;
        match event {
            DiskEvent::Opened { key, name, size } => {
                let Some(i) = conn.files.out_by_key(key) else { return Ok(()) };
                let wire = conn.files.next_wire;
                conn.files.next_wire = conn.files.next_wire.wrapping_add(1);
                let t = &mut conn.files.outgoing[i];
                t.wire = wire;
                t.name = name.clone();
                t.size = size;
                t.state = OutState::Offered;
                conn.queue(&Frame::Offer { transfer: wire, size, name: name.clone() });
                self.emit(Event::FileOutgoing { id: owner, transfer: key, name, size });
            }
            DiskEvent::OpenFailed { key, reason } => {
                if let Some(i) = conn.files.out_by_key(key) {
                    let t = conn.files.outgoing.remove(i);
                    self.transfer_failed(owner, key, &t.name, reason);
                    self.start_queued(conn);
                }
            }
            DiskEvent::Readable { .. } => {} // the pump after this handler takes it
            DiskEvent::SpaceChecked { key, refusal } => self.space_checked(conn, key, refusal),
            DiskEvent::ReadyToReceive { key } => {
                let Some(wire) = conn.files.in_by_key(key) else { return Ok(()) };
                if let Some(t) = conn.files.incoming.get_mut(&wire) {
                    t.state = InState::Receiving;
                    t.granted = frame::WINDOW;
                    conn.queue(&Frame::Accept { transfer: wire });
                }
            }
            DiskEvent::Consumed { key, bytes } => {
                let Some(wire) = conn.files.in_by_key(key) else { return Ok(()) };
                if let Some(t) = conn.files.incoming.get_mut(&wire) {
                    let granted = bytes.saturating_add(frame::WINDOW).min(t.size);
                    if t.state == InState::Receiving && granted > t.granted {
                        t.granted = granted;
                        conn.queue(&Frame::Window { transfer: wire, granted });
                    }
                }
            }
            DiskEvent::Stored { key, path, size, hash } => {
                let Some(wire) = conn.files.in_by_key(key) else { return Ok(()) };
                let Some(t) = conn.files.incoming.remove(&wire) else { return Ok(()) };
                self.transfers.remove(&key);
                conn.queue(&Frame::Received { transfer: wire });
                log::info!(
                    "{} received \"{}\" into {} (blake3 {hash})",
                    self.label(owner),
                    printable(&t.name),
                    path.display()
                );
                self.emit(Event::FileReceived { id: owner, transfer: key, name: t.name, path, size, blake3: hash });
            }
            DiskEvent::WriteFailed { key, reason } => {
                let Some(wire) = conn.files.in_by_key(key) else { return Ok(()) };
                let Some(t) = conn.files.forget_incoming(wire) else { return Ok(()) };
                if t.state == InState::Preparing {
                    conn.queue(&Frame::Decline { transfer: wire, reason: reason.clone() });
                } else {
                    conn.queue(&Frame::Cancel { transfer: wire, mine: false, reason: reason.clone() });
                }
                let was_paused = !t.stalled.is_empty();
                self.transfer_failed(owner, key, &t.name, reason);
                if was_paused && !conn.files.paused() {
                    self.read_again.push(token);
                }
            }
            DiskEvent::Drained { key } => {
                let Some(wire) = conn.files.in_by_key(key) else { return Ok(()) };
                if let Some(t) = conn.files.incoming.get_mut(&wire) {
                    t.deliver(None);
                }
                if !conn.files.paused() {
                    self.read_again.push(token);
                }
            }
        }
        Ok(())
    }

    /// An offer was measured against the free space: the person is asked,
    /// or it is declined at once if it cannot fit.
    fn space_checked(&mut self, conn: &mut Conn, key: TransferId, refusal: Option<String>) {
        let owner = conn.owner;
        let Some(wire) = conn.files.in_by_key(key) else { return };
        let Some(t) = conn.files.incoming.get_mut(&wire) else { return };
        if t.state != InState::Checking {
            return;
        }
        let (name, size) = (t.name.clone(), t.size);
        let refused = refusal.map(|why| format!("declined: {why}"));
        // The peer learns only that it does not fit, not how much is free.
        let told = "not enough free space in the downloads folder";
        // Shown either way, so the person knows what was offered.
        self.emit(Event::FileIncoming { id: owner, transfer: key, name: name.clone(), size, refused: refused.clone() });
        match refused {
            None => t.state = InState::Offered,
            Some(reason) => {
                conn.queue(&Frame::Decline { transfer: wire, reason: told.into() });
                conn.files.forget_incoming(wire);
                self.transfer_failed(owner, key, &name, reason);
            }
        }
    }

    /// Stops a transfer whose writer already has all its data; the writer's
    /// own report (stored, or failed) is what the person will see.
    fn abort_verifying(&mut self, owner: PeerId, t: Incoming) {
        if let Some(writer) = &t.writer {
            writer.abort();
        }
        self.transfers.remove(&t.key);
        self.orphans.insert(t.key, (owner, t.name));
    }

    /// The connection is ending: every transfer on it fails, except files
    /// already being verified, which are still reported when stored.
    fn end_transfers(&mut self, conn: &mut Conn, reason: &str) {
        let owner = conn.owner;
        let why = format!("the connection ended: {reason}");
        for t in std::mem::take(&mut conn.files.outgoing) {
            self.transfer_failed(owner, t.key, &t.name, why.clone());
        }
        for (_, t) in std::mem::take(&mut conn.files.incoming) {
            if t.state == InState::Checking {
                self.transfers.remove(&t.key); // never shown to the person
            } else if t.state == InState::Verifying && t.stalled.is_empty() {
                self.transfers.remove(&t.key);
                self.orphans.insert(t.key, (owner, t.name));
            } else {
                self.transfer_failed(owner, t.key, &t.name, why.clone());
            }
        }
    }
}

/// A listening socket made with socket2 so its options are set before bind.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // On Windows SO_REUSEADDR lets another program steal the port; its
    // default already allows a quick rebind.
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "::" then accepts IPv4 peers too, where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Chat wants small messages out at once; keepalive lets the OS notice a
/// vanished peer even between our own heartbeats.
fn tune_stream(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY not set: {e}");
    }
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30));
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        log::debug!("keepalive not set: {e}");
    }
}

fn listen_error(addr: SocketAddr, e: &io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {port} is already in use on {}", addr.ip()),
        io::ErrorKind::PermissionDenied if port != 0 && port < 1024 => {
            format!("port {port} is below 1024 and needs administrator rights; choose a port from 1024 to 65535")
        }
        io::ErrorKind::AddrNotAvailable => format!("{} is not an address of this computer", addr.ip()),
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

fn connect_error(remote: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {remote} (nothing is listening there)")
        }
        io::ErrorKind::TimedOut => format!("no answer from {remote}"),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            format!("{remote} cannot be reached from this computer")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("{remote} is not an address that can be connected to")
        }
        _ => format!("could not connect to {remote}: {e}"),
    }
}

fn io_end(conn: &Conn, e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            End::failed(format!("the connection with {} was reset", conn.remote))
        }
        _ => End::failed(format!("network error with {}: {e}", conn.remote)),
    }
}
