//! What the arguments ask for, checked before anything starts (before the
//! installation's key is read or the engine runs): the name and the code
//! with the engine's own rules, the address resolved, the downloads folder
//! and the files to send found, a pairing code made up for `--code new`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use peerconn::net::{frame, pairing, KeyPin, PeerLink};

use super::{Command, Common, Failure};

/// Which peersocket to make.
pub(super) enum Role {
    Listen {
        bind: SocketAddr,
        once: bool,
        announce: bool,
        /// Map the port on the router.
        reachable: bool,
    },
    Connect {
        remote: SocketAddr,
        pin: Option<KeyPin>,
        reconnect: bool,
    },
    /// Connect, send these files, and leave.
    Send {
        remote: SocketAddr,
        pin: Option<KeyPin>,
        files: Vec<PathBuf>,
    },
}

/// A command line that made sense.
pub(super) struct Plan {
    pub role: Role,
    pub name: String,
    pub code: Option<String>,
    pub downloads: Option<PathBuf>,
    pub accept_files: bool,
    pub json: bool,
}

impl Plan {
    /// Checks `listen`, `connect` or `send` (`keys` and `forget` need no plan).
    pub fn check(command: Command) -> Result<Plan, Failure> {
        let (role, common) = match command {
            Command::Listen { bind, port, once, no_announce, reachable, common } => {
                let bind = SocketAddr::new(bind, port);
                (Role::Listen { bind, once, announce: !no_announce, reachable }, common)
            }
            Command::Connect { address, reconnect, mut common } => {
                let (remote, pin) = target(&address, &mut common.code)?;
                (Role::Connect { remote, pin, reconnect }, common)
            }
            Command::Send { address, files, name, json, mut code } => {
                let (remote, pin) = target(&address, &mut code)?;
                for file in &files {
                    if !file.is_file() && !file.is_dir() {
                        return Err(Failure::Usage(format!("{} is not a file or a folder", file.display())));
                    }
                }
                let common = Common { name, downloads: None, accept_files: false, json, code };
                (Role::Send { remote, pin, files }, common)
            }
            Command::Keys | Command::Forget { .. } | Command::Nearby { .. } => {
                unreachable!("keys, forget and nearby need no engine")
            }
        };
        if let Some(dir) = &common.downloads {
            if !dir.is_dir() {
                return Err(Failure::Usage(format!("the downloads folder {} does not exist", dir.display())));
            }
        }
        let listening = matches!(role, Role::Listen { .. });
        // A code on the command line is visible to every local user in the
        // process list: `--code -` reads it from standard input (asking on
        // a terminal), and PEERCONN_CODE gives it through the environment.
        let given = match common.code.as_deref().map(str::trim) {
            Some("-") => Some(read_code()?),
            Some(code) => Some(code.to_owned()),
            None => std::env::var("PEERCONN_CODE").ok().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
        };
        let code = match given.as_deref() {
            Some("new") if listening => Some(pairing::new_code()),
            Some(code) => {
                pairing::check_code(code).map_err(|why| Failure::Usage(format!("invalid --code: {why}")))?;
                Some(code.to_owned())
            }
            None => None,
        };
        let name = common.name.unwrap_or_else(default_name);
        frame::check_name(&name).map_err(|why| Failure::Usage(format!("invalid --name: {why}")))?;
        Ok(Plan { role, name, code, downloads: common.downloads, accept_files: common.accept_files, json: common.json })
    }
}

/// The pairing code from the first line of standard input (asked for on
/// the terminal when there is one).
fn read_code() -> Result<String, Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("pairing code: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    match stdin.lock().read_line(&mut line) {
        Ok(n) if n > 0 && !line.trim().is_empty() => Ok(line.trim().to_owned()),
        Ok(_) => Err(Failure::Usage("--code -: standard input gave no pairing code".into())),
        Err(e) => Err(Failure::Usage(format!("--code -: cannot read the pairing code from standard input: {e}"))),
    }
}

/// What to connect to: `HOST:PORT`, or a link (which also pins the key and
/// may carry the pairing code, unless `--code` gave one).
fn target(address: &str, code: &mut Option<String>) -> Result<(SocketAddr, Option<KeyPin>), Failure> {
    if !PeerLink::looks_like(address) {
        return Ok((resolve(address)?, None));
    }
    let link = PeerLink::parse(address).map_err(|e| Failure::Usage(e.to_string()))?;
    match (code.as_deref(), &link.code) {
        (Some(given), Some(linked)) if pairing::normalize(given) != pairing::normalize(linked) && given != "-" => {
            return Err(Failure::Usage(
                "--code gives another pairing code than the link carries; leave --code out to use the link's".into(),
            ));
        }
        (None, Some(linked)) => *code = Some(linked.clone()),
        _ => {}
    }
    let remote = match link.socket_addr() {
        Some(addr) => addr,
        None => resolve(&link.address())?,
    };
    Ok((remote, Some(link.pin)))
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
