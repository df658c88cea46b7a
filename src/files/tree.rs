//! Folders: a tree of folders and files sent under one offer.
//!
//! The sender walks the folder (never following a symbolic link; links and
//! special files are skipped and listed), offers its entries in order,
//! and streams every file's bytes one after another, each followed by its
//! BLAKE3 hash. The receiver checks the whole list before anyone is asked
//! ([`Manifest::check`]: every component by the rules for file names,
//! parents before children, no name twice, bounded in entries, depth and
//! size), builds the tree inside a hidden folder of its own in the
//! downloads folder, verifies each file as it ends, makes the batch durable
//! once, and only then gives the folder its name: `name`, or `name (1)`…
//! It is never merged into an existing folder.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::{names, resume, Block, DiskEvent, FailKind, Failure, Faults, Notify, ReadCmd, TransferId, WriteMsg, BLOCK};

/// Most entries (folders and files) in one folder offer.
pub const MAX_ENTRIES: u32 = 200_000;
/// Most components in one path inside a folder.
pub const MAX_DEPTH: usize = 32;

/// One folder or file inside an offered folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// The components of its path inside the folder.
    pub path: Vec<String>,
    /// A file's size; `None` for a folder.
    pub size: Option<u64>,
}

/// An offered folder's entries, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The folder's own name, made safe.
    pub name: String,
    /// Entries in the sender's order, every component made safe.
    pub entries: Vec<TreeEntry>,
    pub files: u64,
    pub size: u64,
}

impl Manifest {
    /// Checks a peer's folder: `name` and every component by the rules for
    /// file names (refused, never rewritten into something else, if
    /// unsafe), each entry's parent a folder listed before it, no path
    /// twice (ignoring case where this system does), at most [`MAX_DEPTH`]
    /// deep, and the files' sizes adding up to `size`.
    pub fn check(name: &str, size: u64, entries: Vec<TreeEntry>) -> Result<Manifest, String> {
        let root = names::safe_name(name).map_err(|e| format!("the folder's name: {}", e.0))?;
        let key = |path: &[String]| -> String {
            let joined = path.join("/");
            if cfg!(any(windows, target_os = "macos")) {
                joined.to_lowercase()
            } else {
                joined
            }
        };
        let mut folders: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let (mut files, mut total) = (0u64, 0u64);
        let mut checked = Vec::with_capacity(entries.len());
        for entry in entries {
            let shown = display(&entry.path);
            if entry.path.is_empty() || entry.path.len() > MAX_DEPTH {
                return Err(format!("\"{}\" is {} folders deep; at most {MAX_DEPTH}", shown, entry.path.len()));
            }
            let mut path = Vec::with_capacity(entry.path.len());
            for component in &entry.path {
                let safe = names::safe_name(component).map_err(|e| format!("\"{}\": {}", shown, e.0))?;
                path.push(safe);
            }
            let parent = &path[..path.len() - 1];
            if !parent.is_empty() && !folders.contains(&key(parent)) {
                return Err(format!("\"{}\" comes before the folder that holds it", shown));
            }
            if !seen.insert(key(&path)) {
                return Err(format!("\"{}\" is listed twice", shown));
            }
            match entry.size {
                None => {
                    folders.insert(key(&path));
                }
                Some(len) => {
                    files += 1;
                    total = total.checked_add(len).ok_or("the files add up to more than any disk holds")?;
                }
            }
            checked.push(TreeEntry { path, size: entry.size });
        }
        if total != size {
            return Err(format!("its files add up to {total} bytes, not the {size} it offered"));
        }
        Ok(Manifest { name: root, entries: checked, files, size })
    }
}

// ----- the sender's side --------------------------------------------------------

/// What a sender found in a folder.
pub struct Walked {
    pub entries: Vec<TreeEntry>,
    /// Where each file entry is on this disk (by entry index).
    pub sources: Vec<Option<PathBuf>>,
    pub size: u64,
    /// Links and special files left out, as paths inside the folder.
    pub skipped: Vec<String>,
}

/// Lists `root`'s folders and files, depth first in name order, never
/// following a symbolic link.
pub fn walk(root: &Path) -> Result<Walked, String> {
    let mut walked = Walked { entries: Vec::new(), sources: Vec::new(), size: 0, skipped: Vec::new() };
    walk_into(root, &mut Vec::new(), &mut walked)?;
    if walked.entries.len() > MAX_ENTRIES as usize {
        return Err(format!("it holds {} entries; at most {MAX_ENTRIES} go in one offer", walked.entries.len()));
    }
    Ok(walked)
}

fn walk_into(dir: &Path, at: &mut Vec<String>, walked: &mut Walked) -> Result<(), String> {
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    children.sort_by_key(|c| c.file_name());
    // Names as the receiver will store them: a second one the same once
    // made safe would have the folder declined.
    let mut taken: HashSet<String> = HashSet::new();
    for child in children {
        let raw = child.file_name();
        let shown_raw = || {
            let mut path = at.join("/");
            if !path.is_empty() {
                path.push('/');
            }
            path + &display(&[raw.to_string_lossy().into_owned()])
        };
        // What the receiver would refuse is left out here, and listed.
        let Some(name) = raw.to_str().map(str::to_owned) else {
            walked.skipped.push(format!("{} (the name is not valid Unicode)", shown_raw()));
            continue;
        };
        match names::safe_name(&name) {
            Err(e) => {
                walked.skipped.push(format!("{} ({})", shown_raw(), e.0));
                continue;
            }
            Ok(safe) if !taken.insert(safe.clone()) => {
                walked.skipped.push(format!("{} (its name is another one's once made safe: {safe})", shown_raw()));
                continue;
            }
            Ok(_) => {}
        }
        at.push(name);
        let shown = at.join("/");
        // The entry itself, not what a link points to.
        let kind = child.file_type().map_err(|e| format!("cannot read {}: {e}", child.path().display()))?;
        if walked.entries.len() > MAX_ENTRIES as usize {
            return Err(format!("it holds more than {MAX_ENTRIES} entries, the most one offer takes"));
        }
        if kind.is_dir() {
            if at.len() > MAX_DEPTH {
                return Err(format!("{shown} is more than {MAX_DEPTH} folders deep"));
            }
            walked.entries.push(TreeEntry { path: at.clone(), size: None });
            walked.sources.push(None);
            walk_into(&child.path(), at, walked)?;
        } else if kind.is_file() {
            if at.len() > MAX_DEPTH {
                return Err(format!("{shown} is more than {MAX_DEPTH} folders deep"));
            }
            let len = child.metadata().map_err(|e| format!("cannot read {}: {e}", child.path().display()))?.len();
            walked.size += len;
            walked.entries.push(TreeEntry { path: at.clone(), size: Some(len) });
            walked.sources.push(Some(child.path()));
        } else {
            walked.skipped.push(shown);
        }
        at.pop();
    }
    Ok(())
}

/// Streams every file of the folder `root` (after the reactor starts it)
/// in entry order, each followed by a [`Block::FileEnd`], then
/// [`Block::End`] with the hash of all the files' hashes. Runs on the
/// reader thread that found `root` to be a folder.
pub(super) fn read_folder(
    key: TransferId,
    root: &Path,
    notify: &Notify,
    go: &Receiver<ReadCmd>,
    blocks: &Sender<Block>,
    waiting: &AtomicBool,
    spent: &Receiver<Vec<u8>>,
) {
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "folder".into());
    let walked = match walk(root) {
        Ok(walked) => walked,
        Err(reason) => return notify.send(DiskEvent::OpenFailed { key, reason }),
    };
    let Walked { entries, sources, size, skipped } = walked;
    let sizes: Vec<u64> = entries.iter().map(|e| e.size.unwrap_or(0)).collect();
    let kinds: Vec<Option<u64>> = entries.iter().map(|e| e.size).collect();
    notify.send(DiskEvent::FolderOpened { key, name, size, entries, skipped });
    let files: Vec<(PathBuf, u64)> =
        sources.iter().zip(&sizes).filter_map(|(p, &len)| p.clone().map(|p| (p, len))).collect();
    // The receiver may ask to resume: the folder's data is its files one
    // after another, proven in blocks like a file's.
    let offset = loop {
        match go.recv() {
            Err(_) => return,
            Ok(ReadCmd::Start(offset)) => break offset.min(size),
            Ok(ReadCmd::Prove(have)) => {
                let mut stream = Stream::new(files.clone());
                let hashes = resume::hash_blocks(&mut stream, have.min(size), &mut blake3::Hasher::new())
                    .unwrap_or_else(|e| {
                        log::warn!("cannot read {} to prove a partial folder: {e}", root.display());
                        Vec::new()
                    });
                notify.send(DiskEvent::Proved { key, hashes });
            }
        }
    };
    let (first, within) = split(&kinds, offset);
    let send = |block: Block| -> bool {
        if blocks.send(block).is_err() {
            return false;
        }
        if waiting.swap(false, Ordering::AcqRel) {
            notify.send(DiskEvent::Readable { key });
        }
        true
    };
    let mut all = blake3::Hasher::new();
    // Files the receiver already holds count in the hash of hashes; their
    // bytes are not sent again.
    for (index, source) in sources.iter().enumerate().take(first) {
        let Some(path) = source else { continue };
        let mut hasher = blake3::Hasher::new();
        match File::open(path).and_then(|f| io::copy(&mut f.take(sizes[index]), &mut hasher)) {
            Ok(n) if n == sizes[index] => {
                all.update(hasher.finalize().as_bytes());
            }
            _ => {
                send(Block::Failed(format!("cannot read {}", path.strip_prefix(root).unwrap_or(path).display())));
                return;
            }
        }
    }
    for (index, source) in sources.iter().enumerate().skip(first) {
        let Some(path) = source else { continue };
        let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
        let want = sizes[index];
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) => {
                send(Block::Failed(format!("cannot open {shown}: {e}")));
                return;
            }
        };
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        if index == first && within > 0 {
            // The data picks up inside this file: hash what the receiver has.
            match io::copy(&mut (&mut file).take(within), &mut hasher) {
                Ok(n) if n == within => total = within,
                _ => {
                    send(Block::Failed(format!("cannot read {shown}")));
                    return;
                }
            }
        }
        loop {
            let mut buf = spent.try_recv().unwrap_or_default();
            // Small files are most of a photo library: fill only what the
            // file holds (and a byte more, to see it grow).
            let wanted = (want - total.min(want)).saturating_add(1).min(BLOCK as u64) as usize;
            buf.resize(wanted, 0);
            let n = match super::fill(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    send(Block::Failed(format!("cannot read {shown}: {e}")));
                    return;
                }
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > want {
                send(Block::Failed(format!("{shown} grew while it was being sent")));
                return;
            }
            buf.truncate(n);
            hasher.update(&buf);
            if !send(Block::Data(buf)) {
                return;
            }
        }
        if total < want {
            send(Block::Failed(format!("{shown} shrank while it was being sent")));
            return;
        }
        let hash = *hasher.finalize().as_bytes();
        all.update(&hash);
        if !send(Block::FileEnd { index: index as u32, hash }) {
            return;
        }
    }
    send(Block::End(*all.finalize().as_bytes()));
}

// ----- the receiver's side ------------------------------------------------------

/// Starts a writer for the checked folder `manifest` in `dir`. Messages:
/// [`WriteMsg::Data`] for the files' bytes in order, [`WriteMsg::FileEnd`]
/// after each file, [`WriteMsg::Done`] with the hash of the hashes.
/// `partial`: where the folder is built when the sender's key is known
/// ([`Manifest::partial_path`]): kept there if the connection is cut, and
/// resumed from when the same key offers the same folder again.
#[allow(clippy::too_many_arguments)]
pub fn spawn_folder_writer(
    key: TransferId,
    dir: PathBuf,
    manifest: std::sync::Arc<Manifest>,
    partial: Option<PathBuf>,
    reserved: u64,
    window: u64,
    faults: Faults,
    notify: Notify,
) -> (super::Writer, Option<std::thread::JoinHandle<()>>) {
    let (writer, parts) = super::Writer::new(window);
    let spawned = std::thread::Builder::new().name("peerconn-write".into()).spawn({
        let notify = notify.clone();
        move || {
            let super::WriterParts { rx, stalled, abort, keep, spent } = parts;
            let flags = (&*stalled, &*abort, &*keep);
            let result =
                receive_folder(key, (&dir, partial), &manifest, reserved, &faults, &notify, &rx, flags, &spent);
            match result {
                Ok(Some((path, hash))) => {
                    notify.send(DiskEvent::Stored { key, path, size: manifest.size, hash });
                }
                Ok(None) => {}
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

/// Our hidden folder the tree is built in; removed unless kept.
struct Staging {
    path: PathBuf,
    kept: bool,
    /// Named for a resume: held in [`IN_USE`] while it is being written.
    resumable: bool,
    /// [`LOCK`] inside it, locked while this writer builds it, so no
    /// other PeerConn's sweep or writer takes it.
    lock: Option<File>,
}

/// The lock file inside a folder being built. (No entry of a listing can
/// have this name: names starting like our temporary files are made safe
/// with a leading `_`.)
pub const LOCK: &str = ".peerconn-lock";

/// Whether another PeerConn holds the folder at `dir` it is building.
pub fn locked_by_other(dir: &Path) -> bool {
    match OpenOptions::new().write(true).open(dir.join(LOCK)) {
        Ok(file) => file.try_lock().is_err(),
        Err(_) => false,
    }
}

impl Staging {
    fn new(path: PathBuf, resumable: bool) -> Staging {
        let lock = OpenOptions::new().write(true).create(true).truncate(false).open(path.join(LOCK)).ok();
        let lock = lock.filter(|f| f.try_lock().is_ok());
        Staging { path, kept: false, resumable, lock }
    }

    /// The folder is about to get its name: without the lock file.
    fn unlock(&mut self) {
        self.lock = None;
        let _ = fs::remove_file(self.path.join(LOCK));
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Closed first: Windows removes no folder with a file open in it.
        self.lock = None;
        if !self.kept {
            let _ = fs::remove_dir_all(&self.path);
        }
        if self.resumable {
            in_use().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
        }
    }
}

/// Resumable folders being written by this process (a folder cannot be
/// locked as a file is): a second offer of the same folder at once builds
/// its own.
fn in_use() -> &'static std::sync::Mutex<HashSet<PathBuf>> {
    static IN_USE: std::sync::OnceLock<std::sync::Mutex<HashSet<PathBuf>>> = std::sync::OnceLock::new();
    IN_USE.get_or_init(Default::default)
}

impl Manifest {
    /// Where the folder is built for a resume, from the sender's key and
    /// everything the listing says (names, sizes, order): the same folder
    /// offered again by the same key finds it.
    pub fn partial_path(&self, dir: &Path, peer: &[u8; 32]) -> PathBuf {
        let mut hasher = blake3::Hasher::new_derive_key("PeerConn 2026 resumable partial folder");
        hasher.update(peer);
        hasher.update(&self.size.to_be_bytes());
        hasher.update(self.name.as_bytes());
        for entry in &self.entries {
            hasher.update(&entry.size.map_or([0xff; 8], u64::to_be_bytes));
            hasher.update(&(entry.path.len() as u64).to_be_bytes());
            for component in &entry.path {
                hasher.update(&(component.len() as u64).to_be_bytes());
                hasher.update(component.as_bytes());
            }
        }
        let id = hasher.finalize().to_hex();
        dir.join(format!("{}{}{}", resume::RESUME_PREFIX, &id[..32], names::TEMP_SUFFIX))
    }

    /// Entries' sizes, `None` for folders (see [`split`]).
    fn kinds(&self) -> Vec<Option<u64>> {
        self.entries.iter().map(|e| e.size).collect()
    }
}

/// How much of the folder's data a kept folder at `root` holds: its files
/// in order, whole, then the first one that is short; 0 if anything in it
/// is not what the listing says (a link, a file where a folder belongs).
fn held(root: &Path, manifest: &Manifest) -> u64 {
    let mut have = 0u64;
    for entry in &manifest.entries {
        let Ok(meta) = fs::symlink_metadata(inside(root, &entry.path)) else {
            if entry.size.is_none() {
                return 0;
            }
            break;
        };
        match entry.size {
            None if meta.is_dir() => {}
            Some(len) if meta.is_file() => {
                have += meta.len().min(len);
                if meta.len() < len {
                    break;
                }
            }
            _ => return 0,
        }
    }
    have
}

/// Where a folder's writer starts: after what a kept folder proved.
#[derive(Default)]
struct Resumed {
    /// The next entry to open.
    next: usize,
    /// The file the data picks up inside.
    current: Option<Current>,
    /// The hashes of the files already whole.
    all: blake3::Hasher,
    finished: Vec<PathBuf>,
    offset: u64,
}

/// Makes a kept folder hold exactly the first `offset` bytes of the
/// folder's data: whole files before it (their hashes taken again), the
/// file it falls in cut there and open to go on, nothing after it.
fn take_up(root: &Path, manifest: &Manifest, offset: u64) -> io::Result<Resumed> {
    let (first, within) = split(&manifest.kinds(), offset);
    let mut resumed = Resumed { next: first, offset, ..Resumed::default() };
    for (index, entry) in manifest.entries.iter().enumerate() {
        let Some(len) = entry.size else { continue };
        let path = inside(root, &entry.path);
        if index < first {
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            file.set_len(len)?;
            let mut hasher = blake3::Hasher::new();
            io::copy(&mut file, &mut hasher)?;
            resumed.all.update(hasher.finalize().as_bytes());
            resumed.finished.push(path);
        } else if index == first && within > 0 {
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            file.set_len(within)?;
            let mut hasher = blake3::Hasher::new();
            io::copy(&mut (&mut file).take(within), &mut hasher)?;
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(within))?;
            resumed.current = Some(Current { index, file, written: within, hasher });
            resumed.next = index + 1;
        } else {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(resumed)
}

/// The file being written and how far it is.
struct Current {
    index: usize,
    file: File,
    written: u64,
    hasher: blake3::Hasher,
}

#[allow(clippy::too_many_arguments)]
fn receive_folder(
    key: TransferId,
    (dir, partial): (&Path, Option<PathBuf>),
    manifest: &Manifest,
    reserved: u64,
    faults: &Faults,
    notify: &Notify,
    rx: &Receiver<WriteMsg>,
    (stalled, abort, cut): (&AtomicBool, &AtomicBool, &AtomicBool),
    spent: &Sender<Vec<u8>>,
) -> Result<Option<(PathBuf, String)>, Failure> {
    let disk = |e: io::Error, what: &dyn Fn(&io::Error) -> String| Failure::disk(&e, what(&e));
    fs::create_dir_all(dir)
        .map_err(|e| disk(e, &|e| format!("cannot create the downloads folder {}: {e}", dir.display())))?;
    // A folder kept from a cut attempt, if it is not being written now.
    let partial = partial
        .filter(|p| !locked_by_other(p))
        .filter(|p| in_use().lock().unwrap_or_else(|e| e.into_inner()).insert(p.clone()));
    let have = partial.as_deref().filter(|p| p.is_dir()).map_or(0, |p| held(p, manifest));
    if let Some(refusal) = super::lacks_space(dir, manifest.size - have, reserved) {
        if let Some(p) = &partial {
            in_use().lock().unwrap_or_else(|e| e.into_inner()).remove(p);
        }
        return Err(Failure::new(FailKind::NoSpace, refusal));
    }
    let mut staging = match partial {
        Some(path) => {
            if have == 0 && fs::symlink_metadata(&path).is_ok() {
                // Nothing in it to resume: start it again.
                let _ = fs::remove_dir_all(&path);
                let _ = fs::remove_file(&path);
            }
            let made = if have == 0 { fs::create_dir(&path) } else { Ok(()) };
            if let Err(e) = made {
                in_use().lock().unwrap_or_else(|e| e.into_inner()).remove(&path);
                return Err(disk(e, &|e| format!("cannot create a folder in {}: {e}", dir.display())));
            }
            Staging::new(path, true)
        }
        None => {
            let path = make_staging(dir)
                .map_err(|e| disk(e, &|e| format!("cannot create a folder in {}: {e}", dir.display())))?;
            Staging::new(path, false)
        }
    };
    // Every folder first (empty ones included), each made by us inside our
    // own folder, so none can be a link someone planted.
    for entry in manifest.entries.iter().filter(|e| e.size.is_none()) {
        let path = inside(&staging.path, &entry.path);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if have > 0 && e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(disk(e, &|e| format!("cannot create {}: {e}", path.display()))),
        }
    }
    let mut resumed = Resumed::default();
    if have > 0 {
        notify.send(DiskEvent::Partial { key, have });
        let hashes = loop {
            match rx.recv() {
                Ok(WriteMsg::Proof(hashes)) => break hashes,
                Ok(_) => {}
                Err(_) => {
                    // Cut or stopped before the proof came: what was there stays,
                    // unless it was stopped on purpose.
                    staging.kept = cut.load(Ordering::Acquire) || !abort.load(Ordering::Acquire);
                    return if staging.kept {
                        Ok(None)
                    } else {
                        Err(Failure::new(FailKind::CancelledHere, "cancelled before the folder was saved"))
                    };
                }
            }
        };
        let failed =
            |e: io::Error| Failure::disk(&e, format!("cannot read the partial folder in {}: {e}", dir.display()));
        let files =
            manifest.entries.iter().filter_map(|e| e.size.map(|len| (inside(&staging.path, &e.path), len))).collect();
        let proven =
            resume::verify(&mut Stream::new(files), have, &hashes, &mut blake3::Hasher::new()).map_err(failed)?;
        resumed = take_up(&staging.path, manifest, proven).map_err(failed)?;
        notify.send(DiskEvent::ReadyToReceive { key, offset: proven, discarded: have - proven });
        notify.send(DiskEvent::FileInFolder { key, done: resumed.finished.len() as u64 });
    } else {
        notify.send(DiskEvent::ReadyToReceive { key, offset: 0, discarded: 0 });
    }
    // The files, in order; `next` is the next entry to look at.
    let Resumed { next, current, all, finished, offset } = resumed;
    let (mut next, mut current, mut all, mut finished) = (next, current, all, finished);
    let mut written_all: u64 = offset;
    let mut reported: u64 = offset;
    let mut told = std::time::Instant::now();
    let open_next = |next: &mut usize| -> Result<Option<Current>, Failure> {
        while *next < manifest.entries.len() {
            let index = *next;
            *next += 1;
            if manifest.entries[index].size.is_some() {
                let path = inside(&staging.path, &manifest.entries[index].path);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Failure::disk(&e, format!("cannot create {}: {e}", path.display())))?;
                return Ok(Some(Current { index, file, written: 0, hasher: blake3::Hasher::new() }));
            }
        }
        Ok(None)
    };
    loop {
        let received = rx.recv();
        // A cut folder keeps what it has for a resume (if it has anything).
        if cut.load(Ordering::Acquire) && staging.resumable {
            staging.kept = written_all > 0;
            return Ok(None);
        }
        let Ok(msg) = received else {
            return if abort.load(Ordering::Acquire) {
                Err(Failure::new(FailKind::CancelledHere, "cancelled before the folder was saved"))
            } else {
                Ok(None)
            };
        };
        if abort.load(Ordering::Acquire) && !matches!(msg, WriteMsg::Done(_)) {
            return Err(Failure::new(FailKind::CancelledHere, "cancelled before the folder was saved"));
        }
        if stalled.swap(false, Ordering::AcqRel) {
            notify.send(DiskEvent::Drained { key });
        }
        match msg {
            WriteMsg::Proof(_) => {}
            WriteMsg::Data(bytes) => {
                if let Some(delay) = faults.write_delay {
                    std::thread::sleep(delay);
                }
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    if current.is_none() {
                        current = open_next(&mut next)?;
                    }
                    let Some(c) = current.as_mut() else {
                        return Err(Failure::new(FailKind::Damaged, "the peer sent more than the folder's files hold"));
                    };
                    let want = manifest.entries[c.index].size.unwrap_or(0);
                    let n = (want - c.written).min(rest.len() as u64) as usize;
                    if n == 0 {
                        let shown = manifest.entries[c.index].path.join("/");
                        return Err(Failure::new(FailKind::Damaged, format!("{shown}: more data came than its size")));
                    }
                    c.file
                        .write_all(&rest[..n])
                        .map_err(|e| Failure::disk(&e, format!("cannot write to {}: {e}", dir.display())))?;
                    c.hasher.update(&rest[..n]);
                    c.written += n as u64;
                    rest = &rest[n..];
                    if c.written == want {
                        // Its hash comes next; no byte of the next file before it.
                        break;
                    }
                }
                if !rest.is_empty() {
                    return Err(Failure::new(FailKind::Damaged, "a file's data ran past its end before its hash"));
                }
                written_all += bytes.len() as u64;
                let _ = spent.try_send(bytes);
                if written_all - reported >= super::CONSUMED_STEP {
                    reported = written_all;
                    notify.send(DiskEvent::Consumed { key, bytes: written_all });
                }
            }
            WriteMsg::FileEnd { index, hash } => {
                if current.is_none() {
                    // A file of no bytes: it is opened at its end.
                    current = open_next(&mut next)?;
                }
                let Some(c) = current.take() else {
                    return Err(Failure::new(FailKind::Damaged, "the peer ended more files than the folder holds"));
                };
                let entry = &manifest.entries[c.index];
                let shown = entry.path.join("/");
                if index as usize != c.index || c.written != entry.size.unwrap_or(0) {
                    return Err(Failure::new(
                        FailKind::Damaged,
                        format!("{shown}: it ended after {} of {} bytes", c.written, entry.size.unwrap_or(0)),
                    ));
                }
                if c.hasher.finalize().as_bytes() != &hash {
                    let reason =
                        format!("{shown} arrived damaged (its BLAKE3 hash does not match); the folder was not kept");
                    return Err(Failure::new(FailKind::Damaged, reason));
                }
                all.update(&hash);
                finished.push(inside(&staging.path, &entry.path));
                drop(c.file);
                // The count is for the progress line: ten times a second is plenty.
                if told.elapsed() >= std::time::Duration::from_millis(100) {
                    told = std::time::Instant::now();
                    notify.send(DiskEvent::FileInFolder { key, done: finished.len() as u64 });
                }
            }
            WriteMsg::Done(expected) => {
                if current.is_some() || open_next(&mut next)?.is_some() || finished.len() as u64 != manifest.files {
                    return Err(Failure::new(
                        FailKind::Damaged,
                        format!("the folder ended after {} of {} files", finished.len(), manifest.files),
                    ));
                }
                let all = all.finalize();
                if all.as_bytes() != &expected {
                    return Err(Failure::new(
                        FailKind::Damaged,
                        "the folder arrived damaged (its hash does not match)",
                    ));
                }
                make_durable(&staging.path, &finished, manifest)
                    .map_err(|e| disk(e, &|e| format!("cannot save to {}: {e}", dir.display())))?;
                if abort.load(Ordering::Acquire) {
                    return Err(Failure::new(FailKind::CancelledHere, "cancelled before the folder was saved"));
                }
                staging.unlock();
                let path =
                    place(&staging.path, dir, &manifest.name).map_err(|reason| Failure::new(FailKind::Disk, reason))?;
                staging.kept = true;
                return Ok(Some((path, all.to_hex().to_string())));
            }
        }
    }
}

/// A peer's path as a person may safely read it: invisible, control and
/// text-direction characters written as escapes.
fn display(path: &[String]) -> String {
    let joined = path.join("/");
    joined
        .chars()
        .map(|c| if crate::text::escaped_in_display(c) { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// Where `offset` falls in a folder's data (its files' bytes one after
/// another; `kinds` is each entry's size, `None` for a folder): the first
/// entry whose data is not all before `offset`, and how many of its bytes
/// are. An empty file exactly at `offset` is not before it. Both ends of a
/// resumed folder cut it the same way.
pub fn split(kinds: &[Option<u64>], offset: u64) -> (usize, u64) {
    let mut start = 0u64;
    for (i, kind) in kinds.iter().enumerate() {
        let Some(len) = *kind else { continue };
        if start == offset || start.saturating_add(len) > offset {
            return (i, offset - start);
        }
        start += len;
    }
    (kinds.len(), 0)
}

/// A folder's files read one after another as one stream: each for its
/// size in the listing, or as far as it goes if it is shorter (the stream
/// ends there) or missing.
struct Stream {
    files: std::vec::IntoIter<(PathBuf, u64)>,
    current: Option<(File, u64)>,
    ended: bool,
}

impl Stream {
    fn new(files: Vec<(PathBuf, u64)>) -> Stream {
        Stream { files: files.into_iter(), current: None, ended: false }
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            if self.current.is_none() {
                let Some((path, len)) = self.files.next() else { return Ok(0) };
                match File::open(&path) {
                    Ok(file) => self.current = Some((file, len)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.ended = true;
                        return Ok(0);
                    }
                    Err(e) => return Err(e),
                }
            }
            let (file, left) = self.current.as_mut().expect("just opened");
            if *left == 0 {
                self.current = None;
                continue;
            }
            let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                // Shorter than listed: the stream ends here.
                self.ended = true;
                return Ok(0);
            }
            *left -= n as u64;
            return Ok(n);
        }
    }
}

/// `root` joined with the (already safe) components.
fn inside(root: &Path, path: &[String]) -> PathBuf {
    let mut out = root.to_path_buf();
    out.extend(path);
    out
}

fn make_staging(dir: &Path) -> io::Result<PathBuf> {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let tag = blake3::hash(seed.as_bytes()).to_hex();
        let path = dir.join(format!("{}folder-{}{}", names::TEMP_PREFIX, &tag[..16], names::TEMP_SUFFIX));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One sync for the whole batch where the system has one (`syncfs` on
/// Linux), else each file; then the folders, so their entries last too.
fn make_durable(staging: &Path, files: &[PathBuf], manifest: &Manifest) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let root = File::open(staging)?;
        // SAFETY: a plain system call on a descriptor we own.
        if unsafe { libc::syncfs(root.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    for path in files {
        OpenOptions::new().write(true).open(path)?.sync_all()?;
    }
    #[cfg(unix)]
    for entry in manifest.entries.iter().filter(|e| e.size.is_none()) {
        File::open(inside(staging, &entry.path))?.sync_all()?;
    }
    // (Windows cannot sync a folder; its entries are journaled.)
    #[cfg(not(unix))]
    let _ = (staging, manifest);
    Ok(())
}

/// Gives the finished folder its name: `name`, or the first free
/// `name (n)`. An existing folder is never merged into or replaced.
fn place(staging: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    for n in 0..10_000 {
        let candidate = if n == 0 { name.to_owned() } else { format!("{name} ({n})") };
        let path = dir.join(&candidate);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        #[cfg(unix)]
        {
            // Claim the name with a folder of our own (atomic: fails if
            // anything is there), then move onto it: renaming a folder onto
            // an empty one replaces it, and only ours is empty by our hand.
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot save {}: {e}", path.display())),
            }
            match fs::rename(staging, &path) {
                Ok(()) => return Ok(path),
                // Someone put something in it meanwhile: it is theirs now.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
                Err(e) => {
                    let _ = fs::remove_dir(&path);
                    return Err(format!("cannot save {}: {e}", path.display()));
                }
            }
        }
        #[cfg(not(unix))]
        match fs::rename(staging, &path) {
            // Windows never renames onto an existing folder.
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) if fs::symlink_metadata(&path).is_ok() => continue,
            Err(e) => return Err(format!("cannot save {}: {e}", path.display())),
        }
    }
    Err(format!("too many folders called {name} in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &[&str], size: u64) -> TreeEntry {
        TreeEntry { path: path.iter().map(|s| s.to_string()).collect(), size: Some(size) }
    }

    fn folder(path: &[&str]) -> TreeEntry {
        TreeEntry { path: path.iter().map(|s| s.to_string()).collect(), size: None }
    }

    #[test]
    fn a_well_formed_tree_passes_with_its_counts() {
        let entries = vec![folder(&["a"]), file(&["a", "x.txt"], 3), folder(&["a", "empty"]), file(&["top.bin"], 4)];
        let m = Manifest::check("photos", 7, entries).unwrap();
        assert_eq!((m.files, m.size, m.entries.len()), (2, 7, 4));
        assert_eq!(m.name, "photos");
    }

    #[test]
    fn hostile_trees_are_refused_with_the_entry_named() {
        let cases: Vec<(Vec<TreeEntry>, &str)> = vec![
            (vec![file(&[".."], 0)], "\"..\""),
            (vec![folder(&["a"]), file(&["a", ".."], 0)], "a/.."),
            (vec![file(&["/etc/passwd"], 0)], "separator"),
            (vec![file(&["C:evil"], 0)], "drive"),
            (vec![file(&["\\\\server\\share"], 0)], "separator"),
            (vec![file(&["a", "b"], 0)], "comes before the folder"),
            (vec![file(&["x"], 0), file(&["x"], 0)], "listed twice"),
            (vec![file(&["x"], 0), folder(&["x"])], "listed twice"),
            (vec![folder(&["x"]), file(&["x"], 0)], "listed twice"),
            (vec![file(&["bell\u{7}"], 0)], "control"),
        ];
        for (entries, says) in cases {
            let why = Manifest::check("f", 0, entries.clone()).expect_err(&format!("{entries:?} passed"));
            assert!(why.contains(says), "{entries:?}: {why}");
        }
        let deep: Vec<String> = (0..=MAX_DEPTH).map(|i| format!("d{i}")).collect();
        let entries = vec![TreeEntry { path: deep, size: None }];
        assert!(Manifest::check("f", 0, entries).unwrap_err().contains("deep"));
        let lying = vec![file(&["a"], 5)];
        assert!(Manifest::check("f", 4, lying).unwrap_err().contains("add up to 5 bytes, not the 4"));
        assert!(Manifest::check("..", 0, vec![]).is_err());
    }
}
