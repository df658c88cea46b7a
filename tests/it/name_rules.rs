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

/// Characters that show nothing: zero-width space, soft hyphen, word
/// joiner and invisible operators, byte-order mark, Hangul and halfwidth
/// fillers, tags.
pub fn invisible(c: char) -> bool {
    matches!(c as u32, 0xAD | 0x200B | 0x2060..=0x2064 | 0xFEFF | 0x3164 | 0x115F | 0x1160 | 0xFFA0 | 0xE0000..=0xE007F)
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
    if let Some(c) = name.chars().find(|&c| c.is_control() || bidi(c) || invisible(c)) {
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
/// separator, control, bidi or invisible characters (a zero-width joiner
/// next to ASCII counts), a drive prefix, over 255 bytes, or nothing left
/// once dots and spaces are removed.
pub fn refusal_has_reason(offered: &str) -> bool {
    let b = offered.as_bytes();
    let chars: Vec<char> = offered.chars().collect();
    let hiding_joiner = chars.iter().enumerate().any(|(i, c)| {
        matches!(c, '\u{200C}' | '\u{200D}')
            && (i == 0 || chars[i - 1].is_ascii() || chars.get(i + 1).is_none_or(|n| n.is_ascii()))
    });
    offered.contains(['/', '\\'])
        || offered.chars().any(|c| c.is_control() || bidi(c) || invisible(c))
        || hiding_joiner
        || offered.chars().any(|c| matches!(c as u32, 0x034F | 0x17B4 | 0x17B5 | 0x180B..=0x180F))
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
        || offered.len() > MAX_OFFERED_NAME
        || offered.trim().trim_end_matches(['.', ' ']).is_empty()
        || offered.trim() == ".."
}
