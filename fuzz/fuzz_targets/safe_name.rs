//! The check every offered file name goes through before it touches the
//! disk: `files::names::safe_name`.
//!
//! It must never panic, and a name it accepts must be one plain path
//! component that is safe on every system PeerConn runs on. The checks
//! below are written independently of the code under test (from the rules
//! in docs/PROTOCOL.md and Microsoft's "Naming Files, Paths, and
//! Namespaces"), so a shared mistake is less likely:
//!
//! * not empty, not `.` or `..`, no `/` or `\`, one normal path component;
//! * no control characters and no bidirectional-override or -mark
//!   characters;
//! * none of `< > : " | ? *` (so no drive prefix or alternate stream);
//! * not a Windows device name (CON, PRN, AUX, NUL, CONIN$, CONOUT$,
//!   COM1–9, LPT1–9 and the superscript ¹²³ forms), with or without an
//!   extension or trailing spaces before it;
//! * no trailing dot or space (Windows would drop them);
//! * at most 255 bytes (and at most `MAX_KEPT_NAME`, leaving room for
//!   " (n)"), and not one of our own temporary file names;
//! * a name that was refused had a reason: refusal is only for names with a
//!   separator, control/bidi characters, a drive prefix, over 255 bytes, or
//!   nothing left once dots and spaces are removed.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use peerconn::files::names::{is_temp_name, safe_name, MAX_KEPT_NAME, TEMP_PREFIX};

fuzz_target!(|data: &[u8]| {
    // Valid UTF-8 as it is; anything else the way a peer's bytes would
    // never arrive (the decoder refuses invalid UTF-8), so lossily.
    let offered = String::from_utf8_lossy(data);
    match safe_name(&offered) {
        Ok(name) => accepted(&offered, &name),
        Err(_) => refused(&offered),
    }
});

fn accepted(offered: &str, name: &str) {
    assert!(!name.is_empty(), "{offered:?} became an empty name");
    assert!(name != "." && name != "..", "{offered:?} became {name:?}");
    assert!(!name.contains(['/', '\\']), "{offered:?} became {name:?}, with a separator");
    let mut components = Path::new(name).components();
    assert!(
        matches!((components.next(), components.next()), (Some(Component::Normal(c)), None) if c == name),
        "{offered:?} became {name:?}, which is not one path component"
    );
    if let Some(c) = name.chars().find(|&c| c.is_control() || bidi(c)) {
        panic!("{offered:?} became {name:?}, with {c:?}");
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')) {
        panic!("{offered:?} became {name:?}, with {c:?}, which Windows forbids");
    }
    assert!(!reserved_on_windows(name), "{offered:?} became {name:?}, a Windows device name");
    assert!(!name.ends_with(['.', ' ']), "{offered:?} became {name:?}, with a trailing dot or space");
    assert!(name.len() <= 255, "{offered:?} became {} bytes", name.len());
    assert!(name.len() <= MAX_KEPT_NAME, "{offered:?} became {} bytes, over MAX_KEPT_NAME", name.len());
    assert!(!name.starts_with(TEMP_PREFIX) && !is_temp_name(name), "{offered:?} became {name:?}, like our temp files");
}

/// A refusal must have one of the documented reasons.
fn refused(offered: &str) {
    let has_separator = offered.contains(['/', '\\']);
    let deceptive = offered.chars().any(|c| c.is_control() || bidi(c));
    let b = offered.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    let too_long = offered.len() > 255;
    let nothing_left = offered.trim().trim_end_matches(['.', ' ']).is_empty() || offered.trim() == "..";
    assert!(
        has_separator || deceptive || drive || too_long || nothing_left,
        "{offered:?} was refused without a documented reason"
    );
}

/// Marks and overrides that reorder how text is displayed.
fn bidi(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Windows' device names: the part before the first dot, without trailing
/// spaces, compared case-insensitively (as `ntpath.isreserved` does it).
fn reserved_on_windows(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ').to_ascii_uppercase();
    if matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$") {
        return true;
    }
    let mut chars = stem.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (prefix == "COM" || prefix == "LPT") && matches!(rest[..], ['1'..='9' | '¹' | '²' | '³'])
}
