//! Their offers: files the peer sends us, from the offer to the verdict.
//!
//! An offer is first measured against the free space (on the free-space
//! checker's thread, at most [`SPACE_CHECK_PATIENCE`] before the person is
//! asked anyway); then the person (or the engine's accept policy) accepts,
//! a writer thread makes its temporary file (`ReadyToReceive`: ACCEPT goes
//! out), DATA is checked against the offer and the window and gathered into
//! blocks for the writer, which reports what it wrote so the window moves
//! on. DONE hands the hash to the writer; `Stored` sends RECEIVED.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ConnFiles, Files, Meter, Orphan, Transfers, MAX_PENDING_OFFERS, MAX_WRITERS, SPACE_CHECK_PATIENCE};
use crate::files::tree::{Manifest, TreeEntry, MAX_ENTRIES};
use crate::files::{self, FailKind, Failure, TransferId, WriteJob, WriteMsg, Writer};
use crate::net::frame::{self, Frame};
use crate::net::session::{Link, Violation};
use crate::net::{printable, Event, FolderInfo, PeerId};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InState {
    /// A folder was offered: its entries are still arriving.
    Listing,
    /// Offered; being measured against the free space before the person
    /// is asked (a file that cannot fit is declined at once).
    Checking,
    /// Waiting for the person to accept or decline.
    Offered,
    /// Accepted while [`MAX_WRITERS`] of this connection's files are being
    /// written: waits, unanswered, for one of them to end.
    Waiting,
    /// Accepted; the writer is checking space and creating its file.
    Preparing,
    /// A partial file of it is here from before: RESUME went out, and the
    /// sender's PROOF is awaited or being checked by the writer.
    Resuming {
        proved: bool,
    },
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
    /// Where its resumable partial file goes (the sender's key is known).
    pub partial: Option<std::path::PathBuf>,
    /// Bytes a partial file held when we asked to resume.
    pub have: u64,
    /// We allow data up to this byte.
    pub granted: u64,
    /// What the writer has written (its last report).
    pub written: u64,
    /// How far past what the writer has written we let the sender go: it
    /// grows while the disk keeps up with a sender pushing against it and
    /// shrinks when the disk falls behind (see `consumed`).
    pub window: u64,
    pub meter: Meter,
    /// When the offer came (a free-space check that takes too long is
    /// given up on: see `SPACE_CHECK_PATIENCE`).
    pub offered: std::time::Instant,
    /// An offered folder rather than a file.
    pub folder: Option<FolderIn>,
}

/// A folder the peer offers us.
pub(crate) struct FolderIn {
    /// Entries the offer said it has.
    pub expected: u32,
    /// Entries so far, while they arrive.
    pub listing: Vec<TreeEntry>,
    /// The entries, checked, once all are here.
    pub manifest: Option<std::sync::Arc<Manifest>>,
    /// Files the writer has verified.
    pub done: u64,
    /// What the listing takes in memory, about.
    pub bytes: usize,
}

/// What one peer may have granted beyond what the disks took, over all its
/// files, before no window widens (each file keeps at least
/// [`frame::WINDOW`]).
const MAX_OUTSTANDING: u64 = 64 * 1024 * 1024;
/// Folders from one peer that may wait for an answer (each holds its list).
const MAX_FOLDERS_WAITING: usize = 4;
/// The most memory one folder's listing may take (a listing of 200 000
/// entries of three 15-byte components takes about 30 MiB).
const MAX_LISTING_BYTES: usize = 48 * 1024 * 1024;
/// The most all the folders one peer is sending may take, waiting or
/// under way.
const MAX_LISTINGS_BYTES: usize = 96 * 1024 * 1024;

impl FolderIn {
    fn info(&self) -> Option<FolderInfo> {
        let m = self.manifest.as_ref()?;
        Some(FolderInfo { files: m.files, folders: m.entries.len() as u64 - m.files })
    }
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

impl Transfers {
    /// The person accepted an offer: a writer prepares the file.
    pub fn accept(&mut self, f: &mut Files, owner: PeerId, label: &str, transfer: TransferId) {
        let Some(wire) = f.in_by_key(transfer) else { return };
        let writing = f.incoming.values().filter(|t| t.writer.is_some()).count();
        let Some(t) = f.incoming.get_mut(&wire) else { return };
        if t.state != InState::Offered {
            return;
        }
        log::info!("{label} accepted \"{}\"", printable(&t.name));
        // From now on its bytes are promised: later offers must fit beside
        // them, even while it waits for a writer.
        self.promised.insert(transfer, t.size);
        if writing >= MAX_WRITERS {
            log::info!("{label}: \"{}\" waits for one of {MAX_WRITERS} files being written", printable(&t.name));
            t.state = InState::Waiting;
            let name = printable(&t.name).into_owned();
            self.emit(Event::FileWaiting { id: owner, transfer, name, writing });
            return;
        }
        self.start_writer(f, wire);
    }

    /// Accepted files that waited for a writer get one, oldest offer
    /// first, while fewer than [`MAX_WRITERS`] are being written.
    pub(super) fn start_waiting(&mut self, f: &mut Files) {
        loop {
            if f.incoming.values().filter(|t| t.writer.is_some()).count() >= MAX_WRITERS {
                return;
            }
            let next = f.incoming.iter().filter(|(_, t)| t.state == InState::Waiting).min_by_key(|(_, t)| t.key.0);
            let Some((&wire, _)) = next else { return };
            self.start_writer(f, wire);
        }
    }

    /// A writer prepares an accepted file (or folder).
    fn start_writer(&mut self, f: &mut Files, wire: u32) {
        let Some(t) = f.incoming.get_mut(&wire) else { return };
        let transfer = t.key;
        // What the other accepted files still need; this one's own promise
        // is what the writer checks against the free space.
        let own = self.promised.get(&transfer).copied().unwrap_or(0);
        let reserved = self.reserved().saturating_sub(own);
        self.writers.retain(|w| !w.is_finished());
        if let Some(manifest) = t.folder.as_ref().and_then(|d| d.manifest.clone()) {
            let (writer, thread) = files::tree::spawn_folder_writer(
                transfer,
                self.downloads.clone(),
                manifest,
                t.partial.clone(),
                reserved,
                frame::MAX_WINDOW,
                self.faults.clone(),
                self.notify.clone(),
            );
            self.writers.extend(thread);
            t.writer = Some(writer);
            t.state = InState::Preparing;
            return;
        }
        let job = WriteJob {
            key: transfer,
            dir: self.downloads.clone(),
            name: t.name.clone(),
            size: t.size,
            window: frame::MAX_WINDOW,
            reserved,
            partial: t.partial.clone(),
        };
        let (writer, thread) = files::spawn_writer(job, self.faults.clone(), self.notify.clone());
        self.writers.extend(thread);
        t.writer = Some(writer);
        t.state = InState::Preparing;
    }

    /// The peer's OFFER.
    pub(super) fn offer(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        wire: u32,
        size: u64,
        name: String,
    ) -> Result<(), Violation> {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        if f.incoming.contains_key(&wire) || f.was_cancelled_in(wire) {
            return Err(Violation(format!("offered transfer number {wire} twice")));
        }
        let key = TransferId(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        // Every incoming transfer counts, accepted ones included: each
        // may hold a window of data and a writer thread.
        let waiting = f.incoming.len();
        let safe = files::names::safe_name(&name).map_err(|e| e.to_string());
        let refusal = match &safe {
            Err(why) => Some(format!("refused \"{}\": {why}", printable(&name))),
            Ok(_) if waiting >= MAX_PENDING_OFFERS => {
                Some(format!("declined: {MAX_PENDING_OFFERS} offers from this peer are already waiting or under way"))
            }
            Ok(_) => None,
        };
        if let Some(reason) = refusal {
            link.queue_file(&Frame::Decline { transfer: wire, reason: reason.clone() });
            f.forget_incoming(wire);
            self.failed(owner, label, key, &printable(&name), FailKind::Refused, reason);
            return Ok(());
        }
        let name = safe.unwrap_or_default();
        let partial = c.peer.map(|key| files::resume::partial_path(&self.downloads, &key, &name, size));
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
                partial,
                have: 0,
                granted: 0,
                window: frame::WINDOW,
                written: 0,
                meter: Meter::new(),
                offered: Instant::now(),
                folder: None,
            },
        );
        self.routes.insert(key, c.conn);
        self.check_space(c, link, key, size);
        Ok(())
    }

    /// The person is asked once the offer is known to fit.
    fn check_space(&mut self, c: &mut ConnFiles, link: &mut Link, key: TransferId, size: u64) {
        if self.space_checker.is_none() && !self.space_checker_failed {
            self.space_checker = files::SpaceChecker::spawn(self.notify.clone(), &self.faults)
                .inspect_err(|e| log::warn!("cannot start the free-space checker: {e}"))
                .ok();
            self.space_checker_failed = self.space_checker.is_none();
        }
        let reserved = self.reserved();
        let asked = self.space_checker.as_ref().is_some_and(|s| s.check(key, self.downloads.clone(), size, reserved));
        if !asked {
            // The writer checks again before it creates anything.
            self.space_checked(c, link, key, None);
        }
    }

    /// The peer's OFFER FOLDER: its entries follow.
    pub(super) fn offer_folder(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        wire: u32,
        (size, count, name): (u64, u32, String),
    ) -> Result<(), Violation> {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        if f.incoming.contains_key(&wire) || f.was_cancelled_in(wire) {
            return Err(Violation(format!("offered transfer number {wire} twice")));
        }
        if f.incoming.values().any(|t| t.state == InState::Listing) {
            return Err(Violation("offered a folder while another one's entries were still arriving".into()));
        }
        let key = TransferId(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        // Each folder waiting for an answer holds its listing.
        let unanswered = f.incoming.values().filter(|t| t.folder.is_some() && t.writer.is_none()).count();
        let refusal = if f.incoming.len() >= MAX_PENDING_OFFERS {
            Some(format!("declined: {MAX_PENDING_OFFERS} offers from this peer are already waiting or under way"))
        } else if unanswered >= MAX_FOLDERS_WAITING {
            Some(format!("declined: {MAX_FOLDERS_WAITING} folders from this peer are already waiting for an answer"))
        } else if count > MAX_ENTRIES {
            Some(format!("declined: the folder has {count} entries; at most {MAX_ENTRIES} are taken in one offer"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            link.queue_file(&Frame::Decline { transfer: wire, reason: reason.clone() });
            f.forget_incoming(wire);
            self.failed(owner, label, key, &printable(&name), FailKind::Refused, reason);
            return Ok(());
        }
        log::info!("{label} offers the folder \"{}\" ({count} entries, {size} bytes)", printable(&name));
        f.incoming.insert(
            wire,
            Incoming {
                key,
                name,
                size,
                state: InState::Listing,
                writer: None,
                pending: Vec::new(),
                stalled: Default::default(),
                received: 0,
                partial: None,
                have: 0,
                granted: 0,
                window: frame::WINDOW,
                written: 0,
                meter: Meter::new(),
                offered: Instant::now(),
                folder: Some(FolderIn { expected: count, listing: Vec::new(), manifest: None, done: 0, bytes: 0 }),
            },
        );
        self.routes.insert(key, c.conn);
        if count == 0 {
            self.listed(c, link, wire);
        }
        Ok(())
    }

    /// The peer's ENTRIES of a folder it offered.
    pub(super) fn entries(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        wire: u32,
        entries: Vec<TreeEntry>,
    ) -> Result<(), Violation> {
        // What the folders this peer sends take already.
        let others: usize = c.files.incoming.values().filter_map(|t| t.folder.as_ref()).map(|d| d.bytes).sum();
        let Some(t) = c.files.incoming.get_mut(&wire) else {
            if c.files.was_cancelled_in(wire) {
                return Ok(());
            }
            return Err(Violation("sent folder entries for no folder it offered".into()));
        };
        let (InState::Listing, Some(folder)) = (&t.state, t.folder.as_mut()) else {
            return Err(Violation("sent folder entries after the folder's listing".into()));
        };
        if folder.listing.len() + entries.len() > folder.expected as usize {
            return Err(Violation(format!("sent more folder entries than the {} it offered", folder.expected)));
        }
        // What the entries take in memory, their strings' headers included.
        let each = |e: &TreeEntry| {
            std::mem::size_of::<TreeEntry>()
                + e.path.iter().map(|c| std::mem::size_of::<String>() + c.len()).sum::<usize>()
        };
        let more = entries.iter().map(each).sum::<usize>();
        folder.bytes += more;
        if folder.bytes > MAX_LISTING_BYTES {
            return Err(Violation(format!("sent a folder listing over {} MiB", MAX_LISTING_BYTES >> 20)));
        }
        if others + more > MAX_LISTINGS_BYTES {
            return Err(Violation(format!("sent folder listings over {} MiB at once", MAX_LISTINGS_BYTES >> 20)));
        }
        folder.listing.extend(entries);
        if folder.listing.len() == folder.expected as usize {
            self.listed(c, link, wire);
        }
        Ok(())
    }

    /// A folder's listing is complete: checked, then measured against the
    /// free space and shown like a file offer, or declined.
    fn listed(&mut self, c: &mut ConnFiles, link: &mut Link, wire: u32) {
        let (owner, label) = (c.owner, c.label);
        let peer = c.peer;
        let Some(t) = c.files.incoming.get_mut(&wire) else { return };
        let Some(folder) = t.folder.as_mut() else { return };
        let listing = std::mem::take(&mut folder.listing);
        match Manifest::check(&t.name, t.size, listing) {
            Ok(manifest) => {
                t.name = manifest.name.clone();
                t.partial = peer.map(|key| manifest.partial_path(&self.downloads, &key));
                folder.manifest = Some(std::sync::Arc::new(manifest));
                t.state = InState::Checking;
                t.offered = Instant::now();
                let (key, size) = (t.key, t.size);
                self.check_space(c, link, key, size);
            }
            Err(why) => {
                let reason = format!("declined: the folder cannot be taken: {why}");
                let name = printable(&t.name).into_owned();
                let key = t.key;
                link.queue_file(&Frame::Decline { transfer: wire, reason: reason.clone() });
                c.files.forget_incoming(wire);
                self.failed(owner, label, key, &name, FailKind::Refused, reason);
            }
        }
    }

    /// The peer's FILE DONE inside a folder's data: the writer checks that
    /// file.
    pub(super) fn file_done(f: &mut Files, wire: u32, index: u32, hash: [u8; 32]) -> Result<(), Violation> {
        let Some(t) = f.incoming.get_mut(&wire) else {
            if f.was_cancelled_in(wire) {
                return Ok(());
            }
            return Err(Violation("ended a folder's file for no folder it offered".into()));
        };
        let is_file = t
            .folder
            .as_ref()
            .and_then(|d| d.manifest.as_ref())
            .is_some_and(|m| m.entries.get(index as usize).is_some_and(|e| e.size.is_some()));
        if t.state != InState::Receiving || !is_file {
            return Err(Violation(format!("ended entry {index}, which is no file being received")));
        }
        // The writer gets the file's last bytes before its end.
        let last = std::mem::take(&mut t.pending);
        if !last.is_empty() {
            t.deliver(Some(WriteMsg::Data(last)));
        }
        t.deliver(Some(WriteMsg::FileEnd { index, hash }));
        Ok(())
    }

    /// A folder's writer verified another file.
    pub(super) fn file_in_folder(f: &mut Files, key: TransferId, done: u64) {
        let Some(wire) = f.in_by_key(key) else { return };
        if let Some(folder) = f.incoming.get_mut(&wire).and_then(|t| t.folder.as_mut()) {
            folder.done = done;
        }
    }

    /// File data for an incoming transfer: checked against the offer and
    /// the window, gathered into blocks for the writer.
    pub(super) fn data(&mut self, c: &mut ConnFiles, wire: u32, bytes: &[u8]) -> Result<(), Violation> {
        let f = &mut *c.files;
        let Some(t) = f.incoming.get_mut(&wire) else {
            if f.was_cancelled_in(wire) {
                return Ok(()); // in flight when we stopped it
            }
            return Err(Violation("sent data for a file it never offered".into()));
        };
        if t.state != InState::Receiving {
            let what = match t.state {
                InState::Listing
                | InState::Checking
                | InState::Offered
                | InState::Waiting
                | InState::Preparing
                | InState::Resuming { .. } => "sent file data before the file was accepted",
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
            let files = t.folder.as_ref().and_then(|d| d.manifest.as_ref().map(|m| (d.done, m.files)));
            let event = Event::FileProgress {
                id: c.owner,
                transfer: t.key,
                bytes: t.received,
                total: t.size,
                bytes_per_sec: r.bytes_per_sec,
                eta: r.eta,
                files,
            };
            self.emit(event);
        }
        Ok(())
    }

    /// The sender's DONE: the writer checks the hash.
    pub(super) fn done(f: &mut Files, wire: u32, hash: [u8; 32]) -> Result<(), Violation> {
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
        Ok(())
    }

    /// The sender's CANCEL of a file it sends us.
    pub(super) fn sender_cancelled(&mut self, c: &mut ConnFiles, wire: u32, reason: &str) {
        let (owner, label) = (c.owner, c.label);
        let Some(t) = c.files.forget_incoming(wire) else { return };
        let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(reason)) };
        let why = format!("the peer stopped the transfer{said}");
        if t.state == InState::Verifying {
            return self.abort_verifying(owner, label, t, FailKind::CancelledByPeer, why);
        }
        if matches!(t.state, InState::Listing | InState::Checking) {
            // Withdrawn before the person ever saw it.
            self.routes.remove(&t.key);
            log::info!("{label} withdrew its offer of \"{}\"", printable(&t.name));
            return;
        }
        self.failed(owner, label, t.key, &t.name, FailKind::CancelledByPeer, why);
    }

    /// The writer found part of the file from an earlier attempt: RESUME
    /// asks the sender to prove it.
    pub(super) fn partial(f: &mut Files, link: &mut Link, key: TransferId, have: u64) {
        let Some(wire) = f.in_by_key(key) else { return };
        if let Some(t) = f.incoming.get_mut(&wire) {
            if t.state == InState::Preparing {
                t.state = InState::Resuming { proved: false };
                t.have = have;
                link.queue_file(&Frame::Resume { transfer: wire, have });
            }
        }
    }

    /// The sender's PROOF of the partial file: the writer checks its blocks.
    pub(super) fn proof(f: &mut Files, wire: u32, hashes: Vec<[u8; 32]>) -> Result<(), Violation> {
        let Some(t) = f.incoming.get_mut(&wire) else {
            if f.was_cancelled_in(wire) {
                return Ok(());
            }
            return Err(Violation("sent a proof for a file it never offered".into()));
        };
        if t.state != (InState::Resuming { proved: false }) {
            return Err(Violation("sent a proof nobody asked for".into()));
        }
        let want = frame::proof_blocks(t.have);
        if !hashes.is_empty() && hashes.len() as u64 != want {
            return Err(Violation(format!("sent {} block hashes where {want} prove the partial file", hashes.len())));
        }
        t.state = InState::Resuming { proved: true };
        t.deliver(Some(WriteMsg::Proof(hashes)));
        Ok(())
    }

    /// The writer made its file, or verified what it had: ACCEPT (or
    /// ACCEPT FROM where the verified part ends) goes out.
    pub(super) fn ready_to_receive(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        key: TransferId,
        offset: u64,
        discarded: u64,
    ) {
        let Some(wire) = c.files.in_by_key(key) else { return };
        let Some(t) = c.files.incoming.get_mut(&wire) else { return };
        t.state = InState::Receiving;
        t.received = offset;
        t.written = offset;
        t.granted = offset.saturating_add(frame::WINDOW);
        if let Some(left) = self.promised.get_mut(&key) {
            *left = t.size.saturating_sub(offset);
        }
        if offset > 0 {
            link.queue_file(&Frame::AcceptFrom { transfer: wire, offset });
        } else {
            link.queue_file(&Frame::Accept { transfer: wire });
        }
        if t.have > 0 {
            let (name, size) = (t.name.clone(), t.size);
            self.resumed(c.owner, c.label, key, name, offset, size, discarded);
        }
    }

    /// The writer has written `bytes`: the window moves on.
    pub(super) fn consumed(&mut self, f: &mut Files, link: &mut Link, key: TransferId, bytes: u64) {
        let Some(wire) = f.in_by_key(key) else { return };
        // What this peer may have sent that no disk has taken yet, over all
        // its files: windows widen only while that stays bounded.
        let outstanding: u64 = f
            .incoming
            .values()
            .filter(|t| t.state == InState::Receiving)
            .map(|t| t.granted.saturating_sub(t.written))
            .sum();
        if let Some(t) = f.incoming.get_mut(&wire) {
            t.written = t.written.max(bytes);
            // What is written is on the disk already: only the rest is
            // still promised.
            if let Some(left) = self.promised.get_mut(&key) {
                *left = t.size.saturating_sub(bytes);
            }
            // What arrived and still waits for the disk. (What we granted
            // but did not receive yet is on the network: a long link holds
            // a round trip's worth, which only a wider window fills.)
            let queued = t.received.saturating_sub(bytes);
            if queued > t.window / 2 {
                t.window = (t.window / 2).max(frame::WINDOW);
            } else if queued < t.window / 4 {
                let wider = (t.window * 2).min(frame::MAX_WINDOW);
                if outstanding.saturating_add(wider - t.window) <= MAX_OUTSTANDING {
                    t.window = wider;
                }
            }
            let granted = bytes.saturating_add(t.window).min(t.size);
            if t.state == InState::Receiving && granted > t.granted {
                t.granted = granted;
                link.queue_file(&Frame::Window { transfer: wire, granted });
            }
        }
    }

    /// The writer verified and stored the file: RECEIVED goes out.
    pub(super) fn stored(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        key: TransferId,
        path: std::path::PathBuf,
        size: u64,
        hash: String,
    ) {
        let Some(wire) = c.files.in_by_key(key) else { return };
        let Some(t) = c.files.incoming.remove(&wire) else { return };
        self.routes.remove(&key);
        self.promised.remove(&key);
        link.queue_file(&Frame::Received { transfer: wire });
        log::info!("{} received \"{}\" into {} (blake3 {hash})", c.label, printable(&t.name), path.display());
        self.emit(Event::FileReceived { id: c.owner, transfer: key, name: t.name, path, size, blake3: hash });
    }

    /// The writer failed. Returns whether reading, paused for it, may go on.
    pub(super) fn write_failed(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        key: TransferId,
        failure: Failure,
    ) -> bool {
        let f = &mut *c.files;
        let Some(wire) = f.in_by_key(key) else { return false };
        let Some(t) = f.forget_incoming(wire) else { return false };
        // The peer hears what kind of failure it was, never our error text
        // (it names local paths).
        let told = failure.kind.told_peer().to_owned();
        if t.state == InState::Preparing {
            link.queue_file(&Frame::Decline { transfer: wire, reason: told });
        } else {
            link.queue_file(&Frame::Cancel { transfer: wire, mine: false, reason: told });
        }
        let was_paused = !t.stalled.is_empty();
        self.failed(c.owner, c.label, key, &t.name, failure.kind, failure.reason);
        was_paused && !f.paused()
    }

    /// A full writer took a block. Returns whether reading may go on.
    pub(super) fn drained(f: &mut Files, key: TransferId) -> bool {
        let Some(wire) = f.in_by_key(key) else { return false };
        if let Some(t) = f.incoming.get_mut(&wire) {
            t.deliver(None);
        }
        !f.paused()
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
    pub(super) fn space_checked(
        &mut self,
        c: &mut ConnFiles,
        link: &mut Link,
        key: TransferId,
        refusal: Option<String>,
    ) {
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
            folder: t.folder.as_ref().and_then(FolderIn::info),
        };
        self.emit(shown);
        match refused {
            None => {
                t.state = InState::Offered;
                if accepted {
                    log::info!("{label} accepts files from this peer without asking");
                    self.accept(f, owner, label, key);
                }
            }
            Some(reason) => {
                // The peer learns only that it does not fit, not how much is free.
                let told = FailKind::NoSpace.told_peer().into();
                link.queue_file(&Frame::Decline { transfer: wire, reason: told });
                f.forget_incoming(wire);
                self.failed(owner, label, key, &name, FailKind::NoSpace, reason);
            }
        }
    }

    /// Stops a transfer whose writer already has all its data; the writer's
    /// own report (stored, or failed) is what the person will see.
    pub(super) fn abort_verifying(&mut self, owner: PeerId, label: &str, t: Incoming, kind: FailKind, why: String) {
        match &t.writer {
            // All its data is with the writer: it may be naming the file
            // this instant, and reports what really happened.
            Some(writer) if t.stalled.is_empty() => {
                writer.abort();
                self.routes.remove(&t.key);
                let cancelled = Some((kind, why));
                self.orphans.insert(t.key, Orphan { id: owner, name: t.name, cancelled });
            }
            // Data never reached it: it can only fail, and is dropped.
            _ => self.failed(owner, label, t.key, &t.name, kind, why),
        }
    }
}
