//! Reachable from another network, against a real router daemon: Debian's
//! `miniupnpd` (it speaks PCP, NAT-PMP and UPnP IGD) in a router namespace with
//! nftables NAT between a LAN namespace and a WAN namespace, all made by
//! the test (root, `ip`, `nft` and `miniupnpd` needed; `.ci/run` installs
//! them and runs as root; elsewhere the tests say why they are skipped).
//!
//! The WAN side uses 5.5.5.0/24 (or 100.64.0.0/24 for carrier-grade NAT):
//! miniupnpd refuses to map behind a private outside address, and nothing
//! leaves the namespaces.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Running, TempDir};

struct Router {
    ns: [String; 3],
    wan_ip: String,
    daemon: Child,
    _dir: TempDir,
}

const LAN: usize = 0;
const RTR: usize = 1;
const WAN: usize = 2;

fn ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))),
        Err(e) => Err(format!("cannot run ip (iproute2): {e}")),
    }
}

impl Router {
    /// LAN 10.66.0.0/24 behind a router whose outside address is `wan`.1.
    fn new(wan: &str) -> Option<Router> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespaces need root (CI runs this as root)");
            return None;
        }
        for tool in ["nft", "miniupnpd"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
            {
                eprintln!("skipped: {tool} is not installed (apt-get install nftables miniupnpd; .ci/run does)");
                return None;
            }
        }
        let tag = format!("{}{}", std::process::id() % 10_000, N.fetch_add(1, Ordering::Relaxed));
        let ns = [format!("pcm{tag}l"), format!("pcm{tag}r"), format!("pcm{tag}w")];
        let (l0, l1, w0, w1) = (format!("ml{tag}a"), format!("ml{tag}b"), format!("mw{tag}a"), format!("mw{tag}b"));
        let wan_ip = format!("{wan}.1");
        let dir = TempDir::new("router");
        let conf = dir.path().join("miniupnpd.conf");
        let setup = || -> Result<(), String> {
            for n in &ns {
                ip(&["netns", "add", n])?;
                ip(&["-n", n, "link", "set", "lo", "up"])?;
            }
            ip(&["link", "add", &l0, "type", "veth", "peer", "name", &l1])?;
            ip(&["link", "set", &l0, "netns", &ns[LAN]])?;
            ip(&["link", "set", &l1, "netns", &ns[RTR]])?;
            ip(&["link", "add", &w0, "type", "veth", "peer", "name", &w1])?;
            ip(&["link", "set", &w0, "netns", &ns[RTR]])?;
            ip(&["link", "set", &w1, "netns", &ns[WAN]])?;
            ip(&["-n", &ns[LAN], "addr", "add", "10.66.0.2/24", "dev", &l0])?;
            ip(&["-n", &ns[LAN], "link", "set", &l0, "up"])?;
            ip(&["-n", &ns[LAN], "route", "add", "default", "via", "10.66.0.1"])?;
            ip(&["-n", &ns[RTR], "addr", "add", "10.66.0.1/24", "dev", &l1])?;
            ip(&["-n", &ns[RTR], "link", "set", &l1, "up"])?;
            ip(&["-n", &ns[RTR], "addr", "add", &format!("{wan_ip}/24"), "dev", &w0])?;
            ip(&["-n", &ns[RTR], "link", "set", &w0, "up"])?;
            ip(&["-n", &ns[WAN], "addr", "add", &format!("{wan}.2/24"), "dev", &w1])?;
            ip(&["-n", &ns[WAN], "link", "set", &w1, "up"])?;
            let sysctl = Command::new("ip")
                .args(["netns", "exec", &ns[RTR], "sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .status()
                .map_err(|e| e.to_string())?;
            if !sysctl.success() {
                return Err("cannot turn on forwarding".into());
            }
            // The chains miniupnpd fills (Debian's nft_init.sh does nothing).
            let rules = format!(
                "table inet filter {{\n chain miniupnpd {{\n }}\n chain forward {{ type filter hook forward priority \
                 0; policy drop;\n  ct state established,related accept\n  iifname \"{l1}\" accept\n  jump \
                 miniupnpd\n }}\n chain prerouting_miniupnpd {{\n }}\n chain postrouting_miniupnpd {{\n }}\n chain \
                 prerouting {{ type nat hook prerouting priority -100;\n  jump prerouting_miniupnpd\n }}\n chain \
                 postrouting {{ type nat hook postrouting priority 100;\n  jump postrouting_miniupnpd\n  oifname \
                 \"{w0}\" masquerade\n }}\n}}\n"
            );
            let mut nft = Command::new("ip")
                .args(["netns", "exec", &ns[RTR], "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            nft.stdin.take().unwrap().write_all(rules.as_bytes()).map_err(|e| e.to_string())?;
            if !nft.wait().map_err(|e| e.to_string())?.success() {
                return Err("nft rejected the rules".into());
            }
            std::fs::write(
                &conf,
                format!(
                    "ext_ifname={w0}\nlistening_ip={l1}\nport=0\nenable_natpmp=yes\nenable_upnp=yes\nsecure_mode=yes\n\
                     system_uptime=yes\nupnp_table_name=filter\nupnp_nat_table_name=filter\n\
                     upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
                     upnp_nat_postrouting_chain=postrouting_miniupnpd\nallow 1024-65535 10.66.0.0/24 1024-65535\n\
                     deny 0-65535 0.0.0.0/0 0-65535\nuuid=b1d621b6-6f0a-4731-8e15-92686502{tag:0>4.4}\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        };
        let cleanup = |ns: &[String; 3]| {
            for n in ns {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        };
        if let Err(why) = setup() {
            cleanup(&ns);
            eprintln!("skipped: {why}");
            return None;
        }
        let pid = dir.path().join("miniupnpd.pid");
        let daemon = Command::new("ip")
            .args(["netns", "exec", &ns[RTR], "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(daemon) = daemon else {
            cleanup(&ns);
            eprintln!("skipped: miniupnpd does not start");
            return None;
        };
        std::thread::sleep(Duration::from_millis(500));
        Some(Router { ns, wan_ip, daemon, _dir: dir })
    }

    fn peerconn(&self, side: usize, home: &TempDir, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns[side], env!("CARGO_BIN_EXE_peerconn")]).args(args);
        command.env("PEERCONN_DATA_DIR", home.path()).env("PEERCONN_CONFIG_DIR", home.path());
        command
    }

    /// The router's port forwards, as nftables holds them.
    fn forwards(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns[RTR], "nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A listener in the LAN maps its port by each protocol; a peer on the
/// WAN side connects to the outside address by the link and chats; the
/// mapping goes when the listener stops.
#[test]
fn a_listener_behind_the_router_maps_its_port_by_pcp_nat_pmp_and_upnp_and_removes_it_when_it_stops() {
    let Some(router) = Router::new("5.5.5") else { return };
    for via in ["pcp", "nat-pmp", "upnp"] {
        let (home_a, home_b) = (TempDir::new("reach-a"), TempDir::new("reach-b"));
        let mut listen =
            router.peerconn(LAN, &home_a, &["listen", "--reachable", "--json", "--no-announce", "--name", "alice"]);
        listen.env("PEERCONN_PORT_MAPPING", via);
        let mut alice = Running::start(listen);
        let port = alice.event(&["listening"])["addr"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
        let reachable = alice.event(&["reachable", "unreachable"]);
        assert_eq!(reachable["event"], "reachable", "{via}: {reachable}");
        assert_eq!(reachable["via"], via);
        assert_eq!(reachable["addr"], format!("{}:{port}", router.wan_ip), "{via}: the outside address, same port");
        assert!(
            router.forwards().contains(&format!("dport {port} dnat ip to 10.66.0.2:{port}")),
            "{}",
            router.forwards()
        );

        let link = reachable["link"].as_str().unwrap();
        let mut bob = Running::start(router.peerconn(WAN, &home_b, &["connect", link, "--json", "--name", "bob"]));
        assert_eq!(bob.event(&["connected", "lost"])["trust"], "verified", "{via}: through the router");
        bob.say("hello through the router");
        assert_eq!(alice.event(&["message"])["text"], "hello through the router");
        drop(bob);

        alice.interrupt();
        let forwards = router.forwards();
        assert!(!forwards.contains(&format!("dport {port} ")), "{via}: the mapping stayed: {forwards}");
    }
}

/// What the listener says when a mapping cannot help or cannot be had.
#[test]
fn a_mapping_that_cannot_be_had_says_why() {
    let Some(router) = Router::new("5.5.5") else { return };
    let home = TempDir::new("reach-why");
    // Nothing answers on the WAN side (no router there).
    let lonely = Running::start(router.peerconn(WAN, &home, &["listen", "--reachable", "--json", "--no-announce"]));
    let said = lonely.event(&["reachable", "unreachable"]);
    assert_eq!((&said["event"], &said["kind"]), (&"unreachable".into(), &"no_gateway".into()), "{said}");
    assert!(said["reason"].as_str().unwrap().contains("no router answered"), "{said}");
    // Behind the provider's carrier-grade NAT the router has no outside
    // address of its own (miniupnpd then answers "network failure"), and
    // no mapping can help.
    let Some(cgnat) = Router::new("100.64.0") else { return };
    let home = TempDir::new("reach-cgnat");
    let behind = Running::start(cgnat.peerconn(LAN, &home, &["listen", "--reachable", "--json", "--no-announce"]));
    let said = behind.event(&["reachable", "unreachable"]);
    assert_eq!(said["kind"], "behind_another_nat", "{said}");
    assert!(said["reason"].as_str().unwrap().contains("carrier-grade NAT"), "{said}");
}
