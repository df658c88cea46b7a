//! File transfers: every transfer's state, the registry that says which
//! connection carries it, and the file side of the protocol.
//!
//! Every transfer belongs to exactly one connection and dies with it. A
//! connection's transfers are its [`Files`]; the engine's [`Transfers`]
//! holds the rest (which connection each live transfer is on, received
//! files still being verified after their connection ended, the writer
//! threads, the free-space checker). The session hands file frames here
//! through [`SessionFiles`], which implements its `FileFrames`; the reactor
//! hands disk events, commands and the send pump. Our offers are
//! `outgoing.rs`, the peer's `incoming.rs`; this file routes between them.
//! The disk work itself happens in `crate::files` workers; nothing here
//! waits on a disk.

mod incoming;
mod outgoing;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::EventSink;
use super::frame::Frame;
use super::session::{FileFrames, Link, Violation};
use super::{printable, Event, PeerId};
use crate::files::{self, DiskEvent, FailKind, Faults, Notify, TransferId};

pub(crate) use incoming::{InState, Incoming};
pub(crate) use outgoing::{OutState, Outgoing};

/// File data is added to a connection's output only while less than this
/// is waiting, so chat and control frames never queue behind more.
pub(crate) const HIGH_WATER: usize = 256 * 1024;
// The session takes a peer that lets more than its slack wait for having
// stopped reading: file data must never come near that by itself.
const _: () = assert!(super::session::OUTPUT_SLACK >= HIGH_WATER);
/// How long an offer may wait for its free-space check before the person is
/// asked anyway.
pub(crate) const SPACE_CHECK_PATIENCE: Duration = Duration::from_secs(2);

/// Transfers a sender has offered but not finished, per connection. More
/// wait in the queue without a reader thread or an open file.
pub(crate) const MAX_ACTIVE_OUT: usize = 16;
/// Offers a receiver keeps waiting for an answer, per connection; more are
/// declined.
pub(crate) const MAX_PENDING_OFFERS: usize = 64;
/// Incoming files (or folders) one connection writes at once, each on a
/// writer thread holding up to a window of data. Accepted offers past
/// this wait, unanswered, until a writer is free (the peer sees no ACCEPT
/// until then); without it a peer could keep 64 threads busy.
pub(crate) const MAX_WRITERS: usize = 16;
/// Recently cancelled transfer numbers whose late frames are ignored.
const REMEMBER_CANCELLED: usize = 256;
/// Progress is reported at most this often per transfer.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// All transfers of one connection.
#[derive(Default)]
pub(crate) struct Files {
    pub outgoing: Vec<Outgoing>,
    pub incoming: HashMap<u32, Incoming>,
    pub next_wire: u32,
    /// Where the pump looks first for data to send: the one after the
    /// last that sent.
    pub turn: usize,
    /// Incoming transfers we stopped: DATA for them may still be in flight.
    cancelled_in: VecDeque<u32>,
}

impl Files {
    /// Reading is paused while a writer has no room.
    pub fn paused(&self) -> bool {
        self.incoming.values().any(|t| !t.stalled.is_empty())
    }

    pub fn forget_incoming(&mut self, wire: u32) -> Option<Incoming> {
        if self.cancelled_in.len() == REMEMBER_CANCELLED {
            self.cancelled_in.pop_front();
        }
        self.cancelled_in.push_back(wire);
        self.incoming.remove(&wire)
    }

    pub fn was_cancelled_in(&self, wire: u32) -> bool {
        self.cancelled_in.contains(&wire)
    }

    pub fn active_out(&self) -> usize {
        self.outgoing.iter().filter(|t| !matches!(t.state, OutState::Queued(_))).count()
    }

    pub fn out_by_wire(&mut self, wire: u32) -> Option<usize> {
        self.outgoing.iter().position(|t| t.wire == wire && !matches!(t.state, OutState::Queued(_) | OutState::Opening))
    }

    pub fn out_by_key(&self, key: TransferId) -> Option<usize> {
        self.outgoing.iter().position(|t| t.key == key)
    }

    pub fn in_by_key(&self, key: TransferId) -> Option<u32> {
        self.incoming.iter().find(|(_, t)| t.key == key).map(|(w, _)| *w)
    }

    pub fn is_empty(&self) -> bool {
        self.outgoing.is_empty() && self.incoming.is_empty()
    }
}

impl Drop for Files {
    /// However a connection's transfers go (its end, or the engine's),
    /// files still arriving were cut, not stopped: their partial files stay
    /// for a resume. (A transfer stopped on purpose left `incoming` first.)
    fn drop(&mut self) {
        for t in self.incoming.values() {
            if let Some(writer) = &t.writer {
                writer.keep_partial();
            }
        }
    }
}

/// Measures a transfer's speed and decides when to report progress.
pub(crate) struct Meter {
    last_report: Option<Instant>,
    window_start: Instant,
    window_bytes: u64,
    rate: f64,
}

/// What a progress report carries.
pub(crate) struct Reading {
    pub bytes_per_sec: u64,
    pub eta: Option<Duration>,
}

impl Meter {
    pub fn new() -> Meter {
        Meter { last_report: None, window_start: Instant::now(), window_bytes: 0, rate: 0.0 }
    }

    /// Counts `bytes` more (of `done` so far out of `total`) and returns a
    /// reading when one is due: every [`PROGRESS_EVERY`], and at the end.
    pub fn add(&mut self, bytes: u64, done: u64, total: u64) -> Option<Reading> {
        let now = Instant::now();
        self.window_bytes += bytes;
        let span = now.duration_since(self.window_start);
        if span >= Duration::from_millis(250) {
            let sample = self.window_bytes as f64 / span.as_secs_f64();
            self.rate = if self.rate == 0.0 { sample } else { 0.7 * self.rate + 0.3 * sample };
            self.window_start = now;
            self.window_bytes = 0;
        }
        let due = self.last_report.is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY);
        if !(due || done == total) {
            return None;
        }
        self.last_report = Some(now);
        // A rate near zero would overflow a Duration; no estimate then.
        let eta = (self.rate > 0.0)
            .then(|| Duration::try_from_secs_f64(total.saturating_sub(done) as f64 / self.rate).ok())
            .flatten();
        Some(Reading { bytes_per_sec: self.rate as u64, eta })
    }
}

/// Which connection a transfer is on: the reactor's number for it.
pub(crate) type ConnKey = usize;

/// The engine's side of file transfer: the registry of live transfers and
/// everything they share.
pub(crate) struct Transfers {
    /// The connection each live transfer is on.
    routes: HashMap<TransferId, ConnKey>,
    /// Received files whose connection ended while they were being verified:
    /// they are still reported when stored.
    orphans: HashMap<TransferId, Orphan>,
    /// Writer threads, joined at exit so no temporary file outlives us.
    writers: Vec<std::thread::JoinHandle<()>>,
    /// Started at the first offer.
    space_checker: Option<files::SpaceChecker>,
    /// It could not be started: do not try (and log) at every offer.
    space_checker_failed: bool,
    /// How disk workers report back.
    notify: Notify,
    /// Shared with the handle, which numbers outgoing transfers.
    next: Arc<AtomicU64>,
    pub downloads: PathBuf,
    faults: Faults,
    events: EventSink,
    /// Whose files are accepted without asking.
    pub policy: AcceptPolicy,
    /// Accepted incoming files still arriving, and the bytes each has yet
    /// to write: an offer must fit in the free space beside all of them.
    promised: HashMap<TransferId, u64>,
}

/// Whose offers the engine accepts by itself (once they are known to fit).
#[derive(Clone, Debug, Default)]
pub(crate) struct AcceptPolicy {
    pub everyone: bool,
    /// Key fingerprints.
    pub keys: std::collections::HashSet<String>,
}

impl AcceptPolicy {
    fn accepts(&self, peer: Option<&[u8; 32]>) -> bool {
        self.everyone || peer.is_some_and(|key| self.keys.contains(&super::secure::fingerprint(key)))
    }
}

/// A received file whose writer goes on alone (its connection ended, or
/// it was cancelled while being verified): its own report is what the
/// person sees.
pub(crate) struct Orphan {
    pub id: PeerId,
    pub name: String,
    /// Cancelled, by whom and why: said if the writer fails.
    pub cancelled: Option<(FailKind, String)>,
}

/// What the reactor should do after a disk event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct After {
    /// Reading the connection was paused for a writer and may go on.
    pub resume_reading: bool,
}

impl Transfers {
    pub fn new(notify: Notify, next: Arc<AtomicU64>, downloads: PathBuf, faults: Faults, events: EventSink) -> Self {
        Transfers {
            routes: HashMap::new(),
            orphans: HashMap::new(),
            writers: Vec::new(),
            space_checker: None,
            space_checker_failed: false,
            notify,
            next,
            downloads,
            faults,
            events,
            policy: AcceptPolicy::default(),
            promised: HashMap::new(),
        }
    }

    /// The connection `transfer` is on, while it lives.
    pub fn route(&self, transfer: TransferId) -> Option<ConnKey> {
        self.routes.get(&transfer).copied()
    }

    /// Waits for every writer, so no temporary file outlives the engine.
    pub fn join_writers(&mut self) {
        for writer in self.writers.drain(..) {
            let _ = writer.join();
        }
    }

    fn emit(&self, event: Event) {
        self.events.send(event);
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(&mut self, id: PeerId, label: &str, transfer: TransferId, name: &str, kind: FailKind, reason: String) {
        self.routes.remove(&transfer);
        self.promised.remove(&transfer);
        log::warn!("{label} transfer of \"{}\" failed: {reason}", printable(name));
        self.emit(Event::FileFailed { id, transfer, name: name.to_owned(), kind, reason });
    }

    /// A transfer picks up where an earlier attempt was cut: both ends say
    /// where, and how much of the partial file failed its proof.
    #[allow(clippy::too_many_arguments)]
    fn resumed(
        &self,
        id: PeerId,
        label: &str,
        transfer: TransferId,
        name: String,
        offset: u64,
        size: u64,
        discarded: u64,
    ) {
        let shown = printable(&name);
        match (offset, discarded) {
            (0, _) => log::info!(
                "{label} \"{shown}\": the {discarded} bytes from an earlier attempt did not match (the file changed, or the partial file is damaged); starting again from zero"
            ),
            (_, 0) => log::info!("{label} \"{shown}\" resumed at byte {offset} of {size}, verified"),
            _ => log::info!(
                "{label} \"{shown}\" resumed at byte {offset} of {size}; {discarded} more bytes from before did not match and are sent again"
            ),
        }
        self.emit(Event::FileResumed { id, transfer, name, offset, size, discarded });
    }

    /// Bytes promised to accepted files still arriving.
    fn reserved(&self) -> u64 {
        self.promised.values().fold(0u64, |sum, left| sum.saturating_add(*left))
    }

    /// A file offered with no connection to carry it.
    pub fn not_sent(&self, id: PeerId, transfer: TransferId, path: &std::path::Path) {
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        let reason = "not sent: no peer is connected".into();
        self.emit(Event::FileFailed { id, transfer, name, kind: FailKind::NotConnected, reason });
    }

    /// Declines or cancels a transfer in either direction and tells the peer.
    pub fn stop(&mut self, c: &mut ConnFiles, link: &mut Link, transfer: TransferId, kind: FailKind, why: &str) {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        if let Some(i) = f.out_by_key(transfer) {
            let t = f.outgoing.remove(i);
            if !matches!(t.state, OutState::Queued(_) | OutState::Opening) {
                link.queue_file(&Frame::Cancel { transfer: t.wire, mine: true, reason: "the sender cancelled".into() });
            }
            self.failed(owner, label, transfer, &t.name, kind, why.to_owned());
            self.start_queued(f);
        } else if let Some(wire) = f.in_by_key(transfer) {
            let Some(t) = f.forget_incoming(wire) else { return };
            if t.state == InState::Verifying {
                // The writer may be naming the file this instant: it reports
                // what really happened, as an orphan.
                self.abort_verifying(owner, label, t, kind, why.to_owned());
                link.queue_file(&Frame::Cancel {
                    transfer: wire,
                    mine: false,
                    reason: "the receiver cancelled".into(),
                });
                self.start_waiting(f);
                return;
            }
            if matches!(t.state, InState::Listing | InState::Checking | InState::Offered | InState::Waiting) {
                link.queue_file(&Frame::Decline { transfer: wire, reason: "declined".into() });
            } else {
                link.queue_file(&Frame::Cancel {
                    transfer: wire,
                    mine: false,
                    reason: "the receiver cancelled".into(),
                });
            }
            self.failed(owner, label, transfer, &t.name, kind, why.to_owned());
            self.start_waiting(f);
        }
    }

    /// A file frame from the peer, routed by direction; then a writer that
    /// came free goes to an accepted file waiting for one.
    fn on_frame(&mut self, c: &mut ConnFiles, frame: Frame, link: &mut Link) -> Result<(), Violation> {
        let result = self.on_frame_inner(c, frame, link);
        self.start_waiting(c.files);
        result
    }

    fn on_frame_inner(&mut self, c: &mut ConnFiles, frame: Frame, link: &mut Link) -> Result<(), Violation> {
        match frame {
            Frame::Offer { transfer, size, name } => return self.offer(c, link, transfer, size, name),
            Frame::Data { transfer, bytes } => return self.data(c, transfer, &bytes),
            Frame::Done { transfer, hash } => return Transfers::done(c.files, transfer, hash),
            Frame::Cancel { transfer, mine: true, reason } => self.sender_cancelled(c, transfer, &reason),
            Frame::Accept { transfer } => return self.peer_accepted(c, transfer, 0),
            Frame::AcceptFrom { transfer, offset: 0 } => {
                return Err(Violation(format!("accepted transfer {transfer} from byte 0 after a proof")))
            }
            Frame::AcceptFrom { transfer, offset } => return self.peer_accepted(c, transfer, offset),
            Frame::Resume { transfer, have } => return Transfers::peer_resume(c.files, transfer, have),
            Frame::Proof { transfer, hashes } => return Transfers::proof(c.files, transfer, hashes),
            Frame::OfferFolder { transfer, size, entries, name } => {
                return self.offer_folder(c, link, transfer, (size, entries, name))
            }
            Frame::Entries { transfer, entries } => return self.entries(c, link, transfer, entries),
            Frame::FileDone { transfer, index, hash } => return Transfers::file_done(c.files, transfer, index, hash),
            Frame::Decline { transfer, reason } => self.peer_declined(c, transfer, &reason),
            Frame::Cancel { transfer, mine: false, reason } => self.receiver_cancelled(c, transfer, &reason),
            Frame::Window { transfer, granted } => Transfers::window(c.files, transfer, granted),
            Frame::Received { transfer } => self.peer_received(c, transfer),
            other => return Err(Violation(format!("sent a {} where a file frame belongs", other.kind_name()))),
        }
        Ok(())
    }

    /// A disk event for a transfer no connection carries: an orphan's
    /// writer reports how it ended (anything else is for no transfer).
    pub fn orphan_event(&mut self, event: DiskEvent) {
        let key = event.key();
        let Some(Orphan { id, name, cancelled }) = self.orphans.remove(&key) else { return };
        match event {
            DiskEvent::Stored { path, size, hash, .. } => {
                self.promised.remove(&key);
                self.emit(Event::FileReceived { id, transfer: key, name, path, size, blake3: hash })
            }
            DiskEvent::WriteFailed { failure, .. } => {
                self.promised.remove(&key);
                // A cancel is reported as who cancelled it.
                let (kind, reason) = cancelled.unwrap_or((failure.kind, failure.reason));
                self.emit(Event::FileFailed { id, transfer: key, name, kind, reason })
            }
            _ => {
                self.orphans.insert(key, Orphan { id, name, cancelled });
            }
        }
    }

    /// A disk event for a transfer on this connection, routed by direction.
    pub fn disk_event(&mut self, c: &mut ConnFiles, link: &mut Link, event: DiskEvent) -> After {
        let mut after = After::default();
        match event {
            DiskEvent::Opened { key, name, size } => self.opened(c, link, key, name, size),
            DiskEvent::FolderOpened { key, name, size, entries, skipped } => {
                self.folder_opened(c, key, name, size, entries, skipped)
            }
            DiskEvent::FileInFolder { key, done } => Transfers::file_in_folder(c.files, key, done),
            DiskEvent::OpenFailed { key, reason } => self.open_failed(c, key, reason),
            DiskEvent::Readable { .. } => {} // the pump after this takes it
            DiskEvent::SpaceChecked { key, refusal } => self.space_checked(c, link, key, refusal),
            DiskEvent::Proved { key, hashes } => Transfers::proved(c.files, link, key, hashes),
            DiskEvent::Partial { key, have } => Transfers::partial(c.files, link, key, have),
            DiskEvent::ReadyToReceive { key, offset, discarded } => {
                self.ready_to_receive(c, link, key, offset, discarded)
            }
            DiskEvent::Consumed { key, bytes } => self.consumed(c.files, link, key, bytes),
            DiskEvent::Stored { key, path, size, hash } => self.stored(c, link, key, path, size, hash),
            DiskEvent::WriteFailed { key, failure } => after.resume_reading = self.write_failed(c, link, key, failure),
            DiskEvent::Drained { key } => after.resume_reading = Transfers::drained(c.files, key),
        }
        // A file that was stored or failed freed its writer.
        self.start_waiting(c.files);
        after
    }

    /// The connection is ending: every transfer on it fails, except files
    /// already being verified, which are still reported when stored.
    /// Files still arriving keep their partial files for a resume when
    /// `keep` (the connection was cut, not broken by the peer).
    pub fn end_all(&mut self, c: &mut ConnFiles, reason: &str, keep: bool) {
        let (owner, label) = (c.owner, c.label);
        let why = format!("the connection ended: {reason}");
        for t in std::mem::take(&mut c.files.outgoing) {
            self.failed(owner, label, t.key, &t.name, FailKind::ConnectionEnded, why.clone());
        }
        for (_, mut t) in std::mem::take(&mut c.files.incoming) {
            if matches!(t.state, InState::Listing | InState::Checking) {
                self.routes.remove(&t.key); // never shown to the person
            } else if t.state == InState::Verifying && t.stalled.is_empty() {
                self.routes.remove(&t.key);
                self.orphans.insert(t.key, Orphan { id: owner, name: t.name, cancelled: None });
            } else {
                // Cut, not stopped: what arrived is kept for a resume, all
                // of it (the writer takes whole blocks until now).
                if keep && t.writer.is_some() {
                    let last = std::mem::take(&mut t.pending);
                    if !last.is_empty() && t.state == InState::Receiving {
                        t.deliver(Some(files::WriteMsg::Data(last)));
                    }
                    if let Some(writer) = &t.writer {
                        writer.keep_partial();
                    }
                }
                self.failed(owner, label, t.key, &t.name, FailKind::ConnectionEnded, why.clone());
            }
        }
    }
}

/// One connection's transfers, as the registry's methods take them.
pub(crate) struct ConnFiles<'a> {
    pub files: &'a mut Files,
    pub owner: PeerId,
    pub conn: ConnKey,
    /// The peer's key, once the handshake proved it.
    pub peer: Option<[u8; 32]>,
    /// The peersocket as the log names it.
    pub label: &'a str,
}

/// What the session hands file frames to: one connection's transfers with
/// the engine's registry beside them.
pub(crate) struct SessionFiles<'a> {
    pub registry: &'a mut Transfers,
    pub conn: ConnFiles<'a>,
}

impl FileFrames for SessionFiles<'_> {
    fn paused(&self) -> bool {
        self.conn.files.paused()
    }

    fn frame(&mut self, frame: Frame, link: &mut Link) -> Result<(), Violation> {
        self.registry.on_frame(&mut self.conn, frame, link)
    }

    fn data(&mut self, transfer: u32, bytes: &[u8], _link: &mut Link) -> Result<(), Violation> {
        self.registry.data(&mut self.conn, transfer, bytes)
    }
}
