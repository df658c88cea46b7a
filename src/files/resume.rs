//! What makes a cut transfer resumable: the partial file kept under a name
//! derived from who sends it and what, the block hashes that prove a
//! prefix, and the sweep that keeps partial files bounded.
//!
//! A receiver writes an accepted file into `.peerconn-resume-<id>.part`,
//! where `<id>` comes from the sender's key, the file's (safe) name and its
//! size. When the connection is lost (or either program dies) the file
//! stays. When the same peer key offers the same name and size again, the
//! receiver says how many bytes it holds (RESUME), the sender hashes that
//! prefix of its file in blocks and sends the hashes (PROOF), and the
//! receiver keeps only the blocks of its own file, read back from the disk,
//! that match: data is never trusted because it is there. The whole-file
//! BLAKE3 check at the end still decides whether the file is kept.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::names::TEMP_SUFFIX;

/// Most block hashes in one PROOF: a partial file of any size is proven in
/// one frame (32 KiB of hashes), in blocks of [`proof_block`] bytes.
pub const MAX_PROOF_BLOCKS: u64 = 1024;

/// The block size a PROOF of the first `have` bytes of a file uses: whole
/// MiB, at least one, and few enough blocks for one frame. Both ends derive
/// it from `have`, so it never travels.
pub fn proof_block(have: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    have.div_ceil(MAX_PROOF_BLOCKS).div_ceil(MIB).max(1) * MIB
}

/// Hashes a PROOF of the first `have` bytes carries.
pub fn proof_blocks(have: u64) -> u64 {
    have.div_ceil(proof_block(have))
}

/// What starts the name of a resumable partial file.
pub const RESUME_PREFIX: &str = ".peerconn-resume-";
/// A partial file not written to for this long is removed.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Partial files may take this much of the downloads folder together; the
/// oldest go first beyond it.
pub const MAX_TOTAL: u64 = 64 * 1024 * 1024 * 1024;

/// Where the partial file of `name` (already made safe) of `size` bytes
/// from the peer with key `peer` lives in `dir`. Nothing the peer chooses
/// reaches the name but through the hash.
pub fn partial_path(dir: &Path, peer: &[u8; 32], name: &str, size: u64) -> PathBuf {
    let mut hasher = blake3::Hasher::new_derive_key("PeerConn 2026 resumable partial file");
    hasher.update(peer);
    hasher.update(&size.to_be_bytes());
    hasher.update(name.as_bytes());
    let id = hasher.finalize().to_hex();
    dir.join(format!("{RESUME_PREFIX}{}{TEMP_SUFFIX}", &id[..32]))
}

/// Whether `name` is a resumable partial file's.
pub fn is_partial_name(name: &str) -> bool {
    name.starts_with(RESUME_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Reads the first `have` bytes of `file` (from where it stands) and
/// returns the BLAKE3 hash of each proof block, feeding every byte to
/// `whole` too.
pub fn hash_blocks(file: &mut impl Read, have: u64, whole: &mut blake3::Hasher) -> io::Result<Vec<[u8; 32]>> {
    let block = proof_block(have);
    let mut hashes = Vec::with_capacity(proof_blocks(have) as usize);
    let mut buf = vec![0u8; super::BLOCK];
    let mut at = 0;
    while at < have {
        let len = block.min(have - at);
        hashes.push(hash_block(file, len, &mut buf, whole)?);
        at += len;
    }
    Ok(hashes)
}

/// Reads the first `have` bytes of `file` from its start and keeps the
/// longest run of blocks whose hashes match `expected`. Returns how many
/// bytes are proven; `whole` has hashed exactly those. A file shorter than
/// `have` proves what it holds, in whole blocks.
pub fn verify(file: &mut impl Read, have: u64, expected: &[[u8; 32]], whole: &mut blake3::Hasher) -> io::Result<u64> {
    if expected.len() as u64 != proof_blocks(have) {
        return Ok(0);
    }
    let block = proof_block(have);
    let mut buf = vec![0u8; super::BLOCK];
    let mut at = 0;
    for hash in expected {
        let len = block.min(have - at);
        let before = whole.clone();
        match hash_block(file, len, &mut buf, whole) {
            Ok(found) if found == *hash => at += len,
            Ok(_) => {
                *whole = before;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                *whole = before;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

fn hash_block(file: &mut impl Read, len: u64, buf: &mut [u8], whole: &mut blake3::Hasher) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        whole.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// A partial file found in the downloads folder.
struct Found {
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

/// Removes partial files (and folders) older than [`MAX_AGE`], then the
/// oldest while all of them together take more than `max_total`. A file
/// locked by a running transfer is never taken. Returns how many went.
pub fn sweep(dir: &Path, max_total: u64) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut found: Vec<Found> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_partial_name))
        .filter_map(|e| {
            let meta = fs::symlink_metadata(e.path()).ok()?;
            let len = if meta.is_dir() { size_of_folder(&e.path()) } else { meta.len() };
            (meta.is_file() || meta.is_dir()).then_some(())?;
            Some(Found { path: e.path(), len, modified: meta.modified().ok()? })
        })
        .collect();
    // Newest first: what is kept is counted from the front.
    found.sort_by_key(|f| std::cmp::Reverse(f.modified));
    let mut total: u64 = 0;
    let mut removed = 0;
    for f in found {
        let old = f.modified.elapsed().is_ok_and(|age| age > MAX_AGE);
        total = total.saturating_add(f.len);
        if !old && total <= max_total {
            continue;
        }
        let gone = if f.path.is_dir() {
            !super::tree::locked_by_other(&f.path) && fs::remove_dir_all(&f.path).is_ok()
        } else {
            let Ok(file) = fs::OpenOptions::new().write(true).open(&f.path) else { continue };
            if file.try_lock().is_err() {
                continue; // in use
            }
            fs::remove_file(&f.path).is_ok()
        };
        if gone {
            let why = if old { "not resumed for a week" } else { "partial files take too much space" };
            log::info!("removed the partial transfer {} ({why})", f.path.display());
            removed += 1;
            total -= f.len;
        }
    }
    removed
}

/// The bytes of the files under `dir`, links not followed.
fn size_of_folder(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match fs::symlink_metadata(e.path()) {
            Ok(m) if m.is_dir() => size_of_folder(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Seek, Write};

    fn temp_file(bytes: &[u8]) -> (PathBuf, File) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "peerconn-resume-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        (path, file)
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn a_matching_prefix_is_proven_whole_and_hashed_as_the_file_starts() {
        let data = bytes(3 * 1024 * 1024 + 5);
        let (path, mut file) = temp_file(&data);
        let mut sender = blake3::Hasher::new();
        let hashes = hash_blocks(&mut file, data.len() as u64, &mut sender).unwrap();
        assert_eq!(hashes.len(), 4);
        file.rewind().unwrap();
        let mut receiver = blake3::Hasher::new();
        assert_eq!(verify(&mut file, data.len() as u64, &hashes, &mut receiver).unwrap(), data.len() as u64);
        assert_eq!(receiver.finalize(), blake3::hash(&data));
        let _ = fs::remove_file(path);
    }

    #[test]
    fn a_changed_block_keeps_only_the_blocks_before_it() {
        let data = bytes(5 * 1024 * 1024);
        let mut sender = blake3::Hasher::new();
        let (p1, mut original) = temp_file(&data);
        let hashes = hash_blocks(&mut original, data.len() as u64, &mut sender).unwrap();
        let mut damaged = data.clone();
        damaged[2 * 1024 * 1024 + 17] ^= 1;
        let (p2, mut partial) = temp_file(&damaged);
        let mut receiver = blake3::Hasher::new();
        let proven = verify(&mut partial, data.len() as u64, &hashes, &mut receiver).unwrap();
        assert_eq!(proven, 2 * 1024 * 1024);
        assert_eq!(receiver.finalize(), blake3::hash(&data[..2 * 1024 * 1024]));
        let _ = (fs::remove_file(p1), fs::remove_file(p2));
    }

    #[test]
    fn a_partial_file_shorter_than_it_claims_proves_its_whole_blocks() {
        let data = bytes(3 * 1024 * 1024);
        let (p1, mut original) = temp_file(&data);
        let hashes = hash_blocks(&mut original, data.len() as u64, &mut blake3::Hasher::new()).unwrap();
        let (p2, mut partial) = temp_file(&data[..2 * 1024 * 1024 + 10]);
        let proven = verify(&mut partial, data.len() as u64, &hashes, &mut blake3::Hasher::new()).unwrap();
        assert_eq!(proven, 2 * 1024 * 1024);
        // A proof of the wrong length proves nothing.
        partial.rewind().unwrap();
        assert_eq!(verify(&mut partial, data.len() as u64, &hashes[..2], &mut blake3::Hasher::new()).unwrap(), 0);
        let _ = (fs::remove_file(p1), fs::remove_file(p2));
    }

    #[test]
    fn a_partial_file_name_depends_on_key_name_and_size_only() {
        let dir = Path::new("/downloads");
        let a = partial_path(dir, &[1; 32], "backup.zip", 10);
        assert_eq!(a, partial_path(dir, &[1; 32], "backup.zip", 10));
        assert_ne!(a, partial_path(dir, &[2; 32], "backup.zip", 10));
        assert_ne!(a, partial_path(dir, &[1; 32], "backup.zip", 11));
        assert_ne!(a, partial_path(dir, &[1; 32], "other.zip", 10));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(is_partial_name(name) && super::super::names::is_temp_name(name), "{name}");
        assert_eq!(a.parent(), Some(dir));
    }

    #[test]
    fn the_sweep_removes_the_oldest_partials_beyond_the_total() {
        let dir = std::env::temp_dir().join(format!("peerconn-sweep-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let make = |n: u8, age: Duration| {
            let path = partial_path(&dir, &[n; 32], "f", 1);
            fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        };
        let newest = make(1, Duration::ZERO);
        let older = make(2, day);
        let oldest = make(3, 2 * day);
        let expired = make(4, 8 * day);
        let other = dir.join("holiday.zip");
        fs::write(&other, b"not ours").unwrap();
        assert_eq!(sweep(&dir, 2500), 2);
        assert!(newest.exists() && older.exists() && other.exists());
        assert!(!oldest.exists() && !expired.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
