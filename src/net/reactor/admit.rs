//! Connections coming and going: a listener accepting its backlog (a
//! budget a turn, and again by itself after running out of file
//! descriptors), a peer displaced to make room for a newcomer, and the cap
//! on connections lingering to deliver a bye.

use std::io;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::sockets::tune_stream;
use super::{Conn, Reactor, Socket};
use crate::net::peersocket::Source;
use crate::net::session::Session;
use crate::net::transfer::Files;
use crate::net::PeerId;

/// Connections closing at once (each lingers up to `close_linger` so its
/// bye reaches the peer); past this the oldest is cut short, so peers that
/// break the protocol and keep their side open cannot pile up descriptors.
const MAX_LINGERING: usize = 128;
/// Connections one listener accepts before others get their turn.
const ACCEPT_BUDGET: usize = 64;
/// How soon a listener tries again after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Reactor {
    pub(super) fn accept(&mut self, token: Token, owner: PeerId) {
        for _ in 0..ACCEPT_BUDGET {
            let accepted = match self.sockets.get(&token) {
                Some(Socket::Listener { listener, .. }) => listener.accept(),
                _ => return,
            };
            let (mut stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely. The connection
                    // stays in the backlog; try again soon, by ourselves.
                    if let Some(Socket::Listener { retry_at, .. }) = self.sockets.get_mut(&token) {
                        if retry_at.is_none() {
                            log::warn!("accept failed: {e} (trying again every {} ms)", ACCEPT_RETRY.as_millis());
                        }
                        *retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    }
                    return;
                }
            };
            let Some(peer) = self.peers.get(owner) else {
                return;
            };
            let label = peer.label(owner);
            let code = peer.options.pairing_code.clone();
            // Drop the oldest silent connection rather than the newcomer,
            // so a flood of idle sockets cannot keep a real peer out.
            let source = Source::of(remote.ip());
            let sockets = &self.sockets;
            let idle = |t: usize| matches!(sockets.get(&Token(t)), Some(Socket::Stream(c)) if !c.session.has_heard());
            if let Some(gone) = self.peers.make_room(owner, source, self.config.max_pending_hellos, idle) {
                if let Some(Socket::Stream(old)) = self.sockets.remove(&Token(gone)) {
                    log::debug!("{label} dropped {}: too many connections still in their hello", old.session.remote());
                }
            }
            tune_stream(&stream);
            let conn_token = self.new_token();
            if let Err(e) = self.poll.registry().register(&mut stream, conn_token, Interest::READABLE) {
                log::warn!("{label} cannot watch the connection from {remote}: {e}");
                continue;
            }
            log::info!("{label} incoming connection from {remote}");
            let session = Session::server(&self.config.identity, self.session_config, remote, code, Instant::now());
            let conn = Conn {
                owner,
                stream,
                session,
                files: Files::default(),
                wants_write: false,
                lingering: false,
                held_back: false,
            };
            self.sockets.insert(conn_token, Socket::Stream(Box::new(conn)));
            self.peers.add_pending(owner, conn_token.0, source);
            // Our preamble goes out at once, so even a peer that is not
            // PeerConn sees what it reached.
            self.with_conn(conn_token, |_, _| {});
        }
        // The budget is spent and more may wait: the rest of the loop gets
        // its turn first (a flood of connections must not starve peers).
        if let Some(Socket::Listener { retry_at, .. }) = self.sockets.get_mut(&token) {
            retry_at.get_or_insert_with(Instant::now);
        }
    }

    /// Counts a connection that began closing; cuts the oldest short when
    /// too many are.
    pub(super) fn linger(&mut self, token: Token) {
        self.lingering.push_back(token);
        if self.lingering.len() <= MAX_LINGERING {
            return;
        }
        // Only those still closing count.
        let sockets = &self.sockets;
        self.lingering.retain(|t| matches!(sockets.get(t), Some(Socket::Stream(c)) if c.lingering));
        while self.lingering.len() > MAX_LINGERING {
            let Some(oldest) = self.lingering.pop_front() else { break };
            let Some(Socket::Stream(mut conn)) = self.sockets.remove(&oldest) else { continue };
            log::debug!("{} cut short the close of {}", self.label(conn.owner), conn.session.remote());
            conn.session.cut_short();
            self.settle(oldest, conn);
        }
    }
}
