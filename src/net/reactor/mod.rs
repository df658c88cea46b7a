//! The reactor: one thread, one `mio::Poll`, every listener and stream.
//!
//! Written in the shape of audioipc's `ipccore`: poll, handle socket events,
//! then drain commands, then run the timers. A socket that fails or a peer
//! that misbehaves closes its own connection and nothing else; the loop only
//! ends on `Shutdown` (or if the OS poller itself fails).
//!
//! The reactor only moves bytes and routes what the layers say: each
//! connection's protocol is its [`Session`] (no I/O, see `session/`),
//! which peersocket a connection belongs to is [`Peersockets`]'s business,
//! and file transfers are [`Transfers`]'. The reactor reads into the
//! session, writes what the session has to send, keeps `WRITABLE` interest
//! in line with it, sleeps until the earliest deadline any session or
//! transfer has, and hands what the session reports to the layer it is for.
//! Commands from the `Engine` handle are routed in `commands.rs`; socket
//! set-up is `sockets.rs`.

mod admit;
mod commands;
mod sockets;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::event::Event as MioEvent;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::events::EventSink;
use super::peersocket::{Detached, Peersockets};
use super::session::{End, EndKind, Host, PairingGuard, Session, SessionConfig, SessionEvent};
use super::transfer::{ConnFiles, Files, SessionFiles, Transfers};
use super::trust::KnownPeers;
use super::{printable, Command, EngineConfig, Event, PeerId, PeerState};
use crate::files::{DiskEvent, Notify};
use sockets::tune_stream;

/// Outside the range of socket tokens, which count up from 0.
const WAKE_TOKEN: Token = Token(usize::MAX);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes read from one stream before others get their turn.
const READ_BUDGET: usize = 1024 * 1024;
/// How long shutdown waits for byes to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often a full event queue is looked at again.
const BACKLOG_RECHECK: Duration = Duration::from_millis(10);
/// File bytes one connection may write before others get their turn.
const PUMP_BUDGET: usize = 4 * 1024 * 1024;

pub(crate) struct Reactor {
    poll: Poll,
    config: EngineConfig,
    session_config: SessionConfig,
    known: KnownPeers,
    /// The known-peers generation last reported in a `KnownPeers` event.
    known_reported: Option<u64>,
    commands: Receiver<Command>,
    events: EventSink,
    /// The event queue is full: no socket is read until it drains.
    backlogged: bool,
    /// Streams that became readable while backlogged.
    read_later: std::collections::HashSet<Token>,
    peers: Peersockets,
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
    disk_events: Receiver<DiskEvent>,
    transfers: Transfers,
    /// Connections that began closing, oldest first (some may be gone).
    lingering: std::collections::VecDeque<Token>,
    /// Announces listening server peersockets on the local network.
    nearby: Option<crate::nearby::Announcer>,
}

enum Socket {
    /// `retry_at`: accepting failed for want of file descriptors; the
    /// listener tries again then (readiness is edge-triggered: no new
    /// event comes for connections already waiting).
    Listener {
        owner: PeerId,
        listener: TcpListener,
        retry_at: Option<Instant>,
    },
    Stream(Box<Conn>),
}

/// One TCP stream: its protocol session and its transfers.
struct Conn {
    owner: PeerId,
    stream: TcpStream,
    session: Session,
    files: Files,
    /// `WRITABLE` interest is registered.
    wants_write: bool,
    /// Counted among the lingering connections.
    lingering: bool,
    /// Reading stopped for a full writer since the timers last looked.
    /// Between two looks the reader may alternate: a writer drains, the
    /// input held back is handed on, the writer fills again, all without a
    /// read from the socket; the peer was not silent, we were busy.
    held_back: bool,
}

impl Conn {
    /// Its transfers as the registry takes them, beside its session (for
    /// the link the transfers queue their frames on).
    fn split<'a>(&'a mut self, token: Token, label: &'a str) -> (ConnFiles<'a>, &'a mut Session) {
        let peer = self.session.peer_key().map(|p| p.key);
        let files = ConnFiles { files: &mut self.files, owner: self.owner, conn: token.0, peer, label };
        (files, &mut self.session)
    }
}

impl Reactor {
    pub(crate) fn new(
        config: EngineConfig,
        known: KnownPeers,
        commands: Receiver<Command>,
        events: EventSink,
        next_transfer: Arc<AtomicU64>,
    ) -> io::Result<(Reactor, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE_TOKEN)?);
        let (disk_tx, disk_events) = crossbeam_channel::unbounded();
        let wake_reactor = waker.clone();
        let wake = Arc::new(move || {
            // Fails only once the reactor is gone, and then nobody waits.
            let _ = wake_reactor.wake();
        });
        let notify = Notify { events: disk_tx, wake };
        let mut transfers =
            Transfers::new(notify, next_transfer, config.downloads.clone(), config.faults.clone(), events.clone());
        transfers.policy.everyone = config.accept_files_from_everyone;
        let nearby = match config.announce {
            true => crate::nearby::Announcer::start(config.identity.public())
                .inspect_err(|e| log::warn!("listeners will not be announced on the local network: {e}"))
                .ok(),
            false => None,
        };
        let reactor = Reactor {
            poll,
            session_config: config.session(),
            config,
            known,
            known_reported: None,
            commands,
            events,
            backlogged: false,
            read_later: Default::default(),
            peers: Peersockets::default(),
            sockets: HashMap::new(),
            next_token: 0,
            scratch: vec![0; READ_CHUNK],
            read_again: Vec::new(),
            write_again: Vec::new(),
            shutdown_deadline: None,
            disk_events,
            transfers,
            lingering: Default::default(),
            nearby,
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
            self.backlogged = self.events.flush();
            if !self.backlogged {
                self.read_again.extend(self.read_later.drain());
            }
            let mut timeout = if self.read_again.is_empty() && self.write_again.is_empty() {
                self.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if self.backlogged {
                // Nobody wakes us when the queue drains: look again soon.
                timeout = Some(timeout.map_or(BACKLOG_RECHECK, |t| t.min(BACKLOG_RECHECK)));
            }
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
                if self.backlogged {
                    self.read_later.insert(token);
                } else {
                    self.drive(token, true, false);
                }
            }
            self.drain_disk();
            for token in std::mem::take(&mut self.write_again) {
                self.drive(token, false, true);
            }
            self.drain_commands();
            self.run_timers(Instant::now());
            self.report_known();
        }
        if let Some(nearby) = self.nearby.take() {
            nearby.stop();
        }
        let open = self.sockets.len();
        self.sockets.clear();
        self.transfers.join_writers();
        log::debug!("reactor stopped ({open} sockets still open were closed)");
    }

    /// Sends the known-peers list when it changed since it was last sent.
    fn report_known(&mut self) {
        if self.known_reported != Some(self.known.generation()) {
            self.known_reported = Some(self.known.generation());
            self.emit(Event::KnownPeers { peers: self.known.summary() });
        }
    }

    fn drain_disk(&mut self) {
        while let Ok(event) = self.disk_events.try_recv() {
            let Some(token) = self.transfers.route(event.key()).map(Token) else {
                self.transfers.orphan_event(event);
                continue;
            };
            self.with_conn(token, |r, conn| {
                let label = r.label(conn.owner);
                let (mut c, session) = conn.split(token, &label);
                if let Some(link) = session.open_link() {
                    if r.transfers.disk_event(&mut c, link, event).resume_reading {
                        r.read_again.push(token);
                    }
                }
            });
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
                let mut readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                if readable && self.backlogged {
                    // Read once the event queue has room (the peer waits).
                    self.read_later.insert(token);
                    readable = false;
                }
                self.drive(token, readable, writable);
            }
        }
    }

    /// Does all the I/O a stream is ready for.
    fn drive(&mut self, token: Token, readable: bool, writable: bool) {
        self.with_conn(token, |r, conn| {
            if conn.session.is_connecting() {
                if readable || writable {
                    r.finish_connect(conn);
                }
            } else if readable {
                r.read(token, conn);
            }
        });
    }

    /// Takes the connection out of the table, runs `f` on it, then routes
    /// what its session reports and writes what it has to send; or closes
    /// it when the session is done.
    fn with_conn(&mut self, token: Token, f: impl FnOnce(&mut Reactor, &mut Conn)) {
        let Some(Socket::Stream(mut conn)) = self.sockets.remove(&token) else {
            return;
        };
        f(self, &mut conn);
        self.settle(token, conn);
    }

    fn settle(&mut self, token: Token, mut conn: Box<Conn>) {
        loop {
            while let Some(event) = conn.session.poll_event() {
                if matches!(event, SessionEvent::Ended(_)) {
                    // Its transfers fail before the owner hears it is lost.
                    self.end_transfers(token, &mut conn);
                }
                self.on_session_event(token, &conn, event);
            }
            if conn.session.is_closing() {
                // A close of ours: transfers end when it begins.
                self.end_transfers(token, &mut conn);
            }
            if conn.session.is_closed() {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                return;
            }
            if !conn.session.is_connecting() {
                if let Err(e) = self.flush(token, &mut conn) {
                    conn.session.io_failed(&e);
                    continue;
                }
                if conn.session.take_shutdown() {
                    // All we had to say is out: tell the peer we are done
                    // writing, and wait for it to close its side.
                    let _ = conn.stream.shutdown(Shutdown::Write);
                }
                let want_write = conn.session.pending_output() > 0;
                if want_write != conn.wants_write {
                    let interest =
                        if want_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                    if let Err(e) = self.poll.registry().reregister(&mut conn.stream, token, interest) {
                        let end = End::new(EndKind::LocalError, format!("cannot watch the connection: {e}"));
                        conn.session.abort(end);
                        continue;
                    }
                    conn.wants_write = want_write;
                }
            }
            if conn.session.has_events() || conn.session.is_closed() {
                continue;
            }
            let begun_closing = conn.session.is_closing() && !conn.lingering;
            conn.lingering |= begun_closing;
            self.sockets.insert(token, Socket::Stream(conn));
            if begun_closing {
                self.linger(token);
            }
            return;
        }
    }

    /// Fails every transfer of a connection that is ending.
    fn end_transfers(&mut self, token: Token, conn: &mut Conn) {
        if conn.files.is_empty() {
            return;
        }
        let end = conn.session.end();
        let reason = end.map(|e| e.reason.clone()).unwrap_or_default();
        // A peer that broke the protocol or a limit gets nothing kept for it.
        let keep = !end.is_some_and(|e| matches!(e.kind, EndKind::Protocol | EndKind::Limit));
        let label = self.label(conn.owner);
        let (mut c, _) = conn.split(token, &label);
        self.transfers.end_all(&mut c, &reason, keep);
    }

    /// Writes until the output is empty or the socket would block, adding
    /// file data while little is waiting (at most [`PUMP_BUDGET`] per turn).
    fn flush(&mut self, token: Token, conn: &mut Conn) -> io::Result<()> {
        let now = Instant::now();
        let mut budget = PUMP_BUDGET;
        loop {
            let mut added = 0;
            if !conn.files.outgoing.is_empty() {
                let label = self.label(conn.owner);
                let (mut c, session) = conn.split(token, &label);
                if let Some(link) = session.open_link() {
                    added = self.transfers.pump(&mut c, link);
                }
            }
            write_out(&mut conn.stream, &mut conn.session)?;
            conn.session.settle_at(now);
            if added == 0 || conn.session.pending_output() > 0 || conn.session.is_closed() {
                return Ok(());
            }
            budget = budget.saturating_sub(added);
            if budget == 0 {
                self.write_again.push(token);
                return Ok(());
            }
        }
    }

    fn finish_connect(&mut self, conn: &mut Conn) {
        // The recipe from mio's docs: writable (or an error), then
        // `take_error`, then `peer_addr` to be sure the connect completed.
        match conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return conn.session.connect_failed(&e),
        }
        match conn.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return conn.session.connect_failed(&e),
        }
        tune_stream(&conn.stream);
        log::info!("{} TCP connected to {}, starting the handshake", self.label(conn.owner), conn.session.remote());
        conn.session.tcp_connected(Instant::now());
    }

    fn read(&mut self, token: Token, conn: &mut Conn) {
        let mut scratch = std::mem::take(&mut self.scratch);
        // Input held back while a writer was full comes first.
        self.feed(token, conn, None);
        let mut budget = READ_BUDGET;
        while !conn.session.is_closed() {
            if conn.files.paused() {
                conn.held_back = true;
                break; // a writer is full; its Drained event resumes reading
            }
            if budget == 0 {
                self.read_again.push(token);
                break;
            }
            match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    conn.session.eof();
                    break;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.feed(token, conn, Some(&scratch[..n]));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    conn.session.io_failed(&e);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Hands bytes read (or, with `None`, what is buffered) to the session,
    /// with its peersocket and its transfers beside it.
    fn feed(&mut self, token: Token, conn: &mut Conn, bytes: Option<&[u8]>) {
        let now = Instant::now();
        let mut spare = PairingGuard::default();
        let (name, busy, guard) = match self.peers.get_mut(conn.owner) {
            Some(peer) => (peer.name.clone(), peer.conn.is_some_and(|t| t != token.0), &mut peer.guard),
            None => (String::new(), true, &mut spare),
        };
        let label = format!("[{} {}]", printable(&name), conn.owner);
        let mut host = Host { name: &name, known: &self.known, busy, guard };
        let (c, session) = conn.split(token, &label);
        let mut files = SessionFiles { registry: &mut self.transfers, conn: c };
        match bytes {
            Some(bytes) => session.receive(bytes, now, &mut host, &mut files),
            None => session.resume(now, &mut host, &mut files),
        }
    }

    /// Routes what a session reported to the layer it is for.
    fn on_session_event(&mut self, token: Token, conn: &Conn, event: SessionEvent) {
        let owner = conn.owner;
        let remote = conn.session.remote();
        match event {
            SessionEvent::Secured { fingerprint } => {
                log::info!("{} encrypted channel with {remote}, peer key {fingerprint}", self.label(owner));
            }
            SessionEvent::Connected { peer_name, peer } => {
                self.peers.admit(owner, token.0);
                let local_addr = conn.stream.local_addr().unwrap_or(remote);
                log::info!(
                    "{} connected to \"{}\" at {remote} (local {local_addr}), key {} ({:?}), safety code {}",
                    self.label(owner),
                    printable(&peer_name),
                    peer.fingerprint,
                    peer.trust,
                    peer.safety_code
                );
                self.set_state(owner, PeerState::Connected { peer_name, peer_addr: remote, local_addr, peer });
            }
            SessionEvent::Remember { key, name, dialled, verified, replaces } => {
                if replaces {
                    self.known.replace(&key, &name, dialled.as_deref());
                }
                if !self.known.remember(&key, &name, dialled.as_deref()) {
                    let why = format!(
                        "this peer's key is not remembered: {} keys are remembered already, all verified, dialled or \
                         talked with, so a key change under its name will not be caught; forget some in Settings \
                         or with `peerconn forget`",
                        super::trust::MAX_KNOWN
                    );
                    self.error(owner, &why);
                }
                if verified {
                    self.known.set_verified(&key, true);
                }
            }
            SessionEvent::Message(text) => {
                if let Some(key) = conn.session.peer_key().map(|p| p.key) {
                    self.known.talked(&key);
                }
                self.emit(Event::Message { id: owner, text })
            }
            SessionEvent::KeyChanged { peer_name, address, key, old_key } => {
                self.peers.rejected(owner, key, &peer_name, address);
                let (old_fingerprint, new_fingerprint) =
                    (super::secure::fingerprint(&old_key), super::secure::fingerprint(&key));
                log::warn!(
                    "{} \"{}\" at {remote} presented the key {new_fingerprint}, not the key {old_fingerprint} \
                     remembered: stopped",
                    self.label(owner),
                    printable(&peer_name)
                );
                self.emit(Event::KeyChanged { id: owner, peer_name, address, old_fingerprint, new_fingerprint });
            }
            SessionEvent::WrongCode { count, max, wait } => {
                let said = if count >= max {
                    format!(
                        "{count} wrong pairing codes were tried (the last from {remote}): the code no longer works; \
                         stop and listen again with a new code"
                    )
                } else {
                    format!(
                        "{remote} tried a wrong pairing code ({count} of {max}; the next try must wait {} s)",
                        wait.as_secs()
                    )
                };
                self.error(owner, &said);
            }
            SessionEvent::Ended(end) => self.detach(token, conn, end),
        }
    }

    /// Tells the owner that `token` is no longer its connection.
    fn detach(&mut self, token: Token, conn: &Conn, end: End) {
        let owner = conn.owner;
        let remote = conn.session.remote();
        let label = self.label(owner);
        match self.peers.detach(owner, token.0) {
            Detached::NotOurs => {}
            Detached::Pending => log::info!("{label} dropped the connection from {remote}: {}", end.reason),
            Detached::Peer { relisten, local } => {
                if end.is_clean() {
                    log::info!("{label} connection with {remote} ended: {}", end.reason);
                } else {
                    log::warn!("{label} connection with {remote} lost: {}", end.reason);
                }
                if !relisten {
                    self.close_listener(owner);
                }
                self.set_state(owner, PeerState::lost(end));
                if relisten {
                    self.set_state(owner, PeerState::Listening { local });
                }
            }
        }
    }

    // ----- timers -----------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.sockets.values().filter_map(|s| match s {
            Socket::Stream(conn) => {
                // Transfers exist only on open sessions (they end when a
                // close begins), so only those have their timers run.
                let checks = if conn.session.is_open() { Transfers::deadline(&conn.files) } else { None };
                match (conn.session.deadline(), checks) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Socket::Listener { retry_at, .. } => *retry_at,
        });
        conns.chain(self.shutdown_deadline).chain(self.peers.next_retry()).min()
    }

    fn run_timers(&mut self, now: Instant) {
        let retries: Vec<(Token, PeerId)> = self
            .sockets
            .iter_mut()
            .filter_map(|(token, s)| match s {
                Socket::Listener { owner, retry_at, .. } if retry_at.is_some_and(|at| at <= now) => {
                    *retry_at = None;
                    Some((*token, *owner))
                }
                _ => None,
            })
            .collect();
        for (token, owner) in retries {
            self.accept(token, owner);
        }
        for id in self.peers.due_retries(now) {
            self.start_connecting(id);
        }
        let due: Vec<Token> = self
            .sockets
            .iter()
            .filter_map(|(token, s)| match s {
                Socket::Stream(conn) => {
                    let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
                    let checks = if conn.session.is_open() { Transfers::deadline(&conn.files) } else { None };
                    (due(conn.session.deadline()) || due(checks)).then_some(*token)
                }
                Socket::Listener { .. } => None,
            })
            .collect();
        for token in due {
            self.with_conn(token, |r, conn| {
                let label = r.label(conn.owner);
                let (mut c, session) = conn.split(token, &label);
                if let Some(link) = session.open_link() {
                    r.transfers.timers(&mut c, link, now);
                }
                // Reading is paused for a full writer or a full event
                // queue, or was since the last look: the silence is ours.
                let paused = conn.files.paused() || r.backlogged || std::mem::take(&mut conn.held_back);
                conn.session.handle_timeout(now, paused);
            });
        }
    }

    // ----- helpers ----------------------------------------------------------

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn label(&self, id: PeerId) -> String {
        self.peers.label(id)
    }

    fn set_state(&mut self, id: PeerId, state: PeerState) {
        self.peers.set_lost(id, matches!(state, PeerState::Lost { .. }));
        self.announce(id, &state);
        let retry = match &state {
            PeerState::Lost { kind, .. } => kind.is_retryable(),
            _ => false,
        };
        if matches!(state, PeerState::Connected { .. }) {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.attempts = 0;
            }
        }
        self.emit(Event::State { id, state });
        if retry {
            self.schedule_reconnect(id);
        }
    }

    /// A client that reconnects by itself waits, then tries again.
    fn schedule_reconnect(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(id).filter(|p| p.role == super::Role::Client && p.dial.reconnect) else {
            return;
        };
        peer.attempts = peer.attempts.saturating_add(1);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mixed = u64::from(nanos) ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let jitter = (mixed % 1000) as f64 / 1000.0;
        let after = super::peersocket::reconnect_delay(peer.attempts, jitter);
        peer.retry_at = Some(Instant::now() + after);
        let attempt = peer.attempts;
        log::info!("{} reconnecting in {:.1} s (attempt {attempt})", self.label(id), after.as_secs_f64());
        self.emit(Event::Reconnecting { id, after, attempt });
    }

    /// A server peersocket is announced on the local network while it
    /// listens, and withdrawn in any other state (or when it goes).
    pub(super) fn announce(&mut self, id: PeerId, state: &PeerState) {
        let Some(nearby) = &mut self.nearby else { return };
        match (state, self.peers.get(id)) {
            (PeerState::Listening { local }, Some(peer)) => {
                let what = crate::nearby::Announcement {
                    name: peer.name.clone(),
                    bound: local.ip(),
                    port: local.port(),
                    code_required: peer.options.pairing_code.is_some(),
                };
                nearby.announce(id.0, &what);
            }
            _ => nearby.withdraw(id.0),
        }
    }

    fn error(&mut self, id: PeerId, reason: &str) {
        log::warn!("{} {reason}", self.label(id));
        self.emit(Event::Error { id, reason: reason.to_owned() });
    }

    fn emit(&self, event: Event) {
        self.events.send(event);
    }
}

/// Writes the session's output until it is empty or the socket would block.
fn write_out(stream: &mut TcpStream, session: &mut Session) -> io::Result<()> {
    loop {
        let out = session.output();
        if out.is_empty() {
            return Ok(());
        }
        match stream.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => session.sent(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
