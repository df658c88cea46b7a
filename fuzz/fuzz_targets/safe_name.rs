//! The check every offered file name goes through before it touches the
//! disk: `files::names::safe_name`.
//!
//! It must never panic, and a name it accepts must be one plain path
//! component that is safe on every system PeerConn runs on. The checks
//! (in `tests/it/name_rules.rs`, shared with the property tests) are
//! written independently of the code under test (from the rules
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

use libfuzzer_sys::fuzz_target;
use peerconn::files::names::safe_name;

// The rules, shared with the property tests in the normal test suite.
#[path = "../../tests/it/name_rules.rs"]
mod name_rules;

fuzz_target!(|data: &[u8]| {
    // Valid UTF-8 as it is; anything else the way a peer's bytes would
    // never arrive (the decoder refuses invalid UTF-8), so lossily.
    let offered = String::from_utf8_lossy(data);
    match safe_name(&offered) {
        Ok(name) => {
            if let Err(why) = name_rules::check_accepted(&offered, &name) {
                panic!("{why}");
            }
        }
        Err(_) => assert!(name_rules::refusal_has_reason(&offered), "{offered:?} was refused without a documented reason"),
    }
});
