//! The file-name check under arbitrary names, in the normal test suite
//! (the deep version is the `safe_name` fuzz target, docs/FUZZING.md).
//!
//! The rules are in `name_rules.rs`, written independently of
//! `files::names` and shared with the fuzz target. Each accepted name is also
//! created for real in a downloads folder, which must then hold exactly
//! that one file and nothing beside it.

use std::fs;

use peerconn::files::names::safe_name;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::name_rules::{check_accepted, refusal_has_reason, reserved_on_windows};
use crate::support::TempDir;

/// Names built to hit the rules: pieces that are fine, and pieces that each
/// break one rule, in any order.
fn tricky_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => "[a-zA-Z0-9 _-]{1,12}",
        2 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => prop::sample::select(vec!["/", "\\", ":", "<", ">", "\"", "|", "?", "*"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["CON", "nul", "Com1", "LPT9", "lpt¹", "CONIN$", "aux"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![".peerconn-", ".part", "C:", "~"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["\u{202e}", "\u{2066}", "\u{200f}", "\t", "\n", "\u{7f}", "\u{1b}[31m"])
            .prop_map(str::to_owned),
        1 => "[\u{80}-\u{10ffff}]{1,4}",
        1 => (150usize..260).prop_map(|n| "x".repeat(n)),
    ];
    vec(piece, 1..8).prop_map(|pieces| pieces.concat())
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => tricky_name(),
        1 => vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_name_is_one_safe_component_and_a_refused_one_has_a_reason(offered in any_name()) {
        match safe_name(&offered) {
            Ok(name) => check_accepted(&offered, &name).map_err(TestCaseError::fail)?,
            Err(why) => {
                prop_assert!(refusal_has_reason(&offered), "{offered:?} was refused without a documented reason: {}", why.0);
                prop_assert!(!why.0.is_empty(), "a refusal says why");
            }
        }
    }

    #[test]
    fn ordinary_names_pass_unchanged(name in "[a-zA-Z0-9_][a-zA-Z0-9 _()-]{0,60}[a-zA-Z0-9_)]\\.[a-z0-9]{1,6}") {
        prop_assume!(!reserved_on_windows(&name));
        prop_assert_eq!(safe_name(&name).map_err(|e| e.0), Ok(name.clone()));
    }
}

/// Accepted names created for real: each lands directly in the folder.
#[test]
fn accepted_names_create_one_file_directly_in_the_folder() {
    let dir = TempDir::new("name-props");
    let downloads = dir.path().join("downloads");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    runner
        .run(&tricky_name(), |offered| {
            let Ok(name) = safe_name(&offered) else { return Ok(()) };
            fs::create_dir_all(&downloads).unwrap();
            fs::write(downloads.join(&name), b"x").map_err(|e| TestCaseError::fail(format!("{name:?}: {e}")))?;
            let inside: Vec<_> = fs::read_dir(&downloads).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(inside.len(), 1, "{:?} made {:?}", name, inside);
            prop_assert_eq!(inside[0].to_str(), Some(name.as_str()));
            let beside: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(beside.len(), 1, "something appeared beside the downloads folder: {:?}", beside);
            fs::remove_dir_all(&downloads).unwrap();
            Ok(())
        })
        .unwrap();
}
