//! One peersocket driven from the terminal: the select loop over the
//! engine's events, standard input and Ctrl-C, and what each does to the
//! session's state. What is printed for each is `render`'s business.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crossbeam_channel::{select, Receiver};

use peerconn::files::human_size;
use peerconn::net::{
    printable, ConnectOptions, Engine, EngineConfig, Event, InputError, ListenOptions, PeerId, PeerState, TransferId,
};

use super::plan::{Plan, Role};
use super::render::{self, Output, Seen};
use super::stdin::{spawn_stdin_reader, Line};
use super::Failure;

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
    ours: HashSet<TransferId>,
    waiting: usize,
    sent: usize,
    bytes: u64,
    failures: Vec<String>,
    started: Instant,
}

/// One peersocket driven from the terminal.
pub(super) struct Session {
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
    /// `connect --reconnect`.
    reconnect: bool,
    /// `--reachable`: whether to map the port, the mapping kept, and what
    /// it reports.
    reachable: bool,
    lease: Option<peerconn::reach::Lease>,
    lease_events: Receiver<peerconn::reach::LeaseEvent>,
    /// Lines typed before a peer was there to receive them.
    queued: VecDeque<String>,
    peer_name: Option<String>,
    stdin_done: bool,
    /// Close the connection as soon as the queue is delivered.
    close_when_sent: bool,
    /// The listener's pairing code, for its link.
    link_code: Option<String>,
    /// The link was printed (a listener that listens again keeps it).
    link_shown: bool,
    /// Ctrl-C or SIGTERM: leave once the connection is closed.
    quitting: bool,
    /// We asked the engine to close the connection.
    closing: bool,
}

impl Sending {
    fn new(files: Vec<PathBuf>) -> Sending {
        let waiting = files.len();
        Sending {
            files,
            ours: Default::default(),
            waiting,
            sent: 0,
            bytes: 0,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

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
    pub(super) fn start(plan: Plan) -> Result<Session, Failure> {
        let mut config = EngineConfig::installed()
            .map_err(|e| Failure::Runtime(format!("cannot read this installation's key: {e}")))?;
        if let Some(dir) = &plan.downloads {
            config.downloads = dir.clone();
        }
        // The engine accepts by itself: no round trip through this loop.
        config.accept_files_from_everyone = plan.accept_files;
        config.announce = matches!(plan.role, Role::Listen { announce: true, .. });
        let out = Output { json: plan.json };
        let engine = Engine::with_config(config)
            .map_err(|e| Failure::Runtime(format!("cannot start the network engine: {e}")))?;
        let (server, once, sending) = match &plan.role {
            Role::Listen { once, .. } => (true, *once, None),
            Role::Connect { .. } => (false, false, None),
            Role::Send { files, .. } => (false, false, Some(Sending::new(files.clone()))),
        };
        let made = match &plan.role {
            Role::Listen { bind, once, .. } => {
                let options = ListenOptions { keep_listening: !once, pairing_code: plan.code.clone() };
                engine.listen(&plan.name, *bind, options)
            }
            Role::Connect { remote, pin, .. } | Role::Send { remote, pin, .. } => {
                let reconnect = matches!(plan.role, Role::Connect { reconnect: true, .. });
                let options = ConnectOptions { pairing_code: plan.code.clone(), pin: pin.clone(), reconnect };
                engine.connect_with(&plan.name, *remote, options)
            }
        };
        // Checked in the plan already; the engine's own check says which
        // input, should the rules ever differ.
        let code = if server { plan.code.clone() } else { None };
        let id = made.map_err(|e| {
            Failure::Usage(match e {
                InputError::Name(why) => format!("invalid --name: {why}"),
                InputError::PairingCode(why) => format!("invalid --code: {why}"),
                other => other.to_string(),
            })
        })?;
        // `send` takes nothing from standard input.
        let lines = if sending.is_some() { crossbeam_channel::never() } else { spawn_stdin_reader() };
        let (signal_tx, signals) = crossbeam_channel::bounded(4);
        if let Err(e) = ctrlc::set_handler(move || {
            let _ = signal_tx.try_send(());
        }) {
            log::warn!("cannot catch Ctrl-C: {e}");
        }
        render::key(&out, engine.fingerprint());
        if let (true, Some(code)) = (server, &plan.code) {
            render::pairing_code(&out, code);
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
            link_code: code,
            reachable: matches!(plan.role, Role::Listen { reachable: true, .. }),
            reconnect: matches!(plan.role, Role::Connect { reconnect: true, .. }),
            lease: None,
            lease_events: crossbeam_channel::never(),
            link_shown: false,
            quitting: false,
            closing: false,
        })
    }

    /// A global IPv6 address reaches the listener directly (no router
    /// mapping), where firewalls allow the port; one it does not listen
    /// on is pointed out.
    fn show_ipv6(&self, local: std::net::SocketAddr) {
        let globals = peerconn::hostinfo::global_ipv6();
        match local.ip() {
            std::net::IpAddr::V6(ip) if ip.is_unspecified() || globals.contains(&ip) => {
                let mine = if ip.is_unspecified() { globals } else { vec![ip] };
                for ip in mine {
                    let addr = std::net::SocketAddr::new(ip.into(), local.port());
                    let link = self.engine.link(ip.into(), local.port(), self.link_code.as_deref());
                    render::reachable(&self.out, addr, "ipv6", &link.to_string());
                }
            }
            _ if !globals.is_empty() => self.out.text_only(&format!(
                "this computer also has the global IPv6 address {}: listen with --bind :: to be reachable at it \
                 directly, where firewalls allow the port",
                globals[0]
            )),
            _ => {}
        }
    }

    /// The router mapped the port (its link goes to the outside address),
    /// or said why not.
    fn on_lease(&mut self, event: peerconn::reach::LeaseEvent) {
        match event {
            peerconn::reach::LeaseEvent::Mapped(mapping) => {
                let link = self.engine.link(mapping.external.ip(), mapping.external.port(), self.link_code.as_deref());
                render::reachable(&self.out, mapping.external, mapping.via.as_str(), &link.to_string());
            }
            peerconn::reach::LeaseEvent::Failed(why) => render::unreachable(&self.out, why.kind(), &why.to_string()),
        }
    }

    pub(super) fn run(mut self) -> ExitCode {
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
                recv(self.lease_events) -> event => {
                    match event {
                        Ok(event) => self.on_lease(event),
                        Err(_) => self.lease_events = crossbeam_channel::never(),
                    }
                    None
                },
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

    /// Prints what happened: every event in the chosen form, except that
    /// text mode shows each tenth of a transfer once.
    fn show(&mut self, event: &Event) {
        let transfer = match event {
            Event::FileProgress { transfer, .. } => Some(*transfer),
            _ => None,
        };
        if let (Event::FileProgress { bytes, total, .. }, false) = (event, self.out.json) {
            let Some(shown) = transfer.and_then(|t| self.transfers.get_mut(&t)) else { return };
            let tenths = render::tenths(*bytes, *total);
            if tenths <= shown.tenths {
                return;
            }
            shown.tenths = tenths;
        }
        let peer_name = self.peer_name.as_deref().unwrap_or_default();
        let name = transfer.and_then(|t| self.transfers.get(&t)).map(|s| s.name.as_str());
        self.out.event(event, &Seen { peer_name, transfer: name });
    }

    /// `Some(result)` when the session is over.
    fn on_event(&mut self, event: Event) -> Option<Result<(), String>> {
        self.show(&event);
        match event {
            Event::State { state: PeerState::Listening { local }, .. } if !self.link_shown => {
                self.link_shown = true;
                let host = peerconn::hostinfo::HostInfo::detect().reach(local.ip());
                let link = self.engine.link(host, local.port(), self.link_code.as_deref());
                render::link(&self.out, &link.to_string());
                if self.reachable {
                    self.show_ipv6(local);
                    let (lease, events) = peerconn::reach::Lease::start(local);
                    self.lease = Some(lease);
                    self.lease_events = events;
                }
            }
            Event::State { state: PeerState::Connected { peer_name, .. }, .. } => {
                self.peer_name = Some(peer_name);
                self.on_connected();
            }
            Event::State { state: PeerState::Lost { reason, kind, .. }, .. } => {
                let was_connected = self.peer_name.take().is_some();
                self.close_when_sent = false;
                self.closing = false;
                self.asking.clear();
                if let Some(sending) = &self.sending {
                    return Some(sending.outcome(&reason, self.out.json));
                }
                // `connect --reconnect`: the engine tries again by itself
                // after an end nobody chose (Reconnecting says when).
                let retries = self.reconnect && kind.is_retryable() && !self.quitting;
                let ends = (!self.server && !retries) || self.once || self.quitting || (self.server && !was_connected);
                if ends {
                    // Exit 0 only when the connection ended on purpose.
                    return Some(if kind.is_clean() { Ok(()) } else { Err(reason) });
                }
            }
            Event::FileOutgoing { transfer, name, size, .. } => {
                self.transfers.insert(transfer, Shown { name, size, tenths: 0 });
            }
            Event::FileIncoming { transfer, name, size, refused, accepted, .. } => {
                self.transfers.insert(transfer, Shown { name, size, tenths: 0 });
                if refused.is_some() || accepted {
                    // Already declined (the failure that follows says why),
                    // or accepted by the engine (--accept-files).
                } else if self.interactive && !self.stdin_done {
                    self.asking.push_back(transfer);
                    if self.asking.len() == 1 {
                        self.ask();
                    }
                } else {
                    self.out.text_only(render::DECLINED_WITHOUT_TERMINAL);
                    self.engine.decline_file(transfer);
                }
            }
            Event::FileSent { transfer, size, .. } => {
                self.transfers.remove(&transfer);
                if let Some(sending) = self.sending.as_mut().filter(|s| s.ours.contains(&transfer)) {
                    sending.waiting -= 1;
                    sending.sent += 1;
                    sending.bytes += size;
                }
                self.maybe_close();
            }
            Event::FileReceived { transfer, .. } => {
                self.transfers.remove(&transfer);
                self.maybe_close();
            }
            Event::FileFailed { transfer, name, reason, .. } => {
                self.transfers.remove(&transfer);
                self.asking.retain(|t| *t != transfer);
                if let Some(sending) = self.sending.as_mut().filter(|s| s.ours.contains(&transfer)) {
                    sending.waiting = sending.waiting.saturating_sub(1);
                    sending.failures.push(format!("{}: {reason}", printable(&name)));
                }
                self.maybe_close();
            }
            Event::State { .. }
            | Event::Message { .. }
            | Event::Error { .. }
            | Event::KeyChanged { .. }
            | Event::FileProgress { .. }
            | Event::FileResumed { .. }
            | Event::FileWaiting { .. }
            | Event::Trust { .. }
            | Event::Renamed { .. }
            | Event::Removed { .. }
            | Event::Reconnecting { .. }
            | Event::KnownPeers { .. } => {}
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
            self.out.text_only(&render::ask(&shown.name, shown.size));
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
