//! `peerconn nearby`: the listeners announced on the local network, each
//! with the link that connects to it (pinning the key it announced), as
//! they are found, for `--timeout` seconds.
//!
//! Exit status: 0 when at least one was found, 1 when none was (what to
//! check goes to standard error), 2 on a usage error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use peerconn::nearby::{Browser, NearbyChange, NearbyPeer, NOTHING_FOUND};
use peerconn::net::trust::KnownPeers;
use peerconn::net::{known_peers_path, printable, EngineConfig};

use super::render;

pub(super) fn run(json: bool, timeout: f64) -> ExitCode {
    if !(timeout.is_finite() && (0.0..=3600.0).contains(&timeout)) {
        eprintln!("peerconn: --timeout is in seconds, from 0 to 3600");
        return ExitCode::from(2);
    }
    let mut browser = match Browser::start() {
        Ok(browser) => browser,
        Err(e) => {
            eprintln!("peerconn: {e}");
            return ExitCode::from(1);
        }
    };
    // Who these keys are to us: remembered, verified, or this installation.
    let known = KnownPeers::open(&known_peers_path()).ok();
    let own = EngineConfig::installed().ok().map(|c| c.identity.fingerprint());
    let trust = |peer: &NearbyPeer| -> &'static str {
        let fingerprint = peer.fingerprint();
        if own.as_deref() == Some(fingerprint.as_str()) {
            return "this installation";
        }
        let remembered = known.as_ref().and_then(|k| {
            k.peers().iter().find(|p| peerconn::net::secure::fingerprint(&p.key) == fingerprint).map(|p| p.verified)
        });
        match remembered {
            Some(true) => "verified",
            Some(false) => "known",
            None => "new",
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut shown = std::collections::HashSet::new();
    while let Some(change) = browser.next_before(deadline) {
        let NearbyChange::Found(peer) = change else { continue };
        let Some(link) = peer.link() else { continue };
        // Once per listener (an announcement repeats as addresses change).
        if !shown.insert(peer.instance.clone()) {
            continue;
        }
        let (trust, link) = (trust(&peer), link.to_string());
        if json {
            let addrs: Vec<String> = peer.addrs.iter().map(|a| a.to_string()).collect();
            let line = json!({
                "event": "nearby",
                "name": peer.name,
                "addr": addrs[0],
                "addrs": addrs,
                "port": peer.port,
                "fingerprint": peer.fingerprint(),
                "trust": trust,
                "code_required": peer.code_required,
                "link": link,
            });
            println!("{}", render::escape_json(&line.to_string()));
        } else {
            let code = if peer.code_required { ", asks for a pairing code" } else { "" };
            let addr = peer.link().map(|l| l.address()).unwrap_or_default();
            println!("\"{}\" at {addr}  key {} ({trust}{code})", printable(&peer.name), peer.fingerprint());
            println!("  peerconn connect '{link}'");
        }
    }
    if shown.is_empty() {
        eprintln!("peerconn: {NOTHING_FOUND}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
