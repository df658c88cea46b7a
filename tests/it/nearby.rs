//! Nearby, with real multicast DNS between two network namespaces that
//! the test makes and joins with a veth pair (root and `ip` needed; the
//! tests say so and are skipped elsewhere; `.ci/run` runs as root).
//!
//! `peerconn listen` runs in one namespace and `peerconn nearby` and
//! `peerconn connect` in the other, as a person on another computer of
//! the same network would run them.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Running, TempDir};

/// Two namespaces joined by a veth pair, removed when dropped.
struct Lan {
    names: [String; 2],
    addrs: [Ipv4Addr; 2],
    links: [String; 2],
}

impl Lan {
    /// `None` (with the reason printed) where namespaces cannot be made.
    fn new() -> Option<Lan> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespaces need root (CI runs this as root)");
            return None;
        }
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let names = [format!("pcnb{tag}a"), format!("pcnb{tag}b")];
        let subnet = (std::process::id() % 100 * 2) as u8 + n as u8 % 2;
        let addrs = [Ipv4Addr::new(10, 203, subnet, 1), Ipv4Addr::new(10, 203, subnet, 2)];
        let (va, vb) = (format!("pv{tag}a"), format!("pv{tag}b"));
        let lan = Lan { names: names.clone(), addrs, links: [va.clone(), vb.clone()] };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), names[0].clone()],
            vec!["netns".into(), "add".into(), names[1].clone()],
            vec![
                "link".into(),
                "add".into(),
                va.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                vb.clone(),
            ],
            vec!["link".into(), "set".into(), va.clone(), "netns".into(), names[0].clone()],
            vec!["link".into(), "set".into(), vb.clone(), "netns".into(), names[1].clone()],
            vec![
                "-n".into(),
                names[0].clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", addrs[0]),
                "dev".into(),
                va.clone(),
            ],
            vec![
                "-n".into(),
                names[1].clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", addrs[1]),
                "dev".into(),
                vb.clone(),
            ],
            vec!["-n".into(), names[0].clone(), "link".into(), "set".into(), va, "up".into()],
            vec!["-n".into(), names[1].clone(), "link".into(), "set".into(), vb, "up".into()],
            vec!["-n".into(), names[0].clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
            vec!["-n".into(), names[1].clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        for step in steps {
            match Command::new("ip").args(&step).stderr(Stdio::piped()).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!("skipped: ip {} failed: {}", step.join(" "), String::from_utf8_lossy(&out.stderr));
                    return None;
                }
                Err(e) => {
                    eprintln!("skipped: cannot run ip (iproute2): {e}");
                    return None;
                }
            }
        }
        Some(lan)
    }

    /// `peerconn ARGS` inside namespace `side`, as its own installation.
    fn peerconn(&self, side: usize, home: &TempDir, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.names[side], env!("CARGO_BIN_EXE_peerconn")]).args(args);
        command.env("PEERCONN_DATA_DIR", home.path()).env("PEERCONN_CONFIG_DIR", home.path());
        command
    }
}

/// Makes this thread (and the threads it starts) live in the namespace.
fn enter(namespace: &str) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/run/netns/{namespace}")).expect("the namespace");
    assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
}

impl Drop for Lan {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// `peerconn nearby --json` in namespace `side`: what it listed.
fn nearby(lan: &Lan, side: usize, home: &TempDir) -> (Vec<Value>, std::process::Output) {
    let out = lan.peerconn(side, home, &["nearby", "--json", "--timeout", "4"]).output().unwrap();
    let found = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (found, out)
}

#[test]
fn a_listener_in_one_namespace_is_found_from_the_other_and_its_entry_connects_pinned() {
    let Some(lan) = Lan::new() else { return };
    let (home_a, home_b) = (TempDir::new("nearby-a"), TempDir::new("nearby-b"));
    let alice = Running::start(lan.peerconn(0, &home_a, &["listen", "--json", "--name", "alice", "--once"]));
    let key = alice.event(&["key"])["fingerprint"].as_str().unwrap().to_owned();
    let port: u16 = alice.event(&["listening"])["addr"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let hidden = Running::start(lan.peerconn(0, &home_a, &["listen", "--json", "--name", "hidden", "--no-announce"]));
    hidden.event(&["listening"]);

    let (found, out) = nearby(&lan, 1, &home_b);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(found.len(), 1, "only the announced listener: {found:?}");
    let entry = &found[0];
    assert_eq!(entry["name"], "alice");
    assert_eq!(entry["addr"], lan.addrs[0].to_string(), "{entry}");
    assert_eq!(entry["port"], port);
    assert_eq!(entry["fingerprint"], key.as_str());
    assert_eq!(entry["trust"], "new");
    let link = entry["link"].as_str().unwrap();

    let bob = Running::start(lan.peerconn(1, &home_b, &["connect", link, "--json", "--name", "bob"]));
    let connected = bob.event(&["connected"]);
    assert_eq!(connected["fingerprint"], key.as_str());
    assert_eq!(connected["trust"], "verified", "the announced key was pinned and matched");
    assert_eq!(alice.event(&["connected"])["peer_name"], "bob");

    // Now alice is busy: her announcement is withdrawn.
    let (found, _) = nearby(&lan, 1, &home_b);
    assert!(found.is_empty(), "a busy listener is not offered: {found:?}");
}

/// Anyone on the network can announce anything: an announcement that
/// names a real listener's address and port with another key is listed
/// (it is only a hint), and connecting from it is refused before any
/// frame, as a link with another key is.
#[test]
fn a_spoofed_announcement_with_another_key_is_refused_when_connecting_from_it() {
    let Some(lan) = Lan::new() else { return };
    let (home_a, home_b) = (TempDir::new("spoof-a"), TempDir::new("spoof-b"));
    let alice = Running::start(lan.peerconn(0, &home_a, &["listen", "--json", "--name", "alice"]));
    let key = alice.event(&["key"])["fingerprint"].as_str().unwrap().to_owned();
    let port: u16 = alice.event(&["listening"])["addr"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();

    // Mallory, on the same network, announces alice's port with her key.
    let mallory = peerconn::net::Identity::generate();
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let spoofer = {
        let (namespace, addr) = (lan.names[0].clone(), lan.addrs[0]);
        std::thread::spawn(move || {
            enter(&namespace);
            let mut announcer = peerconn::nearby::Announcer::start(mallory.public()).unwrap();
            let what =
                peerconn::nearby::Announcement { name: "alice".into(), bound: addr.into(), port, code_required: false };
            announcer.announce(1, &what);
            let _ = stopped.recv_timeout(Duration::from_secs(30));
            announcer.stop();
        })
    };

    let (found, _) = nearby(&lan, 1, &home_b);
    let spoof = found.iter().find(|e| e["fingerprint"] != key.as_str()).expect("the spoofed entry is listed");
    assert!(found.iter().any(|e| e["fingerprint"] == key.as_str()), "alice's own entry too: {found:?}");
    assert_eq!((&spoof["name"], &spoof["port"]), (&"alice".into(), &port.into()));

    let bob = Running::start(lan.peerconn(1, &home_b, &["connect", spoof["link"].as_str().unwrap(), "--json"]));
    let lost = bob.event(&["lost"]);
    assert_eq!(lost["kind"], "wrong_key", "{lost}");
    assert!(lost["reason"].as_str().unwrap().contains(&key), "{lost}");
    let _ = stop.send(());
    spoofer.join().unwrap();
}

/// Settings' switch: a listener not announced is announced as soon as
/// announcing is turned on, and withdrawn when it is turned off.
#[test]
fn announcing_turned_on_while_listening_announces_at_once_and_off_withdraws() {
    let Some(lan) = Lan::new() else { return };
    let home_b = TempDir::new("switch-b");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (namespace, bind) = (lan.names[0].clone(), std::net::SocketAddr::new(lan.addrs[0].into(), 0));
    // The engine (and its reactor thread) lives in the first namespace.
    let engine = std::thread::spawn(move || {
        enter(&namespace);
        let mut node = crate::support::Node::new();
        let (_, addr) = node.listen_on("quiet", bind, Default::default());
        tx.send(addr).unwrap();
        node
    })
    .join()
    .unwrap();
    let addr = rx.recv().unwrap();
    assert!(nearby(&lan, 1, &home_b).0.is_empty(), "announcing is off");
    engine.engine.set_announce(true);
    let (found, _) = nearby(&lan, 1, &home_b);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((&found[0]["name"], &found[0]["port"]), (&"quiet".into(), &addr.port().into()));
    engine.engine.set_announce(false);
    std::thread::sleep(Duration::from_millis(300));
    assert!(nearby(&lan, 1, &home_b).0.is_empty(), "withdrawn");
}

/// A global IPv6 address reaches a listener directly: `listen --reachable`
/// lists it (with its link) beside what the router said, and a peer on
/// the other side connects by that link over IPv6.
#[test]
fn a_global_ipv6_address_is_listed_as_reachable_and_a_peer_connects_by_it() {
    let Some(lan) = Lan::new() else { return };
    let v6 = ["2001:db8:ab::1", "2001:db8:ab::2"];
    for (side, ip) in v6.iter().enumerate() {
        let added = Command::new("ip")
            .args(["-n", &lan.names[side], "addr", "add", &format!("{ip}/64"), "dev", &lan.links[side], "nodad"])
            .status()
            .unwrap();
        assert!(added.success());
    }
    let (home_a, home_b) = (TempDir::new("v6-a"), TempDir::new("v6-b"));
    let args = ["listen", "--bind", "::", "--reachable", "--json", "--no-announce", "--name", "alice"];
    let alice = Running::start(lan.peerconn(0, &home_a, &args));
    let port = alice.event(&["listening"])["addr"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
    let reachable = alice.event(&["reachable"]);
    assert_eq!(reachable["via"], "ipv6", "{reachable}");
    assert_eq!(reachable["addr"], format!("[{}]:{port}", v6[0]));
    // No router on this network: the mapping says why not, separately.
    assert_eq!(alice.event(&["unreachable"])["kind"], "no_gateway");

    let link = reachable["link"].as_str().unwrap();
    let bob = Running::start(lan.peerconn(1, &home_b, &["connect", link, "--json", "--name", "bob"]));
    let connected = bob.event(&["connected"]);
    assert_eq!(connected["peer_addr"], format!("[{}]:{port}", v6[0]));
    assert_eq!(connected["trust"], "verified");
}
