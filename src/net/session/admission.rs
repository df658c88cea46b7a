//! Who the peer is and whether it may in: the hellos, the pairing code,
//! and the trust-on-first-use decision against the trust store the
//! peersocket hands in ([`Host`]). Every way out of the hello phase is
//! written here: open, pairing, or refused with a bye.

use std::time::{Duration, Instant};

use super::{End, EndKind, Host, PairingGuard, Phase, Session, SessionEvent, Side};
use crate::net::frame::{self, ByeCode, Frame};
use crate::net::pairing::Pairing;
use crate::net::printable;
use crate::net::secure;
use crate::net::trust::{Check, Trust};

impl Session {
    pub(super) fn hello_from_client(&mut self, peer_name: String, pairing: bool, now: Instant, host: &mut Host) {
        let Side::Server { pairing_code } = &self.side else { return };
        if host.busy {
            let end = End::new(EndKind::Refused, "busy");
            return self.end_with_bye(
                end,
                Some((ByeCode::Busy, "this peersocket is busy with another peer".into())),
                now,
            );
        }
        let code = pairing_code.clone();
        let key = self.peer_key().map(|p| p.key).unwrap_or_default();
        let check = host.known.check(&key, &peer_name, None);
        if let Check::Changed { old } = check {
            return self.key_changed(peer_name, old.key, key, now);
        }
        match (code, pairing) {
            (Some(_), false) => {
                let end = End::new(EndKind::Refused, "no pairing code");
                let said = "this listener asks for a pairing code: connect again with the code its owner gives you";
                self.end_with_bye(end, Some((ByeCode::Pairing, said.into())), now)
            }
            (Some(code), true) => {
                if let Some((end, said)) = self.guard_refusal(host.guard, now) {
                    return self.end_with_bye(end, Some((ByeCode::Pairing, said)), now);
                }
                let hash = self.peer_key().map(|p| p.handshake_hash.clone()).unwrap_or_default();
                let (pairing, msg) = Pairing::start(&code, true, &hash);
                self.link.queue(&Frame::Hello { version: frame::VERSION, pairing: true, name: host.name.to_owned() });
                self.link.queue(&Frame::Pair(msg));
                self.start_pairing(peer_name, pairing, now);
            }
            (None, _) => {
                self.link.queue(&Frame::Hello { version: frame::VERSION, pairing: false, name: host.name.to_owned() });
                self.remember(key, &peer_name, None, false);
                self.open(peer_name, trust_of(&check), now);
            }
        }
    }

    pub(super) fn hello_from_server(&mut self, peer_name: String, pairing: bool, now: Instant, host: &mut Host) {
        let Side::Client { dialled, pairing_code, pinned } = &self.side else { return };
        let (dialled, code, pinned) = (dialled.to_string(), pairing_code.clone(), *pinned);
        let remote = self.remote;
        let key = self.peer_key().map(|p| p.key).unwrap_or_default();
        let check = host.known.check(&key, &peer_name, Some(&dialled));
        // A key the link pinned (the handshake checked it) is the peer's
        // word, carried by the person: it replaces what was remembered.
        if let (Check::Changed { old }, false) = (&check, pinned) {
            return self.key_changed(peer_name, old.key, key, now);
        }
        match (code, pairing) {
            (None, true) => {
                let end = End::new(
                    EndKind::Refused,
                    format!(
                        "the listener at {remote} asks for a pairing code: connect again and type the code its owner \
                         gives you"
                    ),
                );
                self.end_with_bye(end, Some((ByeCode::Pairing, "no pairing code was given".into())), now)
            }
            (Some(_), false) => {
                let end = End::new(
                    EndKind::Refused,
                    format!(
                        "you gave a pairing code, but the listener at {remote} did not ask for one, so nothing was \
                         checked and it may not be who you think (its owner should listen with a pairing code)"
                    ),
                );
                let said = "the connecting side expected to prove a pairing code";
                self.end_with_bye(end, Some((ByeCode::Pairing, said.into())), now)
            }
            (Some(code), true) => {
                let hash = self.peer_key().map(|p| p.handshake_hash.clone()).unwrap_or_default();
                let (pairing, msg) = Pairing::start(&code, false, &hash);
                self.link.queue(&Frame::Pair(msg));
                self.start_pairing(peer_name, pairing, now);
            }
            (None, false) if pinned => {
                self.remember_pinned(key, &peer_name, dialled);
                self.open(peer_name, Trust::Verified, now);
            }
            (None, false) => {
                self.remember(key, &peer_name, Some(dialled), false);
                self.open(peer_name, trust_of(&check), now);
            }
        }
    }

    pub(super) fn start_pairing(&mut self, peer_name: String, pairing: Pairing, now: Instant) {
        let deadline = match self.phase {
            Phase::Hello { deadline } => deadline,
            _ => super::later(now, self.config.hello_timeout),
        };
        self.phase = Phase::Pairing { deadline, peer_name, pairing: Box::new(pairing) };
    }

    /// Why the listener's code may not be tried now: too many wrong codes
    /// were tried, or the wait after the last one is not over.
    fn guard_refusal(&self, guard: &PairingGuard, now: Instant) -> Option<(End, String)> {
        if guard.wrong_codes >= self.config.max_wrong_codes {
            let end = End::new(EndKind::Refused, "pairing refused: the code no longer works");
            return Some((end, "too many wrong pairing codes were tried here; ask for a new code".into()));
        }
        let until = guard.blocked_until.filter(|u| *u > now)?;
        let wait = until.saturating_duration_since(now).as_secs() + 1;
        let end = End::new(EndKind::Refused, "pairing refused: waiting after a wrong code");
        Some((end, format!("a wrong pairing code was tried: try again in {wait} s")))
    }

    /// The peer's SPAKE2 message.
    pub(super) fn pair_message(&mut self, msg: &[u8], now: Instant) {
        let Phase::Pairing { pairing, .. } = &mut self.phase else { return };
        if let Err(what) = pairing.receive(msg) {
            return self.protocol_error(&what, now);
        }
        if let Side::Client { .. } = self.side {
            if let Some(mac) = pairing.confirmation() {
                self.link.queue(&Frame::Confirm(mac));
            }
        }
    }

    /// The peer's proof that it holds the same code on this connection.
    pub(super) fn pair_confirm(&mut self, mac: &[u8; 32], now: Instant, host: &mut Host) {
        let Phase::Pairing { pairing, peer_name, .. } = &mut self.phase else { return };
        let right = pairing.check(mac);
        let confirmation = pairing.confirmation();
        let peer_name = std::mem::take(peer_name);
        let key = self.peer_key().map(|p| p.key).unwrap_or_default();
        let remote = self.remote;
        match &self.side {
            Side::Client { dialled, pinned, .. } => {
                if !right {
                    let end = End::new(
                        EndKind::Refused,
                        format!(
                            "the listener at {remote} could not prove the same pairing code: someone may be in \
                             between"
                        ),
                    );
                    let said = "your pairing confirmation did not match";
                    return self.end_with_bye(end, Some((ByeCode::Pairing, said.into())), now);
                }
                let dialled = dialled.to_string();
                if *pinned {
                    self.remember_pinned(key, &peer_name, dialled);
                } else {
                    self.remember(key, &peer_name, Some(dialled), true);
                }
                self.open(peer_name, Trust::Verified, now);
            }
            Side::Server { .. } => {
                // Asked again at the proof, not only at the hello: attempts
                // held open together must wait their turn and count against
                // the limit like attempts one after the other.
                if let Some((end, said)) = self.guard_refusal(host.guard, now) {
                    return self.end_with_bye(end, Some((ByeCode::Pairing, said)), now);
                }
                if !right {
                    let guard = &mut *host.guard;
                    guard.wrong_codes += 1;
                    let count = guard.wrong_codes;
                    let wait = Duration::from_secs(1u64 << (count - 1).min(8));
                    guard.blocked_until = Some(now + wait);
                    let max = self.config.max_wrong_codes;
                    self.events.push_back(SessionEvent::WrongCode { count, max, wait });
                    let end = End::new(EndKind::Refused, "wrong pairing code");
                    return self.end_with_bye(end, Some((ByeCode::Pairing, "wrong pairing code".into())), now);
                }
                if host.busy {
                    let end = End::new(EndKind::Refused, "busy");
                    let said = "this peersocket is busy with another peer";
                    return self.end_with_bye(end, Some((ByeCode::Busy, said.into())), now);
                }
                *host.guard = PairingGuard::default();
                if let Some(mac) = confirmation {
                    self.link.queue(&Frame::Confirm(mac));
                }
                self.remember(key, &peer_name, None, true);
                self.open(peer_name, Trust::Verified, now);
            }
        }
    }

    /// The peer's key is not the one remembered: stop before anything moves.
    pub(super) fn key_changed(&mut self, peer_name: String, old_key: [u8; 32], key: [u8; 32], now: Instant) {
        let address = match self.side {
            Side::Client { dialled, .. } => dialled,
            Side::Server { .. } => self.remote,
        };
        let (old_fingerprint, new_fingerprint) = (secure::fingerprint(&old_key), secure::fingerprint(&key));
        let reason = format!(
            "stopped: \"{}\" at {} presented the key {new_fingerprint}, not the key {old_fingerprint} you had \
             before. It may have reinstalled PeerConn, or someone may be in between. Compare the safety code with \
             them by voice; if it matches, choose Trust new key.",
            printable(&peer_name),
            self.remote
        );
        self.events.push_back(SessionEvent::KeyChanged { peer_name, address, key, old_key });
        let said = "your key is not the one remembered for you here; the other person must choose to trust it";
        self.end_with_bye(End::new(EndKind::KeyChanged, reason), Some((ByeCode::Untrusted, said.into())), now);
    }
}

impl Session {
    /// The trust store should remember the key of a peer just admitted
    /// (the session only reads the store; its owner writes).
    fn remember(&mut self, key: [u8; 32], name: &str, dialled: Option<String>, verified: bool) {
        let name = name.to_owned();
        self.events.push_back(SessionEvent::Remember { key, name, dialled, verified, replaces: false });
    }

    /// A key the link pinned: verified, and in place of any other.
    fn remember_pinned(&mut self, key: [u8; 32], name: &str, dialled: String) {
        let name = name.to_owned();
        self.events.push_back(SessionEvent::Remember {
            key,
            name,
            dialled: Some(dialled),
            verified: true,
            replaces: true,
        });
    }
}

/// How far a peer just admitted is trusted, from what the store said.
fn trust_of(check: &Check) -> Trust {
    match check {
        Check::Known { verified: true } => Trust::Verified,
        Check::Known { verified: false } => Trust::Known,
        Check::New | Check::Changed { .. } => Trust::New,
    }
}
