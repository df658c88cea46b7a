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
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use crossbeam_channel::{select, Receiver};
use serde_json::json;

use std::collections::HashMap;
use std::time::Instant;

use peerconn::files::human_size;
use peerconn::net::trust::KnownPeers;
use peerconn::net::{
    frame, known_peers_path, pairing, printable, Engine, EngineConfig, Event, ListenOptions, PeerId, PeerState,
    TransferId, Trust,
};

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
    /// Connect, send files, wait until the peer has verified each one, and exit.
    Send {
        /// The peer's address and port.
        #[arg(value_name = "HOST:PORT")]
        address: String,
        /// The files to send.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// The name the peer sees (default: this computer's host name).
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON object per line instead of readable text.
        #[arg(long)]
        json: bool,
        /// Prove this pairing code to the listener (which must ask for it).
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Show this installation's key and the peers' keys it remembers.
    Keys,
    /// Forget a remembered peer key (by fingerprint or name), e.g. to accept a peer's new key.
    Forget {
        /// The fingerprint (like 3f2a-9b1c-0d4e-77a1-c0de) or the name the peer used.
        which: String,
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
    /// Listen: only let in a peer that types this pairing code ("new" makes one up).
    /// Connect: prove this code to the listener. A correct code marks the peer verified.
    #[arg(long, value_name = "CODE")]
    code: Option<String>,
}

/// Parses the arguments. `Ok(None)`: no subcommand, open the window.
/// `Err`: help, version or a usage error was printed; exit with the code.
pub fn parse() -> Result<Option<Command>, ExitCode> {
    let log = peerconn::logging::log_path();
    let command = Cli::command().after_help(format!(
        "The log is written to {}\n(set PEERCONN_LOG=debug for more detail, PEERCONN_DATA_DIR to move it).",
        log.display()
    ));
    let matches = command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
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
    match command {
        Command::Keys => return keys(),
        Command::Forget { which } => return forget(&which),
        _ => {}
    }
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

/// `peerconn keys`.
fn keys() -> ExitCode {
    let config = match EngineConfig::installed() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("peerconn: cannot read this installation's key: {e}");
            return ExitCode::from(1);
        }
    };
    println!("this installation: {}", config.identity.fingerprint());
    match KnownPeers::open(&known_peers_path()) {
        Ok(store) if store.peers().is_empty() => println!("no peers remembered yet"),
        Ok(store) => {
            for p in store.peers() {
                let verified = if p.verified { "verified" } else { "unverified" };
                let at = p.address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default();
                let key = peerconn::net::secure::fingerprint(&p.key);
                println!("{key}  {verified:10}  \"{}\"{at}", printable(&p.name));
            }
        }
        Err(e) => {
            eprintln!("peerconn: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// `peerconn forget`.
fn forget(which: &str) -> ExitCode {
    match KnownPeers::open(&known_peers_path()) {
        Ok(mut store) => match store.forget(which.trim()) {
            0 => {
                eprintln!("peerconn: no remembered key has the fingerprint or name '{}'", printable(which));
                ExitCode::from(1)
            }
            n => {
                println!(
                    "forgot {n} key{}; the next connection is trusted on first use again",
                    if n == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
        },
        Err(e) => {
            eprintln!("peerconn: {e}");
            ExitCode::from(1)
        }
    }
}

/// Turns "HOST:PORT" into a socket address, with errors a person can act on.
fn resolve(address: &str) -> Result<SocketAddr, Failure> {
    let address = address.trim();
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return check_port(addr);
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(Failure::Usage(format!("'{address}' has no port; write HOST:PORT, for example 192.168.1.7:50000")));
    };
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return Err(Failure::Usage(format!(
            "'{address}' is not an address; write HOST:PORT, for example 192.168.1.7:50000 or [fe80::1]:50000"
        )));
    }
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if p <= u16::MAX as u32 => p as u16,
        Ok(p) => return Err(Failure::Usage(format!("port {p} is out of range; ports go from 1 to 65535"))),
        Err(_) => return Err(Failure::Usage(format!("'{port}' is not a port number; ports go from 1 to 65535"))),
    };
    let found = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| Failure::Runtime(format!("cannot find the computer '{host}': {e}")))?;
    let mut found: Vec<SocketAddr> = found.collect();
    // Prefer IPv4: it is what the host bar shows and what most LANs route.
    found.sort_by_key(|a| !a.is_ipv4());
    match found.first() {
        Some(addr) => check_port(*addr),
        None => Err(Failure::Runtime(format!("cannot find the computer '{host}'"))),
    }
}

fn check_port(addr: SocketAddr) -> Result<SocketAddr, Failure> {
    if addr.port() == 0 {
        return Err(Failure::Usage("port 0 cannot be connected to; ports go from 1 to 65535".into()));
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
        let _ = if self.json { writeln!(out, "{value}") } else { writeln!(out, "{}", text()) };
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
        self.print(json!({"event": "error", "reason": reason}), || format!("error: {reason}"));
    }
}

/// What a transfer is called and how far its progress was printed.
struct Shown {
    name: String,
    size: u64,
    /// Tenths of the file already reported in text mode.
    tenths: u64,
}

/// `peerconn send`: the files still on their way and how it went.
struct Sending {
    files: Vec<PathBuf>,
    /// Our own transfers; offers from the peer do not count.
    ours: std::collections::HashSet<TransferId>,
    waiting: usize,
    sent: usize,
    bytes: u64,
    failures: Vec<String>,
    started: Instant,
}

/// One peersocket driven from the terminal.
struct Session {
    engine: Engine,
    id: PeerId,
    server: bool,
    once: bool,
    out: Output,
    /// Files offered to us, waiting for a y/N typed at the terminal.
    asking: VecDeque<TransferId>,
    interactive: bool,
    transfers: HashMap<TransferId, Shown>,
    sending: Option<Sending>,
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
    /// We asked the engine to close the connection.
    closing: bool,
}

impl Sending {
    /// How `peerconn send` ends once the connection is gone.
    fn outcome(&self, lost_reason: &str, json: bool) -> Result<(), String> {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let summary = format!(
            "{} of {} files sent ({}) in {secs:.1} s, {}/s",
            self.sent,
            self.files.len(),
            human_size(self.bytes),
            human_size((self.bytes as f64 / secs) as u64)
        );
        if !json {
            println!("{summary}");
        }
        if !self.failures.is_empty() {
            return Err(format!("{summary}; failed: {}", self.failures.join("; ")));
        }
        if self.waiting > 0 {
            return Err(format!("{summary}; the connection ended: {lost_reason}"));
        }
        Ok(())
    }
}

impl Session {
    fn start(command: Command) -> Result<Session, Failure> {
        let send_options = match &command {
            Command::Send { code, .. } => {
                Common { name: None, downloads: None, accept_files: false, json: false, code: code.clone() }
            }
            _ => Common { name: None, downloads: None, accept_files: false, json: false, code: None },
        };
        let (server, once, common, name, json) = match &command {
            Command::Listen { once, common, .. } => (true, *once, common, &common.name, common.json),
            Command::Connect { common, .. } => (false, false, common, &common.name, common.json),
            Command::Send { name, json, .. } => (false, false, &send_options, name, *json),
            Command::Keys | Command::Forget { .. } => unreachable!("handled in run"),
        };
        let code = match common.code.as_deref().map(str::trim) {
            Some("new") if server => Some(pairing::new_code()),
            Some(code) => {
                pairing::check_code(code).map_err(|why| Failure::Usage(format!("invalid --code: {why}")))?;
                Some(code.to_owned())
            }
            None => None,
        };
        let name = match name {
            Some(n) => n.clone(),
            None => default_name(),
        };
        frame::check_name(&name).map_err(|why| Failure::Usage(format!("invalid --name: {why}")))?;
        let mut config = EngineConfig::installed()
            .map_err(|e| Failure::Runtime(format!("cannot read this installation's key: {e}")))?;
        if let Some(dir) = &common.downloads {
            if !dir.is_dir() {
                return Err(Failure::Usage(format!("the downloads folder {} does not exist", dir.display())));
            }
            config.downloads = dir.clone();
        }
        // The engine accepts by itself: no round trip through this loop.
        config.accept_files_from_everyone = common.accept_files;
        let sending = match &command {
            Command::Send { files, .. } => {
                for file in files {
                    if !file.is_file() {
                        return Err(Failure::Usage(format!("{} is not a file", file.display())));
                    }
                }
                Some(Sending {
                    files: files.clone(),
                    ours: Default::default(),
                    waiting: files.len(),
                    sent: 0,
                    bytes: 0,
                    failures: Vec::new(),
                    started: Instant::now(),
                })
            }
            _ => None,
        };
        let out = Output { json };
        let engine = Engine::with_config(config)
            .map_err(|e| Failure::Runtime(format!("cannot start the network engine: {e}")))?;
        let id = match &command {
            Command::Listen { bind, port, once, .. } => {
                let options = ListenOptions { keep_listening: !once, pairing_code: code.clone() };
                engine.listen(&name, SocketAddr::new(*bind, *port), options)
            }
            Command::Connect { address, .. } | Command::Send { address, .. } => {
                let remote = resolve(address)?;
                engine.connect_with_code(&name, remote, code.as_deref())
            }
            Command::Keys | Command::Forget { .. } => unreachable!("handled in run"),
        }
        .map_err(|e| Failure::Usage(e.to_string()))?;
        // `send` takes nothing from standard input.
        let lines = if sending.is_some() { crossbeam_channel::never() } else { spawn_stdin_reader() };
        let (signal_tx, signals) = crossbeam_channel::bounded(4);
        if let Err(e) = ctrlc::set_handler(move || {
            let _ = signal_tx.try_send(());
        }) {
            log::warn!("cannot catch Ctrl-C: {e}");
        }
        out.print(json!({"event": "key", "fingerprint": engine.fingerprint()}), || {
            format!("this installation's key: {}", engine.fingerprint())
        });
        if let (true, Some(code)) = (server, &code) {
            out.print(json!({"event": "pairing_code", "code": code}), || {
                format!("pairing code: {code} (the person connecting must type it)")
            });
        }
        Ok(Session {
            engine,
            id,
            server,
            once,
            out,
            asking: VecDeque::new(),
            interactive: io::stdin().is_terminal() && sending.is_none(),
            transfers: HashMap::new(),
            sending,
            lines,
            signals,
            queued: VecDeque::new(),
            peer_name: None,
            stdin_done: false,
            close_when_sent: false,
            quitting: false,
            closing: false,
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
                        Err(_) => {
                            // A closed channel is always ready: stop selecting on it.
                            self.lines = crossbeam_channel::never();
                            self.on_end_of_input()
                        }
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
            Event::State { state: PeerState::Listening { local }, .. } => {
                let hint = if local.ip().is_unspecified() {
                    let host = peerconn::hostinfo::HostInfo::detect();
                    format!(" (other computers can connect to {}:{})", host.primary(), local.port())
                } else {
                    String::new()
                };
                self.out.print(json!({"event": "listening", "addr": local.to_string()}), || {
                    format!("listening on {local}{hint}")
                });
            }
            Event::State { state: PeerState::Connecting { remote }, .. } => {
                self.out.text_only(&format!("connecting to {remote}"));
            }
            Event::State { state: PeerState::Connected { peer_name, peer_addr, peer, .. }, .. } => {
                let trust = match peer.trust {
                    Trust::New => "new, unverified",
                    Trust::Known => "unverified",
                    Trust::Verified => "verified",
                };
                self.out.print(
                    json!({
                        "event": "connected",
                        "peer_name": peer_name,
                        "peer_addr": peer_addr.to_string(),
                        "fingerprint": peer.fingerprint,
                        "safety_code": peer.safety_code,
                        "trust": trust,
                    }),
                    || {
                        format!(
                            "connected to {} at {peer_addr}, encrypted\n  peer key {} ({trust})\n  safety code {} \
                             (the peer sees the same digits unless someone is in between)",
                            printable(&peer_name),
                            peer.fingerprint,
                            peer.safety_code
                        )
                    },
                );
                self.peer_name = Some(peer_name);
                self.on_connected();
            }
            Event::State { state: PeerState::Lost { reason, clean, kind }, .. } => {
                self.out.print(json!({"event": "lost", "kind": kind.as_str(), "reason": reason}), || {
                    format!("lost: {reason}")
                });
                let was_connected = self.peer_name.take().is_some();
                self.close_when_sent = false;
                self.closing = false;
                self.asking.clear();
                if let Some(sending) = &self.sending {
                    return Some(sending.outcome(&reason, self.out.json));
                }
                let ends = !self.server || self.once || self.quitting || !was_connected;
                if ends {
                    return Some(if clean { Ok(()) } else { Err(reason) });
                }
            }
            Event::Message { text, .. } => {
                let from = self.peer_name.clone().unwrap_or_default();
                self.out.print(json!({"event": "message", "from": from, "text": text}), || {
                    format!("{}: {}", printable(&from), printable(&text))
                });
            }
            Event::Error { reason, .. } => self.out.error(&reason),
            Event::KeyChanged { peer_name, address, old_fingerprint, new_fingerprint, .. } => {
                self.out.print(
                    json!({
                        "event": "key_changed",
                        "peer_name": peer_name,
                        "address": address.to_string(),
                        "old_fingerprint": old_fingerprint,
                        "new_fingerprint": new_fingerprint,
                    }),
                    || {
                        format!(
                            "WARNING: \"{}\" at {address} presented a different key ({new_fingerprint}) from the one \
                             remembered ({old_fingerprint}). Nothing was exchanged. If you have checked with them \
                             that the key really changed, run `peerconn forget {old_fingerprint}` and connect again.",
                            printable(&peer_name)
                        )
                    },
                );
            }
            Event::Trust { .. } | Event::Renamed { .. } | Event::Removed { .. } | Event::KnownPeers { .. } => {}
            Event::FileOutgoing { transfer, name, size, .. } => {
                self.out.text_only(&format!("offering {} ({})", printable(&name), human_size(size)));
                self.transfers.insert(transfer, Shown { name, size, tenths: 0 });
            }
            Event::FileIncoming { transfer, name, size, refused, accepted, .. } => {
                let offered = json!({"event": "file_offered", "name": name, "size": size, "refused": refused, "accepted": accepted});
                self.out.print(offered, || {
                    let accepting = if accepted { ", accepting" } else { "" };
                    format!("the peer offers {} ({}){accepting}", printable(&name), human_size(size))
                });
                self.transfers.insert(transfer, Shown { name: name.clone(), size, tenths: 0 });
                if refused.is_some() || accepted {
                    // Already declined (the failure that follows says why),
                    // or accepted by the engine (--accept-files).
                } else if self.interactive && !self.stdin_done {
                    self.asking.push_back(transfer);
                    if self.asking.len() == 1 {
                        self.ask();
                    }
                } else {
                    self.out.text_only("declined: start with --accept-files to receive files without a terminal");
                    self.engine.decline_file(transfer);
                }
            }
            Event::FileProgress { transfer, bytes, total, bytes_per_sec, eta, .. } => {
                if let Some(shown) = self.transfers.get_mut(&transfer) {
                    let tenths = if total == 0 { 10 } else { bytes * 10 / total };
                    if self.out.json {
                        self.out.print(
                            json!({"event": "file_progress", "name": shown.name, "bytes": bytes, "total": total}),
                            String::new,
                        );
                    } else if tenths > shown.tenths {
                        shown.tenths = tenths;
                        let left = eta.map(|d| format!(", {} s left", d.as_secs())).unwrap_or_default();
                        // A transfer's first reading has no speed yet.
                        let speed = if bytes_per_sec == 0 {
                            String::new()
                        } else {
                            format!(" ({}/s{left})", human_size(bytes_per_sec))
                        };
                        self.out.text_only(&format!(
                            "{}: {}% of {}{speed}",
                            printable(&shown.name),
                            tenths * 10,
                            human_size(total)
                        ));
                    }
                }
            }
            Event::FileSent { transfer, name, size, .. } => {
                self.transfers.remove(&transfer);
                self.out.print(json!({"event": "file_sent", "name": name, "size": size}), || {
                    format!("sent {} ({}), verified by the peer", printable(&name), human_size(size))
                });
                if let Some(sending) = self.sending.as_mut().filter(|s| s.ours.contains(&transfer)) {
                    sending.waiting -= 1;
                    sending.sent += 1;
                    sending.bytes += size;
                }
                self.maybe_close();
            }
            Event::FileReceived { transfer, name, path, size, blake3, .. } => {
                self.transfers.remove(&transfer);
                self.out.print(
                    json!({"event": "file_received", "name": name, "path": path.display().to_string(), "size": size, "blake3": blake3}),
                    || format!("received {} ({}) into {}", printable(&name), human_size(size), path.display()),
                );
                self.maybe_close();
            }
            Event::FileFailed { transfer, name, kind, reason, .. } => {
                self.transfers.remove(&transfer);
                self.asking.retain(|t| *t != transfer);
                let event = json!({"event": "file_failed", "name": name, "kind": kind.as_str(), "reason": reason});
                self.out.print(event, || format!("file {} failed: {reason}", printable(&name)));
                if let Some(sending) = self.sending.as_mut().filter(|s| s.ours.contains(&transfer)) {
                    sending.waiting = sending.waiting.saturating_sub(1);
                    sending.failures.push(format!("{}: {reason}", printable(&name)));
                }
                self.maybe_close();
            }
        }
        None
    }

    fn on_connected(&mut self) {
        while let Some(text) = self.queued.pop_front() {
            self.send(&text);
        }
        if let Some(files) = self.sending.as_ref().map(|s| s.files.clone()) {
            for file in files {
                let transfer = self.engine.send_file(self.id, &file);
                if let Some(sending) = &mut self.sending {
                    sending.ours.insert(transfer);
                }
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                self.transfers.insert(transfer, Shown { name, size: 0, tenths: 0 });
            }
            self.close_when_sent = true;
        }
        if self.stdin_done && !self.server {
            self.close_when_sent = true;
        }
        self.maybe_close();
    }

    /// Closes the connection once asked to and no transfer is under way.
    fn maybe_close(&mut self) {
        if self.close_when_sent && !self.closing && self.peer_name.is_some() && self.transfers.is_empty() {
            self.closing = true;
            self.engine.disconnect(self.id);
        }
    }

    /// Prints the y/N question for the first file waiting for an answer.
    fn ask(&self) {
        if let Some(shown) = self.asking.front().and_then(|t| self.transfers.get(t)) {
            self.out.text_only(&format!("accept {} ({})? [y/N]", printable(&shown.name), human_size(shown.size)));
        }
    }

    fn on_line(&mut self, line: Line) {
        if let Some(transfer) = self.asking.pop_front() {
            let yes = matches!(&line, Line::Text(t) if matches!(t.trim().to_lowercase().as_str(), "y" | "yes"));
            if yes {
                self.engine.accept_file(transfer);
            } else {
                self.engine.decline_file(transfer);
            }
            self.ask();
            return;
        }
        match line {
            Line::Text(text) if text.is_empty() => {}
            Line::Text(text) if text.starts_with("/send ") => {
                let path = PathBuf::from(text["/send ".len()..].trim());
                if self.peer_name.is_none() {
                    self.out.error(&format!("{} not sent: no peer is connected", path.display()));
                } else {
                    let transfer = self.engine.send_file(self.id, &path);
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    self.transfers.insert(transfer, Shown { name, size: 0, tenths: 0 });
                }
            }
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
        // Offers nobody can answer any more are declined.
        for transfer in std::mem::take(&mut self.asking) {
            self.engine.decline_file(transfer);
        }
        if self.peer_name.is_some() || !self.queued.is_empty() || !self.server {
            // Deliver what was typed (once a peer is there) and let running
            // transfers finish, then close.
            self.close_when_sent = true;
            self.maybe_close();
        }
        // A listener with nothing to say stays up to receive.
    }

    fn on_signal(&mut self) -> Option<Result<(), String>> {
        if self.quitting {
            return Some(Err("interrupted twice; leaving without waiting for the peer".into()));
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
