//! The disk side of file transfer: worker threads that read and write
//! files so the reactor never waits on a disk.
//!
//! Each outgoing file gets a reader thread and each accepted incoming file
//! a writer thread. They talk to the reactor through bounded channels of
//! [`BLOCK`]-sized buffers, so memory stays flat whatever the file size, and
//! report what happened as [`DiskEvent`]s, waking the reactor each time.
//!
//! A received file is written under a temporary name of ours
//! (`.peerconn-….part`, locked while in use), hashed as it is written,
//! checked against the sender's BLAKE3 hash, and only then given its final
//! name, which never replaces an existing file (`name (1).ext`…). Dropping a
//! writer's channel aborts it and removes the temporary file.

pub mod names;
pub mod resume;
pub mod tree;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Bytes per buffer between a worker and the reactor.
pub const BLOCK: usize = 256 * 1024;
/// Buffers a reader may have ready ahead of the network.
const READ_AHEAD: usize = 8;
/// Temporary files younger than this are never taken for crash leftovers.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);
/// A writer reports its progress every this many bytes, which lets the
/// sender move its window on.
const CONSUMED_STEP: u64 = 1024 * 1024;
/// A writer asks the disk to start writing out every this many bytes...
#[cfg(target_os = "linux")]
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// ...and waits for what lies this far behind to be on the disk. (On a
/// 430 MB/s disk 32 MiB stalled the transfer; 128 MiB kept both busy.)
#[cfg(target_os = "linux")]
const WRITEBACK_LAG: u64 = 128 * 1024 * 1024;

/// Identifies one file transfer for the lifetime of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Why a transfer failed, for programs to match on; the reason that comes
/// with it says the same in words (and may name local paths: only the
/// kind's own sentence, [`FailKind::told_peer`], goes to the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// There was no connected peer to send it to.
    NotConnected,
    /// The person here declined the offer.
    DeclinedHere,
    /// The person here cancelled the transfer.
    CancelledHere,
    /// The peer declined our offer.
    DeclinedByPeer,
    /// The peer stopped the transfer.
    CancelledByPeer,
    /// Refused before anyone was asked: a name that cannot be stored here,
    /// or too many offers at once.
    Refused,
    /// Not enough free space in the downloads folder.
    NoSpace,
    /// The file to send cannot be opened or read, or it changed while it
    /// was sent.
    Source,
    /// The received file could not be written or saved.
    Disk,
    /// It arrived damaged: its BLAKE3 hash did not match.
    Damaged,
    /// The connection ended first.
    ConnectionEnded,
}

impl FailKind {
    /// A word for the kind, as the command line's JSON gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::NotConnected => "not_connected",
            FailKind::DeclinedHere => "declined_here",
            FailKind::CancelledHere => "cancelled_here",
            FailKind::DeclinedByPeer => "declined_by_peer",
            FailKind::CancelledByPeer => "cancelled_by_peer",
            FailKind::Refused => "refused",
            FailKind::NoSpace => "no_space",
            FailKind::Source => "source",
            FailKind::Disk => "disk",
            FailKind::Damaged => "damaged",
            FailKind::ConnectionEnded => "connection_ended",
        }
    }

    /// What the receiver tells the sender when its side failed: built from
    /// the kind alone, so no local path or error text reaches the peer.
    pub fn told_peer(self) -> &'static str {
        match self {
            FailKind::NoSpace => "not enough free space in the downloads folder",
            FailKind::Damaged => "the file arrived damaged (its BLAKE3 hash does not match)",
            FailKind::DeclinedHere => "declined",
            FailKind::CancelledHere => "the receiver cancelled",
            _ => "the receiver could not store the file",
        }
    }
}

/// A worker's failure: its kind and the words for the person here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailKind,
    pub reason: String,
}

impl Failure {
    pub fn new(kind: FailKind, reason: impl Into<String>) -> Failure {
        Failure { kind, reason: reason.into() }
    }

    /// Writing to the disk failed: a full disk or quota is `NoSpace`.
    fn disk(e: &io::Error, reason: String) -> Failure {
        let full = matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded);
        Failure::new(if full { FailKind::NoSpace } else { FailKind::Disk }, reason)
    }
}

/// What a worker reports to the reactor.
#[derive(Debug)]
pub enum DiskEvent {
    /// A reader opened its file: offer it.
    Opened { key: TransferId, name: String, size: u64 },
    /// A reader found a folder and listed it: offer it. `skipped` are the
    /// links and special files in it, left out.
    FolderOpened { key: TransferId, name: String, size: u64, entries: Vec<tree::TreeEntry>, skipped: Vec<String> },
    /// A reader could not open its file.
    OpenFailed { key: TransferId, reason: String },
    /// A reader has a block ready (only sent when the reactor may be waiting).
    Readable { key: TransferId },
    /// A reader hashed the prefix the receiver asked about: the hashes of
    /// its proof blocks, or none when it could not read them.
    Proved { key: TransferId, hashes: Vec<[u8; 32]> },
    /// An offered file was measured against the free space: `refusal` says
    /// why it cannot fit, or is `None` when it fits (or the space is unknown).
    SpaceChecked { key: TransferId, refusal: Option<String> },
    /// A writer found `have` bytes of this file from an earlier attempt:
    /// the sender is asked to prove them.
    Partial { key: TransferId, have: u64 },
    /// A writer checked the space and made (or verified) its file: accept
    /// from `offset`. `discarded` bytes of a partial file failed the proof.
    ReadyToReceive { key: TransferId, offset: u64, discarded: u64 },
    /// A writer verified and stored the file.
    Stored { key: TransferId, path: PathBuf, size: u64, hash: String },
    /// A writer failed; its temporary file is gone.
    WriteFailed { key: TransferId, failure: Failure },
    /// A writer that was full took a block: the reactor may deliver more.
    Drained { key: TransferId },
    /// A writer has written `bytes` of the file so far.
    Consumed { key: TransferId, bytes: u64 },
    /// A folder's writer verified its `done`th file.
    FileInFolder { key: TransferId, done: u64 },
}

impl DiskEvent {
    pub fn key(&self) -> TransferId {
        match self {
            DiskEvent::Opened { key, .. }
            | DiskEvent::FolderOpened { key, .. }
            | DiskEvent::FileInFolder { key, .. }
            | DiskEvent::OpenFailed { key, .. }
            | DiskEvent::Readable { key }
            | DiskEvent::Proved { key, .. }
            | DiskEvent::SpaceChecked { key, .. }
            | DiskEvent::Partial { key, .. }
            | DiskEvent::ReadyToReceive { key, .. }
            | DiskEvent::Stored { key, .. }
            | DiskEvent::WriteFailed { key, .. }
            | DiskEvent::Drained { key }
            | DiskEvent::Consumed { key, .. } => *key,
        }
    }
}

/// How a worker tells whoever drives it that something happened: the
/// event goes on the channel, then `wake` is called (the reactor's
/// `mio::Waker`; this module knows nothing of it).
#[derive(Clone)]
pub struct Notify {
    pub events: Sender<DiskEvent>,
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl Notify {
    fn send(&self, event: DiskEvent) {
        if self.events.send(event).is_ok() {
            (self.wake)();
        }
    }
}

/// Faults to inject, for tests of failure handling.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Writers fail with "no space left" once they have written this many bytes.
    pub fail_writes_after: Option<u64>,
    /// Writers wait this long before each block, as a very slow disk would.
    pub write_delay: Option<std::time::Duration>,
    /// The free-space check takes this long, as on a stuck network share.
    pub space_check_delay: Option<std::time::Duration>,
}

// ----- reading ----------------------------------------------------------------

/// A block from a reader.
#[derive(Debug)]
pub enum Block {
    Data(Vec<u8>),
    /// In a folder: the file of entry `index` ended here; its BLAKE3 hash.
    FileEnd {
        index: u32,
        hash: [u8; 32],
    },
    /// The whole file was read; its BLAKE3 hash (for a folder, the hash of
    /// its files' hashes in order).
    End([u8; 32]),
    Failed(String),
}

/// What the reactor tells a reader.
enum ReadCmd {
    /// Hash the first this many bytes in proof blocks.
    Prove(u64),
    /// Stream the file from this offset.
    Start(u64),
}

/// The reactor's end of a reader thread. Dropping it stops the thread.
pub struct Reader {
    pub blocks: Receiver<Block>,
    go: Sender<ReadCmd>,
    /// The reactor found the channel empty and waits for a `Readable`.
    pub waiting: Arc<AtomicBool>,
    /// Spent buffers go back to the reader, so a transfer reuses a few
    /// blocks instead of allocating (and page-faulting) one per 256 KiB.
    spent: Sender<Vec<u8>>,
}

impl Reader {
    /// Returns a block's buffer once its data is on its way.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.spent.try_send(buf);
    }

    /// The peer asked to resume: hash the first `have` bytes (a
    /// `Proved` follows).
    pub fn prove(&self, have: u64) {
        let _ = self.go.try_send(ReadCmd::Prove(have));
    }

    /// The peer accepted from `offset`: start reading there.
    pub fn start(&self, offset: u64) {
        let _ = self.go.try_send(ReadCmd::Start(offset));
    }
}

/// Opens `path` on a new thread and, once started, streams it in blocks.
pub fn spawn_reader(key: TransferId, path: PathBuf, notify: Notify) -> Reader {
    let (blocks_tx, blocks) = crossbeam_channel::bounded(READ_AHEAD);
    let (go, go_rx) = crossbeam_channel::bounded(2);
    let waiting = Arc::new(AtomicBool::new(false));
    let (spent, spent_rx) = crossbeam_channel::bounded(READ_AHEAD + 2);
    let reader = Reader { blocks, go, waiting: waiting.clone(), spent };
    let spawned = std::thread::Builder::new().name("peerconn-read".into()).spawn({
        let notify = notify.clone();
        move || read_file(key, &path, notify, go_rx, blocks_tx, waiting, spent_rx)
    });
    if let Err(e) = spawned {
        notify.send(DiskEvent::OpenFailed { key, reason: format!("cannot start a reader: {e}") });
    }
    reader
}

fn read_file(
    key: TransferId,
    path: &Path,
    notify: Notify,
    go: Receiver<ReadCmd>,
    blocks: Sender<Block>,
    waiting: Arc<AtomicBool>,
    spent: Receiver<Vec<u8>>,
) {
    // A folder goes as a tree (Windows refuses to open one as a file).
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return tree::read_folder(key, path, &notify, &go, &blocks, &waiting, &spent);
    }
    let opened = File::open(path).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    let (mut file, meta) = match opened {
        Ok((_, meta)) if meta.is_dir() => {
            return notify.send(DiskEvent::OpenFailed { key, reason: format!("{} is a folder", path.display()) })
        }
        Ok(pair) => pair,
        Err(e) => {
            return notify.send(DiskEvent::OpenFailed { key, reason: format!("cannot open {}: {e}", path.display()) })
        }
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Read front to back once: let the kernel read ahead further.
        // SAFETY: a plain system call on a descriptor we own; only advice.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    let size = meta.len();
    let modified = meta.modified().ok();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    notify.send(DiskEvent::Opened { key, name, size });
    // `hasher` has hashed the file's first `hashed` bytes.
    let mut hasher = blake3::Hasher::new();
    let mut hashed: u64 = 0;
    let offset = loop {
        match go.recv() {
            // Declined, cancelled or lost before it started.
            Err(_) => return,
            Ok(ReadCmd::Prove(have)) => {
                hasher.reset();
                let proved = file.rewind().and_then(|()| resume::hash_blocks(&mut file, have.min(size), &mut hasher));
                let hashes = proved.unwrap_or_else(|e| {
                    log::warn!("cannot read {} to prove a partial file: {e}", path.display());
                    Vec::new()
                });
                hashed = if hashes.is_empty() { 0 } else { have.min(size) };
                if hashed == 0 {
                    hasher.reset();
                }
                notify.send(DiskEvent::Proved { key, hashes });
            }
            Ok(ReadCmd::Start(offset)) => break offset.min(size),
        }
    };
    if hashed != offset {
        // The receiver kept less than it asked about (rare): hash again up
        // to where the data starts.
        hasher.reset();
        let prefix = file.rewind().and_then(|()| io::copy(&mut (&mut file).take(offset), &mut hasher));
        if !matches!(prefix, Ok(n) if n == offset) {
            let _ = blocks.send(Block::Failed(format!("cannot read {}", path.display())));
            return;
        }
    }
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        let _ = blocks.send(Block::Failed(format!("cannot read {}: {e}", path.display())));
        return;
    }
    let send = |block: Block| -> bool {
        if blocks.send(block).is_err() {
            return false;
        }
        if waiting.swap(false, Ordering::AcqRel) {
            notify.send(DiskEvent::Readable { key });
        }
        true
    };
    let mut total: u64 = offset;
    loop {
        let mut buf = spent.try_recv().unwrap_or_default();
        buf.resize(BLOCK, 0);
        let n = match fill(&mut file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                send(Block::Failed(format!("cannot read {}: {e}", path.display())));
                return;
            }
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            send(Block::Failed("the file grew while it was being sent".into()));
            return;
        }
        buf.truncate(n);
        hasher.update(&buf);
        if !send(Block::Data(buf)) {
            return;
        }
    }
    if total < size {
        send(Block::Failed(format!("the file shrank while it was being sent ({total} of {size} bytes were there)")));
        return;
    }
    let now_modified = fs::metadata(path).ok().and_then(|m| m.modified().ok());
    if modified.is_some() && now_modified != modified {
        send(Block::Failed("the file was changed while it was being sent".into()));
        return;
    }
    send(Block::End(*hasher.finalize().as_bytes()));
}

/// Reads until `buf` is full or the file ends.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ----- writing ----------------------------------------------------------------

/// What the reactor gives a writer.
#[derive(Debug)]
pub enum WriteMsg {
    /// The sender's hashes of the partial file's blocks (after `Partial`).
    Proof(Vec<[u8; 32]>),
    Data(Vec<u8>),
    /// In a folder: the file of entry `index` ended; the sender's hash.
    FileEnd {
        index: u32,
        hash: [u8; 32],
    },
    /// All data was delivered; the sender's hash.
    Done([u8; 32]),
}

/// The reactor's end of a writer thread. Dropping it aborts the transfer
/// (the temporary file is removed) unless `Done` was already delivered.
pub struct Writer {
    tx: Sender<WriteMsg>,
    /// The reactor could not deliver and waits for a `Drained`.
    stalled: Arc<AtomicBool>,
    /// Checked before each block and before the verified file is named.
    abort: Arc<AtomicBool>,
    /// `Done` was handed over: dropping the handle lets the writer finish.
    finished: AtomicBool,
    /// Buffers the writer is done with, for the reactor to fill again.
    spent: Receiver<Vec<u8>>,
    /// The transfer was cut, not stopped: a resumable partial file is
    /// written out as far as it came and kept.
    keep: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            // Stop at once rather than write out what is still queued.
            self.abort.store(true, Ordering::Release);
        }
    }
}

/// The writer thread's ends of what [`Writer`] holds.
struct WriterParts {
    rx: Receiver<WriteMsg>,
    stalled: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    keep: Arc<AtomicBool>,
    spent: Sender<Vec<u8>>,
}

impl Writer {
    /// A writer's handle and the thread's parts: the channel holds a whole
    /// `window` of blocks and a few more.
    fn new(window: u64) -> (Writer, WriterParts) {
        let behind = usize::try_from(window).unwrap_or(usize::MAX).div_ceil(BLOCK).saturating_add(4);
        let (tx, rx) = crossbeam_channel::bounded(behind);
        let (stalled, abort, keep) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (spent_tx, spent) = crossbeam_channel::bounded(4);
        let writer = Writer {
            tx,
            stalled: stalled.clone(),
            abort: abort.clone(),
            finished: AtomicBool::new(false),
            spent,
            keep: keep.clone(),
        };
        (writer, WriterParts { rx, stalled, abort, keep, spent: spent_tx })
    }

    /// Stops the writer even if it already has everything: the file is not
    /// kept unless it was named already (then `Stored` still comes).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }

    /// The connection was lost: the writer writes what it was given and
    /// keeps its partial file for a later resume (then it is dropped).
    pub fn keep_partial(&self) {
        self.keep.store(true, Ordering::Release);
    }

    /// Hands a message to the writer without waiting. `Err` gives it back
    /// when the writer is full; a `Drained` event follows once it has room.
    pub fn offer(&self, msg: WriteMsg) -> Result<(), WriteMsg> {
        let done = matches!(msg, WriteMsg::Done(_));
        let result = self.try_offer(msg);
        if done && result.is_ok() {
            self.finished.store(true, Ordering::Relaxed);
        }
        result
    }

    /// An empty buffer for the next block: a spent one when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        let mut buf = self.spent.try_recv().unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        buf.clear();
        buf
    }

    fn try_offer(&self, msg: WriteMsg) -> Result<(), WriteMsg> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                self.stalled.store(true, Ordering::Release);
                // It may have drained between the failed send and the flag.
                match self.tx.try_send(msg) {
                    Ok(()) => {
                        self.stalled.store(false, Ordering::Release);
                        Ok(())
                    }
                    Err(TrySendError::Full(msg)) => Err(msg),
                    Err(TrySendError::Disconnected(_)) => Ok(()),
                }
            }
            // The writer already failed and said so.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }
}

/// What a writer is to receive.
pub struct WriteJob {
    pub key: TransferId,
    /// The downloads folder.
    pub dir: PathBuf,
    /// Already made safe by [`names::safe_name`].
    pub name: String,
    pub size: u64,
    /// The most the sender may have in flight.
    pub window: u64,
    /// Bytes promised to other files still arriving: the free space must
    /// hold them too.
    pub reserved: u64,
    /// Where this file's resumable partial file is (or goes), when the
    /// sender's key is known ([`resume::partial_path`]).
    pub partial: Option<PathBuf>,
}

/// Starts a writer for a file of `size` bytes called `name` (already made
/// safe by [`names::safe_name`]) in `dir`. `window` is the most the sender
/// may have in flight (the protocol's flow-control window): the writer's
/// channel holds all of it, so a peer that keeps to the window never fills
/// the writer. The thread handle is for joining at shutdown; the thread
/// ends on its own when the `Writer` is dropped.
pub fn spawn_writer(job: WriteJob, faults: Faults, notify: Notify) -> (Writer, Option<std::thread::JoinHandle<()>>) {
    let WriteJob { key, dir, name, size, window, reserved, partial } = job;
    let (writer, parts) = Writer::new(window);
    let spawned = std::thread::Builder::new().name("peerconn-write".into()).spawn({
        let notify = notify.clone();
        move || {
            let WriterParts { rx, stalled, abort, keep, spent: spent_tx } = parts;
            let target = Target { dir: &dir, name: &name, size, reserved, partial: partial.as_deref() };
            let flags = Flags { stalled: &stalled, abort: &abort, keep: &keep };
            let result = receive_file(key, target, &faults, &notify, &rx, flags, &spent_tx);
            match result {
                Ok(Some((path, hash))) => {
                    notify.send(DiskEvent::Stored { key, path, size, hash });
                }
                Ok(None) => {} // dropped by the reactor, which said what happened
                Err(failure) => notify.send(DiskEvent::WriteFailed { key, failure }),
            }
        }
    });
    match spawned {
        Ok(thread) => (writer, Some(thread)),
        Err(e) => {
            let failure = Failure::new(FailKind::Disk, format!("cannot start a writer: {e}"));
            notify.send(DiskEvent::WriteFailed { key, failure });
            (writer, None)
        }
    }
}

/// A temporary file that is removed unless it is kept.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    /// A partial file that may be resumed (see [`resume`]).
    resumable: bool,
    /// Left where it is when dropped, for a later resume.
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where a writer puts its file.
struct Target<'a> {
    dir: &'a Path,
    name: &'a str,
    size: u64,
    reserved: u64,
    partial: Option<&'a Path>,
}

/// What the reactor signals a writer with, beside its channel.
#[derive(Clone, Copy)]
struct Flags<'a> {
    stalled: &'a AtomicBool,
    abort: &'a AtomicBool,
    keep: &'a AtomicBool,
}

/// Opens the resumable partial file at `path` (made if missing) and locks
/// it; `None` if it is in use by another transfer or not a plain file.
/// Returns the file and how many bytes it already holds (none if it holds
/// more than `size`, which no earlier attempt could have written).
fn open_partial(path: &Path, size: u64) -> io::Result<Option<(TempFile, u64)>> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never write through a link someone put under our name.
        options.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(windows)]
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Ok(None);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() || file.try_lock().is_err() {
        return Ok(None);
    }
    // Locked, but is it still the partial file? One that was just saved
    // under its final name (the lock passes on as the name goes) must
    // never be written to again.
    let Ok(now) = fs::symlink_metadata(path) else { return Ok(None) };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata()?;
        if now.ino() != ours.ino() || now.dev() != ours.dev() || ours.nlink() != 1 {
            return Ok(None);
        }
    }
    if !now.is_file() {
        return Ok(None);
    }
    let mut have = file.metadata()?.len();
    if have > size {
        file.set_len(0)?;
        have = 0;
    }
    Ok(Some((TempFile { path: path.to_owned(), file: Some(file), resumable: true, keep: false }, have)))
}

fn receive_file(
    key: TransferId,
    Target { dir, name, size, reserved, partial }: Target,
    faults: &Faults,
    notify: &Notify,
    rx: &Receiver<WriteMsg>,
    Flags { stalled, abort, keep: cut }: Flags,
    spent: &Sender<Vec<u8>>,
) -> Result<Option<(PathBuf, String)>, Failure> {
    fs::create_dir_all(dir)
        .map_err(|e| Failure::disk(&e, format!("cannot create the downloads folder {}: {e}", dir.display())))?;
    // What a partial file already holds need not fit again.
    let held = partial.and_then(|p| fs::symlink_metadata(p).ok()).filter(|m| m.is_file()).map_or(0, |m| m.len());
    if let Some(refusal) = lacks_space(dir, size.saturating_sub(held), reserved) {
        return Err(Failure::new(FailKind::NoSpace, refusal));
    }
    let opened = match partial {
        Some(path) => open_partial(path, size)
            .map_err(|e| Failure::disk(&e, format!("cannot open a partial file in {}: {e}", dir.display())))?,
        None => None,
    };
    let (mut temp, have) = match opened {
        Some(found) => found,
        None => (create_temp(dir).map_err(|reason| Failure::new(FailKind::Disk, reason))?, 0),
    };
    let mut hasher = blake3::Hasher::new();
    let mut written: u64 = 0;
    if have > 0 {
        notify.send(DiskEvent::Partial { key, have });
        let hashes = loop {
            match rx.recv() {
                Ok(WriteMsg::Proof(hashes)) => break hashes,
                Ok(_) => {} // nothing else comes before the proof
                Err(_) => {
                    // Cut or stopped before the proof came: what was there stays.
                    temp.keep = true;
                    return if abort.load(Ordering::Acquire) && !cut.load(Ordering::Acquire) {
                        temp.keep = false;
                        Err(Failure::new(FailKind::CancelledHere, "cancelled before the file was saved"))
                    } else {
                        Ok(None)
                    };
                }
            }
        };
        let file = temp.file.as_mut().expect("open until kept");
        let failed =
            |e: io::Error| Failure::disk(&e, format!("cannot read the partial file in {}: {e}", dir.display()));
        written = file.rewind().and_then(|()| resume::verify(file, have, &hashes, &mut hasher)).map_err(failed)?;
        file.set_len(written).and_then(|()| file.seek(SeekFrom::Start(written))).map(drop).map_err(failed)?;
    }
    notify.send(DiskEvent::ReadyToReceive { key, offset: written, discarded: have - written });
    let mut writeback = Writeback { started: written, settled: written, off: false };
    let mut reported: u64 = written;
    loop {
        // An aborted writer always says so: whoever aborted it waits for
        // its word (a writer merely dropped ends silently).
        let cancelled = || Err(Failure::new(FailKind::CancelledHere, "cancelled before the file was saved"));
        let received = rx.recv();
        // A cut transfer writes out what it was given and keeps the file
        // (if there is anything in it to resume).
        let kept = cut.load(Ordering::Acquire) && temp.resumable;
        let Ok(msg) = received else {
            if kept {
                temp.keep = written > 0;
                return Ok(None);
            }
            return if abort.load(Ordering::Acquire) { cancelled() } else { Ok(None) };
        };
        if abort.load(Ordering::Acquire) && !kept && !matches!(msg, WriteMsg::Done(_)) {
            return cancelled();
        }
        if stalled.swap(false, Ordering::AcqRel) {
            notify.send(DiskEvent::Drained { key });
        }
        match msg {
            // Only ever asked for before the data; only for folders.
            WriteMsg::Proof(_) | WriteMsg::FileEnd { .. } => {}
            WriteMsg::Data(bytes) => {
                if let Some(delay) = faults.write_delay {
                    std::thread::sleep(delay);
                }
                written += bytes.len() as u64;
                if written > size {
                    return Err(Failure::new(FailKind::Damaged, "the peer sent more than the size it announced"));
                }
                if faults.fail_writes_after.is_some_and(|limit| written > limit) {
                    let reason = format!("cannot write {}: no space left on device (injected)", temp.path.display());
                    return Err(Failure::new(FailKind::NoSpace, reason));
                }
                let file = temp.file.as_mut().expect("open until kept");
                let failed = |e: io::Error| Failure::disk(&e, format!("cannot write to {}: {e}", dir.display()));
                file.write_all(&bytes).map_err(failed)?;
                if !abort.load(Ordering::Acquire) {
                    // (Waiting for the disk is pointless for a file about to go.)
                    writeback.wrote(file, written).map_err(failed)?;
                }
                hasher.update(&bytes);
                let _ = spent.try_send(bytes);
                if written - reported >= CONSUMED_STEP {
                    reported = written;
                    notify.send(DiskEvent::Consumed { key, bytes: written });
                }
            }
            WriteMsg::Done(expected) => {
                if written != size {
                    let reason = format!("the file ended after {written} of {size} bytes");
                    return Err(Failure::new(FailKind::Damaged, reason));
                }
                let hash = hasher.finalize();
                if hash.as_bytes() != &expected {
                    let reason = "the file arrived damaged (its BLAKE3 hash does not match); it was not kept";
                    return Err(Failure::new(FailKind::Damaged, reason));
                }
                let file = temp.file.as_ref().expect("open until kept");
                file.sync_all().map_err(|e| Failure::disk(&e, format!("cannot save to {}: {e}", dir.display())))?;
                if abort.load(Ordering::Acquire) {
                    return Err(Failure::new(FailKind::CancelledHere, "cancelled before the file was saved"));
                }
                // Still open and locked while it is named, so no other
                // writer takes the partial file that is becoming this one.
                let path = keep(&temp.path, dir, name).map_err(|reason| Failure::new(FailKind::Disk, reason))?;
                temp.file = None;
                temp.keep = true; // it has its final name now
                return Ok(Some((path, hash.to_hex().to_string())));
            }
        }
    }
}

/// Writes a received file out to the disk while it arrives, instead of
/// leaving gigabytes of dirty pages for the final `fsync`: the disk works
/// during the transfer, the file is saved soon after its last byte, and a
/// large download holds at most [`WRITEBACK_LAG`] of unwritten data.
/// (Linux; elsewhere the operating system's own write-back does this.)
#[derive(Default)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Writeback {
    /// Write-out was started up to here.
    started: u64,
    /// Everything up to here is on the disk.
    settled: u64,
    /// The file system does not support it: stop asking.
    off: bool,
}

impl Writeback {
    #[cfg(target_os = "linux")]
    fn wrote(&mut self, file: &File, written: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if self.off || written - self.started < WRITEBACK_STEP {
            return Ok(());
        }
        let range = |from: u64, to: u64, flags| {
            let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else { return Ok(()) };
            // SAFETY: a plain system call on a descriptor we own.
            match unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, flags) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        };
        let mut result = range(self.started, written, libc::SYNC_FILE_RANGE_WRITE);
        self.started = written;
        if result.is_ok() && self.started - self.settled > WRITEBACK_LAG {
            let to = self.started - WRITEBACK_LAG;
            let all =
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            result = range(self.settled, to, all);
            self.settled = to;
        }
        match result {
            Ok(()) => Ok(()),
            // The disk failed or is full: the transfer fails as on a write.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::ENOSPC | libc::EDQUOT)) => Err(e),
            Err(e) => {
                log::debug!("no early write-back on this file system: {e}");
                self.off = true;
                Ok(())
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn wrote(&mut self, _file: &File, _written: u64) -> io::Result<()> {
        Ok(())
    }
}

fn create_temp(dir: &Path) -> Result<TempFile, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let tag = blake3::hash(seed.as_bytes()).to_hex();
        let path = dir.join(format!("{}{}{}", names::TEMP_PREFIX, &tag[..16], names::TEMP_SUFFIX));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                // Held until the file is kept or removed, so a cleanup by
                // another PeerConn never takes a file in use.
                let _ = file.try_lock();
                return Ok(TempFile { path, file: Some(file), resumable: false, keep: false });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a file in {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a temporary file in {}", dir.display()))
}

/// Gives the verified temporary file its final name: `name`, or the first
/// free `name (n).ext`. An existing file is never replaced.
fn keep(temp: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    for n in 0..10_000 {
        let candidate = if n == 0 { name.to_owned() } else { names::numbered(name, n) };
        let path = dir.join(&candidate);
        // A hard link fails if the name exists (a symlink included), so
        // claiming the name is atomic.
        match fs::hard_link(temp, &path) {
            Ok(()) => {
                let _ = fs::remove_file(temp);
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {}
        }
        // File systems without hard links (FAT, some network shares):
        // reserve the name with an exclusive create, then move onto it.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(reserved) => {
                drop(reserved);
                return match fs::rename(temp, &path) {
                    Ok(()) => Ok(path),
                    Err(e) => {
                        let _ = fs::remove_file(&path);
                        Err(format!("cannot save {}: {e}", path.display()))
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot save {}: {e}", path.display())),
        }
    }
    Err(format!("too many files called {name} in {}", dir.display()))
}

/// Free bytes available to this user on the file system holding `dir`,
/// when the system says. Asked of the path itself (statvfs,
/// GetDiskFreeSpaceExW), so network shares and mounted folders are right.
#[cfg(unix)]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between systems
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(windows)]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = dir.as_os_str().encode_wide().chain(Some(0)).collect();
    let mut free: u64 = 0;
    // SAFETY: `wide` is NUL-terminated; the out-pointers are valid or null.
    let ok = unsafe {
        windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut free,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(free)
}

#[cfg(not(any(unix, windows)))]
pub fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// Why a file of `size` bytes cannot fit in `dir` (or in the folder that
/// will hold it, if `dir` does not exist yet), or `None` if it fits or the
/// space cannot be known. The words go to the peer too: no path in them.
pub fn lacks_space(dir: &Path, size: u64, reserved: u64) -> Option<String> {
    // Leave a little room for the file system itself.
    const MARGIN: u64 = 16 * 1024 * 1024;
    let free = dir.ancestors().find(|d| d.is_dir()).and_then(free_space)?;
    (size.saturating_add(reserved).saturating_add(MARGIN) > free).then(|| {
        let promised = match reserved {
            0 => String::new(),
            _ => format!(", and {} of that will be taken by files still arriving", human_size(reserved)),
        };
        format!(
            "not enough free space in the downloads folder: the file needs {}, {} are free{promised}",
            human_size(size),
            human_size(free)
        )
    })
}

/// Offers waiting to be measured against the free space; more than this
/// (a peer flooding offers) are not measured early: the writer still checks
/// before it creates anything.
const SPACE_CHECKS_WAITING: usize = 64;

/// Measures offered files against the free space on a thread of its own
/// (asking a disk, or a network share, may take a while) and reports each
/// as a [`DiskEvent::SpaceChecked`]. The thread ends with this handle.
pub struct SpaceChecker {
    requests: Sender<(TransferId, PathBuf, u64, u64)>,
}

impl SpaceChecker {
    pub fn spawn(notify: Notify, faults: &Faults) -> io::Result<SpaceChecker> {
        let (requests, rx) = crossbeam_channel::bounded::<(TransferId, PathBuf, u64, u64)>(SPACE_CHECKS_WAITING);
        let delay = faults.space_check_delay;
        std::thread::Builder::new().name("peerconn-space".into()).spawn(move || {
            for (key, dir, size, reserved) in rx {
                if let Some(delay) = delay {
                    std::thread::sleep(delay);
                }
                notify.send(DiskEvent::SpaceChecked { key, refusal: lacks_space(&dir, size, reserved) });
            }
        })?;
        Ok(SpaceChecker { requests })
    }

    /// Asks whether `size` bytes fit beside the `reserved` bytes promised
    /// to files still arriving; `false` if it cannot be asked (too many
    /// waiting).
    pub fn check(&self, key: TransferId, dir: PathBuf, size: u64, reserved: u64) -> bool {
        self.requests.try_send((key, dir, size, reserved)).is_ok()
    }
}

/// Removes temporary files left by a PeerConn that crashed, and partial
/// files past [`resume::sweep`]'s bounds. A file still locked by a running
/// PeerConn is left alone. Returns how many went.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = resume::sweep(dir, resume::MAX_TOTAL);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Partial files that may be resumed have their own, longer rule.
        let kind = entry.file_type();
        if !names::is_temp_name(name)
            || resume::is_partial_name(name)
            || !kind.as_ref().is_ok_and(|t| t.is_file() || t.is_dir())
        {
            continue;
        }
        let path = entry.path();
        // A file written in the last minutes may belong to a PeerConn that
        // has not locked it yet; crash leftovers are older than that.
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < LEFTOVER_AGE);
        if recent {
            continue;
        }
        // A folder a crashed PeerConn was building (a running one keeps
        // writing into it, so it is recent).
        if kind.is_ok_and(|t| t.is_dir()) {
            if !tree::locked_by_other(&path) && fs::remove_dir_all(&path).is_ok() {
                log::info!("removed the leftover temporary folder {}", path.display());
                removed += 1;
            }
            continue;
        }
        // The lock is held until the file is gone.
        let Ok(file) = OpenOptions::new().write(true).open(&path) else { continue };
        if file.try_lock().is_err() {
            continue;
        }
        if fs::remove_file(&path).is_ok() {
            log::info!("removed the leftover temporary file {}", path.display());
            removed += 1;
        }
    }
    removed
}

/// "1.5 GB", "640 KB", "12 bytes".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_known_for_the_temp_folder() {
        let free = free_space(&std::env::temp_dir()).expect("free space of the temp folder");
        assert!(free > 0);
        assert_eq!(free_space(Path::new("/no/such/folder/anywhere")), None);
    }

    #[test]
    fn sizes_read_like_a_person_would_say_them() {
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(1_500), "1.5 KB");
        assert_eq!(human_size(6_442_450_944), "6.4 GB");
    }
}
