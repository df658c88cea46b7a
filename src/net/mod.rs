//! The network engine: one reactor thread that owns every socket.
//!
//! The UI (or the command line) holds an [`Engine`]. It issues commands by
//! calling its methods, which put a [`Command`] on a channel and wake the
//! reactor through a `mio::Waker`; the reactor reports what happened as
//! [`Event`]s on another channel that the caller drains when it suits it
//! (the GUI on a `slint::Timer`, the command line in its select loop).
//!
//! Inside, the layers each own their part and never call back up: the
//! reactor (`reactor/`) only moves bytes and routes; each connection's
//! protocol is a [`session::Session`] with no I/O; the peersockets'
//! lifecycle is `peersocket.rs`; file transfers are `transfer/`, split by
//! direction; below them sit the Noise channel ([`secure`]), the frames
//! ([`frame`]), the trust store ([`trust`]) and pairing ([`pairing`]).
//!
//! Nothing here knows about Slint. The layers are drawn in
//! `docs/ARCHITECTURE.md`, the threads in `docs/THREADING.md`, the wire
//! format in `docs/PROTOCOL.md`.

mod events;
pub mod frame;
pub mod link;
pub mod pairing;
mod peersocket;
mod reactor;
pub mod secure;
pub mod session;
mod transfer;
pub mod trust;

pub use crate::files::{FailKind, Faults, TransferId};
pub use link::{KeyPin, LinkError, PeerLink};
pub use secure::Identity;
pub use session::{End, EndKind};
pub use trust::{KnownPeerInfo, PeerIdentity, Trust};

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Identifies one peersocket for the lifetime of an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which side of the connection a peersocket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Made by Listen: waits for a peer to connect (icon: down arrow).
    Server,
    /// Made by Connect: connects to a server peersocket (icon: up arrow).
    Client,
}

/// The three colours a peersocket can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Yellow: active and waiting for a connection.
    Waiting,
    /// Green: active and connected.
    Connected,
    /// Red: inactive, connection lost.
    Lost,
}

/// What a peersocket is doing now, with the details the UI shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// A server peersocket bound to `local` and waiting for a peer.
    Listening { local: SocketAddr },
    /// A client peersocket connecting to `remote` (or waiting for its hello).
    Connecting { remote: SocketAddr },
    /// The handshake and the hello are done in both directions (and the
    /// pairing code checked, when there is one). `peer` says who the
    /// handshake proved the peer to be.
    Connected { peer_name: String, peer_addr: SocketAddr, local_addr: SocketAddr, peer: PeerIdentity },
    /// Inactive. `kind` says why (programs match on it), `reason` says it
    /// in words; `clean` is true when the connection ended on purpose (a
    /// bye from either side), false when it failed.
    Lost { reason: String, clean: bool, kind: EndKind },
}

impl PeerState {
    /// The state after `end`.
    pub fn lost(end: End) -> PeerState {
        PeerState::Lost { clean: end.is_clean(), kind: end.kind, reason: end.reason }
    }

    pub fn status(&self) -> Status {
        match self {
            PeerState::Listening { .. } | PeerState::Connecting { .. } => Status::Waiting,
            PeerState::Connected { .. } => Status::Connected,
            PeerState::Lost { .. } => Status::Lost,
        }
    }
}

/// What an offered folder holds (a transfer of a folder rather than a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderInfo {
    pub files: u64,
    pub folders: u64,
}

/// What the reactor reports. Events for one peersocket arrive in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peersocket changed state.
    State { id: PeerId, state: PeerState },
    /// The peer sent a chat message.
    Message { id: PeerId, text: String },
    /// A command could not be carried out; the peersocket's state is unchanged.
    Error { id: PeerId, reason: String },
    /// The peersocket was renamed.
    Renamed { id: PeerId, name: String },
    /// The peersocket is gone; no more events will name it.
    Removed { id: PeerId },
    /// A client peersocket that reconnects by itself will try again after
    /// `after` (its state stays `Lost` until then; `Connecting` follows).
    Reconnecting { id: PeerId, after: Duration, attempt: u32 },
    /// A peer presented a key other than the one remembered for its name or
    /// address, and was stopped before any message or file moved. The
    /// person can accept the new key on purpose with `trust_new_key`.
    KeyChanged { id: PeerId, peer_name: String, address: SocketAddr, old_fingerprint: String, new_fingerprint: String },
    /// The connected peer's trust changed (the person marked it verified,
    /// or took that back).
    Trust { id: PeerId, trust: Trust },
    /// The peers whose keys are remembered: sent once at start and again
    /// whenever the list changes (a new peer, verified, forgotten…).
    KnownPeers { peers: Vec<KnownPeerInfo> },
    /// We offered a file (it is open and its size known); waiting for the
    /// peer to accept.
    FileOutgoing { id: PeerId, transfer: TransferId, name: String, size: u64, folder: Option<FolderInfo> },
    /// The peer offers a file; answer with `accept_file` or `decline_file`.
    /// `name` is already made safe for the downloads folder. When `refused`
    /// says why, the offer was already declined (it cannot fit in the free
    /// space) and a `FileFailed` follows: nothing to answer. When
    /// `accepted`, the engine accepted it by itself (files from this peer's
    /// key, or from everyone, are accepted without asking: see
    /// [`Engine::accept_files_from`]); progress follows.
    FileIncoming {
        id: PeerId,
        transfer: TransferId,
        name: String,
        size: u64,
        refused: Option<String>,
        accepted: bool,
        folder: Option<FolderInfo>,
    },
    /// Bytes moved so far, at most ten times a second per transfer and once
    /// at the end.
    /// `files`: for a folder, how many of its files are done, of how many.
    FileProgress {
        id: PeerId,
        transfer: TransferId,
        bytes: u64,
        total: u64,
        bytes_per_sec: u64,
        eta: Option<Duration>,
        files: Option<(u64, u64)>,
    },
    /// A transfer takes up an earlier, cut attempt of the same file (same
    /// peer key, name and size), on either end: data goes from `offset`,
    /// whose bytes the receiver proved against the sender's block hashes.
    /// `discarded` bytes of its partial file failed the proof (the file
    /// changed, or the partial file was damaged); `offset` 0 means it
    /// starts again from zero.
    FileResumed { id: PeerId, transfer: TransferId, name: String, offset: u64, size: u64, discarded: u64 },
    /// An accepted file waits for one of the `writing` files this peer is
    /// sending to end before it starts (see the per-connection writer cap).
    FileWaiting { id: PeerId, transfer: TransferId, name: String, writing: usize },
    /// The peer verified and stored a file we sent.
    FileSent { id: PeerId, transfer: TransferId, name: String, size: u64 },
    /// We verified and stored a file; `path` is where it is.
    FileReceived { id: PeerId, transfer: TransferId, name: String, path: PathBuf, size: u64, blake3: String },
    /// A transfer ended without the file arriving (declined, cancelled,
    /// failed, connection lost). No partial file is left behind. `kind`
    /// says why; `reason` says it in words.
    FileFailed { id: PeerId, transfer: TransferId, name: String, kind: FailKind, reason: String },
}

impl Event {
    /// The peersocket the event is about (`None` for `KnownPeers`).
    pub fn id(&self) -> Option<PeerId> {
        let id = match self {
            Event::State { id, .. }
            | Event::Message { id, .. }
            | Event::Error { id, .. }
            | Event::Renamed { id, .. }
            | Event::Removed { id }
            | Event::Reconnecting { id, .. }
            | Event::KeyChanged { id, .. }
            | Event::Trust { id, .. }
            | Event::FileOutgoing { id, .. }
            | Event::FileIncoming { id, .. }
            | Event::FileProgress { id, .. }
            | Event::FileResumed { id, .. }
            | Event::FileWaiting { id, .. }
            | Event::FileSent { id, .. }
            | Event::FileReceived { id, .. }
            | Event::FileFailed { id, .. } => id,
            Event::KnownPeers { .. } => return None,
        };
        Some(*id)
    }
}

/// Options for a server peersocket.
#[derive(Clone, Debug, Default)]
pub struct ListenOptions {
    /// After its peer leaves, report `Lost` and then go straight back to
    /// `Listening` for the next peer, instead of staying inactive.
    pub keep_listening: bool,
    /// Only a peer that proves it knows this code may connect; it is then
    /// verified. See [`pairing`].
    pub pairing_code: Option<String>,
}

/// Options for a client peersocket.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Prove this code to a listener that asks for one; the peer is then
    /// verified. See [`pairing`].
    pub pairing_code: Option<String>,
    /// The key the listener must present (from its [`link`]).
    pub pin: Option<KeyPin>,
    /// After a connection that ended without anyone saying to stop (the
    /// peer went away, restarted, or could not be reached), connect again
    /// by itself, waiting 1, 2, 4 … 60 s (with jitter) between attempts:
    /// [`Event::Reconnecting`] says when. A key change, a refusal, the
    /// other person's Disconnect or ours stop it.
    pub reconnect: bool,
}

/// Timing and size limits of the engine. The defaults are what the app
/// uses; tests shorten the timers.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long a client waits for the TCP connection to be established.
    pub connect_timeout: Duration,
    /// How long a new connection has to complete the hello.
    pub hello_timeout: Duration,
    /// A ping is sent after this long without sending anything.
    pub heartbeat_interval: Duration,
    /// The peer is lost after this long without receiving anything.
    pub heartbeat_timeout: Duration,
    /// How long a graceful close waits for the peer to take our last bytes.
    pub close_linger: Duration,
    /// Connections still in their hello that one listener holds at most.
    pub max_pending_hellos: usize,
    /// Bytes waiting to be written to one peer before a send is refused.
    pub max_output_bytes: usize,
    /// How long a peer may leave a message half sent (slowloris).
    pub frame_timeout: Duration,
    /// Chat messages a peer may send in a burst, and per second after it.
    pub chat_burst: u32,
    pub chat_per_sec: u32,
    /// Wrong pairing codes a listener takes before it stops accepting
    /// its code (each one also doubles the wait before the next try).
    pub max_wrong_codes: u32,
    /// Transport messages either direction may carry before the connection
    /// ends (Noise's nonce limit; tests lower it).
    pub nonce_limit: u64,
    /// Who this installation is.
    pub identity: Identity,
    /// Where known peers are remembered; `None` keeps them in memory.
    pub known_peers: Option<PathBuf>,
    /// Where received files go.
    pub downloads: PathBuf,
    /// Accept every file offered, from any peer, without asking (the
    /// command line's `--accept-files`). Offers that cannot fit are still
    /// refused.
    pub accept_files_from_everyone: bool,
    /// Announce listening server peersockets on the local network
    /// (multicast DNS, see [`crate::nearby`]). Off by default (tests make
    /// many engines); the installed configuration turns it on.
    pub announce: bool,
    /// Faults to inject (tests only).
    pub faults: Faults,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            close_linger: Duration::from_secs(3),
            max_pending_hellos: 64,
            max_output_bytes: 8 * 1024 * 1024,
            frame_timeout: Duration::from_secs(30),
            chat_burst: 2000,
            chat_per_sec: 500,
            max_wrong_codes: 10,
            nonce_limit: secure::DEFAULT_NONCE_LIMIT,
            identity: Identity::generate(),
            known_peers: None,
            downloads: default_downloads(),
            accept_files_from_everyone: false,
            announce: false,
            faults: Faults::default(),
        }
    }
}

impl EngineConfig {
    /// This installation's configuration: its key (created on first start)
    /// and its known peers, both in the config directory.
    pub fn installed() -> io::Result<EngineConfig> {
        let dir = crate::logging::config_dir();
        let identity = Identity::load_or_create(&dir.join("identity.key"))?;
        Ok(EngineConfig { identity, known_peers: Some(known_peers_path()), announce: true, ..EngineConfig::default() })
    }
}

/// Where this installation remembers its peers' keys.
pub fn known_peers_path() -> PathBuf {
    crate::logging::config_dir().join("known_peers.json")
}

impl EngineConfig {
    /// The timers and limits each connection's session keeps to.
    pub fn session(&self) -> session::SessionConfig {
        session::SessionConfig {
            connect_timeout: self.connect_timeout,
            hello_timeout: self.hello_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            close_linger: self.close_linger,
            frame_timeout: self.frame_timeout,
            chat_burst: self.chat_burst,
            chat_per_sec: self.chat_per_sec,
            max_wrong_codes: self.max_wrong_codes,
            max_output_bytes: self.max_output_bytes,
            nonce_limit: self.nonce_limit,
        }
    }
}

/// A request to the reactor. Built by [`Engine`]'s methods.
#[derive(Debug)]
pub(crate) enum Command {
    Listen { id: PeerId, name: String, bind: SocketAddr, options: ListenOptions },
    Connect { id: PeerId, name: String, remote: SocketAddr, options: ConnectOptions },
    TrustNewKey { id: PeerId },
    SetVerified { id: PeerId, verified: bool },
    ForgetKey { fingerprint: String },
    Send { id: PeerId, text: String },
    Disconnect { id: PeerId },
    Restart { id: PeerId },
    Rename { id: PeerId, name: String },
    Remove { id: PeerId },
    SendFile { id: PeerId, transfer: TransferId, path: PathBuf },
    AcceptFile { transfer: TransferId },
    DeclineFile { transfer: TransferId },
    CancelFile { transfer: TransferId },
    SetDownloads { dir: PathBuf },
    AcceptFilesFrom { fingerprint: String, accept: bool },
    SetAnnounce { announce: bool },
    Shutdown,
}

/// The user's downloads folder, or `downloads` in the data directory.
pub fn default_downloads() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|d| d.download_dir().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| crate::logging::data_dir().join("downloads"))
}

/// A mistake in what the caller asked for, found before anything was
/// created: which input it was, and why in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// The peersocket's name.
    Name(String),
    /// The pairing code.
    PairingCode(String),
    /// The address to connect to.
    Address(String),
    /// The chat message.
    Chat(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Name(why) | InputError::PairingCode(why) | InputError::Address(why) | InputError::Chat(why) => {
                f.write_str(why)
            }
        }
    }
}

impl std::error::Error for InputError {}

/// The handle to the reactor thread. Dropping it says bye to every peer,
/// waits briefly for those byes to go out, and joins the thread.
pub struct Engine {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    events: Receiver<Event>,
    next_id: AtomicU64,
    next_transfer: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    cleanup: Option<JoinHandle<()>>,
    fingerprint: String,
    public_key: [u8; 32],
}

impl Engine {
    /// Starts the reactor with the default configuration.
    pub fn start() -> io::Result<Engine> {
        Engine::with_config(EngineConfig::default())
    }

    pub fn with_config(config: EngineConfig) -> io::Result<Engine> {
        let known = match &config.known_peers {
            Some(path) => trust::KnownPeers::open(path)?,
            None => trust::KnownPeers::in_memory(),
        };
        let fingerprint = config.identity.fingerprint();
        let public_key = *config.identity.public();
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, events) = events::EventSink::new();
        let downloads = config.downloads.clone();
        let next_transfer = Arc::new(AtomicU64::new(1));
        let (reactor, waker) = reactor::Reactor::new(config, known, command_rx, event_tx, next_transfer.clone())?;
        let thread = std::thread::Builder::new().name("peerconn-net".into()).spawn(move || reactor.run())?;
        // Temporary files left by a crash go at start, off the caller's thread.
        let cleanup = std::thread::Builder::new()
            .name("peerconn-cleanup".into())
            .spawn(move || {
                crate::files::remove_leftovers(&downloads);
            })
            .ok();
        Ok(Engine {
            commands,
            waker,
            events,
            next_id: AtomicU64::new(1),
            next_transfer,
            thread: Some(thread),
            cleanup,
            fingerprint,
            public_key,
        })
    }

    /// This installation's key fingerprint, as peers see it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// This installation's public key (what links pin).
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The link to a listener of ours reachable at `host`:`port`: it pins
    /// this installation's key, and carries `code` when the listener asks
    /// for one.
    pub fn link(&self, host: std::net::IpAddr, port: u16, code: Option<&str>) -> PeerLink {
        PeerLink::new(host, port, &self.public_key, code)
    }

    /// The events the reactor reports, in order.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Creates a server peersocket bound to `bind` (port 0: the system picks
    /// one; the real address comes in the `Listening` state).
    pub fn listen(&self, name: &str, bind: SocketAddr, options: ListenOptions) -> Result<PeerId, InputError> {
        frame::check_name(name).map_err(InputError::Name)?;
        if let Some(code) = &options.pairing_code {
            pairing::check_code(code).map_err(InputError::PairingCode)?;
        }
        let id = self.new_id();
        self.command(Command::Listen { id, name: name.to_owned(), bind, options });
        Ok(id)
    }

    /// Creates a client peersocket that connects to `remote`.
    pub fn connect(&self, name: &str, remote: SocketAddr) -> Result<PeerId, InputError> {
        self.connect_with_code(name, remote, None)
    }

    /// Connects and proves `pairing_code` to a listener that asks for it;
    /// the peer is then verified. Fails (with a reason) if the listener
    /// does not ask for the code, since nothing would then be checked.
    pub fn connect_with_code(
        &self,
        name: &str,
        remote: SocketAddr,
        pairing_code: Option<&str>,
    ) -> Result<PeerId, InputError> {
        let options = ConnectOptions { pairing_code: pairing_code.map(str::to_owned), ..ConnectOptions::default() };
        self.connect_with(name, remote, options)
    }

    /// Connects with `options`: a pairing code to prove, and the key the
    /// listener must present (from its link). A listener with another key
    /// is left before our key or any frame goes to it (`EndKind::WrongKey`);
    /// the right key is remembered as verified, in place of any other key
    /// remembered for its name or address (the link vouches for it).
    pub fn connect_with(&self, name: &str, remote: SocketAddr, options: ConnectOptions) -> Result<PeerId, InputError> {
        frame::check_name(name).map_err(InputError::Name)?;
        if let Some(code) = &options.pairing_code {
            pairing::check_code(code).map_err(InputError::PairingCode)?;
        }
        if remote.port() == 0 {
            return Err(InputError::Address("port 0 cannot be connected to; give the server's port".into()));
        }
        if remote.ip().is_unspecified() {
            return Err(InputError::Address(format!("{} is not an address to connect to", remote.ip())));
        }
        let id = self.new_id();
        self.command(Command::Connect { id, name: name.to_owned(), remote, options });
        Ok(id)
    }

    /// Queues a chat message to the peer of `id`.
    pub fn send_text(&self, id: PeerId, text: &str) -> Result<(), InputError> {
        frame::check_chat(text).map_err(InputError::Chat)?;
        self.command(Command::Send { id, text: text.to_owned() });
        Ok(())
    }

    /// Closes the connection gracefully once everything queued has gone out
    /// (or stops listening / connecting). The peersocket becomes `Lost`.
    pub fn disconnect(&self, id: PeerId) {
        self.command(Command::Disconnect { id });
    }

    /// Listens again / reconnects a `Lost` peersocket.
    pub fn restart(&self, id: PeerId) {
        self.command(Command::Restart { id });
    }

    pub fn rename(&self, id: PeerId, name: &str) -> Result<(), InputError> {
        frame::check_name(name).map_err(InputError::Name)?;
        self.command(Command::Rename { id, name: name.to_owned() });
        Ok(())
    }

    /// Closes the peersocket (gracefully) and forgets it.
    pub fn remove(&self, id: PeerId) {
        self.command(Command::Remove { id });
    }

    /// Offers the file at `path` to the peer of `id`. The file is opened on
    /// a worker thread; problems arrive as `FileFailed`.
    pub fn send_file(&self, id: PeerId, path: impl Into<PathBuf>) -> TransferId {
        let transfer = TransferId(self.next_transfer.fetch_add(1, Ordering::Relaxed));
        self.command(Command::SendFile { id, transfer, path: path.into() });
        transfer
    }

    /// Accepts an incoming file (after `FileIncoming`).
    pub fn accept_file(&self, transfer: TransferId) {
        self.command(Command::AcceptFile { transfer });
    }

    pub fn decline_file(&self, transfer: TransferId) {
        self.command(Command::DeclineFile { transfer });
    }

    /// Stops a transfer in either direction; the peer is told.
    pub fn cancel_file(&self, transfer: TransferId) {
        self.command(Command::CancelFile { transfer });
    }

    /// After a `KeyChanged`: accepts the peer's new key in place of the old
    /// one. A client peersocket reconnects; a server's peer must connect
    /// again.
    pub fn trust_new_key(&self, id: PeerId) {
        self.command(Command::TrustNewKey { id });
    }

    /// Marks the connected peer's key verified (the person compared the
    /// safety code with the peer), or takes that back.
    pub fn set_verified(&self, id: PeerId, verified: bool) {
        self.command(Command::SetVerified { id, verified });
    }

    /// Forgets a remembered peer key (by its fingerprint): the next
    /// connection with that key, name or address is trusted on first use
    /// again. A `KnownPeers` event follows.
    pub fn forget_key(&self, fingerprint: &str) {
        self.command(Command::ForgetKey { fingerprint: fingerprint.to_owned() });
    }

    /// Files offered by the peer with this key fingerprint are accepted
    /// without asking (`accept`), or asked about again. The engine holds
    /// the list while it runs; whoever keeps settings gives it at start.
    pub fn accept_files_from(&self, fingerprint: &str, accept: bool) {
        self.command(Command::AcceptFilesFrom { fingerprint: fingerprint.to_owned(), accept });
    }

    /// Starts (or stops) announcing listening server peersockets on the
    /// local network; see [`EngineConfig::announce`].
    pub fn set_announce(&self, announce: bool) {
        self.command(Command::SetAnnounce { announce });
    }

    /// Where files accepted from now on are stored.
    pub fn set_downloads(&self, dir: impl Into<PathBuf>) {
        self.command(Command::SetDownloads { dir: dir.into() });
    }

    fn new_id(&self) -> PeerId {
        PeerId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn command(&self, command: Command) {
        // Both fail only once the reactor has exited, and then there is
        // nothing left to do the command for.
        if self.commands.send(command).is_ok() {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the reactor: {e}");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.command(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the reactor thread panicked");
            }
        }
        if let Some(cleanup) = self.cleanup.take() {
            let _ = cleanup.join();
        }
    }
}

/// Text from a peer made safe to print on one line: control characters
/// (newlines included), bidirectional overrides and invisible characters
/// are shown escaped, so they can neither drive a terminal, nor reorder,
/// nor hide what a person reads (see [`crate::text`]).
pub fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char = crate::text::escaped_in_display;
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}
