//! This computer's host name and IPv4 addresses, for the host bar and for
//! telling a person what address to give their peer.
//!
//! The primary address is the one most likely reachable by other computers:
//! the address of the interface the OS would route towards the internet,
//! when there is one; otherwise the best private-range address of a
//! physical-looking interface.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    pub host_name: String,
    /// Every usable IPv4 address, primary first. Empty when the computer
    /// has no network beyond loopback.
    pub addresses: Vec<Ipv4Addr>,
}

impl HostInfo {
    /// Reads the host name and addresses. Takes a few milliseconds; call it
    /// off the UI thread's hot path.
    pub fn detect() -> HostInfo {
        let host_name = gethostname::gethostname().to_string_lossy().into_owned();
        let mut found: Vec<(String, Ipv4Addr)> = Vec::new();
        match sysinfo::Networks::new_with_refreshed_list() {
            Ok(networks) => {
                for (interface, data) in &networks {
                    for net in data.ip_networks() {
                        if let IpAddr::V4(v4) = net.addr {
                            found.push((interface.to_string_lossy().into_owned(), v4));
                        }
                    }
                }
            }
            Err(e) => log::warn!("cannot list network interfaces: {e}"),
        }
        HostInfo { host_name, addresses: rank(found, routed_address()) }
    }

    /// The address to show as "Local Address"; loopback when there is none.
    pub fn primary(&self) -> Ipv4Addr {
        self.addresses.first().copied().unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// The address other computers reach a listener bound to `bound` at:
    /// the primary address when it listens on every interface.
    pub fn reach(&self, bound: IpAddr) -> IpAddr {
        if bound.is_unspecified() {
            IpAddr::V4(self.primary())
        } else {
            bound
        }
    }
}

/// This computer's global IPv6 addresses (2000::/3): reachable from
/// other networks directly, without any router mapping, where the
/// firewalls on the way allow the port. Temporary (privacy) addresses are
/// listed too; the operating system does not tell them apart here.
pub fn global_ipv6() -> Vec<std::net::Ipv6Addr> {
    let mut found = Vec::new();
    if let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() {
        for (_, data) in &networks {
            for net in data.ip_networks() {
                if let IpAddr::V6(v6) = net.addr {
                    if is_global_ipv6(v6) && !found.contains(&v6) {
                        found.push(v6);
                    }
                }
            }
        }
    }
    found.sort();
    found
}

/// Global unicast: 2000::/3 (what the internet routes).
pub fn is_global_ipv6(ip: std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xe000 == 0x2000
}

/// The source address the OS would use to reach a public address. A UDP
/// "connect" sends nothing; it only asks the routing table.
fn routed_address() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(v4) if usable(v4) => Some(v4),
        _ => None,
    }
}

fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast())
}

/// Sorts usable addresses best first and removes duplicates.
pub fn rank(found: Vec<(String, Ipv4Addr)>, routed: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let mut scored: Vec<(u32, Ipv4Addr)> = found
        .into_iter()
        .filter(|(_, ip)| usable(*ip))
        .map(|(interface, ip)| {
            let mut score = 0;
            if Some(ip) == routed {
                score += 100;
            }
            if ip.is_private() {
                score += 20;
                if ip.octets()[0] == 192 {
                    score += 3; // home and office networks
                }
            }
            if !is_virtual(&interface) {
                score += 10;
            }
            (score, ip)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for (_, ip) in scored {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Interfaces made by containers, VMs and VPN tools rarely reach a peer.
fn is_virtual(interface: &str) -> bool {
    let name = interface.to_ascii_lowercase();
    [
        "docker",
        "veth",
        "br-",
        "virbr",
        "vmnet",
        "vbox",
        "virtualbox",
        "vethernet",
        "wsl",
        "tun",
        "tap",
        "zt",
        "tailscale",
        "utun",
    ]
    .iter()
    .any(|p| name.starts_with(p) || name.contains(&format!("({p}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_private_physical_address_comes_first() {
        let found = vec![
            ("docker0".to_owned(), Ipv4Addr::new(172, 17, 0, 1)),
            ("lo".to_owned(), Ipv4Addr::LOCALHOST),
            ("eth0".to_owned(), Ipv4Addr::new(10, 0, 0, 5)),
            ("wlan0".to_owned(), Ipv4Addr::new(192, 168, 1, 7)),
            ("eth1".to_owned(), Ipv4Addr::new(169, 254, 3, 3)),
        ];
        let ranked = rank(found.clone(), None);
        assert_eq!(
            ranked,
            vec![Ipv4Addr::new(192, 168, 1, 7), Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(172, 17, 0, 1)]
        );
        let ranked = rank(found, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(ranked[0], Ipv4Addr::new(10, 0, 0, 5));
    }
}
