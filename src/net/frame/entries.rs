//! A folder's listing on the wire: how one entry is encoded in ENTRIES,
//! and a listing cut into frames that each hold as much as fits.

use super::{clip, Frame, FrameError, TreeEntry, HEADER_LEN, MAX_DEPTH, MAX_FILE_NAME, MAX_FRAME};

/// Bytes `entry` takes in an ENTRIES frame.
pub(super) fn entry_len(entry: &TreeEntry) -> usize {
    let size = if entry.size.is_some() { 8 } else { 0 };
    2 + size + entry.path.iter().map(|c| 1 + c.len().min(MAX_FILE_NAME)).sum::<usize>()
}

/// kind (0 folder, 1 file), a file's size, the component count, then each
/// component as its length and UTF-8.
pub(super) fn encode_entry(out: &mut Vec<u8>, entry: &TreeEntry) {
    out.push(u8::from(entry.size.is_some()));
    if let Some(size) = entry.size {
        out.extend_from_slice(&size.to_be_bytes());
    }
    out.push(entry.path.len().min(MAX_DEPTH) as u8);
    for component in entry.path.iter().take(MAX_DEPTH) {
        let component = clip(component, MAX_FILE_NAME);
        out.push(component.len() as u8);
        out.extend_from_slice(component.as_bytes());
    }
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<(TreeEntry, &[u8]), FrameError> {
    let bad = |why: &str| FrameError::Malformed("folder entries", why.to_owned());
    let (&kind, mut rest) = bytes.split_first().ok_or_else(|| bad("an entry is cut short"))?;
    let size = match kind {
        0 => None,
        1 => {
            let size: [u8; 8] = rest.get(..8).ok_or_else(|| bad("a file entry has no size"))?.try_into().expect("8");
            rest = &rest[8..];
            Some(u64::from_be_bytes(size))
        }
        other => return Err(bad(&format!("an entry of unknown kind {other}"))),
    };
    let (&count, mut rest) = rest.split_first().ok_or_else(|| bad("an entry has no path"))?;
    if count == 0 || usize::from(count) > MAX_DEPTH {
        return Err(bad(&format!("a path of {count} components; it must be 1 to {MAX_DEPTH}")));
    }
    let mut path = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, after) = rest.split_first().ok_or_else(|| bad("a path is cut short"))?;
        let len = usize::from(len);
        if len == 0 || after.len() < len {
            return Err(bad("a path component is empty or cut short"));
        }
        let component = std::str::from_utf8(&after[..len]).map_err(|_| FrameError::BadUtf8("folder entry"))?;
        path.push(component.to_owned());
        rest = &after[len..];
    }
    Ok((TreeEntry { path, size }, rest))
}

/// A folder's entries as ENTRIES frames, each as full as one frame holds.
pub fn entries_frames(transfer: u32, entries: &[TreeEntry]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut batch = Vec::new();
    let mut used = HEADER_LEN + 1 + 4;
    for entry in entries {
        let len = entry_len(entry);
        if used + len > MAX_FRAME && !batch.is_empty() {
            frames.push(Frame::Entries { transfer, entries: std::mem::take(&mut batch) });
            used = HEADER_LEN + 1 + 4;
        }
        used += len;
        batch.push(entry.clone());
    }
    if !batch.is_empty() {
        frames.push(Frame::Entries { transfer, entries: batch });
    }
    frames
}
