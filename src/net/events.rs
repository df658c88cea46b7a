//! The way out of the engine: a bounded queue of events, and what the
//! reactor does when nobody empties it.
//!
//! The window drains events on a timer and the command line in its loop,
//! but either can fall behind (a terminal nobody reads blocks the command
//! line on its output). An unbounded queue would then grow with every
//! message a peer sends. Here the channel holds [`QUEUE`] events; what does
//! not fit waits in a small overflow, in order, and while anything waits
//! there the reactor reads no socket: peers are slowed by TCP itself (their
//! own output fills and they are told their messages cannot go out), and
//! nothing is dropped but progress readings, whose next one says the same.
//! Heartbeats do not count the silence against the peer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Event;

/// Events the channel holds before the reactor stops reading.
pub const QUEUE: usize = 1024;

/// The reactor's end of the event channel; clones share the overflow.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    overflow: Arc<Mutex<VecDeque<Event>>>,
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
        if !overflow.is_empty() {
            if !matches!(event, Event::FileProgress { .. }) {
                overflow.push_back(event);
            }
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {} // nobody listens: the engine is going
            Err(TrySendError::Full(event)) => overflow.push_back(event),
        }
    }

    /// Moves what waits into the channel as far as it has room. True while
    /// something still waits: the reactor then reads no socket.
    pub fn flush(&self) -> bool {
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(event) = overflow.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Disconnected(_)) => overflow.clear(),
                Err(TrySendError::Full(event)) => {
                    overflow.push_front(event);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerId;

    fn message(n: usize) -> Event {
        Event::Message { id: PeerId(1), text: n.to_string() }
    }

    #[test]
    fn a_full_queue_keeps_every_message_in_order_and_says_it_is_backlogged() {
        let (sink, rx) = EventSink::new();
        for n in 0..QUEUE + 10 {
            sink.send(message(n));
        }
        assert!(sink.flush(), "ten wait beyond the queue");
        let first: Vec<Event> = rx.try_iter().take(5).collect();
        assert_eq!(first, (0..5).map(message).collect::<Vec<_>>());
        assert!(sink.flush(), "room for five of the ten");
        let next: Vec<Event> = rx.try_iter().take(5).collect();
        assert_eq!(next, (5..10).map(message).collect::<Vec<_>>());
        assert!(!sink.flush(), "room for the last five");
        let rest: Vec<Event> = rx.try_iter().collect();
        assert_eq!(rest, (10..QUEUE + 10).map(message).collect::<Vec<_>>());
    }

    #[test]
    fn progress_readings_are_the_only_events_skipped_while_backlogged() {
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
        };
        sink.send(progress);
        sink.send(message(QUEUE + 1));
        while sink.flush() {
            while rx.try_recv().is_ok() {}
        }
        let all: Vec<Event> = rx.try_iter().collect();
        assert_eq!(all.last(), Some(&message(QUEUE + 1)));
        assert!(!all.iter().any(|e| matches!(e, Event::FileProgress { .. })));
    }
}
