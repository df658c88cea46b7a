//! File transfers: every transfer's state, the registry that says which
//! connection carries it, and the file side of the protocol.
//!
//! Every transfer belongs to exactly one connection and dies with it. A
//! connection's transfers are its [`Files`]; the engine's [`Transfers`]
//! holds the rest (which connection each live transfer is on, received
//! files still being verified after their connection ended, the writer
//! threads, the free-space checker). The session hands file frames here
//! through [`ConnFiles`], which implements its `FileFrames`; the reactor
//! hands disk events, commands and the send pump. The disk work itself
//! happens in `crate::files` workers; nothing here waits on a disk.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};

use super::frame::{self, Frame};
use super::session::{FileFrames, Link, Violation};
use super::{printable, Event, PeerId};
use crate::files::{self, Block, DiskEvent, FailKind, Failure, Faults, Notify, Reader, TransferId, WriteMsg, Writer};

/// File data is added to a connection's output only while less than this
/// is waiting, so chat and control frames never queue behind more.
pub(crate) const HIGH_WATER: usize = 256 * 1024;
/// How long an offer may wait for its free-space check before the person is
/// asked anyway.
pub(crate) const SPACE_CHECK_PATIENCE: Duration = Duration::from_secs(2);

/// Transfers a sender has offered but not finished, per connection. More
/// wait in the queue without a reader thread or an open file.
pub(crate) const MAX_ACTIVE_OUT: usize = 16;
/// Offers a receiver keeps waiting for an answer, per connection; more are
/// declined.
pub(crate) const MAX_PENDING_OFFERS: usize = 64;
/// Recently cancelled transfer numbers whose late frames are ignored.
const REMEMBER_CANCELLED: usize = 256;
/// Progress is reported at most this often per transfer.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Waiting for a free slot; the file is not open yet.
    Queued(PathBuf),
    /// The reader is opening the file.
    Opening,
    /// OFFER sent; waiting for ACCEPT or DECLINE.
    Offered,
    Sending,
    /// DONE sent; waiting for the receiver's verdict.
    Finishing,
}

pub(crate) struct Outgoing {
    pub key: TransferId,
    pub wire: u32,
    pub name: String,
    pub size: u64,
    pub state: OutState,
    pub reader: Option<Reader>,
    /// The block being cut into DATA frames, and how far.
    pub current: Option<(Vec<u8>, usize)>,
    pub sent: u64,
    /// The receiver allows data up to this byte.
    pub granted: u64,
    pub meter: Meter,
}

impl Outgoing {
    /// Has data it may send now, or its end to take from the reader.
    pub fn can_send(&self) -> bool {
        self.state == OutState::Sending && (self.sent < self.granted || self.sent >= self.size)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InState {
    /// Offered; being measured against the free space before the person
    /// is asked (a file that cannot fit is declined at once).
    Checking,
    /// Waiting for the person to accept or decline.
    Offered,
    /// Accepted; the writer is checking space and creating its file.
    Preparing,
    Receiving,
    /// DONE delivered to the writer, which is checking the hash.
    Verifying,
}

pub(crate) struct Incoming {
    pub key: TransferId,
    pub name: String,
    pub size: u64,
    pub state: InState,
    pub writer: Option<Writer>,
    /// Data collected into a block for the writer.
    pub pending: Vec<u8>,
    /// Messages the writer had no room for; reading pauses until it does.
    pub stalled: VecDeque<WriteMsg>,
    pub received: u64,
    /// We allow data up to this byte.
    pub granted: u64,
    pub meter: Meter,
    /// When the offer came (a free-space check that takes too long is
    /// given up on: see `SPACE_CHECK_PATIENCE`).
    pub offered: std::time::Instant,
}

impl Incoming {
    /// Gives the writer what is stalled, then `msg`; keeps what does not fit.
    pub fn deliver(&mut self, msg: Option<WriteMsg>) {
        self.stalled.extend(msg);
        let Some(writer) = &self.writer else {
            self.stalled.clear();
            return;
        };
        while let Some(msg) = self.stalled.pop_front() {
            if let Err(msg) = writer.offer(msg) {
                self.stalled.push_front(msg);
                break;
            }
        }
    }
}

/// All transfers of one connection.
#[derive(Default)]
pub(crate) struct Files {
    pub outgoing: Vec<Outgoing>,
    pub incoming: HashMap<u32, Incoming>,
    pub next_wire: u32,
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
    orphans: HashMap<TransferId, (PeerId, String)>,
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
    events: Sender<Event>,
    /// Whose files are accepted without asking.
    pub policy: AcceptPolicy,
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

/// What the reactor should do after a disk event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct After {
    /// Reading the connection was paused for a writer and may go on.
    pub resume_reading: bool,
}

impl Transfers {
    pub fn new(
        notify: Notify,
        next: Arc<AtomicU64>,
        downloads: PathBuf,
        faults: Faults,
        events: Sender<Event>,
    ) -> Self {
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
        // The receiver is gone only while the engine is being dropped.
        let _ = self.events.send(event);
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(&mut self, id: PeerId, label: &str, transfer: TransferId, name: &str, kind: FailKind, reason: String) {
        self.routes.remove(&transfer);
        log::warn!("{label} transfer of \"{}\" failed: {reason}", printable(name));
        self.emit(Event::FileFailed { id, transfer, name: name.to_owned(), kind, reason });
    }

    /// A file offered with no connection to carry it.
    pub fn not_sent(&self, id: PeerId, transfer: TransferId, path: &std::path::Path) {
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        let reason = "not sent: no peer is connected".into();
        self.emit(Event::FileFailed { id, transfer, name, kind: FailKind::NotConnected, reason });
    }

    /// Queues the file at `path` on connection `conn`: it is opened when a
    /// slot is free.
    pub fn send(&mut self, f: &mut Files, conn: ConnKey, transfer: TransferId, path: PathBuf) {
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        self.routes.insert(transfer, conn);
        f.outgoing.push(Outgoing {
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
        self.start_queued(f);
    }

    /// Opens queued files while fewer than [`MAX_ACTIVE_OUT`] are active.
    fn start_queued(&mut self, f: &mut Files) {
        let mut active = f.active_out();
        for t in f.outgoing.iter_mut() {
            if active >= MAX_ACTIVE_OUT {
                break;
            }
            if let OutState::Queued(_) = t.state {
                if let OutState::Queued(path) = std::mem::replace(&mut t.state, OutState::Opening) {
                    t.reader = Some(files::spawn_reader(t.key, path, self.notify.clone()));
                    active += 1;
                }
            }
        }
    }

    /// The person accepted an offer: a writer prepares the file.
    pub fn accept(&mut self, f: &mut Files, label: &str, transfer: TransferId) {
        let Some(wire) = f.in_by_key(transfer) else { return };
        let Some(t) = f.incoming.get_mut(&wire) else { return };
        if t.state != InState::Offered {
            return;
        }
        log::info!("{label} accepted \"{}\"", printable(&t.name));
        self.writers.retain(|w| !w.is_finished());
        let (writer, thread) = files::spawn_writer(
            transfer,
            self.downloads.clone(),
            t.name.clone(),
            t.size,
            self.faults.clone(),
            self.notify.clone(),
        );
        self.writers.extend(thread);
        t.writer = Some(writer);
        t.state = InState::Preparing;
    }

    /// Declines or cancels a transfer in either direction and tells the peer.
    pub fn stop(&mut self, c: &mut ConnFiles, link: &mut Link, transfer: TransferId, kind: FailKind, why: &str) {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        if let Some(i) = f.out_by_key(transfer) {
            let t = f.outgoing.remove(i);
            if !matches!(t.state, OutState::Queued(_) | OutState::Opening) {
                link.queue(&Frame::Cancel { transfer: t.wire, mine: true, reason: "the sender cancelled".into() });
            }
            self.failed(owner, label, transfer, &t.name, kind, why.to_owned());
            self.start_queued(f);
        } else if let Some(wire) = f.in_by_key(transfer) {
            let Some(t) = f.forget_incoming(wire) else { return };
            if t.state == InState::Verifying {
                // The writer may be naming the file this instant: it reports
                // what really happened, as an orphan.
                self.abort_verifying(owner, t);
                link.queue(&Frame::Cancel { transfer: wire, mine: false, reason: "the receiver cancelled".into() });
                return;
            }
            if matches!(t.state, InState::Checking | InState::Offered) {
                link.queue(&Frame::Decline { transfer: wire, reason: "declined".into() });
            } else {
                link.queue(&Frame::Cancel { transfer: wire, mine: false, reason: "the receiver cancelled".into() });
            }
            self.failed(owner, label, transfer, &t.name, kind, why.to_owned());
        }
    }

    /// Moves file data from readers into the connection's output while
    /// little is waiting there. Returns the bytes added.
    pub fn pump(&mut self, c: &mut ConnFiles, link: &mut Link) -> usize {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        let mut added = 0;
        while link.pending_output() < HIGH_WATER {
            let Some(i) = f.outgoing.iter().position(Outgoing::can_send) else { break };
            let t = &mut f.outgoing[i];
            if t.current.is_none() {
                let Some(reader) = t.reader.as_ref() else { break };
                let block = match reader.blocks.try_recv() {
                    Ok(block) => block,
                    Err(TryRecvError::Empty) => {
                        // Ask for a Readable, then look once more in case the
                        // block arrived in between.
                        reader.waiting.store(true, Ordering::Release);
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
                        link.queue(&Frame::Done { transfer: t.wire, hash });
                        continue;
                    }
                    Block::Failed(reason) => {
                        let t = f.outgoing.remove(i);
                        // The peer hears no local path or error text.
                        let told = "the sender could not read the file".into();
                        link.queue(&Frame::Cancel { transfer: t.wire, mine: true, reason: told });
                        self.failed(owner, label, t.key, &t.name, FailKind::Source, reason);
                        self.start_queued(f);
                        continue;
                    }
                }
            }
            let Some((bytes, pos)) = t.current.as_mut() else { break };
            let allowed = (t.granted - t.sent).min(frame::MAX_DATA as u64) as usize;
            let n = (bytes.len() - *pos).min(allowed);
            if !link.queue_data(t.wire, &bytes[*pos..*pos + n]) {
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
                self.emit(Event::FileProgress {
                    id: owner,
                    transfer: t.key,
                    bytes: t.sent,
                    total: t.size,
                    bytes_per_sec: r.bytes_per_sec,
                    eta: r.eta,
                });
            }
        }
        added
    }

    fn on_frame(&mut self, c: &mut ConnFiles, frame: Frame, link: &mut Link) -> Result<(), Violation> {
        let (owner, label, conn) = (c.owner, c.label, c.conn);
        let f = &mut *c.files;
        match frame {
            Frame::Offer { transfer: wire, size, name } => {
                if f.incoming.contains_key(&wire) || f.was_cancelled_in(wire) {
                    return Err(Violation(format!("offered transfer number {wire} twice")));
                }
                let key = TransferId(self.next.fetch_add(1, Ordering::Relaxed));
                // Every incoming transfer counts, accepted ones included: each
                // may hold a window of data and a writer thread.
                let waiting = f.incoming.len();
                let safe = files::names::safe_name(&name).map_err(|e| e.to_string());
                let refusal = match &safe {
                    Err(why) => Some(format!("refused \"{}\": {why}", printable(&name))),
                    Ok(_) if waiting >= MAX_PENDING_OFFERS => Some(format!(
                        "declined: {MAX_PENDING_OFFERS} offers from this peer are already waiting or under way"
                    )),
                    Ok(_) => None,
                };
                if let Some(reason) = refusal {
                    link.queue(&Frame::Decline { transfer: wire, reason: reason.clone() });
                    f.forget_incoming(wire);
                    self.failed(owner, label, key, &printable(&name), FailKind::Refused, reason);
                    return Ok(());
                }
                let name = safe.unwrap_or_default();
                log::info!("{label} offered \"{}\" ({size} bytes)", printable(&name));
                f.incoming.insert(
                    wire,
                    Incoming {
                        key,
                        name,
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
                self.routes.insert(key, conn);
                // The person is asked once the file is known to fit.
                if self.space_checker.is_none() && !self.space_checker_failed {
                    self.space_checker = files::SpaceChecker::spawn(self.notify.clone(), &self.faults)
                        .inspect_err(|e| log::warn!("cannot start the free-space checker: {e}"))
                        .ok();
                    self.space_checker_failed = self.space_checker.is_none();
                }
                let asked = self.space_checker.as_ref().is_some_and(|s| s.check(key, self.downloads.clone(), size));
                if !asked {
                    // The writer checks again before it creates anything.
                    self.space_checked(c, link, key, None);
                }
            }
            Frame::Accept { transfer: wire } => {
                if let Some(i) = f.out_by_wire(wire) {
                    let t = &mut f.outgoing[i];
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
                if let Some(i) = f.out_by_wire(wire) {
                    let t = f.outgoing.remove(i);
                    let said = if reason.is_empty() { String::new() } else { format!(" ({})", printable(&reason)) };
                    let reason = format!("the peer declined the file{said}");
                    self.failed(owner, label, t.key, &t.name, FailKind::DeclinedByPeer, reason);
                    self.start_queued(f);
                }
            }
            Frame::Data { transfer: wire, bytes } => self.data(c, wire, &bytes)?,
            Frame::Done { transfer: wire, hash } => {
                let Some(t) = f.incoming.get_mut(&wire) else {
                    if f.was_cancelled_in(wire) {
                        return Ok(());
                    }
                    return Err(Violation("ended a file it never offered".into()));
                };
                if t.state != InState::Receiving {
                    return Err(Violation("ended a file that was not being received".into()));
                }
                if t.received != t.size {
                    return Err(Violation(format!("ended the file after {} of {} bytes", t.received, t.size)));
                }
                let last = std::mem::take(&mut t.pending);
                if !last.is_empty() {
                    t.deliver(Some(WriteMsg::Data(last)));
                }
                t.deliver(Some(WriteMsg::Done(hash)));
                t.state = InState::Verifying;
            }
            Frame::Cancel { transfer: wire, mine: true, reason } => {
                if let Some(t) = f.forget_incoming(wire) {
                    if t.state == InState::Verifying {
                        self.abort_verifying(owner, t);
                        return Ok(());
                    }
                    if t.state == InState::Checking {
                        // Withdrawn before the person ever saw it.
                        self.routes.remove(&t.key);
                        log::info!("{label} withdrew its offer of \"{}\"", printable(&t.name));
                        return Ok(());
                    }
                    let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(&reason)) };
                    let reason = format!("the peer stopped the transfer{said}");
                    self.failed(owner, label, t.key, &t.name, FailKind::CancelledByPeer, reason);
                }
            }
            Frame::Cancel { transfer: wire, mine: false, reason } => {
                if let Some(i) = f.out_by_wire(wire) {
                    let t = f.outgoing.remove(i);
                    let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(&reason)) };
                    let reason = format!("the peer stopped the transfer{said}");
                    self.failed(owner, label, t.key, &t.name, FailKind::CancelledByPeer, reason);
                    self.start_queued(f);
                }
            }
            Frame::Window { transfer: wire, granted } => {
                if let Some(i) = f.out_by_wire(wire) {
                    let t = &mut f.outgoing[i];
                    t.granted = t.granted.max(granted);
                }
            }
            Frame::Received { transfer: wire } => {
                if let Some(i) = f.out_by_wire(wire) {
                    if f.outgoing[i].state == OutState::Finishing {
                        let t = f.outgoing.remove(i);
                        self.routes.remove(&t.key);
                        log::info!("{label} sent \"{}\" ({} bytes), verified by the peer", printable(&t.name), t.size);
                        self.emit(Event::FileSent { id: owner, transfer: t.key, name: t.name, size: t.size });
                        self.start_queued(f);
                    }
                }
            }
            other => return Err(Violation(format!("sent a {} where a file frame belongs", other.kind_name()))),
        }
        Ok(())
    }

    /// File data for an incoming transfer: checked against the offer and
    /// the window, gathered into blocks for the writer.
    fn data(&mut self, c: &mut ConnFiles, wire: u32, bytes: &[u8]) -> Result<(), Violation> {
        let f = &mut *c.files;
        let Some(t) = f.incoming.get_mut(&wire) else {
            if f.was_cancelled_in(wire) {
                return Ok(()); // in flight when we stopped it
            }
            return Err(Violation("sent data for a file it never offered".into()));
        };
        if t.state != InState::Receiving {
            let what = match t.state {
                InState::Checking | InState::Offered | InState::Preparing => {
                    "sent file data before the file was accepted"
                }
                _ => "sent file data after the end of the file",
            };
            return Err(Violation(what.into()));
        }
        t.received += bytes.len() as u64;
        if t.received > t.size {
            return Err(Violation("sent more file data than the size it offered".into()));
        }
        if t.received > t.granted {
            return Err(Violation("sent more file data than its window allows".into()));
        }
        if t.pending.capacity() == 0 {
            t.pending = t.writer.as_ref().map(|w| w.buffer()).unwrap_or_default();
        }
        t.pending.extend_from_slice(bytes);
        if t.pending.len() >= files::BLOCK {
            let block = std::mem::take(&mut t.pending);
            t.deliver(Some(WriteMsg::Data(block)));
        }
        if let Some(r) = t.meter.add(bytes.len() as u64, t.received, t.size) {
            let event = Event::FileProgress {
                id: c.owner,
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

    /// A disk event for a transfer whose connection is gone: only received
    /// files still being verified are reported. False if the event is for
    /// no transfer at all.
    pub fn orphan_event(&mut self, event: DiskEvent) {
        let key = event.key();
        let Some((id, name)) = self.orphans.remove(&key) else { return };
        match event {
            DiskEvent::Stored { path, size, hash, .. } => {
                self.emit(Event::FileReceived { id, transfer: key, name, path, size, blake3: hash })
            }
            DiskEvent::WriteFailed { failure, .. } => {
                let Failure { kind, reason } = failure;
                self.emit(Event::FileFailed { id, transfer: key, name, kind, reason })
            }
            _ => {
                self.orphans.insert(key, (id, name));
            }
        }
    }

    /// A disk event for a transfer on this connection.
    pub fn disk_event(&mut self, c: &mut ConnFiles, link: &mut Link, event: DiskEvent) -> After {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        let mut after = After::default();
        match event {
            DiskEvent::Opened { key, name, size } => {
                let Some(i) = f.out_by_key(key) else { return after };
                let wire = f.next_wire;
                f.next_wire = f.next_wire.wrapping_add(1);
                let t = &mut f.outgoing[i];
                t.wire = wire;
                t.name = name.clone();
                t.size = size;
                t.state = OutState::Offered;
                link.queue(&Frame::Offer { transfer: wire, size, name: name.clone() });
                self.emit(Event::FileOutgoing { id: owner, transfer: key, name, size });
            }
            DiskEvent::OpenFailed { key, reason } => {
                if let Some(i) = f.out_by_key(key) {
                    let t = f.outgoing.remove(i);
                    self.failed(owner, label, key, &t.name, FailKind::Source, reason);
                    self.start_queued(f);
                }
            }
            DiskEvent::Readable { .. } => {} // the pump after this takes it
            DiskEvent::SpaceChecked { key, refusal } => self.space_checked(c, link, key, refusal),
            DiskEvent::ReadyToReceive { key } => {
                let Some(wire) = f.in_by_key(key) else { return after };
                if let Some(t) = f.incoming.get_mut(&wire) {
                    t.state = InState::Receiving;
                    t.granted = frame::WINDOW;
                    link.queue(&Frame::Accept { transfer: wire });
                }
            }
            DiskEvent::Consumed { key, bytes } => {
                let Some(wire) = f.in_by_key(key) else { return after };
                if let Some(t) = f.incoming.get_mut(&wire) {
                    let granted = bytes.saturating_add(frame::WINDOW).min(t.size);
                    if t.state == InState::Receiving && granted > t.granted {
                        t.granted = granted;
                        link.queue(&Frame::Window { transfer: wire, granted });
                    }
                }
            }
            DiskEvent::Stored { key, path, size, hash } => {
                let Some(wire) = f.in_by_key(key) else { return after };
                let Some(t) = f.incoming.remove(&wire) else { return after };
                self.routes.remove(&key);
                link.queue(&Frame::Received { transfer: wire });
                log::info!("{label} received \"{}\" into {} (blake3 {hash})", printable(&t.name), path.display());
                self.emit(Event::FileReceived { id: owner, transfer: key, name: t.name, path, size, blake3: hash });
            }
            DiskEvent::WriteFailed { key, failure } => {
                let Some(wire) = f.in_by_key(key) else { return after };
                let Some(t) = f.forget_incoming(wire) else { return after };
                // The peer hears what kind of failure it was, never our
                // error text (it names local paths).
                let told = failure.kind.told_peer().to_owned();
                if t.state == InState::Preparing {
                    link.queue(&Frame::Decline { transfer: wire, reason: told });
                } else {
                    link.queue(&Frame::Cancel { transfer: wire, mine: false, reason: told });
                }
                let was_paused = !t.stalled.is_empty();
                self.failed(owner, label, key, &t.name, failure.kind, failure.reason);
                after.resume_reading = was_paused && !f.paused();
            }
            DiskEvent::Drained { key } => {
                let Some(wire) = f.in_by_key(key) else { return after };
                if let Some(t) = f.incoming.get_mut(&wire) {
                    t.deliver(None);
                }
                after.resume_reading = !f.paused();
            }
        }
        after
    }

    /// When the next free-space check of this connection's offers runs out
    /// of patience.
    pub fn deadline(f: &Files) -> Option<Instant> {
        f.incoming.values().filter(|t| t.state == InState::Checking).map(|t| t.offered + SPACE_CHECK_PATIENCE).min()
    }

    /// A free-space check that hangs (a stuck network share) must not hide
    /// offers: past its patience the person is asked anyway, and the
    /// writer checks again before it creates anything.
    pub fn timers(&mut self, c: &mut ConnFiles, link: &mut Link, now: Instant) {
        let overdue: Vec<TransferId> = c
            .files
            .incoming
            .values()
            .filter(|t| t.state == InState::Checking && now >= t.offered + SPACE_CHECK_PATIENCE)
            .map(|t| t.key)
            .collect();
        for key in overdue {
            log::warn!("{} the free space could not be measured in time; asking anyway", c.label);
            self.space_checked(c, link, key, None);
        }
    }

    /// An offer was measured against the free space: the person is asked,
    /// or it is declined at once if it cannot fit.
    fn space_checked(&mut self, c: &mut ConnFiles, link: &mut Link, key: TransferId, refusal: Option<String>) {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        let Some(wire) = f.in_by_key(key) else { return };
        let Some(t) = f.incoming.get_mut(&wire) else { return };
        if t.state != InState::Checking {
            return;
        }
        let (name, size) = (t.name.clone(), t.size);
        let refused = refusal.map(|why| format!("declined: {why}"));
        let accepted = refused.is_none() && self.policy.accepts(c.peer.as_ref());
        // Shown either way, so the person knows what was offered.
        let shown = Event::FileIncoming {
            id: owner,
            transfer: key,
            name: name.clone(),
            size,
            refused: refused.clone(),
            accepted,
        };
        self.emit(shown);
        match refused {
            None => {
                t.state = InState::Offered;
                if accepted {
                    log::info!("{label} accepts files from this peer without asking");
                    self.accept(f, label, key);
                }
            }
            Some(reason) => {
                // The peer learns only that it does not fit, not how much is free.
                let told = FailKind::NoSpace.told_peer().into();
                link.queue(&Frame::Decline { transfer: wire, reason: told });
                f.forget_incoming(wire);
                self.failed(owner, label, key, &name, FailKind::NoSpace, reason);
            }
        }
    }

    /// Stops a transfer whose writer already has all its data; the writer's
    /// own report (stored, or failed) is what the person will see.
    fn abort_verifying(&mut self, owner: PeerId, t: Incoming) {
        if let Some(writer) = &t.writer {
            writer.abort();
        }
        self.routes.remove(&t.key);
        self.orphans.insert(t.key, (owner, t.name));
    }

    /// The connection is ending: every transfer on it fails, except files
    /// already being verified, which are still reported when stored.
    pub fn end_all(&mut self, c: &mut ConnFiles, reason: &str) {
        let (owner, label) = (c.owner, c.label);
        let why = format!("the connection ended: {reason}");
        for t in std::mem::take(&mut c.files.outgoing) {
            self.failed(owner, label, t.key, &t.name, FailKind::ConnectionEnded, why.clone());
        }
        for (_, t) in std::mem::take(&mut c.files.incoming) {
            if t.state == InState::Checking {
                self.routes.remove(&t.key); // never shown to the person
            } else if t.state == InState::Verifying && t.stalled.is_empty() {
                self.routes.remove(&t.key);
                self.orphans.insert(t.key, (owner, t.name));
            } else {
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
