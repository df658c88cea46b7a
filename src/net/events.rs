//! The way out of the engine: a bounded queue of events, and what the
//! reactor does when nobody empties it.
//!
//! The window drains events on a timer and the command line in its loop,
//! but either can fall behind (a terminal nobody reads blocks the command
//! line on its output). An unbounded queue would then grow with every
//! message a peer sends. Here the channel holds [`QUEUE`] events; what does
//! not fit waits in an overflow, in order. While the overflow holds more
//! than [`OVERFLOW_BYTES`] the reactor reads no socket: peers are slowed by
//! TCP itself (their own output fills and they are told their messages
//! cannot go out), and heartbeats do not count the silence against them.
//! Small events (a thousand files' progress) never stall the engine; a
//! flood of chat does, at about 16 MiB + 4 MiB. Nothing is dropped but
//! progress readings while events wait, whose next one says the same.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Event;

/// Events the channel holds; more wait in the overflow.
pub const QUEUE: usize = 1024;
/// Bytes (roughly) waiting in the overflow past which no socket is read.
pub const OVERFLOW_BYTES: usize = 4 * 1024 * 1024;

/// What an event holds, roughly, in bytes.
fn weight(event: &Event) -> usize {
    let held = match event {
        Event::Message { text, .. } => text.len(),
        Event::Error { reason, .. } => reason.len(),
        Event::State { state: super::PeerState::Lost { reason, .. }, .. } => reason.len(),
        Event::FileIncoming { name, .. } | Event::FileOutgoing { name, .. } | Event::FileSent { name, .. } => {
            name.len()
        }
        Event::FileFailed { name, reason, .. } => name.len() + reason.len(),
        Event::FileReceived { name, path, blake3, .. } => name.len() + path.as_os_str().len() + blake3.len(),
        Event::KnownPeers { peers } => peers.len() * 128,
        _ => 0,
    };
    std::mem::size_of::<Event>() + held
}

/// The overflow and how much it holds.
#[derive(Default)]
struct Overflow {
    events: VecDeque<Event>,
    bytes: usize,
}

/// The reactor's end of the event channel; clones share the overflow.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    overflow: Arc<Mutex<Overflow>>,
}

impl EventSink {
    /// The channel and the sink that fills it.
    pub fn new() -> (EventSink, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        (EventSink { tx, overflow: Arc::default() }, rx)
    }

    /// Queues `event` without ever blocking the reactor.
    pub fn send(&self, event: Event) {
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        if !overflow.events.is_empty() {
            if !matches!(event, Event::FileProgress { .. }) {
                overflow.bytes += weight(&event);
                overflow.events.push_back(event);
            }
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {} // nobody listens: the engine is going
            Err(TrySendError::Full(event)) => {
                overflow.bytes += weight(&event);
                overflow.events.push_back(event);
            }
        }
    }

    /// Moves what waits into the channel as far as it has room. True while
    /// more than [`OVERFLOW_BYTES`] still wait: the reactor then reads no
    /// socket.
    pub fn flush(&self) -> bool {
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(event) = overflow.events.pop_front() {
            let bytes = weight(&event);
            match self.tx.try_send(event) {
                Ok(()) => overflow.bytes -= bytes.min(overflow.bytes),
                Err(TrySendError::Disconnected(_)) => *overflow = Overflow::default(),
                Err(TrySendError::Full(event)) => {
                    overflow.events.push_front(event);
                    break;
                }
            }
        }
        overflow.bytes > OVERFLOW_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerId;

    fn message(n: usize) -> Event {
        Event::Message { id: PeerId(1), text: n.to_string() }
    }

    fn big(n: usize) -> Event {
        Event::Message { id: PeerId(1), text: format!("{n:06}{}", "x".repeat(16_000)) }
    }

    #[test]
    fn small_events_past_the_queue_wait_in_order_without_stalling_the_engine() {
        let (sink, rx) = EventSink::new();
        for n in 0..QUEUE + 3000 {
            sink.send(message(n));
        }
        assert!(!sink.flush(), "three thousand small events are not worth stopping for");
        let mut all: Vec<Event> = Vec::new();
        loop {
            all.extend(rx.try_iter());
            if all.len() == QUEUE + 3000 {
                break;
            }
            sink.flush();
        }
        assert_eq!(all, (0..QUEUE + 3000).map(message).collect::<Vec<_>>());
    }

    #[test]
    fn a_flood_of_big_messages_stops_reading_until_they_are_taken_and_keeps_them_all() {
        let (sink, rx) = EventSink::new();
        let flood = QUEUE + OVERFLOW_BYTES / 16_000 + 10;
        for n in 0..flood {
            sink.send(big(n));
        }
        assert!(sink.flush(), "more than 4 MiB waits: stop reading");
        let mut all: Vec<Event> = rx.try_iter().collect();
        assert!(!sink.flush(), "room again once they are taken");
        loop {
            all.extend(rx.try_iter());
            if all.len() == flood {
                break;
            }
            sink.flush();
        }
        assert_eq!(all, (0..flood).map(big).collect::<Vec<_>>());
    }

    #[test]
    fn progress_readings_are_the_only_events_skipped_while_others_wait() {
        let (sink, rx) = EventSink::new();
        for n in 0..QUEUE + 1 {
            sink.send(message(n));
        }
        let progress = Event::FileProgress {
            id: PeerId(1),
            transfer: crate::files::TransferId(1),
            bytes: 1,
            total: 2,
            bytes_per_sec: 0,
            eta: None,
            files: None,
        };
        sink.send(progress);
        sink.send(message(QUEUE + 1));
        let mut all: Vec<Event> = Vec::new();
        while all.len() < QUEUE + 2 {
            all.extend(rx.try_iter());
            sink.flush();
        }
        assert_eq!(all.last(), Some(&message(QUEUE + 1)));
        assert!(!all.iter().any(|e| matches!(e, Event::FileProgress { .. })));
    }
}
