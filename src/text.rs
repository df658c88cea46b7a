//! Characters that deceive a reader: the one place that says which.
//!
//! A peer chooses its name, its file names and its messages. Control
//! characters drive a terminal, bidirectional marks and overrides reorder
//! what is read, and invisible characters (a zero-width space, a soft
//! hyphen, a Hangul filler…) make `al\u{200b}ice` read as "alice". Names
//! with invisible or control characters are refused
//! (`net::frame::check_name`; file names with bidi marks too,
//! `files::names::safe_name`); text shown or printed has all of them
//! escaped (`net::printable`, and the command line's JSON).

/// Marks and overrides that reorder how text is displayed.
pub fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing (or nothing but blank space that is not a
/// space): zero-width spaces and joiners' relatives, the soft hyphen, the
/// byte-order mark, fillers, invisible operators and tag characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'
            | '\u{2060}'..='\u{2064}'
            | '\u{3164}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// Zero-width (non-)joiners are how Persian, Indic scripts and emoji
/// sequences are written, so they are allowed between two characters that
/// are not ASCII; next to ASCII (`al\u{200d}ice`) they only hide.
fn hiding_joiner(before: Option<char>, c: char, after: Option<char>) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}') && (before.is_none_or(|b| b.is_ascii()) || after.is_none_or(|a| a.is_ascii()))
}

/// The first character of `s` that hides what it says (invisible, or a
/// joiner next to ASCII), if any.
pub fn hidden_char(s: &str) -> Option<char> {
    let chars: Vec<char> = s.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        let before = i.checked_sub(1).map(|j| chars[j]);
        let after = chars.get(i + 1).copied();
        (is_invisible(c) || hiding_joiner(before, c, after)).then_some(c)
    })
}

/// Whether `c` is escaped when text from a peer is shown on one line.
pub fn escaped_in_display(c: char) -> bool {
    c.is_control() || is_bidi(c) || is_invisible(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_found_and_real_scripts_and_emoji_are_not() {
        for spoof in ["al\u{200b}ice", "al\u{00ad}ice", "\u{feff}alice", "alice\u{3164}", "al\u{200d}ice", "\u{200c}x"]
        {
            assert!(hidden_char(spoof).is_some(), "{spoof:?}");
        }
        // Persian with a zero-width non-joiner, an emoji family, a flag.
        for real in ["می\u{200c}خواهم", "👨\u{200d}👩\u{200d}👧", "🇫🇷 Amélie", "Zoë", "日本語"]
        {
            assert_eq!(hidden_char(real), None, "{real:?}");
        }
    }
}
