//! The headless command line: `peerconn listen` and `peerconn connect`.
//!
//! It drives the same [`Engine`] as the window, one peersocket per process.
//! Lines on standard input become chat messages; what happens is printed as
//! readable lines or, with `--json`, as one JSON object per line. This is
//! also the surface black-box tests use, so its output is kept stable.
//!
//! Exit status: 0 on a normal end, 1 on a runtime failure (refused, lost),
//! 2 on a usage error; the failure's reason goes to standard error.
//!
//! The arguments are checked once (`plan`), then a `session` runs the loop;
//! every word printed, as text or JSON, is in `render`.

mod nearby;
mod plan;
mod render;
mod session;
mod stdin;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use peerconn::net::trust::KnownPeers;
use peerconn::net::{known_peers_path, printable, EngineConfig};

use plan::Plan;
use session::Session;

/// Chat over direct TCP connections between computers.
#[derive(Parser, Debug)]
#[command(name = "peerconn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Start the window's app in the system tray, without the window (click
    /// the tray icon to show it).
    #[arg(long)]
    hidden: bool,
}

/// What the command line asks for: the window, or a command.
#[derive(Debug)]
pub enum Launch {
    Window { hidden: bool },
    Command(Command),
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
        /// Do not announce this listener on the local network (multicast DNS).
        #[arg(long)]
        no_announce: bool,
        /// Ask the router to forward the port from the internet (PCP, then NAT-PMP), and
        /// print the outside address, or exactly why it cannot be had.
        #[arg(long)]
        reachable: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Connect to a peer that is listening (a client peersocket).
    Connect {
        /// The peer's address and port, e.g. 192.168.1.7:50000 or [fe80::1]:50000, or the
        /// link its listener printed (peerconn://…#KEY): then only that key is let in.
        #[arg(value_name = "HOST:PORT|LINK")]
        address: String,
        /// When the connection is lost (the peer went away, restarted, or cannot be
        /// reached), connect again by itself after 1, 2, 4 … 60 s, until the other
        /// person disconnects, the key changes, or Ctrl-C.
        #[arg(long)]
        reconnect: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Connect, send files or folders, wait until the peer has verified each one, and exit.
    Send {
        /// The peer's address and port, or its link (peerconn://…#KEY).
        #[arg(value_name = "HOST:PORT|LINK")]
        address: String,
        /// The files to send; a folder goes whole, with its structure.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// The name the peer sees (default: this computer's host name).
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON object per line instead of readable text.
        #[arg(long)]
        json: bool,
        /// Prove this pairing code to the listener (which must ask for it);
        /// "-" reads it from standard input. PEERCONN_CODE works too.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// List the listeners announced on the local network, with a link to connect to each.
    Nearby {
        /// Print one JSON object per listener instead of readable text.
        #[arg(long)]
        json: bool,
        /// How long to look, in seconds.
        #[arg(long, value_name = "S", default_value_t = 3.0)]
        timeout: f64,
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
    /// "-" reads the code from standard input (asking on a terminal), so other users
    /// cannot see it in the process list; PEERCONN_CODE gives it through the environment.
    #[arg(long, value_name = "CODE")]
    code: Option<String>,
}

/// Parses the arguments. `Ok(None)`: no subcommand, open the window.
/// `Err`: help, version or a usage error was printed; exit with the code.
pub fn parse() -> Result<Launch, ExitCode> {
    let log = peerconn::logging::log_path();
    let command = Cli::command().after_help(format!(
        "The log is written to {}\n(set PEERCONN_LOG=debug for more detail, PEERCONN_DATA_DIR to move it).",
        log.display()
    ));
    let matches = command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    match matches {
        Ok(Cli { command: Some(command), .. }) => Ok(Launch::Command(command)),
        Ok(Cli { command: None, hidden }) => Ok(Launch::Window { hidden }),
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
        Command::Nearby { json, timeout } => return nearby::run(json, timeout),
        Command::Forget { which } => return forget(&which),
        _ => {}
    }
    match Plan::check(command).and_then(Session::start) {
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

pub(crate) enum Failure {
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
