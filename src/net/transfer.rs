//! The reactor's bookkeeping for file transfers on one connection.
//!
//! Every transfer belongs to exactly one connection and dies with it. The
//! disk work happens in `crate::files` workers; this module only holds the
//! state each side of a transfer is in, and the progress meter.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::files::{Reader, TransferId, WriteMsg, Writer};

/// Transfers a sender has offered but not finished, per connection. More
/// wait in the queue without a reader thread or an open file.
pub(crate) const MAX_ACTIVE_OUT: usize = 16;
/// Offers a receiver keeps waiting for an answer, per connection; more are
/// declined.
pub(crate) const MAX_PENDING_OFFERS: usize = 64;
/// Recently cancelled transfer numbers whose late frames are ignored.
const REMEMBER_CANCELLED: usize = 256;
/// Progress is reported at most this often per transfer.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Waiting for a free slot; the file is not open yet.
    Queued(PathBuf),
    /// The reader is opening the file.
    Opening,
    /// OFFER sent; waiting for ACCEPT or DECLINE.
    Offered,
    Sending,
    /// DONE sent; waiting for the receiver's verdict.
    Finishing,
}

pub(crate) struct Outgoing {
    pub key: TransferId,
    pub wire: u32,
    pub name: String,
    pub size: u64,
    pub state: OutState,
    pub reader: Option<Reader>,
    /// The block being cut into DATA frames, and how far.
    pub current: Option<(Vec<u8>, usize)>,
    pub sent: u64,
    /// The receiver allows data up to this byte.
    pub granted: u64,
    pub meter: Meter,
}

impl Outgoing {
    /// Has data it may send now, or its end to take from the reader.
    pub fn can_send(&self) -> bool {
        self.state == OutState::Sending && (self.sent < self.granted || self.sent >= self.size)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InState {
    /// Offered; being measured against the free space before the person
    /// is asked (a file that cannot fit is declined at once).
    Checking,
    /// Waiting for the person to accept or decline.
    Offered,
    /// Accepted; the writer is checking space and creating its file.
    Preparing,
    Receiving,
    /// DONE delivered to the writer, which is checking the hash.
    Verifying,
}

pub(crate) struct Incoming {
    pub key: TransferId,
    pub name: String,
    pub size: u64,
    pub state: InState,
    pub writer: Option<Writer>,
    /// Data collected into a block for the writer.
    pub pending: Vec<u8>,
    /// Messages the writer had no room for; reading pauses until it does.
    pub stalled: VecDeque<WriteMsg>,
    pub received: u64,
    /// We allow data up to this byte.
    pub granted: u64,
    pub meter: Meter,
    /// When the offer came (a free-space check that takes too long is
    /// given up on: see `SPACE_CHECK_PATIENCE`).
    pub offered: std::time::Instant,
}

impl Incoming {
    /// Gives the writer what is stalled, then `msg`; keeps what does not fit.
    pub fn deliver(&mut self, msg: Option<WriteMsg>) {
        self.stalled.extend(msg);
        let Some(writer) = &self.writer else {
            self.stalled.clear();
            return;
        };
        while let Some(msg) = self.stalled.pop_front() {
            if let Err(msg) = writer.offer(msg) {
                self.stalled.push_front(msg);
                break;
            }
        }
    }
}

/// All transfers of one connection.
#[derive(Default)]
pub(crate) struct Files {
    pub outgoing: Vec<Outgoing>,
    pub incoming: HashMap<u32, Incoming>,
    pub next_wire: u32,
    /// Incoming transfers we stopped: DATA for them may still be in flight.
    cancelled_in: VecDeque<u32>,
}

impl Files {
    /// Reading is paused while a writer has no room.
    pub fn paused(&self) -> bool {
        self.incoming.values().any(|t| !t.stalled.is_empty())
    }

    pub fn forget_incoming(&mut self, wire: u32) -> Option<Incoming> {
        if self.cancelled_in.len() == REMEMBER_CANCELLED {
            self.cancelled_in.pop_front();
        }
        self.cancelled_in.push_back(wire);
        self.incoming.remove(&wire)
    }

    pub fn was_cancelled_in(&self, wire: u32) -> bool {
        self.cancelled_in.contains(&wire)
    }

    pub fn active_out(&self) -> usize {
        self.outgoing.iter().filter(|t| !matches!(t.state, OutState::Queued(_))).count()
    }

    pub fn out_by_wire(&mut self, wire: u32) -> Option<usize> {
        self.outgoing.iter().position(|t| t.wire == wire && !matches!(t.state, OutState::Queued(_) | OutState::Opening))
    }

    pub fn out_by_key(&self, key: TransferId) -> Option<usize> {
        self.outgoing.iter().position(|t| t.key == key)
    }

    pub fn in_by_key(&self, key: TransferId) -> Option<u32> {
        self.incoming.iter().find(|(_, t)| t.key == key).map(|(w, _)| *w)
    }

    pub fn is_empty(&self) -> bool {
        self.outgoing.is_empty() && self.incoming.is_empty()
    }
}

/// Measures a transfer's speed and decides when to report progress.
pub(crate) struct Meter {
    last_report: Option<Instant>,
    window_start: Instant,
    window_bytes: u64,
    rate: f64,
}

/// What a progress report carries.
pub(crate) struct Reading {
    pub bytes_per_sec: u64,
    pub eta: Option<Duration>,
}

impl Meter {
    pub fn new() -> Meter {
        Meter { last_report: None, window_start: Instant::now(), window_bytes: 0, rate: 0.0 }
    }

    /// Counts `bytes` more (of `done` so far out of `total`) and returns a
    /// reading when one is due: every [`PROGRESS_EVERY`], and at the end.
    pub fn add(&mut self, bytes: u64, done: u64, total: u64) -> Option<Reading> {
        let now = Instant::now();
        self.window_bytes += bytes;
        let span = now.duration_since(self.window_start);
        if span >= Duration::from_millis(250) {
            let sample = self.window_bytes as f64 / span.as_secs_f64();
            self.rate = if self.rate == 0.0 { sample } else { 0.7 * self.rate + 0.3 * sample };
            self.window_start = now;
            self.window_bytes = 0;
        }
        let due = self.last_report.is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY);
        if !(due || done == total) {
            return None;
        }
        self.last_report = Some(now);
        // A rate near zero would overflow a Duration; no estimate then.
        let eta = (self.rate > 0.0)
            .then(|| Duration::try_from_secs_f64(total.saturating_sub(done) as f64 / self.rate).ok())
            .flatten();
        Some(Reading { bytes_per_sec: self.rate as u64, eta })
    }
}
