//! The timers and limits of a session: what `EngineConfig` hands each
//! connection, and the app's defaults.

use std::time::Duration;

use crate::net::secure;

/// The timers and limits one session keeps to (from `EngineConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a client waits for the TCP connection to be established.
    pub connect_timeout: Duration,
    /// How long a new connection has to complete the handshake and hello
    /// (and the pairing, when there is one).
    pub hello_timeout: Duration,
    /// A ping is sent after this long without sending anything.
    pub heartbeat_interval: Duration,
    /// The peer is lost after this long without receiving anything.
    pub heartbeat_timeout: Duration,
    /// How long a graceful close waits for the peer to take our last bytes.
    pub close_linger: Duration,
    /// How long a peer may leave a record or frame half sent.
    pub frame_timeout: Duration,
    /// Chat messages a peer may send in a burst, and per second after it.
    pub chat_burst: u32,
    pub chat_per_sec: u32,
    /// Wrong pairing codes a listener takes before its code stops working.
    pub max_wrong_codes: u32,
    /// Bytes waiting to go out before a chat message is refused.
    pub max_output_bytes: usize,
    /// Transport messages either direction may carry.
    pub nonce_limit: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            close_linger: Duration::from_secs(3),
            frame_timeout: Duration::from_secs(30),
            chat_burst: 2000,
            chat_per_sec: 500,
            max_wrong_codes: 10,
            max_output_bytes: 8 * 1024 * 1024,
            nonce_limit: secure::DEFAULT_NONCE_LIMIT,
        }
    }
}
