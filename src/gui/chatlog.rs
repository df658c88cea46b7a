//! One peersocket's conversation as plain rows, with a cap: a peer that
//! floods the chat cannot grow the window's memory without bound.
//!
//! Rows live in a `VecDeque`, so dropping the oldest costs O(1). Rows are
//! addressed by a sequence number that never shifts (the n-th row ever
//! pushed): a file card keeps its number, so progress still reaches the
//! right row after older rows were dropped, and a card that was itself
//! dropped is simply not found. Once anything was dropped, row 0 is one
//! system line saying so.
//!
//! The log also writes down how its rows moved (added, removed, changed,
//! as row numbers the view sees) until the chat adapter takes them, so the
//! list on screen is told "one row at the bottom" instead of being rebuilt.
//! It knows nothing of Slint: `adapters/chat.rs` maps its rows.
//!
//! The log is shared (`Rc`) between the state, which writes it, and the
//! chat adapter's model, which reads it; hence the interior mutability.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use crate::net::TransferId;

use super::copy;

/// How a row's moves are remembered at most before they collapse into one
/// `Reset` (a chat nobody looks at is not written down row by row).
const MOVES_KEPT: usize = 1024;

/// What a chat row is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Mine,
    Theirs,
    /// A line from the window itself (connected, lost, saved…).
    System,
    File(FileCard),
}

/// A file offered, moving, or ended, as its card shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileCard {
    pub transfer: TransferId,
    pub incoming: bool,
    pub size: u64,
    /// 0..=1.
    pub progress: f32,
    /// Speed and time left, or the outcome.
    pub detail: String,
    pub state: FileState,
    /// Where it picked up an earlier attempt ("resumed at 61 %"), shown
    /// beside the speed while it runs.
    pub resumed: Option<String>,
    /// A whole folder rather than a file.
    pub folder: bool,
    /// When bytes began to move, and from where (a resume skips what was
    /// there): the finished card says how long it took and how fast.
    pub moving: Option<(std::time::Instant, u64)>,
}

/// Where a file card is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Waiting for an answer (Accept / Decline on an incoming card).
    Offered,
    Running,
    Done,
    Failed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRow {
    pub kind: Kind,
    /// The message, the system line, or the file's name.
    pub text: String,
    /// "HH:MM".
    pub time: String,
}

impl ChatRow {
    pub fn new(kind: Kind, text: impl Into<String>) -> ChatRow {
        ChatRow { kind, text: text.into(), time: now() }
    }

    #[cfg(test)]
    pub fn file(&self) -> Option<&FileCard> {
        match &self.kind {
            Kind::File(card) => Some(card),
            _ => None,
        }
    }
}

/// The time a row shows.
pub fn now() -> String {
    chrono::Local::now().format("%H:%M").to_string()
}

/// How the rows the view sees moved, by row number (the dropped line
/// included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    Added(usize),
    Removed(usize),
    Changed(usize),
    /// Too many moves to tell one by one: read it all again.
    Reset,
}

/// A row's number for the lifetime of its `ChatLog`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seq(u64);

pub struct ChatLog {
    rows: RefCell<VecDeque<ChatRow>>,
    /// The sequence number of `rows[0]` (so also how many were dropped).
    first: Cell<u64>,
    cap: usize,
    /// Row 0 once older rows were dropped.
    dropped_line: RefCell<Option<ChatRow>>,
    moves: RefCell<Vec<Move>>,
    /// Counts every change, so the window knows which chats to keep again.
    version: Cell<u64>,
}

impl ChatLog {
    /// Keeps the last `cap` rows (at least one).
    pub fn new(cap: usize) -> ChatLog {
        ChatLog {
            rows: RefCell::new(VecDeque::new()),
            first: Cell::new(0),
            cap: cap.max(1),
            dropped_line: RefCell::new(None),
            moves: RefCell::new(Vec::new()),
            version: Cell::new(0),
        }
    }

    /// Appends a row, dropping the oldest when over the cap.
    pub fn push(&self, row: ChatRow) -> Seq {
        let marker = self.marker();
        let seq = {
            let mut rows = self.rows.borrow_mut();
            rows.push_back(row);
            Seq(self.first.get() + rows.len() as u64 - 1)
        };
        self.moved(Move::Added(marker + self.rows.borrow().len() - 1));
        if self.rows.borrow().len() > self.cap {
            self.rows.borrow_mut().pop_front();
            self.first.set(self.first.get() + 1);
            if marker == 1 {
                self.moved(Move::Removed(1));
            } else {
                // The oldest row turns into the line saying rows were dropped.
                *self.dropped_line.borrow_mut() = Some(ChatRow::new(Kind::System, copy::older_dropped(self.cap)));
                self.moved(Move::Changed(0));
            }
        }
        seq
    }

    /// Changes the row `seq` in place; false if it was dropped.
    pub fn update(&self, seq: Seq, change: impl FnOnce(&mut ChatRow)) -> bool {
        let Some(row) = self.row_of(seq) else { return false };
        let index = row - self.marker();
        change(&mut self.rows.borrow_mut()[index]);
        self.moved(Move::Changed(row));
        true
    }

    /// Whether the row `seq` is still kept.
    pub fn holds(&self, seq: Seq) -> bool {
        self.row_of(seq).is_some()
    }

    /// How many rows the view shows (the dropped line included).
    pub fn len(&self) -> usize {
        self.marker() + self.rows.borrow().len()
    }

    /// The row the view shows at `row`.
    pub fn get(&self, row: usize) -> Option<ChatRow> {
        let marker = self.marker();
        if row < marker {
            return self.dropped_line.borrow().clone();
        }
        self.rows.borrow().get(row - marker).cloned()
    }

    /// Every row, oldest first (the dropped line included).
    pub fn rows(&self) -> Vec<ChatRow> {
        (0..self.len()).filter_map(|i| self.get(i)).collect()
    }

    /// The moves since the last call.
    pub fn take_moves(&self) -> Vec<Move> {
        std::mem::take(&mut *self.moves.borrow_mut())
    }

    /// How many rows were dropped so far.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.first.get()
    }

    /// Changes so far (pushes, updates, clears).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// The rows pushed, oldest first (without the dropped line).
    pub fn kept(&self) -> Vec<ChatRow> {
        self.rows.borrow().iter().cloned().collect()
    }

    /// Empties the conversation (its rows' numbers go on counting).
    pub fn clear(&self) {
        let mut rows = self.rows.borrow_mut();
        self.first.set(self.first.get() + rows.len() as u64);
        rows.clear();
        drop(rows);
        *self.dropped_line.borrow_mut() = None;
        *self.moves.borrow_mut() = vec![Move::Reset];
        self.version.set(self.version.get() + 1);
    }

    fn moved(&self, how: Move) {
        self.version.set(self.version.get() + 1);
        let mut moves = self.moves.borrow_mut();
        if moves.first() == Some(&Move::Reset) {
            return;
        }
        if moves.len() >= MOVES_KEPT {
            *moves = vec![Move::Reset];
        } else if moves.last() != Some(&how) || !matches!(how, Move::Changed(_)) {
            moves.push(how);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> ChatRow {
        ChatRow::new(Kind::Theirs, n.to_string())
    }

    fn texts(log: &ChatLog) -> Vec<String> {
        log.rows().into_iter().map(|r| r.text).collect()
    }

    fn card() -> ChatRow {
        let file = FileCard {
            transfer: TransferId(1),
            incoming: true,
            size: 1,
            progress: 0.0,
            detail: String::new(),
            state: FileState::Offered,
            resumed: None,
            folder: false,
            moving: None,
        };
        ChatRow::new(Kind::File(file), "card")
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
        assert_eq!(log.get(0).unwrap().kind, Kind::System);
        assert_eq!(log.dropped(), 7);
    }

    #[test]
    fn a_file_row_is_found_after_older_rows_were_dropped() {
        let log = ChatLog::new(4);
        log.push(line(0));
        let card = log.push(card());
        let early = log.push(line(2));
        for n in 3..5 {
            log.push(line(n));
        }
        // The oldest row is dropped: the card is now the first message,
        // under the line saying so, and still found by its number.
        assert_eq!(log.get(1).unwrap().text, "card");
        let half = |row: &mut ChatRow| {
            if let Kind::File(file) = &mut row.kind {
                file.progress = 0.5;
            }
        };
        assert!(log.update(card, half));
        let found = log.rows().into_iter().find(|r| r.text == "card").unwrap();
        assert_eq!(found.file().unwrap().progress, 0.5);
        for n in 5..7 {
            log.push(line(n));
        }
        // The card itself is gone now; updating it does nothing.
        assert!(!log.holds(card));
        assert!(!log.update(card, |_| panic!("a dropped row was changed")));
        assert!(!log.holds(early));
        assert_eq!(texts(&log)[1..], ["3", "4", "5", "6"]);
    }

    #[test]
    fn the_view_is_told_each_row_that_moved_and_a_flood_as_one_reset() {
        let log = ChatLog::new(2);
        let first = log.push(line(0));
        log.update(first, |r| r.text = "zero".into());
        log.update(first, |r| r.text = "0".into());
        log.push(line(1));
        log.push(line(2));
        log.push(line(3));
        // Repeated changes of one row are told once; the first drop turns
        // row 0 into the dropped line, later ones remove row 1.
        assert_eq!(
            log.take_moves(),
            [
                Move::Added(0),
                Move::Changed(0),
                Move::Added(1),
                Move::Added(2),
                Move::Changed(0),
                Move::Added(3),
                Move::Removed(1)
            ]
        );
        assert!(log.take_moves().is_empty());
        for n in 0..MOVES_KEPT {
            log.push(line(n));
        }
        assert_eq!(log.take_moves(), [Move::Reset]);
    }
}
