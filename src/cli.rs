//! The headless command line: `peerconn listen` and `peerconn connect`.
//!
//! It drives the same [`Engine`] as the window, one peersocket per process.
//! Lines on standard input become chat messages; what happens is printed as
//! readable lines or, with `--json`, as one JSON object per line. This is
//! also the surface black-box tests use, so its output is kept stable.
//!
//! Exit status: 0 on a normal end, 1 on a runtime failure (refused, lost),
//! 2 on a usage error; the failure's reason goes to standard error.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use crossbeam_channel::{select, Receiver};
use serde_json::json;

use peerconn::net::{frame, printable, Engine, Event, ListenOptions, PeerId, PeerState};

/// Chat over direct TCP connections between computers.
#[derive(Parser, Debug)]
#[command(name = "peerconn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Wait for a peer to connect (a server peersocket).
    Listen {
        /// Address to listen on: 0.0.0.0 for every IPv4 interface, :: for IPv6 (and IPv4 where the system allows).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
        bind: IpAddr,
        /// Port to listen on; 0 or none lets the system pick a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Exit after the first peer leaves.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a peer that is listening (a client peersocket).
    Connect {
        /// The peer's address and port, e.g. 192.168.1.7:50000 or [fe80::1]:50000.
        #[arg(value_name = "HOST:PORT")]
        address: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// The name the peer sees (default: this computer's host name).
    #[arg(long)]
    name: Option<String>,
    /// Folder for received files.
    #[arg(long, value_name = "DIR")]
    downloads: Option<PathBuf>,
    /// Accept every file the peer offers without asking.
    #[arg(long)]
    accept_files: bool,
    /// Print one JSON object per line instead of readable text.
    #[arg(long)]
    json: bool,
}

/// Parses the arguments. `Ok(None)`: no subcommand, open the window.
/// `Err`: help, version or a usage error was printed; exit with the code.
pub fn parse() -> Result<Option<Command>, ExitCode> {
    let log = peerconn::logging::log_path();
    let command = Cli::command().after_help(format!(
        "The log is written to {}\n(set PEERCONN_LOG=debug for more detail, PEERCONN_DATA_DIR to move it).",
        log.display()
    ));
    let matches = command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match matches {
        Ok(cli) => Ok(cli.command),
        Err(e) => {
            let _ = e.print();
            Err(ExitCode::from(e.exit_code() as u8))
        }
    }
}

/// Runs a subcommand to its end.
pub fn run(command: Command) -> ExitCode {
    match Session::start(command) {
        Ok(session) => session.run(),
        Err(Failure::Usage(why)) => {
            eprintln!("peerconn: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(why)) => {
            eprintln!("peerconn: {why}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Runtime(String),
}

/// Turns "HOST:PORT" into a socket address, with errors a person can act on.
fn resolve(address: &str) -> Result<SocketAddr, Failure> {
    let address = address.trim();
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return check_port(addr);
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(Failure::Usage(format!(
            "'{address}' has no port; write HOST:PORT, for example 192.168.1.7:50000"
        )));
    };
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return Err(Failure::Usage(format!(
            "'{address}' is not an address; write HOST:PORT, for example 192.168.1.7:50000 or [fe80::1]:50000"
        )));
    }
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if p <= u16::MAX as u32 => p as u16,
        Ok(p) => {
            return Err(Failure::Usage(format!(
                "port {p} is out of range; ports go from 1 to 65535"
            )))
        }
        Err(_) => {
            return Err(Failure::Usage(format!(
                "'{port}' is not a port number; ports go from 1 to 65535"
            )))
        }
    };
    let found = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| Failure::Runtime(format!("cannot find the computer '{host}': {e}")))?;
    let mut found: Vec<SocketAddr> = found.collect();
    // Prefer IPv4: it is what the host bar shows and what most LANs route.
    found.sort_by_key(|a| !a.is_ipv4());
    match found.first() {
        Some(addr) => check_port(*addr),
        None => Err(Failure::Runtime(format!(
            "cannot find the computer '{host}'"
        ))),
    }
}

fn check_port(addr: SocketAddr) -> Result<SocketAddr, Failure> {
    if addr.port() == 0 {
        return Err(Failure::Usage(
            "port 0 cannot be connected to; ports go from 1 to 65535".into(),
        ));
    }
    Ok(addr)
}

/// What is printed, as text or JSON.
struct Output {
    json: bool,
}

impl Output {
    fn print(&self, value: serde_json::Value, text: impl FnOnce() -> String) {
        let mut out = io::stdout().lock();
        let _ = if self.json {
            writeln!(out, "{value}")
        } else {
            writeln!(out, "{}", text())
        };
        let _ = out.flush();
    }

    /// A progress line that has no JSON event.
    fn text_only(&self, text: &str) {
        if !self.json {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    fn error(&self, reason: &str) {
        self.print(json!({"event": "error", "reason": reason}), || {
            format!("error: {reason}")
        });
    }
}

/// One peersocket driven from the terminal.
struct Session {
    engine: Engine,
    id: PeerId,
    server: bool,
    once: bool,
    out: Output,
    lines: Receiver<Line>,
    signals: Receiver<()>,
    /// Lines typed before a peer was there to receive them.
    queued: VecDeque<String>,
    peer_name: Option<String>,
    stdin_done: bool,
    /// Close the connection as soon as the queue is delivered.
    close_when_sent: bool,
    /// Ctrl-C or SIGTERM: leave once the connection is closed.
    quitting: bool,
}

impl Session {
    fn start(command: Command) -> Result<Session, Failure> {
        let (server, once, common) = match &command {
            Command::Listen { once, common, .. } => (true, *once, common),
            Command::Connect { common, .. } => (false, false, common),
        };
        let name = match &common.name {
            Some(n) => n.clone(),
            None => default_name(),
        };
        frame::check_name(&name).map_err(|why| Failure::Usage(format!("invalid --name: {why}")))?;
        if let Some(dir) = &common.downloads {
            if !dir.is_dir() {
                return Err(Failure::Usage(format!(
                    "the downloads folder {} does not exist",
                    dir.display()
                )));
            }
        }
        let out = Output { json: common.json };
        let engine = Engine::start()
            .map_err(|e| Failure::Runtime(format!("cannot start the network engine: {e}")))?;
        let id = match &command {
            Command::Listen {
                bind, port, once, ..
            } => {
                let options = ListenOptions {
                    keep_listening: !once,
                };
                engine.listen(&name, SocketAddr::new(*bind, *port), options)
            }
            Command::Connect { address, .. } => {
                let remote = resolve(address)?;
                engine.connect(&name, remote)
            }
        }
        .map_err(|e| Failure::Usage(e.to_string()))?;
        let (signal_tx, signals) = crossbeam_channel::bounded(4);
        if let Err(e) = ctrlc::set_handler(move || {
            let _ = signal_tx.try_send(());
        }) {
            log::warn!("cannot catch Ctrl-C: {e}");
        }
        Ok(Session {
            engine,
            id,
            server,
            once,
            out,
            lines: spawn_stdin_reader(),
            signals,
            queued: VecDeque::new(),
            peer_name: None,
            stdin_done: false,
            close_when_sent: false,
            quitting: false,
        })
    }

    fn run(mut self) -> ExitCode {
        loop {
            let step = select! {
                recv(self.engine.events()) -> event => match event {
                    Ok(event) => self.on_event(event),
                    Err(_) => Some(Err("the network engine stopped".to_owned())),
                },
                recv(self.lines) -> line => {
                    match line {
                        Ok(line) => self.on_line(line),
                        Err(_) => self.on_end_of_input(),
                    }
                    None
                },
                recv(self.signals) -> _ => self.on_signal(),
            };
            match step {
                None => {}
                Some(Ok(())) => return ExitCode::SUCCESS,
                Some(Err(why)) => {
                    eprintln!("peerconn: {why}");
                    return ExitCode::from(1);
                }
            }
        }
    }

    /// `Some(result)` when the session is over.
    fn on_event(&mut self, event: Event) -> Option<Result<(), String>> {
        match event {
            Event::State {
                state: PeerState::Listening { local },
                ..
            } => {
                let hint = if local.ip().is_unspecified() {
                    let host = peerconn::hostinfo::HostInfo::detect();
                    format!(
                        " (other computers can connect to {}:{})",
                        host.primary(),
                        local.port()
                    )
                } else {
                    String::new()
                };
                self.out.print(
                    json!({"event": "listening", "addr": local.to_string()}),
                    || format!("listening on {local}{hint}"),
                );
            }
            Event::State {
                state: PeerState::Connecting { remote },
                ..
            } => {
                self.out.text_only(&format!("connecting to {remote}"));
            }
            Event::State {
                state:
                    PeerState::Connected {
                        peer_name,
                        peer_addr,
                        ..
                    },
                ..
            } => {
                self.out.print(
                    json!({"event": "connected", "peer_name": peer_name, "peer_addr": peer_addr.to_string()}),
                    || format!("connected to {} at {peer_addr}", printable(&peer_name)),
                );
                self.peer_name = Some(peer_name);
                self.on_connected();
            }
            Event::State {
                state: PeerState::Lost { reason, clean },
                ..
            } => {
                self.out
                    .print(json!({"event": "lost", "reason": reason}), || {
                        format!("lost: {reason}")
                    });
                let was_connected = self.peer_name.take().is_some();
                self.close_when_sent = false;
                let ends = !self.server || self.once || self.quitting || !was_connected;
                if ends {
                    return Some(if clean { Ok(()) } else { Err(reason) });
                }
            }
            Event::Message { text, .. } => {
                let from = self.peer_name.clone().unwrap_or_default();
                self.out.print(
                    json!({"event": "message", "from": from, "text": text}),
                    || format!("{}: {}", printable(&from), printable(&text)),
                );
            }
            Event::Error { reason, .. } => self.out.error(&reason),
            Event::Renamed { .. } | Event::Removed { .. } => {}
        }
        None
    }

    fn on_connected(&mut self) {
        while let Some(text) = self.queued.pop_front() {
            self.send(&text);
        }
        if self.close_when_sent || (self.stdin_done && !self.server) {
            self.engine.disconnect(self.id);
        }
    }

    fn on_line(&mut self, line: Line) {
        match line {
            Line::Text(text) if text.is_empty() => {}
            Line::Text(text) if self.peer_name.is_some() => self.send(&text),
            Line::Text(text) => self.queued.push_back(text),
            Line::Bad(why) => self.out.error(&why),
        }
    }

    fn send(&mut self, text: &str) {
        if let Err(e) = self.engine.send_text(self.id, text) {
            self.out.error(&format!("message not sent: {e}"));
        }
    }

    fn on_end_of_input(&mut self) {
        if self.stdin_done {
            return;
        }
        self.stdin_done = true;
        if self.peer_name.is_some() {
            self.engine.disconnect(self.id);
        } else if !self.queued.is_empty() || !self.server {
            // Deliver what was typed once a peer is there, then close.
            self.close_when_sent = true;
        }
        // A listener with nothing to say stays up to receive.
    }

    fn on_signal(&mut self) -> Option<Result<(), String>> {
        if self.quitting {
            return Some(Err(
                "interrupted twice; leaving without waiting for the peer".into(),
            ));
        }
        self.quitting = true;
        if self.peer_name.is_some() {
            log::info!("interrupted: closing the connection");
            self.engine.disconnect(self.id);
            None
        } else {
            Some(Ok(()))
        }
    }
}

fn default_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut name: String = host.chars().filter(|c| !c.is_control()).collect();
    while name.len() > frame::MAX_NAME {
        name.pop();
    }
    if name.trim().is_empty() {
        "peer".to_owned()
    } else {
        name
    }
}

/// A line from standard input.
enum Line {
    Text(String),
    /// A line that cannot be sent, with the reason.
    Bad(String),
}

/// Reads standard input on its own thread, in bounded lines: a line longer
/// than a chat message is reported and skipped without being held in memory.
fn spawn_stdin_reader() -> Receiver<Line> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let spawned = std::thread::Builder::new()
        .name("peerconn-stdin".into())
        .spawn(move || {
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
        return Line::Bad(format!(
            "line not sent: it is longer than {} bytes",
            frame::MAX_CHAT
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::Bad("line not sent: it is not valid UTF-8 text".into()),
    }
}
