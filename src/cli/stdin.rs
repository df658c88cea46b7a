//! Standard input as chat lines, read on a thread of its own in bounded
//! lines, so a line longer than a chat message is reported and skipped
//! without being held in memory.

use std::io::{self, BufRead};

use crossbeam_channel::Receiver;

use peerconn::net::frame;

/// A line from standard input.
pub(super) enum Line {
    Text(String),
    /// A line that cannot be sent, with the reason.
    Bad(String),
}

/// Reads standard input on its own thread, in bounded lines: a line longer
/// than a chat message is reported and skipped without being held in memory.
pub(super) fn spawn_stdin_reader() -> Receiver<Line> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let spawned = std::thread::Builder::new().name("peerconn-stdin".into()).spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let (done, used) = match input.fill_buf() {
                Ok([]) => break,
                Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        if !too_long {
                            line.extend_from_slice(&buf[..i]);
                        }
                        (true, i + 1)
                    }
                    None => {
                        if !too_long {
                            line.extend_from_slice(buf);
                        }
                        (false, buf.len())
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("cannot read standard input: {e}");
                    break;
                }
            };
            input.consume(used);
            if line.len() > frame::MAX_CHAT + 1 {
                too_long = true;
                line.clear();
            }
            if done {
                let item = finish_line(std::mem::take(&mut line), too_long);
                too_long = false;
                if tx.send(item).is_err() {
                    return;
                }
            }
        }
        if !line.is_empty() || too_long {
            let _ = tx.send(finish_line(line, too_long));
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot read standard input: {e}");
    }
    rx
}

fn finish_line(mut line: Vec<u8>, too_long: bool) -> Line {
    if too_long {
        return Line::Bad(format!("line not sent: it is longer than {} bytes", frame::MAX_CHAT));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::Bad("line not sent: it is not valid UTF-8 text".into()),
    }
}
