//! One peersocket's conversation as a Slint model, with a cap: a peer that
//! floods the chat cannot grow the window's memory without bound.
//!
//! Rows live in a `VecDeque`, so dropping the oldest costs O(1) and tells
//! the view "one row removed at the top" instead of rebuilding the list.
//! Rows are addressed by a sequence number that never shifts (the n-th row
//! ever pushed): a file card keeps its number, so progress still reaches
//! the right row after older rows were dropped, and a card that was itself
//! dropped is simply not found. Once anything was dropped, row 0 is one
//! system line saying so.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use slint::{Model, ModelNotify, ModelTracker, SharedString};

use super::ChatItem;

/// What a chat row is (`ChatItem::kind`).
pub const MINE: i32 = 0;
pub const THEIRS: i32 = 1;
pub const SYSTEM: i32 = 2;
pub const FILE: i32 = 3;

/// The time a row shows.
pub fn now() -> SharedString {
    chrono::Local::now().format("%H:%M").to_string().into()
}

/// A row's number for the lifetime of its `ChatLog`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seq(u64);

pub struct ChatLog {
    rows: RefCell<VecDeque<ChatItem>>,
    /// The sequence number of `rows[0]` (so also how many were dropped).
    first: Cell<u64>,
    cap: usize,
    /// Row 0 once older rows were dropped.
    dropped_line: RefCell<Option<ChatItem>>,
    notify: ModelNotify,
}

impl ChatLog {
    /// Keeps the last `cap` rows (at least one).
    pub fn new(cap: usize) -> ChatLog {
        ChatLog {
            rows: RefCell::new(VecDeque::new()),
            first: Cell::new(0),
            cap: cap.max(1),
            dropped_line: RefCell::new(None),
            notify: ModelNotify::default(),
        }
    }

    /// Appends a row, dropping the oldest when over the cap.
    pub fn push(&self, item: ChatItem) -> Seq {
        let marker = self.marker();
        let seq = {
            let mut rows = self.rows.borrow_mut();
            rows.push_back(item);
            Seq(self.first.get() + rows.len() as u64 - 1)
        };
        self.notify.row_added(marker + self.rows.borrow().len() - 1, 1);
        if self.rows.borrow().len() > self.cap {
            self.rows.borrow_mut().pop_front();
            self.first.set(self.first.get() + 1);
            if marker == 1 {
                self.notify.row_removed(1, 1);
            } else {
                // The oldest row turns into the line saying rows were dropped.
                *self.dropped_line.borrow_mut() = Some(ChatItem {
                    kind: SYSTEM,
                    text: format!(
                        "Older messages were dropped to save memory: this conversation keeps the last {}.",
                        thousands(self.cap)
                    )
                    .into(),
                    time: now(),
                    ..Default::default()
                });
                self.notify.row_changed(0);
            }
        }
        seq
    }

    /// Changes the row `seq` in place; false if it was dropped.
    pub fn update(&self, seq: Seq, change: impl FnOnce(&mut ChatItem)) -> bool {
        let Some(row) = self.row_of(seq) else { return false };
        let index = row - self.marker();
        change(&mut self.rows.borrow_mut()[index]);
        self.notify.row_changed(row);
        true
    }

    /// Whether the row `seq` is still kept.
    pub fn holds(&self, seq: Seq) -> bool {
        self.row_of(seq).is_some()
    }

    /// How many rows were dropped so far.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.first.get()
    }

    fn marker(&self) -> usize {
        usize::from(self.dropped_line.borrow().is_some())
    }

    fn row_of(&self, seq: Seq) -> Option<usize> {
        let index = seq.0.checked_sub(self.first.get())?;
        let index = usize::try_from(index).ok().filter(|&i| i < self.rows.borrow().len())?;
        Some(index + self.marker())
    }
}

impl Model for ChatLog {
    type Data = ChatItem;

    fn row_count(&self) -> usize {
        self.marker() + self.rows.borrow().len()
    }

    fn row_data(&self, row: usize) -> Option<ChatItem> {
        let marker = self.marker();
        if row < marker {
            return self.dropped_line.borrow().clone();
        }
        self.rows.borrow().get(row - marker).cloned()
    }

    fn set_row_data(&self, row: usize, data: ChatItem) {
        let marker = self.marker();
        if row < marker {
            return;
        }
        if let Some(slot) = self.rows.borrow_mut().get_mut(row - marker) {
            *slot = data;
        } else {
            return;
        }
        self.notify.row_changed(row);
    }

    fn model_tracker(&self) -> &dyn ModelTracker {
        &self.notify
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// 5000 as "5,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> ChatItem {
        ChatItem { kind: THEIRS, text: n.to_string().into(), ..Default::default() }
    }

    fn texts(log: &ChatLog) -> Vec<String> {
        log.iter().map(|i| i.text.to_string()).collect()
    }

    #[test]
    fn a_flood_keeps_the_last_rows_under_one_line_saying_older_ones_were_dropped() {
        let log = ChatLog::new(3);
        for n in 0..3 {
            log.push(line(n));
        }
        assert_eq!(texts(&log), ["0", "1", "2"]);
        assert_eq!(log.dropped(), 0);
        for n in 3..10 {
            log.push(line(n));
        }
        let rows = texts(&log);
        assert_eq!(rows.len(), 4);
        assert!(rows[0].starts_with("Older messages were dropped"), "{rows:?}");
        assert_eq!(rows[1..], ["7", "8", "9"]);
        assert_eq!(log.row_data(0).unwrap().kind, SYSTEM);
        assert_eq!(log.dropped(), 7);
    }

    #[test]
    fn a_file_row_is_found_after_older_rows_were_dropped() {
        let log = ChatLog::new(4);
        log.push(line(0));
        let card = log.push(ChatItem { kind: FILE, text: "card".into(), ..Default::default() });
        let early = log.push(line(2));
        for n in 3..5 {
            log.push(line(n));
        }
        // The oldest row is dropped: the card is now the first message,
        // under the line saying so, and still found by its number.
        assert_eq!(log.row_data(1).unwrap().text, "card");
        assert!(log.update(card, |item| item.progress = 0.5));
        let found = log.iter().find(|i| i.text == "card").unwrap();
        assert_eq!(found.progress, 0.5);
        for n in 5..7 {
            log.push(line(n));
        }
        // The card itself is gone now; updating it does nothing.
        assert!(!log.holds(card));
        assert!(!log.update(card, |item| item.progress = 1.0));
        assert!(!log.holds(early));
        assert_eq!(texts(&log)[1..], ["3", "4", "5", "6"]);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(5000), "5,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
