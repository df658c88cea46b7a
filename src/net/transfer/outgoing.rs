//! Our offers: files we send, from the queue to the peer's verdict.
//!
//! A file waits in the queue until one of [`MAX_ACTIVE_OUT`] slots is free,
//! then a reader thread opens it (`Opened`: the OFFER goes out), the peer
//! accepts and grants a window, and [`Transfers::pump`] cuts the reader's
//! blocks into DATA frames while little waits on the connection. DONE
//! carries the BLAKE3 hash; RECEIVED from the peer ends it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crossbeam_channel::TryRecvError;

use super::{ConnFiles, ConnKey, Files, Meter, Transfers, HIGH_WATER, MAX_ACTIVE_OUT};
use crate::files::{self, Block, FailKind, Reader, TransferId};
use crate::net::frame::{self, Frame};
use crate::net::session::{Link, Violation};
use crate::net::{printable, Event, FolderInfo};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Waiting for a free slot; the file is not open yet.
    Queued(PathBuf),
    /// The reader is opening the file.
    Opening,
    /// OFFER sent; waiting for ACCEPT or DECLINE (or, after a PROOF,
    /// ACCEPT FROM).
    Offered,
    /// The receiver asked to resume: the reader is hashing its prefix.
    Proving,
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
    /// What the receiver said it holds from before (RESUME), once proven.
    pub have: u64,
    /// The receiver asked to resume (it may, once per offer).
    pub asked_resume: bool,
    /// The receiver allows data up to this byte.
    pub granted: u64,
    pub meter: Meter,
    /// A folder: its entries still to go out, and its files.
    pub folder: Option<FolderOut>,
}

/// A folder we send.
pub(crate) struct FolderOut {
    /// ENTRIES frames not queued yet: they go as the connection drains,
    /// like data, so a huge folder never floods the output.
    pub listing: std::collections::VecDeque<Frame>,
    pub files: u64,
    /// Files the receiver has all the bytes of.
    pub done: u64,
    /// Each entry's size (`None`: a folder), to count files on a resume.
    pub kinds: Vec<Option<u64>>,
    /// Its offer went out: its listing goes on before another folder's.
    pub started: bool,
}

impl Outgoing {
    /// Has data it may send now, or its end to take from the reader (a
    /// folder's file ends come between its data, at any offset).
    pub fn can_send(&self) -> bool {
        self.state == OutState::Sending
            && (self.sent < self.granted || self.sent >= self.size || (self.folder.is_some() && self.current.is_none()))
    }
}

impl Transfers {
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
            have: 0,
            asked_resume: false,
            granted: 0,
            meter: Meter::new(),
            folder: None,
        });
        self.start_queued(f);
    }

    /// Opens queued files while fewer than [`MAX_ACTIVE_OUT`] are active.
    pub(super) fn start_queued(&mut self, f: &mut Files) {
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

    /// Moves file data from readers into the connection's output while
    /// little is waiting there. Returns the bytes added.
    pub fn pump(&mut self, c: &mut ConnFiles, link: &mut Link) -> usize {
        let (owner, label) = (c.owner, c.label);
        let f = &mut *c.files;
        let mut added = 0;
        while link.pending_output() < HIGH_WATER {
            // A folder's offer and listing go out before anything waits for
            // an answer to it, one folder's whole before the next one's.
            let listing = |t: &Outgoing| t.folder.as_ref().is_some_and(|d| !d.listing.is_empty());
            let started = |t: &Outgoing| t.folder.as_ref().is_some_and(|d| d.started && !d.listing.is_empty());
            let next = f.outgoing.iter().position(started).or_else(|| f.outgoing.iter().position(listing));
            if let Some(folder) = next.and_then(|i| f.outgoing[i].folder.as_mut()) {
                folder.started = true;
                if let Some(frame) = folder.listing.pop_front() {
                    link.queue_file(&frame);
                }
                continue;
            }
            // Turn by turn, a frame each: a big file never holds back a
            // small one (or a folder) offered after it.
            let n = f.outgoing.len();
            let Some(i) = (0..n).map(|k| (f.turn + k) % n).find(|&i| f.outgoing[i].can_send()) else { break };
            f.turn = i + 1;
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
                    Block::FileEnd { index, hash } => {
                        link.queue_file(&Frame::FileDone { transfer: t.wire, index, hash });
                        if let Some(folder) = t.folder.as_mut() {
                            folder.done += 1;
                        }
                        continue;
                    }
                    Block::End(hash) => {
                        t.state = OutState::Finishing;
                        t.reader = None;
                        link.queue_file(&Frame::Done { transfer: t.wire, hash });
                        continue;
                    }
                    Block::Failed(reason) => {
                        let t = f.outgoing.remove(i);
                        // The peer hears no local path or error text.
                        let told = "the sender could not read the file".into();
                        link.queue_file(&Frame::Cancel { transfer: t.wire, mine: true, reason: told });
                        self.failed(owner, label, t.key, &t.name, FailKind::Source, reason);
                        self.start_queued(f);
                        continue;
                    }
                }
            }
            let Some((bytes, pos)) = t.current.as_mut() else { break };
            let allowed = t.granted.saturating_sub(t.sent).min(frame::MAX_DATA as u64) as usize;
            if allowed == 0 {
                // A folder took its next block with the window closed: it
                // waits for a WINDOW (can_send is false now).
                continue;
            }
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
                    files: t.folder.as_ref().map(|d| (d.done, d.files)),
                });
            }
        }
        added
    }

    /// A reader opened its file: the offer goes out.
    pub(super) fn opened(&mut self, c: &mut ConnFiles, link: &mut Link, key: TransferId, name: String, size: u64) {
        let f = &mut *c.files;
        let Some(i) = f.out_by_key(key) else { return };
        let wire = f.next_wire;
        f.next_wire = f.next_wire.wrapping_add(1);
        let t = &mut f.outgoing[i];
        t.wire = wire;
        t.name = name.clone();
        t.size = size;
        t.state = OutState::Offered;
        link.queue_file(&Frame::Offer { transfer: wire, size, name: name.clone() });
        self.emit(Event::FileOutgoing { id: c.owner, transfer: key, name, size, folder: None });
    }

    /// A reader listed its folder: the offer goes out, its entries after it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn folder_opened(
        &mut self,
        c: &mut ConnFiles,
        key: TransferId,
        name: String,
        size: u64,
        entries: Vec<files::tree::TreeEntry>,
        skipped: Vec<String>,
    ) {
        let f = &mut *c.files;
        let Some(i) = f.out_by_key(key) else { return };
        let wire = f.next_wire;
        f.next_wire = f.next_wire.wrapping_add(1);
        let files = entries.iter().filter(|e| e.size.is_some()).count() as u64;
        let folders = entries.len() as u64 - files;
        let t = &mut f.outgoing[i];
        t.wire = wire;
        t.name = name.clone();
        t.size = size;
        t.state = OutState::Offered;
        let count = entries.len() as u32;
        // The offer goes at the head of its listing, from the pump: one
        // folder's offer and entries never interleave with another's.
        let mut listing: std::collections::VecDeque<Frame> = frame::entries_frames(wire, &entries).into();
        listing.push_front(Frame::OfferFolder { transfer: wire, size, entries: count, name: name.clone() });
        let kinds = entries.iter().map(|e| e.size).collect();
        t.folder = Some(FolderOut { listing, files, done: 0, kinds, started: false });
        if !skipped.is_empty() {
            let list = skipped.iter().take(20).map(|s| printable(s).into_owned()).collect::<Vec<_>>().join(", ");
            let more = if skipped.len() > 20 { format!(" and {} more", skipped.len() - 20) } else { String::new() };
            let what =
                format!("left out of \"{}\" (links and special files are not sent): {list}{more}", printable(&name));
            log::info!("{} {what}", c.label);
            self.emit(Event::Error { id: c.owner, reason: what });
        }
        log::info!(
            "{} offers the folder \"{}\": {files} files in {folders} folders, {size} bytes",
            c.label,
            printable(&name)
        );
        self.emit(Event::FileOutgoing {
            id: c.owner,
            transfer: key,
            name,
            size,
            folder: Some(FolderInfo { files, folders }),
        });
    }

    /// A reader could not open its file.
    pub(super) fn open_failed(&mut self, c: &mut ConnFiles, key: TransferId, reason: String) {
        let f = &mut *c.files;
        if let Some(i) = f.out_by_key(key) {
            let t = f.outgoing.remove(i);
            self.failed(c.owner, c.label, key, &t.name, FailKind::Source, reason);
            self.start_queued(f);
        }
    }

    /// The peer's ACCEPT (`offset` 0) or ACCEPT FROM: data may flow from
    /// `offset`, up to a window beyond it.
    pub(super) fn peer_accepted(&mut self, c: &mut ConnFiles, wire: u32, offset: u64) -> Result<(), Violation> {
        let Some(i) = c.files.out_by_wire(wire) else { return Ok(()) };
        let t = &mut c.files.outgoing[i];
        if t.state == OutState::Proving {
            return Err(Violation("accepted a file before the proof it asked for".into()));
        }
        if t.state != OutState::Offered {
            return Ok(());
        }
        if offset > t.have {
            return Err(Violation(format!("accepted from byte {offset}, past the {} bytes it proved", t.have)));
        }
        t.state = OutState::Sending;
        t.sent = offset;
        t.granted = offset.saturating_add(frame::WINDOW);
        if let Some(folder) = t.folder.as_mut() {
            let (first, _) = files::tree::split(&folder.kinds, offset);
            folder.done = folder.kinds[..first].iter().filter(|k| k.is_some()).count() as u64;
        }
        if let Some(reader) = t.reader.as_ref() {
            reader.start(offset);
        }
        if t.have > 0 {
            let (key, name, size, discarded) = (t.key, t.name.clone(), t.size, t.have - offset);
            self.resumed(c.owner, c.label, key, name, offset, size, discarded);
        }
        Ok(())
    }

    /// The peer's RESUME: it holds `have` bytes of this file from before;
    /// the reader hashes ours to prove them.
    pub(super) fn peer_resume(f: &mut Files, wire: u32, have: u64) -> Result<(), Violation> {
        let Some(i) = f.out_by_wire(wire) else { return Ok(()) };
        let t = &mut f.outgoing[i];
        if t.state != OutState::Offered || t.asked_resume {
            return Err(Violation("asked to resume a file that was not waiting for an answer".into()));
        }
        t.asked_resume = true;
        if have == 0 || have > t.size {
            return Err(Violation(format!("asked to resume after {have} bytes of a {}-byte file", t.size)));
        }
        t.state = OutState::Proving;
        t.have = have;
        if let Some(reader) = t.reader.as_ref() {
            reader.prove(have);
        }
        Ok(())
    }

    /// The reader hashed the prefix: PROOF goes out.
    pub(super) fn proved(f: &mut Files, link: &mut Link, key: TransferId, hashes: Vec<[u8; 32]>) {
        let Some(i) = f.out_by_key(key) else { return };
        let t = &mut f.outgoing[i];
        if t.state == OutState::Proving {
            if hashes.is_empty() {
                t.have = 0; // nothing proven: only a plain ACCEPT will do
            }
            t.state = OutState::Offered;
            link.queue_file(&Frame::Proof { transfer: t.wire, hashes });
        }
    }

    /// The peer's DECLINE.
    pub(super) fn peer_declined(&mut self, c: &mut ConnFiles, wire: u32, reason: &str) {
        let f = &mut *c.files;
        if let Some(i) = f.out_by_wire(wire) {
            let t = f.outgoing.remove(i);
            let said = if reason.is_empty() { String::new() } else { format!(" ({})", printable(reason)) };
            let reason = format!("the peer declined the file{said}");
            self.failed(c.owner, c.label, t.key, &t.name, FailKind::DeclinedByPeer, reason);
            self.start_queued(f);
        }
    }

    /// The receiver's CANCEL of a file we send.
    pub(super) fn receiver_cancelled(&mut self, c: &mut ConnFiles, wire: u32, reason: &str) {
        let f = &mut *c.files;
        if let Some(i) = f.out_by_wire(wire) {
            let t = f.outgoing.remove(i);
            let said = if reason.is_empty() { String::new() } else { format!(": {}", printable(reason)) };
            let reason = format!("the peer stopped the transfer{said}");
            self.failed(c.owner, c.label, t.key, &t.name, FailKind::CancelledByPeer, reason);
            self.start_queued(f);
        }
    }

    /// The receiver's WINDOW: more data may go.
    pub(super) fn window(f: &mut Files, wire: u32, granted: u64) {
        if let Some(i) = f.out_by_wire(wire) {
            let t = &mut f.outgoing[i];
            t.granted = t.granted.max(granted);
        }
    }

    /// The receiver's RECEIVED: it verified and stored the file.
    pub(super) fn peer_received(&mut self, c: &mut ConnFiles, wire: u32) {
        let f = &mut *c.files;
        let Some(i) = f.out_by_wire(wire) else { return };
        if f.outgoing[i].state != OutState::Finishing {
            return;
        }
        let t = f.outgoing.remove(i);
        self.routes.remove(&t.key);
        log::info!("{} sent \"{}\" ({} bytes), verified by the peer", c.label, printable(&t.name), t.size);
        self.emit(Event::FileSent { id: c.owner, transfer: t.key, name: t.name, size: t.size });
        self.start_queued(f);
    }
}
