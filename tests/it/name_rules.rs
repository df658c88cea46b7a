//! The rules a file name from a peer must end up following, written from
//! docs/PROTOCOL.md and Windows' naming rules independently of
//! `files::names`, so a mistake shared by the code and its checks is less
//! likely. Used by the property tests (`name_props.rs`) and by the
//! `safe_name` fuzz target, which includes this file.

use std::path::{Component, Path};

use peerconn::files::names::{is_temp_name, MAX_KEPT_NAME, MAX_OFFERED_NAME, TEMP_PREFIX};

/// Marks and overrides that reorder how text is displayed.
pub fn bidi(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Windows' device names: the part before the first dot, without trailing
/// spaces, compared case-insensitively (as `ntpath.isreserved` does it).
pub fn reserved_on_windows(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ').to_ascii_uppercase();
    if matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$") {
        return true;
    }
    let mut chars = stem.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (prefix == "COM" || prefix == "LPT") && matches!(rest[..], ['1'..='9' | '¹' | '²' | '³'])
}

/// What is wrong with `name`, which the check made of `offered`, if
/// anything: it must be one plain path component, safe on every system.
pub fn check_accepted(offered: &str, name: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{offered:?} became {name:?}, {why}"));
    if name.is_empty() || name == "." || name == ".." {
        return fail("which is no name");
    }
    if name.contains(['/', '\\']) {
        return fail("with a separator");
    }
    let mut components = Path::new(name).components();
    if !matches!((components.next(), components.next()), (Some(Component::Normal(c)), None) if c == name) {
        return fail("which is not one path component");
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || bidi(c)) {
        return fail(&format!("with {c:?}"));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')) {
        return fail(&format!("with {c:?}, which Windows forbids"));
    }
    if reserved_on_windows(name) {
        return fail("a Windows device name");
    }
    if name.ends_with(['.', ' ']) {
        return fail("with a trailing dot or space");
    }
    if name.len() > MAX_KEPT_NAME {
        return fail(&format!("{} bytes, over MAX_KEPT_NAME", name.len()));
    }
    if name.starts_with(TEMP_PREFIX) || is_temp_name(name) {
        return fail("like our temporary files");
    }
    Ok(())
}

/// Whether refusing `offered` had one of the documented reasons: a
/// separator, control or bidi characters, a drive prefix, over 255 bytes,
/// or nothing left once dots and spaces are removed.
pub fn refusal_has_reason(offered: &str) -> bool {
    let b = offered.as_bytes();
    offered.contains(['/', '\\'])
        || offered.chars().any(|c| c.is_control() || bidi(c))
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
        || offered.len() > MAX_OFFERED_NAME
        || offered.trim().trim_end_matches(['.', ' ']).is_empty()
        || offered.trim() == ".."
}
