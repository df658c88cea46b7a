//! One connection's protocol, with no I/O: the session.
//!
//! A [`Session`] is the whole per-connection protocol of PeerConn: the
//! Noise handshake (through [`Channel`]), the hellos, the pairing code, the
//! trust-on-first-use decision (with the trust store handed in), the
//! heartbeat and every other deadline, the chat rate limit, the bye, and
//! the routing of file frames to whoever keeps the transfers. It takes the
//! bytes read from the socket and the current time, and gives back the
//! bytes to send ([`Session::output`]), its next deadline
//! ([`Session::deadline`]) and what happened ([`Session::poll_event`]).
//!
//! It never touches a socket, a file, a channel or the clock, in the manner
//! of quinn-proto's `Connection` or rustls's state types: the reactor
//! drives it over TCP, the tests drive two of them back to back in memory
//! on a virtual clock, and the `session` fuzz target drives it with
//! anything at all. Every phase keeps its own data ([`Phase`]) and every
//! transition is written here: the reactor can only ask (`close`, `eof`,
//! `tcp_connected`…), and the session decides.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod admission;
mod config;
mod end;
mod host;

pub use config::SessionConfig;
pub use end::{End, EndKind};
pub use host::{FileFrames, Host, NoFiles, PairingGuard, Violation};

use super::frame::{self, ByeCode, Frame};
use super::link::KeyPin;
use super::pairing::Pairing;
use super::secure::{self, Channel, Identity, SecureError};
use super::trust::{PeerIdentity, Trust};

/// Output waiting beyond `max_output_bytes` by more than this means the
/// peer stopped reading (file data is only added below it, see the pump).
pub const OUTPUT_SLACK: usize = 256 * 1024;
/// Output already written is dropped from the buffer past this much, so
/// the buffer does not keep growing while the peer reads slowly.
const COMPACT_AFTER: usize = 256 * 1024;

/// Why a TCP connect to `remote` failed, as an end.
pub fn connect_error(remote: SocketAddr, e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            End::new(EndKind::Unreachable, format!("connection refused by {remote} (nothing is listening there)"))
        }
        io::ErrorKind::TimedOut => End::new(EndKind::TimedOut, format!("no answer from {remote}")),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            End::new(EndKind::Unreachable, format!("{remote} cannot be reached from this computer"))
        }
        io::ErrorKind::AddrNotAvailable => {
            End::new(EndKind::Unreachable, format!("{remote} is not an address that can be connected to"))
        }
        _ => End::new(EndKind::Unreachable, format!("could not connect to {remote}: {e}")),
    }
}

/// `at + by`, or a far future when a configured timeout is too long to add
/// (a `Duration::MAX` meant as "never" must not panic).
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(by).or_else(|| at.checked_add(CENTURY)).unwrap_or(at)
}

/// Which end of the connection this session is, with what only that end
/// knows.
#[derive(Clone, Debug)]
pub enum Side {
    /// We connected to `dialled`; the code, when given, is proven to the
    /// listener. `pinned`: the listener's key was pinned (by a link) and
    /// the handshake matched it.
    Client { dialled: SocketAddr, pairing_code: Option<String>, pinned: bool },
    /// We accepted the connection; a peer must prove the code, when set.
    Server { pairing_code: Option<String> },
}

/// What a session reports. Drained with [`Session::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The encrypted channel is up; the hellos come next.
    Secured { fingerprint: String },
    /// The trust store should remember this key under this name (and the
    /// address we dialled); `verified` when a pairing code proved it.
    /// Comes just before `Connected`.
    /// `replaces`: the key takes the place of any other remembered for the
    /// name or address (a link vouched for it).
    Remember { key: [u8; 32], name: String, dialled: Option<String>, verified: bool, replaces: bool },
    /// The hellos (and the pairing, when there was one) are done.
    Connected { peer_name: String, peer: PeerIdentity },
    /// A chat message from the peer.
    Message(String),
    /// The peer's key is not the one remembered for its name or address:
    /// the connection is refused before anything moves.
    KeyChanged { peer_name: String, address: SocketAddr, key: [u8; 32], old_key: [u8; 32] },
    /// Server: a peer proved a wrong pairing code (the `count`th, of
    /// `max`); the next try must wait `wait`.
    WrongCode { count: u32, max: u32, wait: Duration },
    /// The connection is over for its owner. It comes once. The session
    /// may still linger to deliver a bye ([`Session::is_closed`] says when
    /// the socket can go).
    Ended(End),
}

/// Refusals of [`Session::send_chat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatRefused {
    /// Connecting, or still in the hello.
    NotOpen,
    /// A close has begun.
    Closing,
    /// So much is waiting to go out already (KiB).
    Backlog(usize),
}

/// The sending half: sealed output waiting for the socket, and what
/// transfers need to add to it.
pub struct Link {
    channel: Channel,
    out: Vec<u8>,
    out_pos: usize,
    /// Frames are encoded here, then sealed into `out`.
    plain: Vec<u8>,
    /// Sealing failed (the message counter ran out): the connection ends.
    broken: Option<SecureError>,
    /// Something was queued since the last look (resets the ping timer).
    queued: bool,
}

impl Link {
    /// Encrypts one file frame onto the output, for whoever keeps the
    /// transfers. Any other frame is the session's own business (a hello or
    /// a bye from outside would be a transition written outside it): it is
    /// not sent.
    pub fn queue_file(&mut self, frame: &Frame) {
        // DATA goes through `queue_data`, straight from the read block.
        let file_frame = frame.is_file_frame() && !matches!(frame, Frame::Data { .. });
        debug_assert!(file_frame, "a {} queued as a file frame", frame.kind_name());
        if file_frame {
            self.queue(frame);
        }
    }

    /// Encrypts one frame onto the output.
    fn queue(&mut self, frame: &Frame) {
        self.plain.clear();
        frame.encode(&mut self.plain);
        if let Err(e) = self.channel.seal(&self.plain, &mut self.out) {
            self.broken.get_or_insert(e);
        }
        self.queued = true;
    }

    /// Encrypts one DATA frame straight from `bytes` (header and data are
    /// never copied together first). False once sealing has failed.
    pub fn queue_data(&mut self, transfer: u32, bytes: &[u8]) -> bool {
        let header = frame::data_header(transfer, bytes.len());
        if let Err(e) = self.channel.seal_parts(&[&header, bytes], &mut self.out) {
            self.broken.get_or_insert(e);
            return false;
        }
        self.queued = true;
        true
    }

    /// Bytes sealed and not yet taken by the socket.
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Where a connection is. Each phase holds the data that exists only in it.
enum Phase {
    /// Client: the TCP connect is in progress.
    Connecting { deadline: Instant },
    /// The handshake, then the hellos.
    Hello { deadline: Instant },
    /// Both hellos asked for a pairing code; proving it.
    Pairing { deadline: Instant, peer_name: String, pairing: Box<Pairing> },
    /// Chat and files flow.
    Open { chat: ChatBucket },
    /// We said what we had to say (a bye): flushing, then waiting for the
    /// peer to close its side. `ending` is reported when it does (a close
    /// of ours), or was reported already (a failure).
    Closing { deadline: Instant, shut: bool, ending: Option<End> },
    /// Nothing more: the socket can go.
    Closed,
}

/// The peer's chat allowance (a token bucket).
struct ChatBucket {
    allowance: f64,
    checked: Instant,
}

/// One connection's protocol state. See the module documentation.
pub struct Session {
    side: Side,
    remote: SocketAddr,
    config: SessionConfig,
    phase: Phase,
    link: Link,
    /// Decrypted bytes not yet making a whole frame.
    inbuf: Vec<u8>,
    last_rx: Instant,
    last_tx: Instant,
    /// Since when part of a record or frame has waited for the rest.
    partial_since: Option<Instant>,
    ping_seq: u64,
    events: VecDeque<SessionEvent>,
    /// `Ended` was reported.
    reported: bool,
    /// The first end, once a close has begun (transfers end with it).
    end: Option<End>,
    /// Some bytes have come from the peer.
    heard: bool,
}

impl Session {
    /// The side that connects to `remote`: it waits for
    /// [`Session::tcp_connected`] before anything goes out.
    pub fn client(
        identity: &Identity,
        config: SessionConfig,
        remote: SocketAddr,
        pairing_code: Option<String>,
        now: Instant,
    ) -> Session {
        Session::client_pinned(identity, config, remote, pairing_code, None, now)
    }

    /// A client that expects the listener's key to be `pin`: a listener
    /// with another key is left in the handshake, before our key goes out
    /// ([`EndKind::WrongKey`]).
    pub fn client_pinned(
        identity: &Identity,
        config: SessionConfig,
        remote: SocketAddr,
        pairing_code: Option<String>,
        pin: Option<KeyPin>,
        now: Instant,
    ) -> Session {
        let pinned = pin.is_some();
        let (channel, first) = Channel::initiator_pinned(identity, pin);
        let phase = Phase::Connecting { deadline: later(now, config.connect_timeout) };
        let side = Side::Client { dialled: remote, pairing_code, pinned };
        Session::new(side, remote, config, channel, first, phase, now)
    }

    /// The side that accepted a connection from `remote`. Its preamble is
    /// in the output at once, so even a peer that is not PeerConn sees
    /// what it reached.
    pub fn server(
        identity: &Identity,
        config: SessionConfig,
        remote: SocketAddr,
        pairing_code: Option<String>,
        now: Instant,
    ) -> Session {
        let (channel, first) = Channel::responder(identity);
        let phase = Phase::Hello { deadline: later(now, config.hello_timeout) };
        Session::new(Side::Server { pairing_code }, remote, config, channel, first, phase, now)
    }

    fn new(
        side: Side,
        remote: SocketAddr,
        config: SessionConfig,
        mut channel: Channel,
        first: Vec<u8>,
        phase: Phase,
        now: Instant,
    ) -> Session {
        channel.set_nonce_limit(config.nonce_limit);
        Session {
            side,
            remote,
            config,
            phase,
            link: Link { channel, out: first, out_pos: 0, plain: Vec::new(), broken: None, queued: false },
            inbuf: Vec::new(),
            last_rx: now,
            last_tx: now,
            partial_since: None,
            ping_seq: 0,
            events: VecDeque::new(),
            reported: false,
            end: None,
            heard: false,
        }
    }

    // ----- what the driver reads --------------------------------------------

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The next thing that happened, in order.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Events wait to be polled.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Sealed bytes waiting for the socket (nothing while connecting).
    pub fn output(&self) -> &[u8] {
        match self.phase {
            Phase::Connecting { .. } | Phase::Closed => &[],
            _ => &self.link.out[self.link.out_pos..],
        }
    }

    /// The socket took `n` bytes of [`Session::output`].
    pub fn sent(&mut self, n: usize) {
        let link = &mut self.link;
        link.out_pos = (link.out_pos + n).min(link.out.len());
        if link.out_pos == link.out.len() {
            link.out.clear();
            link.out_pos = 0;
        } else if link.out_pos > COMPACT_AFTER && link.out_pos * 2 > link.out.len() {
            link.out.drain(..link.out_pos);
            link.out_pos = 0;
        }
    }

    pub fn pending_output(&self) -> usize {
        self.output().len()
    }

    /// When [`Session::handle_timeout`] is next due (`None` once closed).
    pub fn deadline(&self) -> Option<Instant> {
        let partial =
            |due: Instant| self.partial_since.map_or(due, |since| due.min(later(since, self.config.frame_timeout)));
        match &self.phase {
            Phase::Connecting { deadline } | Phase::Closing { deadline, .. } => Some(*deadline),
            Phase::Hello { deadline } | Phase::Pairing { deadline, .. } => Some(partial(*deadline)),
            Phase::Open { .. } => Some(partial(
                later(self.last_rx, self.config.heartbeat_timeout)
                    .min(later(self.last_tx, self.config.heartbeat_interval)),
            )),
            Phase::Closed => None,
        }
    }

    /// Still waiting for the TCP connect.
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// The peer has sent something (a connection that has not is idle).
    pub fn has_heard(&self) -> bool {
        self.heard
    }

    /// Chat and files flow.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// The hellos are done and a close has not been asked for yet, or
    /// is under way: there is a peer to say bye to.
    pub fn has_peer(&self) -> bool {
        matches!(self.phase, Phase::Open { .. } | Phase::Closing { .. })
    }

    /// A close has begun (or is done).
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. } | Phase::Closed)
    }

    /// The socket can go.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The end, once a close has begun.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// The peer's key and handshake hash, once the channel is up.
    pub fn peer_key(&self) -> Option<&secure::PeerKey> {
        self.link.channel.peer()
    }

    /// Closing: all we had to say is out, so the socket's write side can
    /// be shut (the peer then sees our end). True once.
    pub fn take_shutdown(&mut self) -> bool {
        let empty = self.link.pending_output() == 0;
        match &mut self.phase {
            Phase::Closing { shut: shut @ false, .. } if empty => {
                *shut = true;
                true
            }
            _ => false,
        }
    }

    /// The sending half, for the transfers, while the connection is open.
    pub fn open_link(&mut self) -> Option<&mut Link> {
        match self.phase {
            Phase::Open { .. } => Some(&mut self.link),
            _ => None,
        }
    }

    // ----- what the driver tells ----------------------------------------------

    /// Client: the TCP connection is up; the handshake starts.
    pub fn tcp_connected(&mut self, now: Instant) {
        if let Phase::Connecting { .. } = self.phase {
            self.phase = Phase::Hello { deadline: later(now, self.config.hello_timeout) };
            self.last_rx = now;
            self.last_tx = now;
        }
    }

    /// Client: the TCP connect failed.
    pub fn connect_failed(&mut self, e: &io::Error) {
        self.end_now(connect_error(self.remote, e));
    }

    /// Reading or writing the socket failed.
    pub fn io_failed(&mut self, e: &io::Error) {
        let end = match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                End::new(EndKind::Reset, format!("the connection with {} was reset", self.remote))
            }
            _ => End::new(EndKind::LocalError, format!("network error with {}: {e}", self.remote)),
        };
        self.end_now(end);
    }

    /// The driver ends the connection for a reason of its own (the
    /// socket cannot be watched, say); no bye.
    pub fn abort(&mut self, end: End) {
        self.end_now(end);
    }

    /// We close the connection on purpose: a normal bye (saying `said`)
    /// goes out, and `Ended` with `reason` comes once the peer has closed
    /// its side (or the linger ran out). Before the hellos are done there
    /// is nobody to say bye to: it ends at once with `cancelled`.
    pub fn close(&mut self, reason: &str, cancelled: &str, said: &str, now: Instant) {
        self.close_with(ByeCode::Normal, reason, cancelled, said, now)
    }

    /// Closes because the program ends: the peer hears it may come back
    /// (`ByeCode::Leaving`), so a peer that reconnects by itself tries again.
    pub fn leave(&mut self, reason: &str, cancelled: &str, said: &str, now: Instant) {
        self.close_with(ByeCode::Leaving, reason, cancelled, said, now)
    }

    fn close_with(&mut self, code: ByeCode, reason: &str, cancelled: &str, said: &str, now: Instant) {
        if self.is_closing() {
            // Asked again while lingering: do not wait any longer.
            self.end_now(End::new(EndKind::Closed, reason));
        } else if self.has_peer() {
            self.end_with_bye(End::new(EndKind::Closed, reason), Some((code, said.to_owned())), now);
        } else {
            self.end_now(End::new(EndKind::Closed, cancelled));
        }
    }

    /// Closing takes too long for the driver (too many connections are
    /// closing at once): ends now, with the end it was going to report.
    pub fn cut_short(&mut self) {
        let held = match &mut self.phase {
            Phase::Closing { ending, .. } => ending.take(),
            _ => None,
        };
        self.end_now(held.unwrap_or_else(|| End::new(EndKind::Closed, "closed")));
    }

    /// The peer closed its side (the read returned 0).
    pub fn eof(&mut self) {
        let remote = self.remote;
        let server = matches!(self.side, Side::Server { .. });
        let failed = |kind, reason: String| End::new(kind, reason);
        let end = match &mut self.phase {
            Phase::Closing { ending, .. } => ending.take().unwrap_or_else(|| End::new(EndKind::Closed, "closed")),
            Phase::Closed => return,
            _ if !self.inbuf.is_empty() || self.link.channel.has_partial() => {
                failed(EndKind::Reset, "the peer closed the connection in the middle of a message".into())
            }
            Phase::Connecting { .. } => failed(EndKind::Unreachable, format!("could not connect to {remote}")),
            Phase::Hello { .. } if !self.link.channel.is_established() => {
                failed(EndKind::Reset, format!("{remote} closed the connection during the handshake"))
            }
            Phase::Hello { .. } | Phase::Pairing { .. } if server => {
                failed(EndKind::Reset, "closed before its hello".into())
            }
            Phase::Pairing { .. } => failed(EndKind::Reset, format!("{remote} closed the connection during pairing")),
            Phase::Hello { .. } => failed(EndKind::Reset, format!("{remote} closed the connection before the hello")),
            Phase::Open { .. } => {
                failed(EndKind::Reset, "the peer closed the connection without saying goodbye".into())
            }
        };
        self.end_now(end);
    }

    /// Bytes read from the socket. Handshake replies and answers go to the
    /// output; frames are handled as they complete.
    pub fn receive(&mut self, bytes: &[u8], now: Instant, host: &mut Host, files: &mut dyn FileFrames) {
        if bytes.is_empty() {
            return;
        }
        self.last_rx = now;
        self.heard = true;
        if !matches!(self.phase, Phase::Hello { .. } | Phase::Pairing { .. } | Phase::Open { .. }) {
            return; // leaving (or not yet connected): what the peer still sends is dropped
        }
        let was_established = self.link.channel.is_established();
        let received = self.link.channel.receive(bytes, &mut self.link.out, &mut self.inbuf);
        if !was_established && self.link.channel.is_established() {
            self.secured(host);
        }
        // Records that arrived intact before a damaged one are the peer's
        // own words: they are handled, then the connection ends.
        self.decode(now, host, files);
        if let Err(e) = received {
            if !self.is_closing() {
                self.secure_error(e, now);
            }
        }
        self.settle();
    }

    /// Decodes what is buffered after reading was paused for a full writer.
    pub fn resume(&mut self, now: Instant, host: &mut Host, files: &mut dyn FileFrames) {
        self.decode(now, host, files);
        self.settle();
    }

    /// A chat message to the peer.
    pub fn send_chat(&mut self, text: &str, now: Instant) -> Result<(), ChatRefused> {
        match self.phase {
            Phase::Open { .. } => {
                let waiting = self.link.pending_output();
                if waiting + text.len() > self.config.max_output_bytes {
                    return Err(ChatRefused::Backlog(waiting / 1024));
                }
                self.link.queue(&Frame::Chat(text.to_owned()));
                self.settle_at(now);
                Ok(())
            }
            Phase::Closing { .. } | Phase::Closed => Err(ChatRefused::Closing),
            _ => Err(ChatRefused::NotOpen),
        }
    }

    /// Runs what is due at `now`: the ping, the heartbeat loss, the phase
    /// deadlines, the stalled half message, the end of a linger.
    /// `reading_paused`: the driver stopped reading for a full writer, so
    /// the peer's silence is ours.
    pub fn handle_timeout(&mut self, now: Instant, reading_paused: bool) {
        if reading_paused {
            self.last_rx = now;
        }
        let remote = self.remote;
        let secs = |d: Duration| d.as_secs_f32();
        let config = self.config;
        let stalled = self.partial_since.is_some_and(|since| now >= later(since, config.frame_timeout));
        let end = match &mut self.phase {
            Phase::Connecting { deadline } if now >= *deadline => Some(End::new(
                EndKind::TimedOut,
                format!("no answer from {remote} within {} s", secs(config.connect_timeout)),
            )),
            Phase::Connecting { .. } | Phase::Closed => None,
            Phase::Closing { deadline, ending, .. } if now >= *deadline => {
                let mut end = ending.take().unwrap_or_else(|| End::new(EndKind::Closed, "closed"));
                if self.link.pending_output() > 0 {
                    end = End::new(EndKind::Limit, format!("{} (the peer did not take our last messages)", end.reason));
                }
                Some(end)
            }
            Phase::Closing { .. } => None,
            _ if stalled => Some(End::new(
                EndKind::TimedOut,
                format!("{remote} left a message unfinished for {} s", secs(config.frame_timeout)),
            )),
            Phase::Hello { deadline } if now >= *deadline => Some(End::new(
                EndKind::TimedOut,
                format!(
                    "{remote} did not complete the {} within {} s (is it a PeerConn?)",
                    if self.link.channel.is_established() { "hello" } else { "encrypted handshake" },
                    secs(config.hello_timeout)
                ),
            )),
            Phase::Pairing { deadline, .. } if now >= *deadline => Some(End::new(
                EndKind::TimedOut,
                format!("{remote} did not complete the pairing within {} s", secs(config.hello_timeout)),
            )),
            Phase::Hello { .. } | Phase::Pairing { .. } => None,
            Phase::Open { .. } if now >= later(self.last_rx, config.heartbeat_timeout) => Some(End::new(
                EndKind::TimedOut,
                format!("the peer stopped answering (nothing received for {} s)", secs(config.heartbeat_timeout)),
            )),
            Phase::Open { .. } => {
                if now >= later(self.last_tx, config.heartbeat_interval) {
                    self.ping_seq += 1;
                    self.link.queue(&Frame::Ping(self.ping_seq));
                }
                None
            }
        };
        if let Some(end) = end {
            self.end_now(end);
        }
        self.settle_at(now);
    }

    /// After output was added from outside (file data, transfer frames):
    /// resets the ping timer, and ends the connection if sealing failed or
    /// the peer stopped reading.
    pub fn settle_at(&mut self, now: Instant) {
        if std::mem::take(&mut self.link.queued) {
            self.last_tx = now;
        }
        self.settle();
    }

    // ----- inside ---------------------------------------------------------------

    fn settle(&mut self) {
        if self.is_closed() {
            return;
        }
        if let Some(e) = self.link.broken.take() {
            let end = End::new(EndKind::LocalError, format!("the connection with {} ended: {e}", self.remote));
            return self.end_now(end);
        }
        let waiting = self.link.pending_output();
        if waiting > self.config.max_output_bytes.saturating_add(OUTPUT_SLACK) {
            // Replies (pongs, declines) pile up only if the peer never reads.
            let end = End::new(
                EndKind::Limit,
                format!("the peer stopped reading ({} KiB were waiting for it)", waiting / 1024),
            );
            self.end_now(end);
        }
    }

    /// Handles every complete frame in the input buffer, unless the
    /// transfers paused reading.
    fn decode(&mut self, now: Instant, host: &mut Host, files: &mut dyn FileFrames) {
        // Out of `self` while frames are handled, so file data can be
        // passed on as slices of it.
        let inbuf = std::mem::take(&mut self.inbuf);
        let mut used = 0;
        loop {
            if !matches!(self.phase, Phase::Hello { .. } | Phase::Pairing { .. } | Phase::Open { .. }) || files.paused()
            {
                break;
            }
            if let (Phase::Open { .. }, Some((wire, bytes, len))) = (&self.phase, frame::decode_data(&inbuf[used..])) {
                used += len;
                if let Err(Violation(what)) = files.data(wire, bytes, &mut self.link) {
                    self.protocol_error(&what, now);
                }
                continue;
            }
            match frame::decode(&inbuf[used..]) {
                Ok(Some((frame, len))) => {
                    used += len;
                    self.on_frame(frame, now, host, files);
                }
                Ok(None) => break,
                Err(e) => {
                    self.protocol_error(&e.to_string(), now);
                    break;
                }
            }
        }
        self.inbuf = inbuf;
        self.inbuf.drain(..used);
        if std::mem::take(&mut self.link.queued) {
            self.last_tx = now;
        }
        // A peer that sends half a message and stalls (slowloris) is cut off
        // after `frame_timeout`, however it keeps the heartbeat alive.
        let partial = self.link.channel.has_partial() || (!self.inbuf.is_empty() && !files.paused());
        self.partial_since = if partial { self.partial_since.or(Some(now)) } else { None };
    }

    /// The handshake finished: the client says hello first.
    fn secured(&mut self, host: &Host) {
        let fingerprint = self.peer_key().map(|p| p.fingerprint()).unwrap_or_default();
        self.events.push_back(SessionEvent::Secured { fingerprint });
        if let Side::Client { pairing_code, .. } = &self.side {
            let pairing = pairing_code.is_some();
            self.link.queue(&Frame::Hello { version: frame::VERSION, pairing, name: host.name.to_owned() });
        }
    }

    fn on_frame(&mut self, frame: Frame, now: Instant, host: &mut Host, files: &mut dyn FileFrames) {
        match (&self.phase, frame) {
            (Phase::Hello { .. }, Frame::Hello { version, pairing, name }) => {
                if version != frame::VERSION {
                    let what = format!(
                        "the peer speaks protocol version {version}; this PeerConn speaks version {}",
                        frame::VERSION
                    );
                    let end = End::new(EndKind::Refused, what.clone());
                    return self.end_with_bye(end, Some((ByeCode::Unsupported, what)), now);
                }
                match self.side {
                    Side::Server { .. } => self.hello_from_client(name, pairing, now, host),
                    Side::Client { .. } => self.hello_from_server(name, pairing, now, host),
                }
            }
            (Phase::Hello { .. } | Phase::Pairing { .. } | Phase::Open { .. }, Frame::Bye { code, reason }) => {
                let end = self.peer_bye(code, &reason);
                self.end_now(end);
            }
            (Phase::Hello { .. }, other) => {
                self.protocol_error(&format!("sent a {} before the hello", other.kind_name()), now)
            }
            (Phase::Pairing { .. }, Frame::Pair(msg)) => self.pair_message(&msg, now),
            (Phase::Pairing { .. }, Frame::Confirm(mac)) => self.pair_confirm(&mac, now, host),
            (Phase::Pairing { .. }, other) => {
                self.protocol_error(&format!("sent a {} during pairing", other.kind_name()), now)
            }
            (Phase::Open { .. }, Frame::Pair(_) | Frame::Confirm(_)) => {
                self.protocol_error("sent a pairing message after pairing", now)
            }
            (Phase::Open { .. }, Frame::Chat(text)) => {
                if self.chat_allowed(now) {
                    self.events.push_back(SessionEvent::Message(text));
                }
            }
            (Phase::Open { .. }, Frame::Ping(n)) => self.link.queue(&Frame::Pong(n)),
            (Phase::Open { .. }, Frame::Pong(_)) => {}
            (Phase::Open { .. }, Frame::Hello { .. }) => self.protocol_error("sent a second hello", now),
            (Phase::Open { .. }, file_frame) => {
                if let Err(Violation(what)) = files.frame(file_frame, &mut self.link) {
                    self.protocol_error(&what, now);
                }
            }
            // Frames are only decoded in the hello, pairing and open phases.
            (Phase::Connecting { .. } | Phase::Closing { .. } | Phase::Closed, _) => {}
        }
    }

    fn open(&mut self, peer_name: String, trust: Trust, now: Instant) {
        let burst = f64::from(self.config.chat_burst);
        self.phase = Phase::Open { chat: ChatBucket { allowance: burst, checked: now } };
        let (key, safety_code) = self.peer_key().map(|p| (p.key, p.safety_code())).unwrap_or_default();
        let peer = PeerIdentity { key, fingerprint: secure::fingerprint(&key), safety_code, trust };
        self.events.push_back(SessionEvent::Connected { peer_name, peer });
    }

    /// Refills and spends the peer's chat allowance; ends the connection
    /// when it is spent.
    fn chat_allowed(&mut self, now: Instant) -> bool {
        let Phase::Open { chat } = &mut self.phase else { return false };
        let (burst, rate) = (f64::from(self.config.chat_burst), f64::from(self.config.chat_per_sec));
        let refill = now.saturating_duration_since(chat.checked).as_secs_f64() * rate;
        chat.allowance = (chat.allowance + refill).min(burst);
        chat.checked = now;
        if chat.allowance < 1.0 {
            let what = format!("sent more than {} chat messages a second", self.config.chat_per_sec);
            let end = End::new(EndKind::Limit, format!("the peer {what}; disconnected to keep PeerConn responsive"));
            self.end_with_bye(end, Some((ByeCode::Limit, format!("you {what}"))), now);
            return false;
        }
        chat.allowance -= 1.0;
        true
    }

    fn protocol_error(&mut self, what: &str, now: Instant) {
        let end = End::new(EndKind::Protocol, format!("protocol error from {}: {what}", self.remote));
        self.end_with_bye(end, Some((ByeCode::ProtocolError, what.to_owned())), now);
    }

    fn secure_error(&mut self, e: SecureError, now: Instant) {
        if let SecureError::NotPinned { presented, expected } = &e {
            let reason = format!(
                "stopped: the listener at {} presented the key {}, not the key {expected} in the link. The link may \
                 be old (its owner reinstalled PeerConn), or someone may be in between: ask its owner for the link \
                 again. It was not told who you are.",
                self.remote,
                secure::fingerprint(presented)
            );
            return self.end_now(End::new(EndKind::WrongKey, reason));
        }
        if self.link.channel.is_established() {
            let end = End::new(EndKind::Protocol, format!("the connection with {} ended: {e}", self.remote));
            self.end_with_bye(end, Some((ByeCode::ProtocolError, e.to_string())), now);
        } else {
            self.end_now(End::new(EndKind::Protocol, format!("no secure connection with {}: {e}", self.remote)));
        }
    }

    /// Ends the connection with a bye to say first (when the channel can
    /// still carry one): a close of ours is reported once the peer closed
    /// its side; anything else at once, the socket lingering only to
    /// deliver the bye.
    fn end_with_bye(&mut self, end: End, bye: Option<(ByeCode, String)>, now: Instant) {
        if self.is_closing() {
            return;
        }
        let can_say = self.link.channel.is_established() && self.link.broken.is_none();
        let Some((code, text)) = bye.filter(|_| can_say) else {
            return self.end_now(end);
        };
        self.link.queue(&Frame::Bye { code, reason: text });
        self.end = Some(end.clone());
        let deadline = later(now, self.config.close_linger);
        let ending = if end.kind == EndKind::Closed {
            Some(end)
        } else {
            self.report(end);
            None
        };
        self.phase = Phase::Closing { deadline, shut: false, ending };
    }

    /// Nothing more: reported (unless it was already) and closed.
    fn end_now(&mut self, end: End) {
        if self.is_closed() {
            return;
        }
        self.end.get_or_insert_with(|| end.clone());
        self.phase = Phase::Closed;
        self.report(end);
    }

    fn report(&mut self, end: End) {
        if !self.reported {
            self.reported = true;
            self.events.push_back(SessionEvent::Ended(end));
        }
    }
}
