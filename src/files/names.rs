//! Checking file names that come from a peer.
//!
//! A name in an offer is only ever used as one path component inside the
//! downloads folder. Anything that could make it more than that (a path
//! separator, `..`, a drive or UNC prefix) is refused outright; anything
//! that would merely misbehave on some system (characters Windows forbids,
//! reserved device names, trailing dots and spaces) is made safe; anything
//! meant to deceive the reader (control and bidirectional-override
//! characters) is refused, because a renamed file would still mislead.

use std::fmt;

/// Longest name we keep, in bytes (file systems allow 255; room is left for
/// a " (123)" suffix).
pub const MAX_KEPT_NAME: usize = 200;
/// Longest name accepted in an offer, in bytes.
pub const MAX_OFFERED_NAME: usize = 255;
/// Prefix of our temporary files in the downloads folder.
pub const TEMP_PREFIX: &str = ".peerconn-";
/// Suffix of our temporary files.
pub const TEMP_SUFFIX: &str = ".part";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsafeName(pub String);

impl fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsafe file name: {}", self.0)
    }
}

/// Turns a peer's file name into one safe path component, or says why not.
pub fn safe_name(offered: &str) -> Result<String, UnsafeName> {
    if offered.len() > MAX_OFFERED_NAME {
        return Err(UnsafeName(format!("it is {} bytes long; the limit is {MAX_OFFERED_NAME}", offered.len())));
    }
    if offered.contains(['/', '\\']) {
        return Err(UnsafeName("it contains a path separator".into()));
    }
    if offered.chars().any(|c| c.is_control() || crate::text::is_bidi(c)) {
        return Err(UnsafeName("it contains control or text-direction characters".into()));
    }
    if let Some(c) = crate::text::hidden_char(offered) {
        return Err(UnsafeName(format!("it contains the invisible character {}", c.escape_unicode())));
    }
    let bytes = offered.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(UnsafeName("it starts with a drive letter".into()));
    }
    let trimmed = offered.trim().trim_end_matches(['.', ' ']);
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." || offered.trim() == ".." {
        return Err(UnsafeName("it has no name left once dots and spaces are removed".into()));
    }
    // Characters Windows forbids in names become '_'.
    let mut name: String =
        trimmed.chars().map(|c| if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c }).collect();
    if is_reserved_on_windows(&name) || name.starts_with(TEMP_PREFIX) {
        name.insert(0, '_');
    }
    // Cutting may leave a trailing dot or space, which Windows would drop.
    let mut kept = shorten(&name, MAX_KEPT_NAME).trim_end_matches(['.', ' ']).to_owned();
    if kept.is_empty() {
        // All that fits at the start is dots and spaces: keep the end,
        // which has something else (`name` does not end in either).
        kept = tail(&name, MAX_KEPT_NAME - 1).trim().trim_end_matches(['.', ' ']).to_owned();
        if is_reserved_on_windows(&kept) || kept.starts_with(TEMP_PREFIX) {
            kept.insert(0, '_');
        }
    }
    if kept.is_empty() {
        return Err(UnsafeName("it has no name left once dots and spaces are removed".into()));
    }
    Ok(kept)
}

/// The last `max` bytes of `name` at most, cut at a character boundary.
fn tail(name: &str, max: usize) -> &str {
    let mut start = name.len().saturating_sub(max);
    while !name.is_char_boundary(start) {
        start += 1;
    }
    &name[start..]
}

/// CON, PRN, AUX, NUL, COM1–9 and LPT1–9 (with any extension, in any case,
/// superscript digits included) name devices on Windows.
fn is_reserved_on_windows(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        s if (s.starts_with("COM") || s.starts_with("LPT")) && s.chars().count() == 4 => {
            matches!(s.chars().nth(3), Some('1'..='9' | '¹' | '²' | '³'))
        }
        _ => false,
    }
}

/// Cuts an over-long name, keeping its extension.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = split_extension(name);
    // A long "extension" (the last dot near the start) is not one: cut the
    // whole name instead of dropping everything after that dot.
    let (stem, ext) = if ext.len() <= 20 { (stem, ext) } else { (name, "") };
    let mut end = max.saturating_sub(ext.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

/// "archive.tar.gz" → ("archive.tar", ".gz"); ".bashrc" → (".bashrc", "").
pub fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// The `n`th alternative for a taken name: "photo (1).jpg", "photo (2).jpg"…
pub fn numbered(name: &str, n: u32) -> String {
    let (stem, ext) = split_extension(name);
    format!("{stem} ({n}){ext}")
}

/// Is this one of our temporary files?
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `safe_name` fuzz target: ".." then 83 U+FFFD then ".."
    /// was cut down to "." and refused, losing the whole name.
    #[test]
    fn a_long_name_whose_last_dot_is_near_its_start_is_cut_not_emptied() {
        let offered = format!("..{}..", "\u{fffd}".repeat(83));
        let name = safe_name(&offered).expect("a long name is shortened, not refused");
        assert!(name.len() <= MAX_KEPT_NAME && name.starts_with("..\u{fffd}"), "{name:?}");
        let long = format!("a.{}", "b".repeat(250));
        assert_eq!(safe_name(&long).unwrap().len(), MAX_KEPT_NAME);
        // What fits at the start is only dots and spaces: the end is kept.
        let spaces = format!("..{}({}..  ", " ".repeat(213), " ".repeat(5));
        assert_eq!(safe_name(&spaces), Ok("(".to_owned()));
        let temp = format!("..{}{TEMP_PREFIX}{}", " ".repeat(200), "y".repeat(40));
        let kept = safe_name(&temp).unwrap();
        assert!(kept.starts_with("_.peerconn-") && kept.len() <= MAX_KEPT_NAME, "{kept:?}");
    }

    #[test]
    fn ordinary_names_pass_unchanged() {
        for n in ["photo.jpg", "Archive 2024.tar.gz", "ünïcödé 文件.zip", ".bashrc", "a"] {
            assert_eq!(safe_name(n).as_deref(), Ok(n));
        }
    }

    #[test]
    fn paths_and_tricks_are_refused() {
        for n in [
            "../x",
            "..",
            ".",
            "a/b",
            "a\\b",
            "/etc/passwd",
            "\\\\server\\share",
            "C:evil",
            "c:\\x",
            "",
            "   ",
            "...",
            "x\u{202e}gpj.exe",
            "bell\u{7}",
            "new\nline",
            "nul\0byte",
        ] {
            assert!(safe_name(n).is_err(), "{n:?} passed");
        }
    }

    #[test]
    fn windows_troubles_are_made_safe() {
        assert_eq!(safe_name("CON").unwrap(), "_CON");
        assert_eq!(safe_name("nul.txt").unwrap(), "_nul.txt");
        assert_eq!(safe_name("COM1.tar.gz").unwrap(), "_COM1.tar.gz");
        assert_eq!(safe_name("LPT¹").unwrap(), "_LPT¹");
        assert_eq!(safe_name("COM10").unwrap(), "COM10");
        assert_eq!(safe_name("report. . ").unwrap(), "report");
        assert_eq!(safe_name("what?<>|*\".txt").unwrap(), "what______.txt");
        assert_eq!(safe_name(".peerconn-0123.part").unwrap(), "_.peerconn-0123.part");
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.zip", "é".repeat(120));
        let safe = safe_name(&long).unwrap();
        assert!(safe.len() <= MAX_KEPT_NAME && safe.ends_with(".zip"), "{safe}");
        assert!(safe_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn numbered_alternatives_keep_the_extension() {
        assert_eq!(numbered("photo.jpg", 1), "photo (1).jpg");
        assert_eq!(numbered("README", 2), "README (2)");
        assert_eq!(numbered(".bashrc", 3), ".bashrc (3)");
    }
}
